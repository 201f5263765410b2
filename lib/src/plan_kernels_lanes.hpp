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

// One INT4 group with min mn, max mx and max |x| a, of summed channel weight / 12 w4: its error
// and its INT2 error, and, when it closes an INT8 group (`close`, of weight / 12 w8), that
// group's. (Weights / 12: a uniform error of step^2 / 12 per element.) The scales' f16 rounding
// (under 0.05% of a step in the normal range) is left out.
inline void add_group_errors(float mn, float mx, float a, double w4, bool close, double w8, float& am8, double& e8,
                             double& e4, double& e2) {
  const float step4 = std::min((mx - mn) * (1.0f / 15.0f), 65504.0f);
  const float step2 = std::min((mx - mn) * (1.0f / 3.0f), 65504.0f);  // INT2: the same groups, 4 levels
  e4 += w4 * double(step4 * step4);
  e2 += w4 * double(step2 * step2);
  am8 = std::max(am8, a);
  if (close) {
    const float step8 = std::min(am8 * (1.0f / 127.0f), 65504.0f);
    e8 += w8 * double(step8 * step8);
    am8 = 0;
  }
}

// The fixed reduction of 8 lanes that the logits take.
inline float tree8(const float* a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

// One dot product as block_logits() computes it.
inline float dot8(const float* q, const float* k, int D) {
  if (D % 8) {
    float s = 0;
    for (int d = 0; d < D; ++d) s = std::fma(q[d], k[d], s);
    return s;
  }
  float a[8] = {};
  for (int d = 0; d < D; d += 8)
    for (int l = 0; l < 8; ++l) a[l] = std::fma(q[d + l], k[d + l], a[l]);
  return tree8(a);
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
void add_rows(float* acc, const float* X, int n, int D, const uint8_t* use) noexcept;
bool finite_sum_squares32(const float* x, int n, float& ss) noexcept;
void block_logits(const float* Q, int R, const float* K, int n, int D, float* S, int ldS) noexcept;
void block_pv(const float* P, int R, int ldP, const float* V, int n, int D, float* O) noexcept;
unsigned above(const float* x, float thr) noexcept;  // bit i: x[i] > thr (8 values)
}  // namespace avx2

}  // namespace skv::detail
