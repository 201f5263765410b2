// Sinks that hand out memory (ByteSink::claim): the writer quantizes straight into it, and the
// container must be byte for byte the one written through write(), whatever the alignment of
// the claimed memory, the tiers (all-FP16 layers have a stream copied from the source), the
// dtype, layout, key transform, zstd and thread count.
#include <gtest/gtest.h>

#include "codec_test_util.hpp"
#include "skv/bench.hpp"

using namespace skv;
using namespace skv::test;

namespace {

// Claims from a buffer at a chosen offset from 64-byte alignment; records how often it was asked.
struct OffsetSink final : ByteSink {
  std::vector<std::byte> buf;
  size_t base, used = 0;
  int claims = 0;
  OffsetSink(size_t capacity, size_t offset) : buf(capacity + 128), base(offset) {
    while (reinterpret_cast<uintptr_t>(buf.data() + base) % 64 != offset) ++base;
  }
  std::byte* claim(size_t n) override {
    ++claims;
    if (base + used + n > buf.size()) throw std::runtime_error("OffsetSink full");
    std::byte* p = buf.data() + base + used;
    std::memset(p, 0xa5, n);  // stale bytes: the writer must overwrite every one
    used += n;
    return p;
  }
  void write(const void* src, size_t n) override { std::memcpy(claim(n), src, n); }
  std::vector<std::byte> bytes() const {
    return {buf.begin() + std::ptrdiff_t(base), buf.begin() + std::ptrdiff_t(base + used)};
  }
};

Plan mixed_plan(int L, int T, uint64_t seed) {
  Plan p = random_plan(L, T, seed);
  for (int t = 0; t < T; ++t) p.k_tiers[size_t(t)] = Tier::FP16;  // layer 0 K: all FP16
  return p;
}

void expect_same(const KvCache& c, const Plan& p) {
  for (int threads : {1, 3}) {
    const std::vector<std::byte> want = encode_bytes(c, p, 1);
    EXPECT_EQ(encode_bytes(c, p, threads), want) << "write() only, threads " << threads;
    EncodeOptions o;
    o.threads = threads;
    FixedSink fixed(want.size());
    encode(c, p, fixed, o);
    ASSERT_EQ(fixed.size(), want.size());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), fixed.bytes().begin())) << "threads " << threads;
    for (size_t offset : {size_t(0), size_t(8), size_t(3)}) {
      OffsetSink s(want.size(), offset);
      encode(c, p, s, o);
      EXPECT_GT(s.claims, 0);
      EXPECT_EQ(s.bytes(), want) << "claimed memory at 64k + " << offset << ", threads " << threads;
    }
  }
}

TEST(SinkClaim, SameBytesAsWrite) {
  auto oc = make_cache(3, 2, 40, 64);
  expect_same(oc.cache, mixed_plan(3, 40, 7));
  expect_same(oc.cache, Plan::uniform(3, 40, Tier::INT8));
  expect_same(oc.cache, Plan::uniform(3, 40, Tier::FP16));
}

TEST(SinkClaim, SameBytesAcrossDtypesLayoutsAndOptions) {
  for (DType dt : {DType::BF16, DType::F32}) {
    auto oc = make_cache(2, 3, 17, 80, dt, Layout::THD, 3, 2.0f);
    Plan p = mixed_plan(2, 17, 9);
    p.quant.int4_group = 16;  // head_dim 80
    expect_same(oc.cache, p);
    p.quant.key_transform = KeyTransform::centre;
    expect_same(oc.cache, p);
    p.quant.zstd_level = 3;
    expect_same(oc.cache, p);
  }
}

// One layer: the in-place path seals it without pipelining anything behind it.
TEST(SinkClaim, SingleLayerSingleToken) {
  auto oc = make_cache(1, 1, 1, 96);
  expect_same(oc.cache, Plan::uniform(1, 1, Tier::INT4));
}

}  // namespace
