// Host-only (always run, no GPU): the test suite's CPU restatement of the LAYR format
// (layer_ref.cpp, what the GPU tests compare against) equals the real codec byte for byte, and the
// codec's hooks for an external layer encoder/decoder (the GPU driver's path, with the kernels
// replaced by the reference) reproduce the plain CPU container and decode exactly.
#include <gtest/gtest.h>

#include <cstring>

#include "layer_ref.hpp"
#include "skv/codec.hpp"
#include "skv/error.hpp"
#include "test_cache.hpp"

namespace skv::cuda::test {
namespace {

uint64_t u64_at(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The sweep of the original hand-run check: dtypes x head dims x layouts x key transforms, with
// group sizes, token counts, head counts and tier mixes varied by a running seed.
std::vector<CacheCase> sweep() {
  std::vector<CacheCase> out;
  uint32_t seed = 1;
  const std::vector<std::vector<double>> mixes{{1, 1, 1, 1}, {0, 1, 1, 0}, {6, 1, 1, 0}};
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (int D : {64, 80, 128})
      for (Layout lay : {Layout::HTD, Layout::THD})
        for (int ti = 0; ti < 4; ++ti, ++seed) {
          CacheCase c;
          c.dtype = dt;
          c.head_dim = D;
          c.layout = lay;
          c.transform = ti == 0 ? KeyTransform::none : ti == 1 ? KeyTransform::centre : KeyTransform::prerope_centre;
          c.rope_style = ti == 3 ? RopeStyle::gptj : RopeStyle::neox;
          c.heads = 1 + int(seed % 3);
          c.tokens = std::vector<int>{1, 2, 37, 301}[seed % 4];
          c.int8_group = std::vector<int>{0, 16, D % 5 == 0 ? 5 : 1}[seed % 3];
          c.int4_group = std::vector<int>{0, 16, 2}[(seed / 3) % 3];
          c.tier_odds = mixes[seed % 3];
          c.seed = seed;
          out.push_back(c);
        }
  // The same sweep with INT2 declared (format 1.1: 17 streams), INT2 tokens mixed in.
  const std::vector<std::vector<double>> mixes2{{1, 1, 1, 1, 1}, {0, 0, 0, 0, 1}, {2, 1, 1, 1, 3}};
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (int D : {64, 80, 128})
      for (Layout lay : {Layout::HTD, Layout::THD})
        for (int ti = 0; ti < 4; ++ti, ++seed) {
          CacheCase c;
          c.dtype = dt;
          c.head_dim = D;
          c.layout = lay;
          c.transform = ti == 0 ? KeyTransform::none : ti == 1 ? KeyTransform::centre : KeyTransform::prerope_centre;
          c.rope_style = ti == 3 ? RopeStyle::gptj : RopeStyle::neox;
          c.heads = 1 + int(seed % 3);
          c.tokens = std::vector<int>{1, 2, 37, 301}[seed % 4];
          c.int8_group = std::vector<int>{0, 16, D % 5 == 0 ? 5 : 1}[seed % 3];
          c.int4_group = std::vector<int>{0, 16, 2}[(seed / 3) % 3];
          c.int2 = true;
          c.int2_group = std::vector<int>{QuantSettings::kAutoGroup, 16, 4, 0}[(seed / 2) % 4];
          c.tier_odds = mixes2[seed % 3];
          c.seed = seed;
          out.push_back(c);
        }
  return out;
}

std::string name(const CacheCase& c) {
  return "dtype " + std::string(dtype_name(c.dtype)) + " D " + std::to_string(c.head_dim) + " layout " +
         (c.layout == Layout::HTD ? "htd" : "thd") + " transform " + std::to_string(int(c.transform)) +
         (c.int2 ? " int2 group " + std::to_string(c.int2_group) : std::string()) + " seed " + std::to_string(c.seed);
}

std::vector<std::byte> encode_cpu(const TestCache& tc, const EncodeOptions& opts = {}) {
  VectorSink sink;
  encode(tc.cache, tc.plan, sink, opts);
  return std::move(sink.bytes);
}

// EncodeOptions::layer_streams fed from the reference encoder, as encode_cuda feeds it from the GPU.
EncodeOptions ref_streams(const TestCache& tc, std::vector<uint8_t>& payload, int* calls = nullptr) {
  EncodeOptions o;
  o.layer_streams = [&tc, &payload, calls](int l, LayerStreamViews& streams) {
    if (calls) {
      EXPECT_EQ(l, (*calls)++);
    }
    const LayerPlan p = tc.layer_plan(l);
    ASSERT_TRUE(ref::encode_layer(p, tc.k[size_t(l)].data(), tc.v[size_t(l)].data(),
                                  tc.k_tiers[size_t(l)].data(), tc.v_tiers[size_t(l)].data(),
                                  tc.rope.data(), payload));
    streams = split_streams(p, payload);
  };
  return o;
}

TEST(RefVsCodec, LayerPayloadsEqualTheWritersSections) {
  for (const CacheCase& c : sweep()) {
    const TestCache tc(c);
    const std::vector<std::byte> file = encode_cpu(tc);
    // File header, then MANI; each section is a 64-byte header and its payload padded to 64.
    uint64_t pos = 64;
    pos += 64 + (u64_at(file.data() + pos + 8) + 63) / 64 * 64;
    for (int l = 0; l < c.layers; ++l) {
      const uint64_t size = u64_at(file.data() + pos + 8);
      std::vector<uint8_t> ref;
      ASSERT_TRUE(ref::encode_layer(tc.layer_plan(l), tc.k[size_t(l)].data(), tc.v[size_t(l)].data(),
                                    tc.k_tiers[size_t(l)].data(), tc.v_tiers[size_t(l)].data(),
                                    tc.rope.data(), ref))
          << name(c);
      ASSERT_EQ(size, ref.size()) << name(c) << " layer " << l;
      EXPECT_EQ(std::memcmp(file.data() + pos + 64, ref.data(), ref.size()), 0) << name(c) << " layer " << l;
      pos += 64 + (size + 63) / 64 * 64;
    }
  }
}

TEST(RefVsCodec, ReferenceDecodeEqualsTheReader) {
  for (const CacheCase& c : sweep()) {
    const TestCache tc(c);
    const std::vector<std::byte> file = encode_cpu(tc);
    for (DType od : {DType::F16, DType::BF16, DType::F32}) {
      SpanSource src(file);
      ContainerReader rd(src, "test");
      DecodedLayer out;
      for (int l = 0; rd.next_layer(out, od); ++l) {
        const LayerPlan p = tc.layer_plan(l);
        std::vector<uint8_t> ref;
        ref::encode_layer(p, tc.k[size_t(l)].data(), tc.v[size_t(l)].data(), tc.k_tiers[size_t(l)].data(),
                          tc.v_tiers[size_t(l)].data(), tc.rope.data(), ref);
        const size_t n = size_t(c.heads) * size_t(c.tokens) * size_t(c.head_dim) * dtype_size(od);
        std::vector<uint8_t> k(n), v(n), m(size_t(c.tokens));
        ref::decode_layer(p, ref.data(), tc.rope.data(), od, k.data(), v.data(), m.data());
        ASSERT_EQ(out.k.data.size(), n);
        EXPECT_EQ(std::memcmp(out.k.data.data(), k.data(), n), 0) << name(c) << " layer " << l;
        EXPECT_EQ(std::memcmp(out.v.data.data(), v.data(), n), 0) << name(c) << " layer " << l;
        ASSERT_EQ(out.mask.has_value(), rd.info().has_drops) << name(c);
        if (out.mask) {
          EXPECT_EQ(std::memcmp(out.mask->data.data(), m.data(), m.size()), 0) << name(c);
        }
      }
    }
  }
}

TEST(EncodeHook, ExternalStreamsGiveTheCpuContainer) {
  for (CacheCase c : sweep()) {
    if (c.seed % 3 != 0) continue;  // a third of the sweep, each with zstd off and on
    for (int level : {0, 3}) {
      c.zstd_level = level;
      const TestCache tc(c);
      std::vector<uint8_t> payload;
      int calls = 0;
      const std::vector<std::byte> want = encode_cpu(tc);
      const std::vector<std::byte> got = encode_cpu(tc, ref_streams(tc, payload, &calls));
      EXPECT_TRUE(want == got) << name(c) << " zstd " << level;
      EXPECT_EQ(calls, c.layers);
    }
  }
}

TEST(EncodeHook, RejectsStreamsThatDisagreeWithThePlan) {
  CacheCase c;
  c.tier_odds = {1, 1, 1, 0};
  const TestCache tc(c);
  std::vector<uint8_t> payload;
  EncodeOptions o = ref_streams(tc, payload);
  VectorSink sink;
  EncodeOptions short_stream = o;
  short_stream.layer_streams = [&](int l, LayerStreamViews& s) {
    o.layer_streams(l, s);
    constexpr size_t q8 = size_t(kKTierBase) + size_t(kInt8Values);
    s[q8] = s[q8].first(s[q8].size() - 1);
  };
  EXPECT_THROW(encode(tc.cache, tc.plan, sink, short_stream), Error);
  // A tier map that is not the plan's (same counts, swapped tokens) is refused too.
  std::vector<uint8_t> swapped;
  EncodeOptions other_map = o;
  other_map.layer_streams = [&](int l, LayerStreamViews& s) {
    o.layer_streams(l, s);
    swapped.assign(s[kKMap].begin(), s[kKMap].end());
    for (size_t t = 1; t < swapped.size(); ++t)
      if (swapped[t] != swapped[0]) {
        std::swap(swapped[0], swapped[t]);
        break;
      }
    s[kKMap] = swapped;
  };
  try {
    encode(tc.cache, tc.plan, sink, other_map);
    ADD_FAILURE() << "a foreign tier map was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("tier map"), std::string::npos) << e.what();
  }
}

TEST(DecodeHook, RawStreamsRebuildThePayloadAndDecodeLikeTheReader) {
  for (CacheCase c : sweep()) {
    if (c.seed % 3 != 1) continue;
    for (int level : {0, 3}) {
      c.zstd_level = level;
      const TestCache tc(c);
      const std::vector<std::byte> file = encode_cpu(tc);
      SpanSource a(file), b(file);
      ContainerReader streams_reader(a, "test"), plain_reader(b, "test");
      const ContainerInfo& info = streams_reader.info();
      const LayerGeometry g = make_geometry(info.shape, info.layout, info.quant, info.rope.rope_style, "test");
      LayerStreams ls;
      DecodedLayer out;
      int l = 0;
      for (; streams_reader.next_layer_streams(ls); ++l) {
        ASSERT_TRUE(plain_reader.next_layer(out));
        EXPECT_EQ(ls.index, l);
        EXPECT_EQ(ls.k_shape, out.k.shape);
        EXPECT_EQ(ls.v_shape, out.v.shape);
        EXPECT_EQ(ls.tiers.k, out.tiers.k);
        const LayerPlan p = plan_layer(g, ls.streams[kKMap].data(), ls.streams[kVMap].data(), "test");
        std::vector<uint8_t> payload(p.payload_bytes);
        join_streams(p, ls.streams, payload.data());
        std::vector<uint8_t> ref;
        ref::encode_layer(tc.layer_plan(l), tc.k[size_t(l)].data(), tc.v[size_t(l)].data(),
                          tc.k_tiers[size_t(l)].data(), tc.v_tiers[size_t(l)].data(), tc.rope.data(), ref);
        EXPECT_TRUE(payload == ref) << name(c) << " layer " << l;
        std::vector<uint8_t> k(out.k.data.size()), v(k.size()), m(size_t(c.tokens));
        ref::decode_layer(p, payload.data(), tc.rope.data(), info.shape.dtype, k.data(), v.data(), m.data());
        EXPECT_EQ(std::memcmp(out.k.data.data(), k.data(), k.size()), 0) << name(c);
        EXPECT_EQ(std::memcmp(out.v.data.data(), v.data(), v.size()), 0) << name(c);
      }
      EXPECT_EQ(l, c.layers);
      EXPECT_FALSE(plain_reader.next_layer(out));
      EXPECT_EQ(streams_reader.info().tiers.k, plain_reader.info().tiers.k);  // trailer verified
    }
  }
}

TEST(JoinStreams, InvertsSplitStreamsAndChecksSizes) {
  CacheCase c;
  c.transform = KeyTransform::centre;
  const TestCache tc(c);
  const LayerPlan p = tc.layer_plan(0);
  std::vector<uint8_t> ref;
  ref::encode_layer(p, tc.k[0].data(), tc.v[0].data(), tc.k_tiers[0].data(), tc.v_tiers[0].data(), nullptr, ref);
  std::vector<uint8_t> joined(p.payload_bytes, 0xcd);
  auto s = split_streams(p, ref);
  join_streams(p, s, joined.data());
  EXPECT_TRUE(joined == ref);
  s[kKCentre] = s[kKCentre].first(8);
  EXPECT_THROW(join_streams(p, s, joined.data()), Error);
}

}  // namespace
}  // namespace skv::cuda::test
