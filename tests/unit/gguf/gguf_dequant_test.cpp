// Block layouts written out byte by byte from ggml's block structs, with expected values worked
// out by hand.
#include <gtest/gtest.h>

#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"
#include "skv/half.hpp"

using namespace skv;
using gguf::GgmlType;

namespace {
std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> b;
  for (int x : v) b.push_back(std::byte(uint8_t(x)));
  return b;
}
void put_f16(std::vector<std::byte>& b, float f) {
  const uint16_t h = f32_to_f16(f);
  b.push_back(std::byte(h & 0xFF));
  b.push_back(std::byte(h >> 8));
}
}  // namespace

TEST(GgufDequant, Q4_0) {
  std::vector<std::byte> b;
  put_f16(b, 0.5f);
  for (int j = 0; j < 16; ++j) b.push_back(std::byte(uint8_t((15 - j) << 4 | j)));  // lo=j, hi=15-j
  std::vector<float> out(32);
  gguf::dequantize(GgmlType::Q4_0, b, out.data(), 32, "t");
  EXPECT_EQ(out[0], -4.0f);    // (0 - 8) * 0.5
  EXPECT_EQ(out[15], 3.5f);    // (15 - 8) * 0.5
  EXPECT_EQ(out[16], 3.5f);    // hi nibble of byte 0 = 15
  EXPECT_EQ(out[31], -4.0f);
}

TEST(GgufDequant, Q4_1) {
  std::vector<std::byte> b;
  put_f16(b, 0.25f);
  put_f16(b, -1.0f);
  for (int j = 0; j < 16; ++j) b.push_back(std::byte(uint8_t(0x30 | (j & 0xF))));
  std::vector<float> out(32);
  gguf::dequantize(GgmlType::Q4_1, b, out.data(), 32, "t");
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[4], 0.0f);     // 4 * 0.25 - 1
  EXPECT_EQ(out[15], 2.75f);
  EXPECT_EQ(out[16], -0.25f);  // 3 * 0.25 - 1
}

TEST(GgufDequant, Q8_0TwoBlocks) {
  std::vector<std::byte> b;
  for (float d : {2.0f, -0.5f}) {
    put_f16(b, d);
    for (int j = 0; j < 32; ++j) b.push_back(std::byte(uint8_t(int8_t(j - 16))));
  }
  std::vector<float> out(64);
  gguf::dequantize(GgmlType::Q8_0, b, out.data(), 64, "t");
  EXPECT_EQ(out[0], -32.0f);
  EXPECT_EQ(out[31], 30.0f);
  EXPECT_EQ(out[32], 8.0f);
  EXPECT_EQ(out[63], -7.5f);
}

TEST(GgufDequant, HalfFloats) {
  std::vector<float> out(2);
  gguf::dequantize(GgmlType::F16, bytes({0x00, 0x3C, 0x00, 0xC0}), out.data(), 2, "t");
  EXPECT_EQ(out, (std::vector<float>{1.0f, -2.0f}));
  gguf::dequantize(GgmlType::BF16, bytes({0x80, 0x3F, 0x40, 0xC0}), out.data(), 2, "t");
  EXPECT_EQ(out, (std::vector<float>{1.0f, -3.0f}));
}

TEST(GgufDequant, RejectsWrongSizesAndTypes) {
  std::vector<float> out(32);
  EXPECT_THROW(gguf::dequantize(GgmlType::Q8_0, bytes({0, 0, 1}), out.data(), 32, "t"), Error);
  EXPECT_THROW(gguf::dequantize(GgmlType::Q4_0, std::vector<std::byte>(18), out.data(), 16, "t"), Error);
  try {
    gguf::dequantize(GgmlType::Q6_K, std::vector<std::byte>(210), out.data(), 256, "w.gguf: tensor 'x'");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unsupported);
    EXPECT_NE(std::string(e.what()).find("Q6_K"), std::string::npos);
  }
  EXPECT_TRUE(gguf::can_dequantize(GgmlType::Q4_1));
  EXPECT_FALSE(gguf::can_dequantize(GgmlType::Q4_K));
}
