// size_model() must account for every byte of a raw (zstd off) container.
#include <gtest/gtest.h>

#include "codec_test_util.hpp"

using namespace skv;
using namespace skv::test;

namespace {

uint64_t align64(uint64_t n) { return (n + 63) / 64 * 64; }

TEST(SizeModel, ExactOverRandomPlansAndShapes) {
  Rng rng(17);
  const int dims[] = {64, 80, 96, 128, 256};
  for (int it = 0; it < 40; ++it) {
    const int L = 1 + rng.below(3), H = 1 + rng.below(3), T = 1 + rng.below(70), D = dims[rng.below(5)];
    const DType dt = DType(rng.below(3));
    auto oc = make_cache(L, H, T, D, dt, Layout(rng.below(2)), uint64_t(it));
    Plan p = random_plan(L, T, uint64_t(it) * 3 + 1);
    p.quant.int4_group = D % 32 == 0 ? 32 : 16;
    p.quant.int8_group = rng.below(2) ? 0 : 16;
    p.quant.key_transform = rng.below(2) ? KeyTransform::centre : KeyTransform::none;
    p.requested_budget = 0.25 * rng.below(4);
    const SizeModel m = size_model(oc.cache, p.quant, p.policy, p.requested_budget);
    const auto bytes = encode_bytes(oc.cache, p);
    const uint64_t bound = m.bound(p);
    ASSERT_LE(bytes.size(), bound);
    // Recompute the slack from the spec: 63 - padding of each of the 10 tier streams per layer.
    const int g8 = p.quant.int8_group ? p.quant.int8_group : D, g4 = p.quant.int4_group;
    uint64_t slack = 0;
    for (int l = 0; l < L; ++l)
      for (int kv = 0; kv < 2; ++kv) {
        uint64_t n[4] = {};
        for (int t = 0; t < T; ++t) ++n[size_t(kv ? p.v(l, t) : p.k(l, t))];
        const uint64_t h = uint64_t(H), d = uint64_t(D);
        const uint64_t sizes[5] = {h * n[0] * 2 * d, h * n[1] * d, h * n[1] * 2 * (d / g8),
                                   h * n[2] * d / 2, h * n[2] * 4 * (d / g4)};
        for (uint64_t s : sizes) slack += 63 - (align64(s) - s);
      }
    ASSERT_LE(slack, m.max_padding_slack);
    ASSERT_EQ(bytes.size(), bound - slack) << "iteration " << it;
    // Token costs as the spec states them.
    ASSERT_EQ(m.token_bytes[0], uint64_t(H) * 2 * D);
    ASSERT_EQ(m.token_bytes[1], uint64_t(H) * (D + 2 * (D / g8)));
    ASSERT_EQ(m.token_bytes[2], uint64_t(H) * (D / 2 + 4 * (D / g4)));
    ASSERT_EQ(m.token_bytes[3], 0u);
  }
}

TEST(SizeModel, ProducerIsPartOfTheSize) {
  auto oc = make_cache(1, 1, 3, 64);
  Plan p = Plan::uniform(1, 3, Tier::INT8);
  VectorSink sink;
  EncodeOptions o;
  o.producer = std::string(200, 'x');
  encode(oc.cache, p, sink, o);
  const SizeModel m = size_model(oc.cache, p.quant, p.policy, 0, o.producer);
  EXPECT_LE(sink.bytes.size(), m.bound(p));
  EXPECT_GE(sink.bytes.size() + m.max_padding_slack, m.bound(p));
}

}  // namespace
