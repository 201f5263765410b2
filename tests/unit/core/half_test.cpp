#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "skv/half.hpp"

namespace {

// Exhaustive: every f16 bit pattern survives f16 -> f32 -> f16 (NaNs stay NaN).
TEST(Half, F16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = skv::f16_to_f32(uint16_t(h));
    const uint16_t back = skv::f32_to_f16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(skv::f16_to_f32(back))) << h;
    } else {
      ASSERT_EQ(back, h) << "pattern " << h;
    }
  }
}

TEST(Half, F16RoundsToNearestEven) {
  EXPECT_EQ(skv::f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(skv::f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(skv::f32_to_f16(65519.0f), 0x7bff);  // below the halfway point
  EXPECT_EQ(skv::f32_to_f16(65520.0f), 0x7c00);  // tie to even -> infinity
  // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(skv::f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(skv::f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(skv::f32_to_f16(0x1p-24f), 0x0001);   // smallest subnormal
  EXPECT_EQ(skv::f32_to_f16(0x1p-25f), 0x0000);   // tie to even -> 0
  EXPECT_EQ(skv::f32_to_f16(0x1.8p-25f), 0x0001);
  EXPECT_EQ(skv::f32_to_f16(-2.0f), 0xc000);
}

// Compare against the compiler's own _Float16 conversion on a sweep of f32 bit patterns.
TEST(Half, F16MatchesCompilerConversion) {
  for (uint64_t u = 0; u < 0x100000000ull; u += 0x1357) {
    float f;
    const uint32_t b = uint32_t(u);
    std::memcpy(&f, &b, 4);
    if (std::isnan(f)) continue;
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t rb;
    std::memcpy(&rb, &ref, 2);
    ASSERT_EQ(skv::f32_to_f16(f), rb) << std::hexfloat << f;
  }
}

TEST(Half, Bf16RoundsToNearestEven) {
  EXPECT_EQ(skv::f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(skv::f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);   // tie -> even
  EXPECT_EQ(skv::f32_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(skv::bf16_to_f32(0x3f80), 1.0f);
  EXPECT_TRUE(std::isnan(skv::bf16_to_f32(skv::f32_to_bf16(NAN))));
}

}  // namespace
