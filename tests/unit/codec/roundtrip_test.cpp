// Encode -> decode round trips over tiers, dtypes, layouts, shapes and options.
#include <gtest/gtest.h>

#include <cmath>

#include "codec_test_util.hpp"
#include "skv/error.hpp"
#include "skv/quant.hpp"

using namespace skv;
using namespace skv::test;

namespace {

// Source row (l, kv, h, t) as f32.
std::vector<float> src_row(const KvCache& c, int l, int kv, int h, int t) {
  std::vector<float> x(static_cast<size_t>(c.shape.head_dim));
  const std::byte* p = c.row(l, kv == 1, h, t);
  for (int d = 0; d < c.shape.head_dim; ++d) x[size_t(d)] = load(c.shape.dtype, p + size_t(d) * dtype_size(c.shape.dtype));
  return x;
}

// Checks every decoded element against the plan: FP16 exact (or f16-rounded for F32 sources),
// INT8/INT4 within the reference error bound per group, DROP zero; and the mask.
void check_decoded(const KvCache& c, const Plan& p, const std::vector<DecodedLayer>& dec, int g8, int g4) {
  const int H = c.shape.kv_heads, T = c.shape.tokens, D = c.shape.head_dim;
  ASSERT_EQ(dec.size(), size_t(c.shape.layers));
  for (int l = 0; l < c.shape.layers; ++l) {
    bool any_drop = false;
    for (int kv = 0; kv < 2; ++kv) {
      const Tensor& out = kv ? dec[size_t(l)].v : dec[size_t(l)].k;
      ASSERT_EQ(out.shape, (kv ? c.layers[size_t(l)].v : c.layers[size_t(l)].k).shape);
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t) {
          const Tier tier = kv ? p.v(l, t) : p.k(l, t);
          any_drop = any_drop || tier == Tier::DROP;
          const auto x = src_row(c, l, kv, h, t);
          const int g = tier == Tier::INT8 ? g8 : g4;
          for (int d0 = 0; d0 < D; d0 += (tier == Tier::INT8 || tier == Tier::INT4) ? g : D) {
            const int n = (tier == Tier::INT8 || tier == Tier::INT4) ? g : D;
            float bound = 0;
            if (tier == Tier::INT8) bound = quant::q8_error_bound(x.data() + d0, size_t(n));
            if (tier == Tier::INT4) bound = quant::q4_error_bound(x.data() + d0, size_t(n));
            for (int d = d0; d < d0 + n; ++d) {
              const float y = decoded_at(out, c.layout, H, T, D, h, t, d);
              const float xv = x[size_t(d)];
              if (tier == Tier::DROP) {
                ASSERT_EQ(y, 0.0f);
              } else if (tier == Tier::FP16) {
                const float want = c.shape.dtype == DType::F32 ? f16_to_f32(f32_to_f16(xv)) : xv;
                ASSERT_EQ(y, want) << "l" << l << " kv" << kv << " h" << h << " t" << t << " d" << d;
              } else {
                ASSERT_LE(std::fabs(y - xv), bound) << tier_name(tier) << " l" << l << " h" << h << " t" << t << " d" << d;
              }
            }
          }
        }
    }
    const auto& mask = dec[size_t(l)].mask;
    ASSERT_EQ(mask.has_value(), any_drop);
    for (int t = 0; mask && t < T; ++t)
      EXPECT_EQ(mask->as<uint8_t>()[t], p.k(l, t) != Tier::DROP && p.v(l, t) != Tier::DROP);
  }
}

TEST(RoundTrip, SixteenBitTiersAreBitExact) {
  for (DType dt : {DType::F16, DType::BF16})
    for (Layout lay : {Layout::HTD, Layout::THD}) {
      auto oc = make_cache(2, 3, 17, 64, dt, lay, 5);
      const auto bytes = encode_bytes(oc.cache, Plan::uniform(2, 17, Tier::FP16));
      const auto dec = decode_all(bytes);
      for (int l = 0; l < 2; ++l) {
        EXPECT_EQ(dec[size_t(l)].k.dtype, dt);
        EXPECT_EQ(0, std::memcmp(dec[size_t(l)].k.data.data(), oc.cache.layers[size_t(l)].k.bytes.data(),
                                 oc.cache.layers[size_t(l)].k.bytes.size()));
        EXPECT_EQ(0, std::memcmp(dec[size_t(l)].v.data.data(), oc.cache.layers[size_t(l)].v.bytes.data(),
                                 oc.cache.layers[size_t(l)].v.bytes.size()));
        EXPECT_FALSE(dec[size_t(l)].mask.has_value());
      }
    }
}

struct ShapeCase { int D, g8, g4; DType dt; Layout lay; };

TEST(RoundTrip, MixedTiersWithinErrorBoundsOverShapes) {
  const ShapeCase cases[] = {
      {64, 0, 32, DType::F16, Layout::HTD},   {80, 16, 16, DType::BF16, Layout::THD},
      {96, 32, 32, DType::F32, Layout::HTD},  {128, 64, 64, DType::F16, Layout::THD},
      {256, 0, 0, DType::BF16, Layout::HTD},  {72, 24, 8, DType::F16, Layout::HTD},
      {6, 3, 2, DType::F32, Layout::THD},     {128, 32, 128, DType::F16, Layout::HTD}};
  uint64_t seed = 11;
  for (const auto& sc : cases) {
    auto oc = make_cache(3, 2, 9, sc.D, sc.dt, sc.lay, seed);
    Plan p = random_plan(3, 9, seed++);
    p.quant.int8_group = sc.g8;
    p.quant.int4_group = sc.g4;
    const auto dec = decode_all(encode_bytes(oc.cache, p), DType::F32);
    SCOPED_TRACE("D=" + std::to_string(sc.D) + " dtype=" + std::string(dtype_name(sc.dt)));
    check_decoded(oc.cache, p, dec, sc.g8 ? sc.g8 : sc.D, sc.g4 ? sc.g4 : sc.D);
  }
}

TEST(RoundTrip, OneTokenAndDefaultDtype) {
  auto oc = make_cache(1, 1, 1, 64, DType::F16);
  for (Tier t : {Tier::FP16, Tier::INT8, Tier::INT4, Tier::DROP}) {
    const auto dec = decode_all(encode_bytes(oc.cache, Plan::uniform(1, 1, t)));
    ASSERT_EQ(dec.size(), 1u);
    EXPECT_EQ(dec[0].k.dtype, DType::F16);
    EXPECT_EQ(dec[0].mask.has_value(), t == Tier::DROP);
  }
}

TEST(RoundTrip, RequestedOutputDtypes) {
  auto oc = make_cache(1, 2, 5, 64, DType::BF16);
  const Plan p = random_plan(1, 5, 3);
  const auto bytes = encode_bytes(oc.cache, p);
  const auto f32 = decode_all(bytes, DType::F32);
  for (DType dt : {DType::F16, DType::BF16}) {
    const auto dec = decode_all(bytes, dt);
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < 5; ++t)
        for (int d = 0; d < 64; ++d) {
          const float want = decoded_at(f32[0].k, Layout::HTD, 2, 5, 64, h, t, d);
          const float rounded = dt == DType::F16 ? f16_to_f32(f32_to_f16(want)) : bf16_to_f32(f32_to_bf16(want));
          ASSERT_EQ(decoded_at(dec[0].k, Layout::HTD, 2, 5, 64, h, t, d), rounded);
        }
  }
  SpanSource src(bytes);
  ContainerReader r(src, "x");
  DecodedLayer d;
  EXPECT_THROW(r.next_layer(d, DType::I32), Error);
}

// Mean |error| of keys, for comparing transforms.
double key_error(const KvCache& c, const std::vector<DecodedLayer>& dec) {
  double e = 0;
  size_t n = 0;
  for (int l = 0; l < c.shape.layers; ++l)
    for (int h = 0; h < c.shape.kv_heads; ++h)
      for (int t = 0; t < c.shape.tokens; ++t) {
        const auto x = src_row(c, l, 0, h, t);
        for (int d = 0; d < c.shape.head_dim; ++d, ++n)
          e += std::fabs(decoded_at(dec[size_t(l)].k, c.layout, c.shape.kv_heads, c.shape.tokens,
                                    c.shape.head_dim, h, t, d) - x[size_t(d)]);
      }
  return e / double(n);
}

TEST(KeyTransform, CentreLowersInt4ErrorOnOffsetKeys) {
  auto oc = make_cache(2, 2, 40, 64, DType::F16, Layout::HTD, 9, /*key_offset=*/40.0f);
  Plan p = Plan::uniform(2, 40, Tier::INT4);
  const double plain = key_error(oc.cache, decode_all(encode_bytes(oc.cache, p), DType::F32));
  p.quant.key_transform = KeyTransform::centre;
  ContainerInfo info;
  const auto dec = decode_all(encode_bytes(oc.cache, p), DType::F32, &info);
  EXPECT_EQ(info.quant.key_transform, KeyTransform::centre);
  const double centred = key_error(oc.cache, dec);
  EXPECT_LT(centred * 3, plain) << "plain " << plain << " centred " << centred;
}

TEST(KeyTransform, CentredValuesStayWithinBoundOfCentredGroups) {
  auto oc = make_cache(1, 2, 12, 64, DType::F32, Layout::THD, 4, 10.0f);
  Plan p = random_plan(1, 12, 8, false);
  p.quant.key_transform = KeyTransform::centre;
  const auto dec = decode_all(encode_bytes(oc.cache, p), DType::F32);
  // Recompute the centre as the spec says, then bound the error of x - c, plus the rounding of + c.
  for (int h = 0; h < 2; ++h) {
    std::vector<double> acc(64, 0.0);
    int count = 0;
    for (int t = 0; t < 12; ++t) count += p.k(0, t) == Tier::INT8 || p.k(0, t) == Tier::INT4;
    for (int t = 0; t < 12; ++t)
      if (p.k(0, t) == Tier::INT8 || p.k(0, t) == Tier::INT4) {
        const auto x = src_row(oc.cache, 0, 0, h, t);
        for (int d = 0; d < 64; ++d) acc[size_t(d)] += double(x[size_t(d)]) / double(count);
      }
    for (int t = 0; t < 12; ++t) {
      const Tier tier = p.k(0, t);
      if (tier != Tier::INT8 && tier != Tier::INT4) continue;
      auto x = src_row(oc.cache, 0, 0, h, t);
      std::vector<float> xc(64);
      for (int d = 0; d < 64; ++d) xc[size_t(d)] = x[size_t(d)] - float(acc[size_t(d)]);
      const int g = tier == Tier::INT8 ? 64 : 32;
      for (int d0 = 0; d0 < 64; d0 += g) {
        const float b = tier == Tier::INT8 ? quant::q8_error_bound(xc.data() + d0, size_t(g))
                                           : quant::q4_error_bound(xc.data() + d0, size_t(g));
        for (int d = d0; d < d0 + g; ++d) {
          const float y = decoded_at(dec[0].k, Layout::THD, 2, 12, 64, h, t, d);
          ASSERT_LE(std::fabs(y - x[size_t(d)]), b + std::fabs(x[size_t(d)]) * 1e-6f);
        }
      }
    }
  }
}

// Keys that are RoPE(k_pre) with a large per-channel offset in k_pre: prerope centring must
// reconstruct them well, and better than plain INT4.
TEST(KeyTransform, PreRopeCentreRoundTrip) {
  for (RopeStyle style : {RopeStyle::neox, RopeStyle::gptj}) {
    const int H = 2, T = 48, D = 64;
    auto oc = make_cache(1, H, T, D, DType::F32, Layout::HTD, 21, 0.0f);
    KvCache& c = oc.cache;
    c.meta.rope_theta = {10000.0};
    c.meta.rope_style = style;
    c.meta.position_offset = 7;
    Rng rng(5);
    std::vector<float> off(static_cast<size_t>(D));
    for (float& o : off) o = 30.0f * (rng.uniform() * 2 - 1);
    auto* k = reinterpret_cast<float*>(oc.bufs[0]->data());
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        float* row = k + (size_t(h) * T + size_t(t)) * D;
        for (int d = 0; d < D; ++d) row[d] += off[size_t(d)];
        for (int j = 0; j < D / 2; ++j) {  // rotate in double
          const int a = style == RopeStyle::neox ? j : 2 * j, b = style == RopeStyle::neox ? j + D / 2 : 2 * j + 1;
          const double ang = double(7 + t) / std::pow(10000.0, double(2 * j) / D);
          const double x0 = row[a], x1 = row[b];
          row[a] = float(x0 * std::cos(ang) - x1 * std::sin(ang));
          row[b] = float(x0 * std::sin(ang) + x1 * std::cos(ang));
        }
      }
    Plan p = Plan::uniform(1, T, Tier::INT4);
    const double plain = key_error(c, decode_all(encode_bytes(c, p), DType::F32));
    p.quant.key_transform = KeyTransform::prerope_centre;
    ContainerInfo info;
    const auto dec = decode_all(encode_bytes(c, p), DType::F32, &info);
    EXPECT_EQ(info.rope.rope_theta, std::vector<double>{10000.0});
    EXPECT_EQ(info.rope.rope_style, style);
    EXPECT_EQ(info.rope.position_offset, 7);
    const double pre = key_error(c, dec);
    EXPECT_LT(pre * 3, plain) << "plain " << plain << " prerope " << pre;
    p = Plan::uniform(1, T, Tier::INT8);
    p.quant.key_transform = KeyTransform::prerope_centre;
    EXPECT_LT(key_error(c, decode_all(encode_bytes(c, p), DType::F32)), 0.05);
  }
}

TEST(KeyTransform, PreRopeWithoutRopeParamsIsInvalidArgument) {
  auto oc = make_cache(1, 1, 4, 64);
  Plan p = Plan::uniform(1, 4, Tier::INT8);
  p.quant.key_transform = KeyTransform::prerope_centre;
  try {
    encode_bytes(oc.cache, p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
  }
}

TEST(Encode, RejectsBadPlansAndNonFiniteQuantizedTokens) {
  auto oc = make_cache(1, 1, 4, 64, DType::F32);
  auto expect_code = [&](const Plan& p, Errc code) {
    try {
      encode_bytes(oc.cache, p);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
    }
  };
  expect_code(Plan::uniform(2, 4, Tier::FP16), Errc::invalid_argument);
  Plan p = Plan::uniform(1, 4, Tier::INT4);
  p.quant.int4_group = 48;
  expect_code(p, Errc::invalid_argument);
  p = Plan::uniform(1, 4, Tier::INT8);
  p.k_tiers[1] = Tier(9);
  expect_code(p, Errc::invalid_argument);
  reinterpret_cast<float*>(oc.bufs[0]->data())[64 + 3] = NAN;  // token 1 of K
  expect_code(Plan::uniform(1, 4, Tier::INT8), Errc::format);
  p = Plan::uniform(1, 4, Tier::INT8);
  p.k_tiers[1] = Tier::FP16;  // NaN is fine at FP16
  EXPECT_NO_THROW(encode_bytes(oc.cache, p));
}

TEST(Encode, ZstdChangesBytesNotDecodedOutput) {
  auto oc = make_cache(2, 2, 33, 64, DType::BF16, Layout::THD, 2);
  Plan p = random_plan(2, 33, 2);
  const auto raw = encode_bytes(oc.cache, p);
  p.quant.zstd_level = 5;
  EncodeResult res;
  const auto z = encode_bytes(oc.cache, p, 1, &res);
  EXPECT_LT(z.size(), raw.size());  // BF16 exponents compress
  EXPECT_EQ(res.info.raw_bytes, raw.size());
  const auto a = decode_all(raw), b = decode_all(z);
  for (size_t l = 0; l < a.size(); ++l) {
    EXPECT_EQ(0, std::memcmp(a[l].k.data.data(), b[l].k.data.data(), a[l].k.data.size()));
    EXPECT_EQ(0, std::memcmp(a[l].v.data.data(), b[l].v.data.data(), a[l].v.data.size()));
  }
}

TEST(Encode, ThreadCountDoesNotChangeBytes) {
  auto oc = make_cache(3, 4, 21, 80, DType::F16, Layout::HTD, 6, 5.0f);
  Plan p = random_plan(3, 21, 6);
  p.quant.int4_group = 16;
  p.quant.key_transform = KeyTransform::centre;
  const auto one = encode_bytes(oc.cache, p, 1);
  for (int th : {2, 3, 0}) EXPECT_EQ(one, encode_bytes(oc.cache, p, th)) << th;
  p.quant.zstd_level = 3;
  EXPECT_EQ(encode_bytes(oc.cache, p, 1), encode_bytes(oc.cache, p, 4));
  const auto a = decode_all(one, std::nullopt, nullptr, 1), b = decode_all(one, std::nullopt, nullptr, 3);
  for (size_t l = 0; l < a.size(); ++l)
    EXPECT_EQ(0, std::memcmp(a[l].k.data.data(), b[l].k.data.data(), a[l].k.data.size()));
}

TEST(Container, InfoNamesMetadataAndBreakdown) {
  auto oc = make_cache(2, 2, 10, 64, DType::F16, Layout::THD, 3);
  oc.cache.layers[1].k_name = "past_key_values.1.key";
  oc.cache.layers[1].mask_name = "my.mask";
  Plan p = random_plan(2, 10, 4);
  p.policy = "test-policy";
  p.requested_budget = 0.37;
  EncodeResult res;
  const auto bytes = encode_bytes(oc.cache, p, 1, &res);
  SpanSource src(bytes);
  ContainerReader r(src, "t.skv");
  const ContainerInfo& info = r.info();
  EXPECT_EQ(info.format_version, 1u);
  EXPECT_EQ(info.shape.tokens, 10);
  EXPECT_EQ(info.layout, Layout::THD);
  EXPECT_EQ(info.metadata, oc.cache.metadata);
  EXPECT_EQ(info.k_names[1], "past_key_values.1.key");
  EXPECT_EQ(info.mask_names[0], "layers.0.mask");
  EXPECT_EQ(info.mask_names[1], "my.mask");
  EXPECT_EQ(info.policy, "test-policy");
  EXPECT_EQ(info.requested_budget, 0.37);
  EXPECT_EQ(info.quant.int8_group, 64);
  DecodedLayer d;
  while (r.next_layer(d, std::nullopt, /*skip=*/true)) {}
  const ContainerInfo& fin = r.info();
  EXPECT_EQ(fin.total_bytes, bytes.size());
  EXPECT_DOUBLE_EQ(fin.achieved_budget, double(bytes.size()) / double(oc.cache.shape.fp16_bytes()));
  EXPECT_DOUBLE_EQ(fin.nominal_budget, p.nominal_budget());
  uint64_t kd = 0;
  for (Tier t : p.k_tiers) kd += t == Tier::DROP;
  EXPECT_EQ(fin.tiers.k[3], kd);
  const ByteBreakdown a = res.bytes, b = r.breakdown();
  EXPECT_EQ(a.total, bytes.size());
  EXPECT_EQ(a.header + a.manifest + a.tier_maps + a.payload + a.scales + a.centres + a.index + a.padding, a.total);
  EXPECT_EQ(a.payload, b.payload);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.header, b.header);
  EXPECT_EQ(a.padding, b.padding);
}

// A source that hands out a few bytes per read, like a pipe.
struct TrickleSource final : ByteSource {
  const std::vector<std::byte>& b;
  size_t pos = 0;
  explicit TrickleSource(const std::vector<std::byte>& v) : b(v) {}
  size_t read(void* dst, size_t n) override {
    const size_t k = std::min({n, size_t(7), b.size() - pos});
    std::memcpy(dst, b.data() + pos, k);
    pos += k;
    return k;
  }
};

TEST(Container, ReadsFromShortReads) {
  auto oc = make_cache(2, 1, 6, 64);
  const auto bytes = encode_bytes(oc.cache, random_plan(2, 6, 1));
  TrickleSource src(bytes);
  ContainerReader r(src, "pipe");
  DecodedLayer d;
  int n = 0;
  while (r.next_layer(d)) ++n;
  EXPECT_EQ(n, 2);
  EXPECT_FALSE(r.next_layer(d));
}

}  // namespace

// Regression: with every token dropped the zero centres compress far below their raw size, and
// a zstd stream may then decode past the section's own size.
TEST(Encode, AllDroppedWithCentresAndZstdDecodes) {
  auto oc = make_cache(2, 4, 64, 128, DType::F16, Layout::HTD, 9, 3.0f);
  Plan p = Plan::uniform(2, 64, Tier::DROP);
  p.quant.key_transform = KeyTransform::centre;
  p.quant.zstd_level = 3;
  const auto bytes = encode_bytes(oc.cache, p);
  const auto layers = decode_all(bytes);
  ASSERT_EQ(layers.size(), 2u);
  for (const auto& l : layers) {
    ASSERT_TRUE(l.mask.has_value());
    for (int t = 0; t < 64; ++t) EXPECT_EQ(l.mask->as<uint8_t>()[t], 0);
    for (size_t i = 0; i < l.k.data.size(); ++i) ASSERT_EQ(l.k.data.data()[i], std::byte{0});
  }
}

// The layer_done hook fires once per layer, in order, after the layer is written.
TEST(Encode, LayerDoneCallbackFiresPerLayer) {
  auto oc = make_cache(3, 2, 16, 64);
  std::vector<int> seen;
  VectorSink sink;
  EncodeOptions eo;
  eo.threads = 1;
  eo.layer_done = [&](int l) {
    seen.push_back(l);
    EXPECT_GT(sink.bytes.size(), 0u);
  };
  encode(oc.cache, Plan::uniform(3, 16, Tier::INT8), sink, eo);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2}));
}
