#include "plan_kernels.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

#include "cpu_features.hpp"
#include "plan_kernels_lanes.hpp"

// Hand-written rather than a vector-math library: the loops are short, the exp needs only x <= 0,
// and writing the portable code over 8 lanes keeps its results equal to the AVX2 kernels'.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SKV_PLAN_AVX2 1
#endif

namespace skv::detail {
namespace {

constexpr int kLanes = 8;

bool g_portable = false;

inline bool use_avx2() {
#ifdef SKV_PLAN_AVX2
  return !g_portable && cpu_has_avx2_fma_f16c();
#else
  return false;
#endif
}

float lane_sum(const float* s) {
  float a = 0;
  for (int l = 0; l < kLanes; ++l) a += s[l];
  return a;
}

}  // namespace

void force_portable_plan_kernels(bool on) noexcept { g_portable = on; }

float exp_shifted(float* row, int n, float mx) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::exp_shifted(row, n, mx);
#endif
  float s[kLanes] = {};
  int t = 0;
  for (; t + kLanes <= n; t += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float e = lanes::exp_nonpos(row[t + l] - mx);
      row[t + l] = e;
      s[l] += e;
    }
  for (int l = 0; t < n; ++t, ++l) {
    const float e = lanes::exp_nonpos(row[t] - mx);
    row[t] = e;
    s[l] += e;
  }
  return lane_sum(s);
}

float mask_and_max(float* row, int n, const uint8_t* absent) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::mask_and_max(row, n, absent);
#endif
  float r = -INFINITY;  // max is exact whatever the order
  for (int t = 0; t < n; ++t) {
    float x = row[t];
    x = (x != x || (absent && absent[t])) ? -INFINITY : x;
    row[t] = x;
    r = x > r ? x : r;
  }
  return r;
}

void scale_row(float* row, int n, float s) noexcept {
  for (int t = 0; t < n; ++t) row[t] *= s;
}

int top_k(const float* row, int n, int k, int32_t* idx, float* val) noexcept {
  // A sorted list of the best k so far; most values fail the threshold test and cost one compare
  // (with AVX2, one compare per 8 values: the list is the same either way).
  int m = 0;
  float thr = -INFINITY;  // the list's smallest value once it is full
  auto offer = [&](int t) {
    const float x = row[t];
    if (!(x > thr) || x == -INFINITY) return;
    int i = m < k ? m++ : k - 1;  // full: the last (smallest) entry leaves
    while (i > 0 && val[i - 1] < x) {  // equal values stay in index order
      val[i] = val[i - 1];
      idx[i] = idx[i - 1];
      --i;
    }
    val[i] = x;
    idx[i] = int32_t(t);
    if (m == k) thr = val[k - 1];
  };
  int t = 0;
#ifdef SKV_PLAN_AVX2
  if (use_avx2())
    for (; t + 8 <= n; t += 8) {
      unsigned hits = avx2::above(row + t, thr);
      while (hits) {
        offer(t + std::countr_zero(hits));
        hits &= hits - 1;
      }
    }
#endif
  for (; t < n; ++t) offer(t);
  return m;
}

void add_weights(const float* p, int n, float w, float* share, float* quant, float* drop) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::add_weights(p, n, w, share, quant, drop);
#endif
  lanes::add_weights(p, n, w, share, quant, drop);
}

bool all_finite(const float* x, int n) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::all_finite(x, n);
#endif
  float s[kLanes] = {};  // x * 0 is NaN exactly for NaN and infinities
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) s[l] += x[i + l] * 0.0f;
  float a = lane_sum(s);
  for (; i < n; ++i) a += x[i] * 0.0f;
  return a == 0.0f;
}

float sum_squares(const float* x, int n) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::sum_squares(x, n);
#endif
  float s[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) s[l] += x[i + l] * x[i + l];
  for (int l = 0; i < n; ++i, ++l) s[l] += x[i] * x[i];
  return lane_sum(s);
}

bool row_errors(const float* x, const float* c, const float* m, int n, int g8, int g4, const double* ws8, const double* ws4,
                double& e8, double& e4, double& e2, float& dev) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::row_errors(x, c, m, n, g8, g4, ws8, ws4, e8, e4, e2, dev);
#endif
  e8 = e4 = e2 = 0;
  float am8 = 0, d2[2 * kLanes] = {};
  for (int s = 0, k = 0; s < n; s += g4, ++k) {
    float mn = INFINITY, mx = -INFINITY, a = 0;  // min / max / max |y| are exact whatever the order
    for (int i = 0; i < g4; ++i) {
      const float y = c ? x[s + i] - c[s + i] : x[s + i];
      if (!std::isfinite(y)) return false;
      mn = std::min(mn, y);
      mx = std::max(mx, y);
      a = std::max(a, std::fabs(y));
      if (m) {
        const float z = x[s + i] - m[s + i];
        d2[(s + i) % (2 * kLanes)] += z * z;
      }
    }
    lanes::add_group_errors(mn, mx, a, ws4[k], (k + 1) % (g8 / g4) == 0, ws8[k / (g8 / g4)], am8, e8, e4, e2);
  }
  for (int l = 0; l < kLanes; ++l) d2[l] += d2[l + kLanes];  // the two partial sums, lane by lane
  dev = lane_sum(d2);
  return true;
}

bool finite_sum_squares(const float* x, int n, float& ss) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::finite_sum_squares(x, n, ss);
#endif
  float s[kLanes] = {}, z[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      s[l] += x[i + l] * x[i + l];
      z[l] += x[i + l] * 0.0f;
    }
  for (int l = 0; i < n; ++i, ++l) {
    s[l] += x[i] * x[i];
    z[l] += x[i] * 0.0f;
  }
  ss = lane_sum(s);
  return lane_sum(z) == 0.0f;
}

void add_row(float* acc, const float* x, int n) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::add_row(acc, x, n);
#endif
  for (int i = 0; i < n; ++i) acc[i] += x[i];
}

void add_rows(float* acc, const float* X, int n, int D, const uint8_t* use) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::add_rows(acc, X, n, D, use);
#endif
  for (int i = 0; i < n; ++i)
    if (use[i])
      for (int d = 0; d < D; ++d) acc[d] += X[size_t(i) * D + d];
}

bool finite_sum_squares32(const float* x, int n, float& ss) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::finite_sum_squares32(x, n, ss);
#endif
  float s[32] = {}, z[32] = {};
  for (int i = 0; i < n; ++i) {
    s[i % 32] += x[i] * x[i];
    z[i % 32] += x[i] * 0.0f;
  }
  float a = 0, b = 0;
  for (int l = 0; l < 32; ++l) {
    a += s[l];
    b += z[l];
  }
  ss = a;
  return b == 0.0f;
}

void block_logits(const float* Q, int R, const float* K, int n, int D, float* S, int ldS) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2() && D % 8 == 0) return avx2::block_logits(Q, R, K, n, D, S, ldS);
#endif
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < n; ++t) S[size_t(r) * ldS + t] = lanes::dot8(Q + size_t(r) * D, K + size_t(t) * D, D);
}

void block_pv(const float* P, int R, int ldP, const float* V, int n, int D, float* O) noexcept {
#ifdef SKV_PLAN_AVX2
  if (use_avx2()) return avx2::block_pv(P, R, ldP, V, n, D, O);
#endif
  for (int r = 0; r < R; ++r)
    for (int d = 0; d < D; ++d) {
      float o = O[size_t(r) * D + d];
      for (int i = 0; i < n; ++i) o = std::fma(P[size_t(r) * ldP + i], V[size_t(i) * D + d], o);
      O[size_t(r) * D + d] = o;
    }
}

}  // namespace skv::detail
