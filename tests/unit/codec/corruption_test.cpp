// Every byte of a container is covered by a checksum: any single-byte change, and any
// truncation, must raise skv::Error (never crash, hang, or decode something else).
#include <gtest/gtest.h>

#include "codec_test_util.hpp"
#include "skv/error.hpp"

using namespace skv;
using namespace skv::test;

namespace {

std::vector<std::byte> small_container(int zstd, bool int2 = false) {
  static auto oc = [] {
    auto c = make_cache(2, 2, 5, 64, DType::F16, Layout::HTD, 3, 4.0f);
    c.cache.meta.rope_theta = {10000.0};
    c.cache.meta.rope_style = RopeStyle::neox;
    return c;
  }();
  Plan p = random_plan(2, 5, 12);
  p.quant.key_transform = KeyTransform::prerope_centre;
  p.quant.zstd_level = zstd;
  if (int2) {  // format 1.1: 17 streams, the longer trailer, INT2 tokens among the others
    p.quant.int2 = true;
    for (size_t i = 0; i < p.k_tiers.size(); i += 3) p.k_tiers[i] = Tier::INT2;
    for (size_t i = 1; i < p.v_tiers.size(); i += 3) p.v_tiers[i] = Tier::INT2;
  }
  return encode_bytes(oc.cache, p);
}

// Decodes everything; returns the error code, or nullopt when it decoded.
std::optional<Errc> try_decode(std::span<const std::byte> bytes) {
  try {
    SpanSource src(bytes);
    ContainerReader r(src, "corrupt.skv");
    r.set_threads(1);
    DecodedLayer d;
    while (r.next_layer(d)) {}
    return std::nullopt;
  } catch (const Error& e) {
    return e.code();
  }
}

TEST(Corruption, EverySingleByteChangeIsDetected) {
  for (auto [zstd, int2] : {std::pair{0, false}, std::pair{3, false}, std::pair{0, true}, std::pair{3, true}}) {
    const auto good = small_container(zstd, int2);
    ASSERT_FALSE(try_decode(good).has_value());
    auto bad = good;
    for (size_t i = 0; i < bad.size(); ++i) {
      for (uint8_t x : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xff)}) {
        bad[i] = std::byte(uint8_t(good[i]) ^ x);
        ASSERT_TRUE(try_decode(bad).has_value())
            << "byte " << i << " ^ " << int(x) << " went unnoticed (zstd " << zstd << ", int2 " << int2 << ")";
        bad[i] = good[i];
      }
    }
  }
}

TEST(Corruption, EveryTruncationIsAnError) {
  for (bool int2 : {false, true}) {
    const auto good = small_container(0, int2);
    for (size_t n = 0; n < good.size(); ++n) {
      const auto code = try_decode(std::span(good.data(), n));
      ASSERT_TRUE(code.has_value()) << "truncated at " << n;
      EXPECT_EQ(*code, Errc::truncated) << "truncated at " << n;
    }
    auto longer = good;
    longer.push_back(std::byte{0});
    EXPECT_EQ(try_decode(longer), Errc::format);
  }
}

}  // namespace
