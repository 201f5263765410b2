// Scalar 16-bit float conversions, exact and round-to-nearest-even; the reference that SIMD and
// CUDA paths must match bit for bit. NaN stays NaN; overflow goes to infinity as IEEE says.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

namespace skv {

inline float bf16_to_f32(uint16_t h) noexcept { return std::bit_cast<float>(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) noexcept {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h) noexcept;
uint16_t f32_to_f16(float f) noexcept;

}  // namespace skv
