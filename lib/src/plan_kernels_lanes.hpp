// The scalar pieces plan_kernels.cpp and plan_kernels_avx2.cpp share, so that both compute the
// same thing: the exp polynomial, the weight update, and the analytic group errors.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace skv::detail {

// exp(x) = 2^k exp(r), x = k ln2 + r (ln2 split in two for an exact k ln2), exp(r) by Cephes'
// expf polynomial: relative error below 3e-7.
inline constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
inline constexpr float kExpP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                   4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

namespace lanes {

// exp(x) for x <= 0; 0 below -87 (and for -inf).
inline float exp_nonpos(float x) {
  const bool tiny = !(x > -87.0f);
  x = tiny ? -87.0f : x;
  const float k = std::floor(x * kLog2e + 0.5f);
  float r = x - k * kLn2Hi;
  r = r - k * kLn2Lo;
  const float z = r * r;
  float y = kExpP[0];
  for (int i = 1; i < 6; ++i) y = y * r + kExpP[i];
  y = y * z + r + 1.0f;
  const float p2 = std::bit_cast<float>((int32_t(k) + 127) << 23);
  return tiny ? 0.0f : y * p2;
}

inline void add_weights(const float* p, int n, float w, float* share, float* quant, float* drop) {
  for (int t = 0; t < n; ++t) {
    const float x = p[t];
    const float q = x * x * w;
    const float keep = 1.0f - (x < 0.9f ? x : 0.9f);
    share[t] += x;
    quant[t] += q;
    drop[t] += q / (keep * keep);
  }
}

// One INT4 group (index k) with min mn, max mx and max |x| a: its error and its INT2 error, and the INT8 group's
// once its last INT4 group (per8 of them make one) is in. ws8 / ws4: each group's summed channel
// weight / 12 (a uniform error of step^2 / 12 per element). The scales' f16 rounding (under 0.05%
// of a step in the normal range) is left out.
inline void add_group_errors(float mn, float mx, float a, int k, int per8, const double* ws8, const double* ws4,
                             float& am8, double& e8, double& e4, double& e2) {
  const float step4 = std::min((mx - mn) * (1.0f / 15.0f), 65504.0f);
  const float step2 = std::min((mx - mn) * (1.0f / 3.0f), 65504.0f);  // INT2: the same groups, 4 levels
  e4 += ws4[k] * double(step4 * step4);
  e2 += ws4[k] * double(step2 * step2);
  am8 = std::max(am8, a);
  if ((k + 1) % per8 == 0) {
    const float step8 = std::min(am8 * (1.0f / 127.0f), 65504.0f);
    e8 += ws8[k / per8] * double(step8 * step8);
    am8 = 0;
  }
}

}  // namespace lanes

// The AVX2 kernels (plan_kernels_avx2.cpp), called when the CPU has AVX2.
namespace avx2 {
float exp_shifted(float* row, int n, float mx) noexcept;
float mask_and_max(float* row, int n, const uint8_t* absent) noexcept;
void add_weights(const float* p, int n, float w, float* share, float* quant, float* drop) noexcept;
bool all_finite(const float* x, int n) noexcept;
float sum_squares(const float* x, int n) noexcept;
bool row_errors(const float* x, const float* c, const float* m, int n, int g8, int g4, const double* ws8, const double* ws4,
                double& e8, double& e4, double& e2, float& dev) noexcept;
bool finite_sum_squares(const float* x, int n, float& ss) noexcept;
void add_row(float* acc, const float* x, int n) noexcept;
}  // namespace avx2

}  // namespace skv::detail
