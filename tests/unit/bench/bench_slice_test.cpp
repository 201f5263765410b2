// Layer slices must code exactly as the whole cache does (skv bench times slices and reports the
// whole container's size), and the bench sinks and zstd coder must behave as documented.
#include <gtest/gtest.h>

#include <cstring>

#include "skv/bench.hpp"
#include "skv/codec.hpp"
#include "skv/error.hpp"
#include "skv/policy.hpp"
#include "skv/synthetic.hpp"

using namespace skv;

namespace {

// Decodes every layer of a container in memory.
std::vector<DecodedLayer> decode_all(std::span<const std::byte> bytes) {
  SpanSource src(bytes);
  ContainerReader r(src, "test");
  std::vector<DecodedLayer> out;
  for (;;) {
    DecodedLayer dl;
    if (!r.next_layer(dl)) break;
    out.push_back(std::move(dl));
  }
  return out;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.data.size() == b.data.size() && std::memcmp(a.data.data(), b.data.data(), a.data.size()) == 0;
}

}  // namespace

TEST(BenchSlice, SlicesDecodeLikeTheWholeContainer) {
  for (KeyTransform kt : {KeyTransform::none, KeyTransform::centre, KeyTransform::prerope_centre}) {
    SyntheticOptions so;
    so.spec = "5x2x64:40";
    so.window = 4;
    SyntheticCache syn = make_synthetic(so);
    PolicyOptions po;
    po.policy = PolicyKind::spectrum;
    po.budget = 0.35;  // forces a mix of tiers, drops included
    po.key_transform = kt;
    const Plan plan = make_plan(syn.cache, po);

    VectorSink whole;
    encode(syn.cache, plan, whole);
    const auto ref = decode_all(whole.bytes);
    ASSERT_EQ(ref.size(), 5u);

    CountingSink count;
    encode(syn.cache, plan, count);
    EXPECT_EQ(count.bytes, whole.bytes.size());

    // Slices of 2, 2 and 1 layers, through one reused fixed sink.
    FixedSink sink(whole.bytes.size() * 2);
    for (int first = 0; first < 5; first += 2) {
      const int n = std::min(2, 5 - first);
      const KvCache sc = slice_layers(syn.cache, first, n);
      const Plan sp = slice_plan(plan, first, n);
      ASSERT_EQ(sc.shape.layers, n);
      ASSERT_EQ(sp.layers, n);
      sink.clear();
      encode(sc, sp, sink);
      const auto got = decode_all(sink.bytes());
      ASSERT_EQ(int(got.size()), n);
      for (int l = 0; l < n; ++l) {
        EXPECT_TRUE(same_bytes(got[size_t(l)].k, ref[size_t(first + l)].k)) << "K layer " << first + l;
        EXPECT_TRUE(same_bytes(got[size_t(l)].v, ref[size_t(first + l)].v)) << "V layer " << first + l;
        ASSERT_EQ(got[size_t(l)].mask.has_value(), ref[size_t(first + l)].mask.has_value());
      }
    }
  }
}

TEST(BenchSlice, RejectsRangesOutsideTheCache) {
  SyntheticOptions so;
  so.spec = "3x1x64:8";
  SyntheticCache syn = make_synthetic(so);
  EXPECT_THROW(slice_layers(syn.cache, 2, 2), Error);
  EXPECT_THROW(slice_layers(syn.cache, -1, 1), Error);
  EXPECT_THROW(slice_layers(syn.cache, 0, 0), Error);
  EXPECT_THROW(slice_plan(Plan::uniform(3, 8, Tier::INT8), 3, 1), Error);
  EXPECT_EQ(slice_plan(Plan::uniform(3, 8, Tier::INT8), 1, 2).k_tiers.size(), 16u);
}

TEST(BenchSinks, FixedSinkNeverGrows) {
  FixedSink s(8);
  const char data[] = "abcdefghij";
  s.write(data, 5);
  s.write(data + 5, 3);
  EXPECT_EQ(s.size(), 8u);
  EXPECT_EQ(std::memcmp(s.bytes().data(), data, 8), 0);
  EXPECT_THROW(s.write(data, 1), Error);
  s.clear();
  s.write(data, 2);
  EXPECT_EQ(s.size(), 2u);
}

TEST(BenchZstd, RoundTripsAndShrinksRedundantBytes) {
  std::vector<std::byte> src(100000);
  for (size_t i = 0; i < src.size(); ++i) src[i] = std::byte(uint8_t((i / 7) % 13));
  for (int threads : {1, 2}) {
    ZstdCoder z(3, threads);
    std::vector<std::byte> comp(ZstdCoder::bound(src.size())), back(src.size());
    const size_t n = z.compress(src, comp);
    EXPECT_LT(n, src.size() / 10);
    z.decompress(std::span<const std::byte>(comp.data(), n), back);
    EXPECT_EQ(back, src);
    std::vector<std::byte> small(src.size() - 1);
    EXPECT_THROW(z.decompress(std::span<const std::byte>(comp.data(), n), small), Error);
  }
  EXPECT_THROW(ZstdCoder(99, 1), Error);
}
