// Host-only checks (they run without a GPU): the layer plan, the directory, the RoPE table and the
// test reference itself, so the GPU tests compare against something already verified.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "layer_ref.hpp"
#include "skv/cuda/layer_plan.hpp"
#include "skv/error.hpp"
#include "skv/half.hpp"
#include "skv/quant.hpp"
#include "test_data.hpp"

namespace skv::cuda {
namespace {

LayerGeometry geo(int H, int T, int D, DType dt = DType::F16, int g8 = 0, int g4 = 32,
                  KeyTransform kt = KeyTransform::none, RopeStyle rs = RopeStyle::unknown,
                  Layout layout = Layout::HTD) {
  KvShape s;
  s.layers = 1;
  s.kv_heads = H;
  s.tokens = T;
  s.head_dim = D;
  s.dtype = dt;
  QuantSettings q;
  q.int8_group = g8;
  q.int4_group = g4;
  q.key_transform = kt;
  return make_geometry(s, layout, q, rs, "test");
}

uint64_t u64_at(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

TEST(LayerPlan, OffsetsAndSizesFollowTheSpec) {
  // H=2, T=5, D=8, g8=8 (0 -> D), g4=4, centred keys. K map 0 1 2 3 1, V map 2 2 0 0 3.
  const LayerGeometry g = geo(2, 5, 8, DType::F16, 0, 4, KeyTransform::centre);
  EXPECT_EQ(g.int8_group, 8);
  const uint8_t km[] = {0, 1, 2, 3, 1}, vm[] = {2, 2, 0, 0, 3};
  const LayerPlan p = plan_layer(g, km, vm, "test");
  EXPECT_EQ(p.count[0][0], 1u);
  EXPECT_EQ(p.count[0][1], 2u);
  EXPECT_EQ(p.count[0][2], 1u);
  EXPECT_EQ(p.count[0][3], 1u);
  EXPECT_EQ(p.count[1][0], 2u);
  EXPECT_EQ(p.count[1][2], 2u);
  // Raw sizes, written out from the table in skv.md.
  const uint64_t want[13] = {5, 5, 4 * 2 * 8,
                             2 * 2 * 1 * 8, 2 * 2 * 8, 2 * 2 * 2 * 1, 2 * 1 * 8 / 2, 4 * 2 * 1 * 2,
                             2 * 2 * 2 * 8, 0, 0, 2 * 2 * 8 / 2, 4 * 2 * 2 * 2};
  uint64_t pos = 320;
  for (int s = 0; s < 13; ++s) {
    EXPECT_EQ(p.size[size_t(s)], want[s]) << "stream " << s;
    pos = (pos + 63) / 64 * 64;
    EXPECT_EQ(p.offset[size_t(s)], pos) << "stream " << s;
    pos += want[s];
  }
  EXPECT_EQ(p.payload_bytes, pos);
  EXPECT_LE(p.payload_bytes, max_layer_bytes(g));

  uint8_t dir[kDirectoryBytes];
  write_directory(p, dir);
  for (int s = 0; s < 13; ++s) {
    EXPECT_EQ(u64_at(dir + 24 * s), 0u) << "codec and reserved are zero";
    EXPECT_EQ(u64_at(dir + 24 * s + 8), want[s]);
    EXPECT_EQ(u64_at(dir + 24 * s + 16), want[s]);
  }
  EXPECT_EQ(g.directory_bytes(), kDirectoryBytesNoInt2);
  for (size_t i = 13 * 24; i < g.directory_bytes(); ++i) EXPECT_EQ(dir[i], 0);
  for (int s = 13; s < kLayerStreams; ++s) EXPECT_EQ(p.size[size_t(s)], 0u) << "no INT2 streams";
}

// With INT2 declared (format 1.1): 17 streams after a 448-byte directory; streams 13..16 are
// the K INT2 values (D/4 per head row) and (scale, min) pairs, then V's.
TEST(LayerPlan, Int2StreamsFollowTheSpec) {
  KvShape sh;
  sh.layers = 1;
  sh.kv_heads = 2;
  sh.tokens = 5;
  sh.head_dim = 16;
  QuantSettings q;
  q.int4_group = 8;
  q.int2 = true;
  q.int2_group = 8;
  const LayerGeometry g = make_geometry(sh, Layout::HTD, q, RopeStyle::unknown, "test");
  EXPECT_EQ(g.directory_bytes(), kDirectoryBytes);
  EXPECT_EQ(g.streams(), 17);
  const uint8_t km[] = {0, 4, 2, 4, 4}, vm[] = {4, 3, 1, 1, 0};
  const LayerPlan p = plan_layer(g, km, vm, "test");
  EXPECT_EQ(p.count[0][4], 3u);
  EXPECT_EQ(p.count[1][4], 1u);
  const uint64_t want[17] = {5, 5, 0,
                             2 * 1 * 32, 0, 0, 2 * 1 * 8, 2 * 1 * 4 * 2,
                             2 * 1 * 32, 2 * 2 * 16, 2 * 2 * 2 * 1, 0, 0,
                             2 * 3 * 4, 2 * 3 * 4 * 2, 2 * 1 * 4, 2 * 1 * 4 * 2};
  uint64_t pos = 448;
  for (int s = 0; s < 17; ++s) {
    EXPECT_EQ(p.size[size_t(s)], want[s]) << "stream " << s;
    pos = (pos + 63) / 64 * 64;
    EXPECT_EQ(p.offset[size_t(s)], pos) << "stream " << s;
    pos += want[s];
  }
  EXPECT_EQ(p.payload_bytes, pos);
  EXPECT_LE(p.payload_bytes, max_layer_bytes(g));
  uint8_t dir[kDirectoryBytes];
  write_directory(p, dir);
  for (int s = 0; s < 17; ++s) EXPECT_EQ(u64_at(dir + 24 * s + 16), want[s]);
  for (size_t i = 17 * 24; i < kDirectoryBytes; ++i) EXPECT_EQ(dir[i], 0);
  // INT2 codes need the declaration; the group must be a multiple of 4 dividing D.
  q.int2 = false;
  const LayerGeometry g0 = make_geometry(sh, Layout::HTD, q, RopeStyle::unknown, "test");
  EXPECT_THROW(plan_layer(g0, km, vm, "test"), Error);
  q.int2 = true;
  q.int2_group = 6;
  EXPECT_THROW(make_geometry(sh, Layout::HTD, q, RopeStyle::unknown, "test"), Error);
  q.int2_group = QuantSettings::kAutoGroup;
  sh.head_dim = 80;
  EXPECT_EQ(make_geometry(sh, Layout::HTD, q, RopeStyle::unknown, "test").int2_group, 16);  // gcd(32, 80)
}

TEST(LayerPlan, MaxLayerBytesBoundsEveryUniformPlan) {
  for (int g8 : {1, 2, 16, 0})
    for (int tier = 0; tier < 4; ++tier) {
      const LayerGeometry g = geo(3, 7, 16, DType::F16, g8, 2, KeyTransform::centre);
      std::vector<uint8_t> m(7, uint8_t(tier));
      EXPECT_LE(plan_layer(g, m.data(), m.data(), "t").payload_bytes, max_layer_bytes(g)) << g8 << " " << tier;
    }
}

TEST(LayerPlan, RejectsWhatTheSpecForbids) {
  EXPECT_THROW(geo(2, 4, 80, DType::F16, 0, 3), Error);   // odd INT4 group
  EXPECT_THROW(geo(2, 4, 80, DType::F16, 7, 16), Error);  // INT8 group does not divide D
  EXPECT_THROW(geo(2, 4, 64, DType::I8), Error);
  EXPECT_THROW(geo(2, 4, 64, DType::F16, 0, 32, KeyTransform::prerope_centre, RopeStyle::unknown), Error);
  const LayerGeometry g = geo(1, 2, 8, DType::F16, 0, 8);
  const uint8_t ok[] = {0, 1}, bad[] = {0, 4};
  EXPECT_THROW(plan_layer(g, ok, bad, "t"), Error);
}

TEST(RopeTable, MatchesTheSpecFormula) {
  const LayerGeometry g = geo(1, 3, 8, DType::F16, 0, 8, KeyTransform::prerope_centre, RopeStyle::neox);
  std::vector<float> tab(rope_table_floats(g));
  fill_rope_table(g, 10000.0, 5, tab.data());
  for (int t = 0; t < 3; ++t)
    for (int j = 0; j < 4; ++j) {
      const double a = double(5 + t) * (1.0 / std::pow(10000.0, double(2 * j) / 8.0));
      EXPECT_EQ(tab[size_t(t * 4 + j)], float(std::cos(a)));
      EXPECT_EQ(tab[size_t(12 + t * 4 + j)], float(std::sin(a)));
    }
}

// The restated quantizers agree with lib's reference on ordinary data (no signed-zero minimum and
// no minimum beyond FP16 range, where the spec's "+ 0" and range check are newer than main's).
TEST(Reference, QuantizersMatchLibReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.5f, 2.0f);
  for (int n : {2, 8, 32, 128}) {
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = nd(rng) * (rep % 3 == 0 ? 100.0f : 1.0f) + 0.1f;
      std::vector<int8_t> q1(x.size()), q2(x.size());
      uint16_t s1 = 0, s2 = 0, m1 = 0, m2 = 0;
      ASSERT_TRUE(ref::q8(x.data(), n, q1.data(), &s1));
      ASSERT_TRUE(quant::q8_ref(x.data(), x.size(), q2.data(), &s2));
      EXPECT_EQ(s1, s2);
      EXPECT_EQ(q1, q2);
      std::vector<uint8_t> p1(x.size() / 2), p2(x.size() / 2);
      ASSERT_TRUE(ref::q4(x.data(), n, p1.data(), &s1, &m1));
      ASSERT_TRUE(quant::q4_ref(x.data(), x.size(), p2.data(), &s2, &m2));
      EXPECT_EQ(s1, s2);
      EXPECT_EQ(m1, m2);
      EXPECT_EQ(p1, p2);
    }
  }
}

TEST(Reference, Int4MinimumIsPositiveZeroAndRangeChecked) {
  const float x[4] = {-0.0f, 1.0f, 0.0f, 2.0f};
  uint8_t p[2];
  uint16_t s, m;
  ASSERT_TRUE(ref::q4(x, 4, p, &s, &m));
  EXPECT_EQ(m, 0x0000) << "'+ 0' turns a -0 minimum into +0";
  const float big[2] = {-70000.0f, 1.0f};
  EXPECT_FALSE(ref::q4(big, 2, p, &s, &m)) << "minimum beyond FP16 range";
  const float nan[2] = {NAN, 1.0f};
  int8_t q[2];
  EXPECT_FALSE(ref::q8(nan, 2, q, &s));
}

// Reference round trip: every decoded value is within the quantizer's error bound, FP16-tier rows
// are exact, dropped rows zero, and prerope/centre transforms are undone on decode.
TEST(Reference, RoundTripWithinErrorBounds) {
  for (KeyTransform kt : {KeyTransform::none, KeyTransform::centre, KeyTransform::prerope_centre}) {
    const LayerGeometry g = geo(2, 37, 64, DType::F32, 16, 16, kt, RopeStyle::gptj, Layout::THD);
    const auto k = test::make_tensor(g, 1), v = test::make_tensor(g, 2);
    const auto km = test::make_tiers(g.tokens, 3), vm = test::make_tiers(g.tokens, 4);
    std::vector<float> rope(rope_table_floats(g));
    fill_rope_table(g, 10000.0, 0, rope.data());
    const LayerPlan p = plan_layer(g, km.data(), vm.data(), "t");
    std::vector<uint8_t> payload;
    ASSERT_TRUE(ref::encode_layer(p, k.data(), v.data(), km.data(), vm.data(), rope.data(), payload));
    const size_t n = size_t(g.kv_heads) * size_t(g.tokens) * size_t(g.head_dim);
    std::vector<float> ko(n), vo(n);
    std::vector<uint8_t> mask(size_t(g.tokens));
    ref::decode_layer(p, payload.data(), rope.data(), DType::F32, ko.data(), vo.data(), mask.data());
    const float* ks = reinterpret_cast<const float*>(k.data());
    const float* vs = reinterpret_cast<const float*>(v.data());
    for (int t = 0; t < g.tokens; ++t) {
      EXPECT_EQ(mask[size_t(t)], km[size_t(t)] != 3 && vm[size_t(t)] != 3);
      for (int h = 0; h < g.kv_heads; ++h)
        for (int kv = 0; kv < 2; ++kv) {
          const uint8_t tier = (kv ? vm : km)[size_t(t)];
          const size_t row = (size_t(t) * size_t(g.kv_heads) + size_t(h)) * size_t(g.head_dim);
          const float* src = (kv ? vs : ks) + row;
          const float* dec = (kv ? vo.data() : ko.data()) + row;
          for (int d = 0; d < g.head_dim; ++d) {
            if (tier == 3) {
              EXPECT_EQ(dec[d], 0.0f);
            } else if (tier == 0) {
              EXPECT_EQ(dec[d], f16_to_f32(f32_to_f16(src[d])));
            }
          }
          if (tier == 1 || tier == 2) {
            // |x'| <= R for the transformed row (a rotation keeps each pair's norm, centring adds
            // |c|); quantizing costs half a step (range / 127 or / 15), rotating back spreads a
            // pair's error over both elements (sqrt 2).
            const float* c = kv == 0 && kt != KeyTransform::none
                                 ? reinterpret_cast<const float*>(payload.data() + p.offset[kKCentre]) + size_t(h) * size_t(g.head_dim)
                                 : nullptr;
            float mag = 0, cmax = 0, err = 0;
            for (int d = 0; d < g.head_dim; ++d) {
              mag = std::max(mag, std::fabs(src[d]));
              if (c) cmax = std::max(cmax, std::fabs(c[d]));
              err = std::max(err, std::fabs(dec[d] - src[d]));
            }
            const float R = 2 * mag + cmax;
            const float bound = 1.5f * (tier == 1 ? 0.5f * R / 127 : R / 15) + 1e-5f;
            EXPECT_LE(err, bound) << "transform " << int(kt) << " tier " << int(tier) << " kv " << kv
                                  << " h " << h << " t " << t;
          }
        }
    }
  }
}

}  // namespace
}  // namespace skv::cuda
