// The INT2 tier (format 1.1): the reference quantizer's properties, AVX2 == reference bit for bit,
// and the container: declaration, exact round trip, size model, versioning and what readers refuse.
#define XXH_INLINE_ALL
#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "../../../lib/src/quant_rows.hpp"
#include "codec_test_util.hpp"
#include "skv/error.hpp"
#include "skv/quant.hpp"

using namespace skv;
using namespace skv::test;
using skv::detail::RowKernels;

namespace {

uint64_t u64_at(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint16_t u16_at(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint64_t align64(uint64_t n) { return (n + 63) / 64 * 64; }

// ---- Reference quantizer

TEST(Int2Ref, ErrorWithinHalfAStepPerElement) {
  Rng rng(41);
  for (int it = 0; it < 2000; ++it) {
    const size_t n = size_t(4 * (1 + rng.below(16)));
    const float mag = std::ldexp(1.0f, rng.below(30) - 20);  // the minimum stays within FP16 range
    std::vector<float> x(n), y(n);
    for (float& v : x) v = rng.normalish() * mag + (rng.below(4) == 0 ? mag * 3 : 0.0f);
    std::vector<uint8_t> p(n / 4);
    uint16_t s16, m16;
    ASSERT_TRUE(quant::q2_ref(x.data(), n, p.data(), &s16, &m16));
    quant::dq2_ref(p.data(), n, s16, m16, nullptr, y.data());
    const float bound = quant::q2_error_bound(x.data(), n);
    const float step = f16_to_f32(s16);
    const float mn = *std::min_element(x.begin(), x.end()), mx = *std::max_element(x.begin(), x.end());
    ASSERT_GT(step, 0.0f);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_LE(std::fabs(y[i] - x[i]), bound) << "it " << it << " i " << i;
      // Half a step, plus what rounding the scale and the minimum to FP16 can add.
      ASSERT_LE(std::fabs(y[i] - x[i]), 0.5f * step + std::fabs(f16_to_f32(m16) - mn) + (mx - mn) * 0x1p-10f + 1e-30f)
          << "it " << it << " i " << i;
    }
  }
}

TEST(Int2Ref, FourLevelDataIsReconstructedExactly) {
  // Levels m + k * s with m and s exact in FP16: every value comes back bit for bit.
  for (float m : {-1.0f, 0.0f, 3.5f, -1024.0f})
    for (float s : {0.5f, 0.125f, 2.0f}) {
      const float x[8] = {m, m + s, m + 2 * s, m + 3 * s, m + 3 * s, m, m + s, m + 2 * s};
      uint8_t p[2];
      uint16_t s16, m16;
      ASSERT_TRUE(quant::q2_ref(x, 8, p, &s16, &m16));
      EXPECT_EQ(f16_to_f32(s16), s);
      EXPECT_EQ(f16_to_f32(m16), m);
      // Element 4i + j is bits 2j..2j+1 of byte i.
      EXPECT_EQ(p[0], uint8_t(0 | 1 << 2 | 2 << 4 | 3 << 6));
      EXPECT_EQ(p[1], uint8_t(3 | 0 << 2 | 1 << 4 | 2 << 6));
      float y[8];
      quant::dq2_ref(p, 8, s16, m16, nullptr, y);
      for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], x[i]) << i;
      // With a centre: y = fmaf(q, s, m) + c.
      const float c[8] = {0.25f, -1, 2, 0, 0, 0, 0, 8};
      quant::dq2_ref(p, 8, s16, m16, c, y);
      for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], x[i] + c[i]) << i;
    }
}

TEST(Int2Ref, SignedZerosGivePositiveZeroParameters) {
  const float a[4] = {0.0f, -0.0f, -0.0f, 0.0f}, b[4] = {-0.0f, -0.0f, -0.0f, -0.0f};
  uint8_t p;
  uint16_t s, m;
  ASSERT_TRUE(quant::q2_ref(a, 4, &p, &s, &m));
  EXPECT_EQ(s, 0u);
  EXPECT_EQ(m, 0u);
  EXPECT_EQ(p, 0u);
  ASSERT_TRUE(quant::q2_ref(b, 4, &p, &s, &m));
  EXPECT_EQ(s, 0u);
  EXPECT_EQ(m, 0u);  // +0, not -0 (0x8000)
}

TEST(Int2Ref, NonFiniteAndUnstorableGroupsAreRefused) {
  for (float bad : {INFINITY, -INFINITY, NAN}) {
    std::vector<float> x(32, 1.0f);
    x[13] = bad;
    uint8_t p[8];
    uint16_t s, m;
    EXPECT_FALSE(quant::q2_ref(x.data(), 32, p, &s, &m));
    EXPECT_EQ(quant::q2_error_bound(x.data(), 32), INFINITY);
  }
  std::vector<float> x(8, -1e6f);  // f16(min) overflows
  uint8_t p[2];
  uint16_t s, m;
  EXPECT_FALSE(quant::q2_ref(x.data(), 8, p, &s, &m));
  const float huge[4] = {3e38f, -3e38f, 0, 1};
  EXPECT_FALSE(quant::q2_ref(huge, 4, p, &s, &m));  // min -3e38 overflows FP16
  const float wide[4] = {-60000.0f, 3e38f, 0, 1};   // the scale saturates at 65504, codes clamp
  ASSERT_TRUE(quant::q2_ref(wide, 4, p, &s, &m));
  EXPECT_EQ(f16_to_f32(s), 65504.0f);
  EXPECT_EQ((p[0] >> 2) & 3, 3);
}

// ---- AVX2 == reference

std::vector<float> make_row(Rng& rng, int d, int kind) {
  std::vector<float> x(static_cast<size_t>(d));
  const float mag = std::ldexp(1.0f, rng.below(50) - 30);
  for (int i = 0; i < d; ++i) {
    float v = rng.normalish() * mag;
    switch (kind % 7) {
      case 1: v = -2.5f; break;
      case 2: v = rng.below(2) ? 0.0f : -0.0f; break;
      case 3: v = v * 1e-38f; break;
      case 4: v = std::numeric_limits<float>::denorm_min() * float(rng.below(5) - 2); break;
      case 5: if (rng.below(16) == 0) v = 60000.0f * (rng.below(2) ? 1.f : -1.f); break;
      case 6: v = std::round(v / mag * 3.0f) * mag / 3.0f; break;  // near the levels: ties
      default: break;
    }
    x[size_t(i)] = v;
  }
  return x;
}

std::vector<uint16_t> to_half(const std::vector<float>& x, bool bf16) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = bf16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
  return h;
}

class Int2Kernels : public ::testing::Test {
 protected:
  void SetUp() override {
    simd = detail::row_kernels_avx2();
    if (!simd) GTEST_SKIP() << "CPU lacks AVX2/F16C/FMA";
  }
  const RowKernels& ref = detail::row_kernels_ref();
  const RowKernels* simd = nullptr;
};

TEST_F(Int2Kernels, RowKernelsMatchReferenceBitForBit) {
  Rng rng(9);
  for (int d : {8, 16, 24, 64, 80, 96, 128, 256})
    for (int g : {4, 8, 12, 16, 24, 32, 64, 80, 96, 128, 256}) {
      if (g > d || d % g) continue;
      const int ng = d / g;
      for (int it = 0; it < 42; ++it) {
        const auto x = make_row(rng, d, it);
        std::vector<float> centre(static_cast<size_t>(d));
        for (float& c : centre) c = rng.normalish();
        const std::string where = "d=" + std::to_string(d) + " g=" + std::to_string(g) + " it=" + std::to_string(it);
        std::vector<uint8_t> pa(size_t(d / 4)), pb(pa.size());
        std::vector<uint16_t> ma(size_t(2 * ng)), mb(ma.size());
        const bool oka = ref.q2(x.data(), d, g, pa.data(), ma.data());
        ASSERT_EQ(oka, simd->q2(x.data(), d, g, pb.data(), mb.data())) << where;
        if (oka) {
          ASSERT_EQ(pa, pb) << "q2 " << where;
          ASSERT_EQ(ma, mb) << "q2 " << where;
          for (const float* c : {static_cast<const float*>(nullptr), static_cast<const float*>(centre.data())}) {
            std::vector<float> ya(static_cast<size_t>(d)), yb(ya.size());
            ref.dq2(pa.data(), d, g, ma.data(), c, ya.data());
            simd->dq2(pa.data(), d, g, ma.data(), c, yb.data());
            ASSERT_EQ(0, std::memcmp(ya.data(), yb.data(), ya.size() * 4)) << "dq2 " << where;
          }
        }
        // Fused 16-bit forms: equal to "convert, then the f32 reference" (and the reverse).
        for (bool bf16 : {false, true}) {
          const auto h = to_half(x, bf16);
          std::vector<float> xf(static_cast<size_t>(d));
          (bf16 ? ref.bf16_to_f32 : ref.f16_to_f32)(h.data(), d, xf.data());
          const bool ok = ref.q2(xf.data(), d, g, pa.data(), ma.data());
          for (const RowKernels* k : {&ref, simd}) {
            ASSERT_EQ(ok, k->q2_h(h.data(), bf16, d, g, pb.data(), mb.data())) << k->name << " q2_h " << where;
            if (!ok) continue;
            ASSERT_EQ(pa, pb) << k->name << " q2_h " << where << " bf16 " << bf16;
            ASSERT_EQ(ma, mb) << k->name << " q2_h " << where << " bf16 " << bf16;
            for (const float* c : {static_cast<const float*>(nullptr), static_cast<const float*>(centre.data())}) {
              std::vector<float> y(static_cast<size_t>(d));
              std::vector<uint16_t> ya(static_cast<size_t>(d)), yb(ya.size());
              ref.dq2(pa.data(), d, g, ma.data(), c, y.data());
              (bf16 ? ref.f32_to_bf16 : ref.f32_to_f16)(y.data(), d, ya.data());
              k->dq2_h(pa.data(), d, g, ma.data(), c, bf16, yb.data());
              ASSERT_EQ(ya, yb) << k->name << " dq2_h " << where << " bf16 " << bf16;
            }
          }
        }
      }
    }
}

// Runs of rows (odd lengths, strided sources) equal one row at a time, and report the first
// refused row.
TEST_F(Int2Kernels, RowRunsMatchOneRowAtATime) {
  Rng rng(13);
  for (int d : {64, 80, 96, 128})
    for (int g : {4, 8, 16, 32, d})
      for (int rows : {1, 3, 7, 9, 33}) {
        if (d % g) continue;
        const int ng = d / g;
        const size_t stride = size_t(d) * 3;
        std::vector<float> src(stride * size_t(rows));
        for (int r = 0; r < rows; ++r) {
          const auto x = make_row(rng, d, r);
          std::copy(x.begin(), x.end(), src.begin() + std::ptrdiff_t(size_t(r) * stride));
        }
        const int poison = rows > 2 && rng.below(2) ? rng.below(rows) : -1;
        if (poison >= 0) src[size_t(poison) * stride + 5] = NAN;
        const std::string where = "d=" + std::to_string(d) + " g=" + std::to_string(g) + " rows=" + std::to_string(rows);
        for (bool half : {false, true})
          for (bool bf16 : {false, true}) {
            if (!half && bf16) continue;
            std::vector<uint16_t> hs(src.size());
            for (size_t i = 0; i < src.size(); ++i) hs[i] = bf16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
            std::vector<uint8_t> pa(size_t(rows) * size_t(d / 4)), pb(pa.size());
            std::vector<uint16_t> ma(size_t(rows) * size_t(2 * ng)), mb(ma.size());
            int bad = -1;
            for (int r = rows - 1; r >= 0; --r) {
              const bool ok = half ? ref.q2_h(hs.data() + size_t(r) * stride, bf16, d, g, pa.data() + size_t(r) * size_t(d / 4),
                                              ma.data() + size_t(r) * size_t(2 * ng))
                                   : ref.q2(src.data() + size_t(r) * stride, d, g, pa.data() + size_t(r) * size_t(d / 4),
                                            ma.data() + size_t(r) * size_t(2 * ng));
              if (!ok) bad = r;
            }
            if (poison >= 0) {
              EXPECT_TRUE(bad >= 0 && bad <= poison) << where;
            }
            for (const RowKernels* k : {&ref, simd}) {
              const int got = half ? k->q2_h_rows(hs.data(), stride, rows, bf16, d, g, pb.data(), mb.data())
                                   : k->q2_rows(src.data(), stride, rows, d, g, pb.data(), mb.data());
              ASSERT_EQ(bad, got) << k->name << " " << where << " half " << half << " bf16 " << bf16;
              if (bad < 0) {
                ASSERT_EQ(pa, pb) << k->name << " " << where << " half " << half << " bf16 " << bf16;
                ASSERT_EQ(ma, mb) << k->name << " " << where << " half " << half << " bf16 " << bf16;
              }
            }
          }
      }
}

// ---- Container

Plan mixed_plan(int L, int T, uint64_t seed) {
  Plan p = Plan::uniform(L, T, Tier::FP16);
  Rng rng(seed);
  for (auto* tiers : {&p.k_tiers, &p.v_tiers})
    for (Tier& t : *tiers) t = Tier(rng.below(5));  // FP16, INT8, INT4, DROP, INT2
  p.policy = "random";
  p.quant.int2 = true;
  return p;
}

// The reference dequantization of one source row at `tier` (no key transform), as f32.
std::vector<float> expected_row(const std::vector<float>& x, Tier tier, int g8, int g4, int g2) {
  const size_t D = x.size();
  std::vector<float> y(D, 0.0f);
  if (tier == Tier::FP16) return x;  // F16 source: exact
  if (tier == Tier::DROP) return y;
  for (size_t i = 0; i < D;) {
    if (tier == Tier::INT8) {
      std::vector<int8_t> q(static_cast<size_t>(g8));
      uint16_t s;
      EXPECT_TRUE(quant::q8_ref(x.data() + i, size_t(g8), q.data(), &s));
      quant::dq8_ref(q.data(), size_t(g8), s, nullptr, y.data() + i);
      i += size_t(g8);
    } else {
      const int g = tier == Tier::INT4 ? g4 : g2;
      std::vector<uint8_t> p(static_cast<size_t>(g));
      uint16_t s, m;
      if (tier == Tier::INT4) {
        EXPECT_TRUE(quant::q4_ref(x.data() + i, size_t(g), p.data(), &s, &m));
        quant::dq4_ref(p.data(), size_t(g), s, m, nullptr, y.data() + i);
      } else {
        EXPECT_TRUE(quant::q2_ref(x.data() + i, size_t(g), p.data(), &s, &m));
        quant::dq2_ref(p.data(), size_t(g), s, m, nullptr, y.data() + i);
      }
      i += size_t(g);
    }
  }
  return y;
}

TEST(Int2Container, MixedPlanRoundTripEqualsReferenceDequantization) {
  for (Layout layout : {Layout::HTD, Layout::THD})
    for (int D : {64, 80, 96, 128}) {
      const int L = 2, H = 3, T = 29;
      auto oc = make_cache(L, H, T, D, DType::F16, layout, uint64_t(D) + uint64_t(layout), 0.5f);
      Plan p = mixed_plan(L, T, uint64_t(D));
      p.quant.int4_group = D % 32 ? 16 : 32;  // INT2 group: default (gcd(32, D))
      for (int threads : {1, 3}) {
        EncodeResult er;
        const auto bytes = encode_bytes(oc.cache, p, threads, &er);
        ContainerInfo info;
        const auto layers = decode_all(bytes, DType::F32, &info, threads);
        ASSERT_EQ(layers.size(), size_t(L));
        EXPECT_TRUE(info.quant.int2);
        EXPECT_EQ(info.quant.int2_group, std::gcd(32, D));
        EXPECT_EQ(info.format_minor, 1u);
        const int g8 = D, g4 = p.quant.int4_group, g2 = std::gcd(32, D);
        TierCounts want;
        for (int l = 0; l < L; ++l)
          for (int kv = 0; kv < 2; ++kv) {
            const KvLayer& src = oc.cache.layers[size_t(l)];
            const Tensor& out = kv ? layers[size_t(l)].v : layers[size_t(l)].k;
            for (int t = 0; t < T; ++t) {
              const Tier tier = kv ? p.v(l, t) : p.k(l, t);
              ++(kv ? want.v : want.k)[size_t(tier)];
              for (int h = 0; h < H; ++h) {
                std::vector<float> x(static_cast<size_t>(D));
                const std::byte* row = (kv ? src.v : src.k).bytes.data() +
                                       (layout == Layout::HTD ? size_t(h) * size_t(T) + size_t(t)
                                                              : size_t(t) * size_t(H) + size_t(h)) * size_t(D) * 2;
                for (int d = 0; d < D; ++d) x[size_t(d)] = load(DType::F16, row + size_t(d) * 2);
                const auto y = expected_row(x, tier, g8, g4, g2);
                for (int d = 0; d < D; ++d) {
                  const float got = decoded_at(out, layout, H, T, D, h, t, d);
                  ASSERT_EQ(0, std::memcmp(&got, &y[size_t(d)], 4))
                      << "layer " << l << (kv ? " V" : " K") << " tier " << tier_name(tier) << " h " << h
                      << " t " << t << " d " << d << ": " << got << " vs " << y[size_t(d)];
                }
              }
            }
          }
        EXPECT_EQ(info.tiers.k, want.k);
        EXPECT_EQ(info.tiers.v, want.v);
        EXPECT_EQ(er.info.tiers.k, want.k);
        // Decoding straight to F16 (the fused kernels) gives f16 of the f32 decode.
        const auto l16 = decode_all(bytes, DType::F16, nullptr, threads);
        for (int l = 0; l < L; ++l)
          for (size_t i = 0; i < size_t(H) * size_t(T) * size_t(D); ++i) {
            float f;
            std::memcpy(&f, layers[size_t(l)].k.data.data() + 4 * i, 4);
            ASSERT_EQ(u16_at(l16[size_t(l)].k.data.data() + 2 * i), f32_to_f16(f)) << i;
          }
      }
    }
}

// Centred and pre-RoPE keys at INT2: within the reference error bound of the transformed
// value, and independent of the thread count.
TEST(Int2Container, TransformedKeysRoundTrip) {
  for (KeyTransform kt : {KeyTransform::centre, KeyTransform::prerope_centre})
    for (DType dt : {DType::BF16, DType::F32}) {
      auto oc = make_cache(1, 2, 40, 64, dt, Layout::THD, 77, 6.0f);
      oc.cache.meta.rope_theta = {10000.0};
      oc.cache.meta.rope_style = RopeStyle::gptj;
      Plan p = Plan::uniform(1, 40, Tier::INT2);
      p.quant.int2 = true;
      p.quant.key_transform = kt;
      p.k_tiers[3] = Tier::FP16;
      p.k_tiers[7] = Tier::INT4;
      const auto a = encode_bytes(oc.cache, p, 1), b = encode_bytes(oc.cache, p, 4);
      ASSERT_EQ(a, b);
      const auto l = decode_all(a, DType::F32);
      double err = 0, ref = 0;
      for (int h = 0; h < 2; ++h)
        for (int t = 0; t < 40; ++t)
          for (int d = 0; d < 64; ++d) {
            const float x = load(dt, oc.cache.row(0, false, h, t) + size_t(d) * dtype_size(dt));
            const float y = decoded_at(l[0].k, Layout::THD, 2, 40, 64, h, t, d);
            if (t == 3) {
              ASSERT_EQ(dt == DType::F32 ? f16_to_f32(f32_to_f16(x)) : x, y);
            }
            err += double(y - x) * double(y - x);
            ref += double(x) * double(x);
          }
      // 2-bit keys are coarse, but centring keeps them far from noise.
      EXPECT_LT(err / ref, 0.1) << int(kt) << " " << dtype_name(dt);
    }
}

TEST(Int2Container, PlanWithInt2NeedsTheDeclaration) {
  auto oc = make_cache(1, 1, 4, 64);
  Plan p = Plan::uniform(1, 4, Tier::INT8);
  p.k_tiers[2] = Tier::INT2;
  VectorSink sink;
  try {
    encode(oc.cache, p, sink);
    ADD_FAILURE() << "an undeclared INT2 plan was encoded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
  }
  p.quant.int2 = true;
  p.quant.int2_group = 6;  // not a multiple of 4
  EXPECT_THROW(encode(oc.cache, p, sink), Error);
  p.quant.int2_group = 0;  // head_dim
  EXPECT_NO_THROW(encode(oc.cache, p, sink));
}

TEST(Int2Container, FlagOffKeepsFormat10AndFlagOnWrites11) {
  auto oc = make_cache(2, 2, 9, 64);
  Plan p = random_plan(2, 9, 5);
  const auto v10 = encode_bytes(oc.cache, p);
  EXPECT_EQ(u16_at(v10.data() + 10), 0u);
  // LAYR 0's directory: 13 entries, then zero padding to 320 bytes.
  const size_t layr = 128 + size_t(align64(u64_at(v10.data() + 64 + 8)));
  EXPECT_EQ(u64_at(v10.data() + layr + 64 + 13 * 24), 0u);
  p.quant.int2 = true;  // declared, though no token uses it
  const auto v11 = encode_bytes(oc.cache, p);
  EXPECT_EQ(u16_at(v11.data() + 10), 1u);
  EXPECT_GT(v11.size(), v10.size());
  ContainerInfo info;
  const auto a = decode_all(v10), b = decode_all(v11, std::nullopt, &info);
  EXPECT_EQ(info.format_minor, 1u);
  EXPECT_TRUE(info.quant.int2);
  ASSERT_EQ(a.size(), b.size());
  for (size_t l = 0; l < a.size(); ++l) {
    EXPECT_TRUE(a[l].k.data.size() == b[l].k.data.size() &&
                std::memcmp(a[l].k.data.data(), b[l].k.data.data(), a[l].k.data.size()) == 0);
    EXPECT_TRUE(std::memcmp(a[l].v.data.data(), b[l].v.data.data(), a[l].v.data.size()) == 0);
  }
}

// Recomputes the hashes of one LAYR section (at `layr`) and of the file header after an edit.
void rehash_layer(std::vector<std::byte>& b, size_t layr) {
  const uint64_t size = u64_at(b.data() + layr + 8);
  const uint64_t ph = XXH3_64bits(b.data() + layr + 64, size_t(align64(size)));
  std::memcpy(b.data() + layr + 48, &ph, 8);
  const uint64_t hh = XXH3_64bits(b.data() + layr, 56);
  std::memcpy(b.data() + layr + 56, &hh, 8);
}

std::optional<Errc> try_decode(const std::vector<std::byte>& bytes) {
  try {
    decode_all(bytes);
    return std::nullopt;
  } catch (const Error& e) {
    return e.code();
  }
}

TEST(Int2Container, ReaderRefusesInt2CodesWithoutTheDeclaration) {
  auto oc = make_cache(1, 2, 6, 64);
  Plan p = Plan::uniform(1, 6, Tier::FP16);
  auto bytes = encode_bytes(oc.cache, p);
  const size_t layr = 128 + size_t(align64(u64_at(bytes.data() + 64 + 8)));
  bytes[layr + 64 + 320 + 2] = std::byte{4};  // K map, token 2: INT2 in a 1.0 file
  rehash_layer(bytes, layr);
  EXPECT_EQ(try_decode(bytes), Errc::unsupported);
  // A 1.1 file relabelled 1.0 (header checksum fixed) is refused: INT2 needs format 1.1.
  p.quant.int2 = true;
  p.k_tiers[1] = Tier::INT2;
  auto v11 = encode_bytes(oc.cache, p);
  ASSERT_FALSE(try_decode(v11).has_value());
  v11[10] = std::byte{0};
  const uint64_t hh = XXH3_64bits(v11.data(), 56);
  std::memcpy(v11.data() + 56, &hh, 8);
  EXPECT_EQ(try_decode(v11), Errc::format);
  // Codes 5..15 stay reserved in 1.1 files.
  auto v11b = encode_bytes(oc.cache, p);
  const size_t layr11 = 128 + size_t(align64(u64_at(v11b.data() + 64 + 8)));
  v11b[layr11 + 64 + 448 + 0] = std::byte{5};
  rehash_layer(v11b, layr11);
  EXPECT_EQ(try_decode(v11b), Errc::unsupported);
}

// What a 1.0 reader meets in a 1.1 file: it lays 13 streams out after a 320-byte directory, so
// its layout ends 128 bytes (at least) before the section does and it refuses the layer. This
// restates the 1.0 reader's directory walk on a real 1.1 section.
TEST(Int2Container, Format10ReaderLayoutCannotFitA11Section) {
  auto oc = make_cache(1, 2, 6, 64);
  for (uint64_t seed : {1u, 2u, 3u}) {
    Plan p = mixed_plan(1, 6, seed);
    const auto bytes = encode_bytes(oc.cache, p);
    const size_t layr = 128 + size_t(align64(u64_at(bytes.data() + 64 + 8)));
    const uint64_t size = u64_at(bytes.data() + layr + 8);
    const std::byte* dir = bytes.data() + layr + 64;
    uint64_t end = 320;  // a 1.0 reader's view
    for (int s = 0; s < 13; ++s) end = align64(end) + u64_at(dir + 24 * s + 8);
    EXPECT_GE(size, end + 128);
    // And the trailer is longer than the 96 bytes a 1.0 reader requires: FOOT -> INDX -> TRLR.
    const size_t indx = size_t(u64_at(bytes.data() + bytes.size() - 64));
    const size_t trlr = size_t(u64_at(bytes.data() + indx + 64 + 16));
    EXPECT_EQ(u64_at(bytes.data() + trlr + 8), 112u);
    EXPECT_EQ(u64_at(bytes.data() + trlr + 64 + 96), [&] {  // K INT2 count at offset 96
      uint64_t n = 0;
      for (Tier t : p.k_tiers) n += t == Tier::INT2;
      return n;
    }());
  }
}

TEST(Int2Container, SizeModelIsExact) {
  Rng rng(29);
  const int dims[] = {64, 80, 96, 128, 256};
  for (int it = 0; it < 40; ++it) {
    const int L = 1 + rng.below(3), H = 1 + rng.below(3), T = 1 + rng.below(70), D = dims[rng.below(5)];
    auto oc = make_cache(L, H, T, D, DType(rng.below(3)), Layout(rng.below(2)), uint64_t(it) + 500);
    Plan p = mixed_plan(L, T, uint64_t(it) * 7 + 3);
    p.quant.int4_group = D % 32 == 0 ? 32 : 16;
    p.quant.int2_group = std::vector<int>{QuantSettings::kAutoGroup, 0, 8, 16}[size_t(rng.below(4))];
    p.quant.key_transform = rng.below(2) ? KeyTransform::centre : KeyTransform::none;
    const SizeModel m = size_model(oc.cache, p.quant, p.policy, p.requested_budget);
    EncodeResult er;
    const auto bytes = encode_bytes(oc.cache, p, 1, &er);
    const int g8 = D, g4 = p.quant.int4_group, g2 = er.info.quant.int2_group;
    uint64_t slack = 0;
    for (int l = 0; l < L; ++l)
      for (int kv = 0; kv < 2; ++kv) {
        uint64_t n[5] = {};
        for (int t = 0; t < T; ++t) ++n[size_t(kv ? p.v(l, t) : p.k(l, t))];
        const uint64_t h = uint64_t(H), d = uint64_t(D);
        const uint64_t sizes[7] = {h * n[0] * 2 * d,     h * n[1] * d, h * n[1] * 2 * (d / uint64_t(g8)),
                                   h * n[2] * d / 2,     h * n[2] * 4 * (d / uint64_t(g4)),
                                   h * n[4] * d / 4,     h * n[4] * 4 * (d / uint64_t(g2))};
        for (uint64_t s : sizes) slack += 63 - (align64(s) - s);
      }
    ASSERT_EQ(m.max_padding_slack, uint64_t(L) * 63 * 14);
    ASSERT_LE(slack, m.max_padding_slack);
    ASSERT_EQ(bytes.size(), m.bound(p) - slack) << "iteration " << it;
    ASSERT_EQ(m.token_bytes[size_t(Tier::INT2)], uint64_t(H) * (uint64_t(D) / 4 + 4 * (uint64_t(D) / uint64_t(g2))));
    ASSERT_EQ(m.token_bytes[size_t(Tier::DROP)], 0u);
    // Where the bytes went: values and parameters of every tier.
    uint64_t payload = 0, scales = 0;
    for (int kv = 0; kv < 2; ++kv) {
      const auto& c = kv ? er.info.tiers.v : er.info.tiers.k;
      payload += uint64_t(H) * (c[0] * 2 * uint64_t(D) + c[1] * uint64_t(D) + c[2] * uint64_t(D) / 2 + c[4] * uint64_t(D) / 4);
      scales += uint64_t(H) * (c[1] * 2 * (uint64_t(D) / uint64_t(g8)) + c[2] * 4 * (uint64_t(D) / uint64_t(g4)) +
                               c[4] * 4 * (uint64_t(D) / uint64_t(g2)));
    }
    EXPECT_EQ(er.bytes.payload, payload);
    EXPECT_EQ(er.bytes.scales, scales);
    SpanSource src(bytes);
    ContainerReader r(src, "t");
    DecodedLayer dl;
    while (r.next_layer(dl, std::nullopt, true)) {}
    EXPECT_EQ(r.breakdown().payload, payload);
    EXPECT_EQ(r.breakdown().scales, scales);
    EXPECT_EQ(r.breakdown().total, bytes.size());
  }
}

TEST(Int2Container, LayerStreamsCarryTheInt2Streams) {
  auto oc = make_cache(2, 2, 11, 64);
  Plan p = mixed_plan(2, 11, 8);
  p.quant.int2_group = 16;
  p.quant.zstd_level = 3;
  const auto bytes = encode_bytes(oc.cache, p);
  SpanSource src(bytes);
  ContainerReader r(src, "t");
  LayerStreams ls;
  int l = 0;
  for (; r.next_layer_streams(ls); ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const uint64_t n = (kv ? ls.tiers.v : ls.tiers.k)[size_t(Tier::INT2)];
      EXPECT_EQ(ls.streams[size_t(13 + 2 * kv)].size(), 2 * n * 16);
      EXPECT_EQ(ls.streams[size_t(14 + 2 * kv)].size(), 2 * n * 4 * 4);
    }
  }
  EXPECT_EQ(l, 2);
  // Without INT2, streams 13..16 are empty.
  Plan p0 = random_plan(1, 5, 2);
  auto oc0 = make_cache(1, 1, 5, 64);
  const auto b0 = encode_bytes(oc0.cache, p0);
  SpanSource s0(b0);
  ContainerReader r0(s0, "t");
  ASSERT_TRUE(r0.next_layer_streams(ls));
  for (int s = 13; s < kStreamsPerLayer; ++s) EXPECT_TRUE(ls.streams[size_t(s)].empty());
}

TEST(Int2Plan, NominalBudgetCountsInt2AsAnEighth) {
  Plan p = Plan::uniform(1, 4, Tier::INT2);
  EXPECT_DOUBLE_EQ(p.nominal_budget(), 0.125);
  p.k_tiers = {Tier::FP16, Tier::INT8, Tier::INT4, Tier::DROP};
  EXPECT_DOUBLE_EQ(p.nominal_budget(), (1.0 + 0.5 + 0.25 + 0.0 + 4 * 0.125) / 8);
  EXPECT_STREQ(tier_name(Tier::INT2), "int2");
  EXPECT_EQ(kNumTiers, 5);
}

}  // namespace
