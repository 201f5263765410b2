#include <algorithm>
#include <cmath>

#include "skv/half.hpp"
#include "skv/quant.hpp"

namespace skv::quant {
namespace {
constexpr float kF16Max = 65504.0f;

// Rounds to nearest even after clamping in float, so a huge x * inv never reaches an
// out-of-range (undefined) float-to-int conversion.
inline int rne_clamped(float v, float lo, float hi) noexcept {
  return int(std::nearbyint(std::min(std::max(v, lo), hi)));  // default mode: ties to even
}

bool absmax(const float* x, size_t n, float& out) noexcept {
  float a = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
    a = std::max(a, std::fabs(x[i]));
  }
  out = a;
  return true;
}

bool minmax(const float* x, size_t n, float& mn, float& mx) noexcept {
  mn = x[0];
  mx = x[0];
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  // +0 turns a zero extreme into +0 whatever its sign, so the result does not depend on the
  // order min/max visit -0 and +0 (SIMD reductions visit them in another order).
  mn = mn + 0.0f;
  mx = mx + 0.0f;
  return true;
}
}  // namespace

bool q8_ref(const float* x, size_t n, int8_t* q, uint16_t* scale) noexcept {
  float a;
  if (!absmax(x, n, a)) return false;
  const uint16_t s16 = f32_to_f16(std::min(a / 127.0f, kF16Max));
  const float s = f16_to_f32(s16);
  const float inv = s > 0 ? 1.0f / s : 0.0f;
  for (size_t i = 0; i < n; ++i) q[i] = int8_t(rne_clamped(x[i] * inv, -127.0f, 127.0f));
  *scale = s16;
  return true;
}

void dq8_ref(const int8_t* q, size_t n, uint16_t scale, const float* centre, float* y) noexcept {
  const float s = f16_to_f32(scale);
  for (size_t i = 0; i < n; ++i) y[i] = std::fmaf(float(q[i]), s, centre ? centre[i] : 0.0f);
}

bool q4_ref(const float* x, size_t n, uint8_t* packed, uint16_t* scale, uint16_t* minv) noexcept {
  float mn, mx;
  if (!minmax(x, n, mn, mx)) return false;
  const uint16_t s16 = f32_to_f16(std::min((mx - mn) / 15.0f, kF16Max));
  const uint16_t m16 = f32_to_f16(mn);
  if ((m16 & 0x7fffu) == 0x7c00u) return false;  // minimum beyond FP16 range: not representable
  const float s = f16_to_f32(s16), m = f16_to_f32(m16);
  const float inv = s > 0 ? 1.0f / s : 0.0f;
  for (size_t i = 0; i < n; i += 2) {
    const int lo = rne_clamped((x[i] - m) * inv, 0.0f, 15.0f);
    const int hi = i + 1 < n ? rne_clamped((x[i + 1] - m) * inv, 0.0f, 15.0f) : 0;
    packed[i / 2] = uint8_t(lo | (hi << 4));
  }
  *scale = s16;
  *minv = m16;
  return true;
}

void dq4_ref(const uint8_t* packed, size_t n, uint16_t scale, uint16_t minv, const float* centre,
             float* y) noexcept {
  const float s = f16_to_f32(scale), m = f16_to_f32(minv);
  for (size_t i = 0; i < n; ++i) {
    const int q = (packed[i / 2] >> ((i & 1) * 4)) & 15;
    const float v = std::fmaf(float(q), s, m);
    y[i] = centre ? v + centre[i] : v;
  }
}

bool q2_ref(const float* x, size_t n, uint8_t* packed, uint16_t* scale, uint16_t* minv) noexcept {
  float mn, mx;
  if (!minmax(x, n, mn, mx)) return false;
  const uint16_t s16 = f32_to_f16(std::min((mx - mn) / 3.0f, kF16Max));
  const uint16_t m16 = f32_to_f16(mn);
  if ((m16 & 0x7fffu) == 0x7c00u) return false;  // minimum beyond FP16 range: not representable
  const float s = f16_to_f32(s16), m = f16_to_f32(m16);
  const float inv = s > 0 ? 1.0f / s : 0.0f;
  for (size_t i = 0; i < n; i += 4) {
    int b = 0;
    for (size_t j = 0; j < 4; ++j)
      if (i + j < n) b |= rne_clamped((x[i + j] - m) * inv, 0.0f, 3.0f) << (2 * j);
    packed[i / 4] = uint8_t(b);
  }
  *scale = s16;
  *minv = m16;
  return true;
}

void dq2_ref(const uint8_t* packed, size_t n, uint16_t scale, uint16_t minv, const float* centre,
             float* y) noexcept {
  const float s = f16_to_f32(scale), m = f16_to_f32(minv);
  for (size_t i = 0; i < n; ++i) {
    const int q = (packed[i / 4] >> ((i & 3) * 2)) & 3;
    const float v = std::fmaf(float(q), s, m);
    y[i] = centre ? v + centre[i] : v;
  }
}

float q8_error_bound(const float* x, size_t n) noexcept {
  float a = 0;
  if (!absmax(x, n, a)) return INFINITY;
  const float s = f16_to_f32(f32_to_f16(std::min(a / 127.0f, kF16Max)));
  // Half a step, plus clamping when the FP16 scale rounded down (at most 2^-11 relative), plus
  // the product's own rounding; a scale that underflowed to 0 zeroes the group (error <= absmax).
  if (s == 0) return a;
  return 0.5f * s + a * 0x1p-10f + 1e-30f;
}

float q4_error_bound(const float* x, size_t n) noexcept {
  float mn, mx;
  if (n == 0 || !minmax(x, n, mn, mx)) return n == 0 ? 0.0f : INFINITY;
  const float s = f16_to_f32(f32_to_f16(std::min((mx - mn) / 15.0f, kF16Max)));
  const float m = f16_to_f32(f32_to_f16(mn));
  const float range = mx - mn;
  if (s == 0) return std::max(std::fabs(mx - m), std::fabs(mn - m)) + range;
  return 0.5f * s + std::fabs(m - mn) + range * 0x1p-10f +
         (std::fabs(m) + std::fabs(mx)) * 0x1p-22f;
}

float q2_error_bound(const float* x, size_t n) noexcept {
  float mn, mx;
  if (n == 0 || !minmax(x, n, mn, mx)) return n == 0 ? 0.0f : INFINITY;
  const float s = f16_to_f32(f32_to_f16(std::min((mx - mn) / 3.0f, kF16Max)));
  const float m = f16_to_f32(f32_to_f16(mn));
  const float range = mx - mn;
  if (s == 0) return std::max(std::fabs(mx - m), std::fabs(mn - m)) + range;
  return 0.5f * s + std::fabs(m - mn) + range * 0x1p-10f +
         (std::fabs(m) + std::fabs(mx)) * 0x1p-22f;
}

}  // namespace skv::quant
