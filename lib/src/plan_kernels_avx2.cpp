// AVX2 versions of plan_kernels.cpp's loops: the same IEEE operations per lane in the same order
// (no FMA), so their results equal the portable code's exactly.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "plan_kernels_lanes.hpp"

#define SKV_AVX2 __attribute__((target("avx2")))
#define SKV_AVX2_FMA __attribute__((target("avx2,fma")))

namespace skv::detail::avx2 {
namespace {

SKV_AVX2 inline __m256 exp_nonpos(__m256 x) {
  const __m256 lim = _mm256_set1_ps(-87.0f);
  const __m256 tiny = _mm256_cmp_ps(x, lim, _CMP_NGT_UQ);  // !(x > -87), also NaN / -inf
  x = _mm256_blendv_ps(x, lim, tiny);
  const __m256 k = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(k, _mm256_set1_ps(kLn2Hi)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(k, _mm256_set1_ps(kLn2Lo)));
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 y = _mm256_set1_ps(kExpP[0]);
  for (int i = 1; i < 6; ++i) y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(kExpP[i]));
  y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

SKV_AVX2 inline float lane_sum(__m256 v) {
  alignas(32) float s[8];
  _mm256_store_ps(s, v);
  float a = 0;
  for (float x : s) a += x;
  return a;
}

}  // namespace

SKV_AVX2 float exp_shifted(float* row, int n, float mx) noexcept {
  __m256 s = _mm256_setzero_ps();
  const __m256 m = _mm256_set1_ps(mx);
  int t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256 e = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(row + t), m));
    _mm256_storeu_ps(row + t, e);
    s = _mm256_add_ps(s, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  for (int l = 0; t < n; ++t, ++l) {
    const float e = lanes::exp_nonpos(row[t] - mx);
    row[t] = e;
    lanes[l] += e;
  }
  float a = 0;
  for (float x : lanes) a += x;
  return a;
}

SKV_AVX2 float mask_and_max(float* row, int n, const uint8_t* absent) noexcept {
  __m256 m = _mm256_set1_ps(-INFINITY);
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  int t = 0;
  for (; t + 8 <= n; t += 8) {
    __m256 x = _mm256_loadu_ps(row + t);
    __m256 bad = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    if (absent) {
      const __m128i a8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(absent + t));
      const __m256i a32 = _mm256_cvtepu8_epi32(a8);
      bad = _mm256_or_ps(bad, _mm256_castsi256_ps(_mm256_cmpgt_epi32(a32, _mm256_setzero_si256())));
    }
    x = _mm256_blendv_ps(x, ninf, bad);
    _mm256_storeu_ps(row + t, x);
    m = _mm256_max_ps(m, x);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = -INFINITY;
  for (float x : lanes) r = x > r ? x : r;
  for (; t < n; ++t) {
    float x = row[t];
    x = (x != x || (absent && absent[t])) ? -INFINITY : x;
    row[t] = x;
    r = x > r ? x : r;
  }
  return r;
}

SKV_AVX2 void add_weights(const float* p, int n, float w, float* share, float* quant, float* drop) noexcept {
  const __m256 wv = _mm256_set1_ps(w), cap = _mm256_set1_ps(0.9f), one = _mm256_set1_ps(1.0f);
  int t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256 x = _mm256_loadu_ps(p + t);
    const __m256 q = _mm256_mul_ps(_mm256_mul_ps(x, x), wv);
    const __m256 keep = _mm256_sub_ps(one, _mm256_min_ps(x, cap));
    _mm256_storeu_ps(share + t, _mm256_add_ps(_mm256_loadu_ps(share + t), x));
    _mm256_storeu_ps(quant + t, _mm256_add_ps(_mm256_loadu_ps(quant + t), q));
    _mm256_storeu_ps(drop + t, _mm256_add_ps(_mm256_loadu_ps(drop + t), _mm256_div_ps(q, _mm256_mul_ps(keep, keep))));
  }
  lanes::add_weights(p + t, n - t, w, share + t, quant + t, drop + t);
}

SKV_AVX2 bool all_finite(const float* x, int n) noexcept {
  __m256 s = _mm256_setzero_ps();
  const __m256 zero = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_loadu_ps(x + i), zero));
  float a = lane_sum(s);
  for (; i < n; ++i) a += x[i] * 0.0f;
  return a == 0.0f;
}

SKV_AVX2 float sum_squares(const float* x, int n) noexcept {
  __m256 s = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    s = _mm256_add_ps(s, _mm256_mul_ps(v, v));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  for (int l = 0; i < n; ++i, ++l) lanes[l] += x[i] * x[i];
  float a = 0;
  for (float v : lanes) a += v;
  return a;
}

SKV_AVX2 inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
}
SKV_AVX2 inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

namespace {
template <bool C, bool M>
SKV_AVX2 bool row_errors_t(const float* x, const float* c, const float* m, int n, int g8, int g4, const double* ws8,
                           const double* ws4, double& e8, double& e4, double& e2, float& dev) noexcept {
  e8 = e4 = e2 = 0;
  float am8 = 0;
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  __m256 d2 = zero, bad = zero;  // bad: y * 0 summed, NaN exactly when some y is NaN or infinite
  for (int s = 0, k = 0; s < n; s += g4, ++k) {
    __m256 lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY), am = zero;
    for (int i = 0; i < g4; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + s + i);
      const __m256 v = C ? _mm256_sub_ps(xv, _mm256_loadu_ps(c + s + i)) : xv;
      const __m256 z = M ? _mm256_sub_ps(xv, _mm256_loadu_ps(m + s + i)) : xv;
      lo = _mm256_min_ps(lo, v);
      hi = _mm256_max_ps(hi, v);
      am = _mm256_max_ps(am, _mm256_andnot_ps(sign, v));
      bad = _mm256_add_ps(bad, _mm256_mul_ps(v, zero));
      d2 = _mm256_add_ps(d2, _mm256_mul_ps(z, z));
    }
    // min / max are exact whatever the order, so the shuffle reductions equal the scalar ones.
    lanes::add_group_errors(hmin(lo), hmax(hi), hmax(am), k, g8 / g4, ws8, ws4, am8, e8, e4, e2);
  }
  if (_mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q))) return false;
  dev = lane_sum(d2);
  return true;
}
}  // namespace

SKV_AVX2 bool row_errors(const float* x, const float* c, const float* m, int n, int g8, int g4, const double* ws8,
                         const double* ws4, double& e8, double& e4, double& e2, float& dev) noexcept {
  if (c) return m ? row_errors_t<true, true>(x, c, m, n, g8, g4, ws8, ws4, e8, e4, e2, dev)
                  : row_errors_t<true, false>(x, c, m, n, g8, g4, ws8, ws4, e8, e4, e2, dev);
  return m ? row_errors_t<false, true>(x, c, m, n, g8, g4, ws8, ws4, e8, e4, e2, dev)
           : row_errors_t<false, false>(x, c, m, n, g8, g4, ws8, ws4, e8, e4, e2, dev);
}

SKV_AVX2 bool finite_sum_squares(const float* x, int n, float& ss) noexcept {
  __m256 s = _mm256_setzero_ps(), z = s;
  const __m256 zero = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    s = _mm256_add_ps(s, _mm256_mul_ps(v, v));
    z = _mm256_add_ps(z, _mm256_mul_ps(v, zero));
  }
  alignas(32) float sl[8], zl[8];
  _mm256_store_ps(sl, s);
  _mm256_store_ps(zl, z);
  for (int l = 0; i < n; ++i, ++l) {
    sl[l] += x[i] * x[i];
    zl[l] += x[i] * 0.0f;
  }
  float a = 0, b = 0;
  for (int l = 0; l < 8; ++l) {
    a += sl[l];
    b += zl[l];
  }
  ss = a;
  return b == 0.0f;
}

SKV_AVX2 void add_row(float* acc, const float* x, int n) noexcept {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
  for (; i < n; ++i) acc[i] += x[i];
}

}  // namespace skv::detail::avx2
#endif
