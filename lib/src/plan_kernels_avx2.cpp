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
  // x * 0 summed is NaN exactly when some x is not finite, in any order: four chains, not one.
  const __m256 zero = _mm256_setzero_ps();
  __m256 s = zero, s1 = zero, s2 = zero, s3 = zero;
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_loadu_ps(x + i), zero));
    s1 = _mm256_add_ps(s1, _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), zero));
    s2 = _mm256_add_ps(s2, _mm256_mul_ps(_mm256_loadu_ps(x + i + 16), zero));
    s3 = _mm256_add_ps(s3, _mm256_mul_ps(_mm256_loadu_ps(x + i + 24), zero));
  }
  for (; i + 8 <= n; i += 8) s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_loadu_ps(x + i), zero));
  s = _mm256_add_ps(_mm256_add_ps(s, s1), _mm256_add_ps(s2, s3));
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

// Max (or min) of each of four vectors at once: [f(a), f(b), f(c), f(d)]. Exact in any order.
template <bool Max>
SKV_AVX2 inline __m256 minmax(__m256 x, __m256 y) {
  return Max ? _mm256_max_ps(x, y) : _mm256_min_ps(x, y);
}
template <bool Max>
SKV_AVX2 inline void reduce4(__m256 a, __m256 b, __m256 c, __m256 d, float* out) {
  constexpr auto f = minmax<Max>;
  const __m256 x = f(_mm256_permute2f128_ps(a, c, 0x20), _mm256_permute2f128_ps(a, c, 0x31));  // a | c halves
  const __m256 y = f(_mm256_permute2f128_ps(b, d, 0x20), _mm256_permute2f128_ps(b, d, 0x31));
  const __m256 z = f(_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
  const __m256 w = f(z, _mm256_permute_ps(z, 0x4E));
  alignas(32) float l[8];
  _mm256_store_ps(l, w);
  out[0] = l[0], out[1] = l[1], out[2] = l[4], out[3] = l[5];
}

namespace {
// Min and max of one group of g elements of y = x - c, its NaNs into `nan`, its (x - m)^2 into
// d2a / d2b by element index mod 16. (max |y| = max(max y, -min y): no third reduction.)
template <bool C, bool M>
SKV_AVX2 inline void group_stats(const float* x, const float* c, const float* m, int s, int g, __m256& lo, __m256& hi,
                                 __m256& nan, __m256& d2a, __m256& d2b) {
  lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY);
  for (int i = 0; i < g; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + s + i);
    const __m256 v = C ? _mm256_sub_ps(xv, _mm256_loadu_ps(c + s + i)) : xv;
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    if (M) {
      const __m256 z = _mm256_sub_ps(xv, _mm256_loadu_ps(m + s + i));
      if ((s + i) & 8) d2b = _mm256_add_ps(d2b, _mm256_mul_ps(z, z));
      else d2a = _mm256_add_ps(d2a, _mm256_mul_ps(z, z));
    }
  }
}

template <bool C, bool M>
SKV_AVX2 bool row_errors_t(const float* x, const float* c, const float* m, int n, int g8, int g4, const double* ws8,
                           const double* ws4, double& e8, double& e4, double& e2, float& dev) noexcept {
  e8 = e4 = e2 = 0;
  double s8 = 0, s4 = 0, s2 = 0;  // locals: the outputs could alias the weights
  float am8 = 0;
  int in8 = 0, k8 = 0;            // INT4 groups into the current INT8 group, its index
  // Two partial sums of dev (elements by d mod 16) and a NaN mask: short dependency chains, in
  // registers. An infinite y shows in its group's max |y|.
  __m256 d2a = _mm256_setzero_ps(), d2b = d2a, nan = d2a;
  const int groups = n / g4, per8 = g8 / g4;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  // Groups two at a time: one reduction takes -min and max of both.
  for (int k = 0; k < groups; k += 2) {
    __m256 lo0, hi0, lo1, hi1;
    group_stats<C, M>(x, c, m, k * g4, g4, lo0, hi0, nan, d2a, d2b);
    if (k + 1 < groups) group_stats<C, M>(x, c, m, (k + 1) * g4, g4, lo1, hi1, nan, d2a, d2b);
    else lo1 = lo0, hi1 = hi0;
    float r[4];
    reduce4<true>(_mm256_xor_ps(lo0, sign), _mm256_xor_ps(lo1, sign), hi0, hi1, r);
    for (int j = 0; j < 2 && k + j < groups; ++j) {
      const float a = std::max(std::max(r[2 + j], r[j]), 0.0f);  // max |y|, as max(|y|) from 0
      if (!(a <= 3.40282347e38f)) return false;
      const bool close = ++in8 == per8;
      lanes::add_group_errors(-r[j], r[2 + j], a, ws4[k + j], close, ws8[k8], am8, s8, s4, s2);
      if (close) in8 = 0, ++k8;
    }
  }
  if (_mm256_movemask_ps(nan)) return false;
  e8 = s8, e4 = s4, e2 = s2;
  dev = M ? lane_sum(_mm256_add_ps(d2a, d2b)) : 0.0f;
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

// Columns in chunks of up to 64 (8 registers) held across the rows.
SKV_AVX2 void add_rows(float* acc, const float* X, int n, int D, const uint8_t* use) noexcept {
  int d0 = 0;
  for (; d0 + 8 <= D; d0 += 64) {
    const int w = std::min(64, (D - d0) / 8 * 8);
    __m256 a[8];
    for (int j = 0; j < w / 8; ++j) a[j] = _mm256_loadu_ps(acc + d0 + 8 * j);
    for (int i = 0; i < n; ++i) {
      if (!use[i]) continue;
      const float* x = X + size_t(i) * D + d0;
      for (int j = 0; j < w / 8; ++j) a[j] = _mm256_add_ps(a[j], _mm256_loadu_ps(x + 8 * j));
    }
    for (int j = 0; j < w / 8; ++j) _mm256_storeu_ps(acc + d0 + 8 * j, a[j]);
    if (w < 64) {
      d0 += w;
      break;
    }
  }
  for (; d0 < D; ++d0)
    for (int i = 0; i < n; ++i)
      if (use[i]) acc[d0] += X[size_t(i) * D + d0];
}

SKV_AVX2 bool finite_sum_squares32(const float* x, int n, float& ss) noexcept {
  __m256 s[4], z[4];
  const __m256 zero = _mm256_setzero_ps();
  for (int j = 0; j < 4; ++j) s[j] = z[j] = zero;
  int i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * j);
      s[j] = _mm256_add_ps(s[j], _mm256_mul_ps(v, v));
      z[j] = _mm256_add_ps(z[j], _mm256_mul_ps(v, zero));
    }
  alignas(32) float sl[32], zl[32];
  for (int j = 0; j < 4; ++j) {
    _mm256_store_ps(sl + 8 * j, s[j]);
    _mm256_store_ps(zl + 8 * j, z[j]);
  }
  for (int l = 0; i < n; ++i, ++l) {
    sl[l] += x[i] * x[i];
    zl[l] += x[i] * 0.0f;
  }
  float a = 0, b = 0;
  for (int l = 0; l < 32; ++l) {
    a += sl[l];
    b += zl[l];
  }
  ss = a;
  return b == 0.0f;
}

SKV_AVX2 unsigned above(const float* x, float thr) noexcept {
  return unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x), _mm256_set1_ps(thr), _CMP_GT_OQ)));
}

namespace {
// The 8-lane tree of lanes::tree8 over eight accumulators at once: out = [tree8(a[0]), ..., tree8(a[7])].
SKV_AVX2 inline __m256 tree8x8(const __m256* a) {
  const __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 y = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
}
SKV_AVX2 inline float tree8x1(__m256 a) {
  alignas(32) float l[8];
  _mm256_store_ps(l, a);
  return lanes::tree8(l);
}
}  // namespace

// Tiles of 2 keys x 4 queries (8 accumulators, 2 key and 4 query registers), the rest one by one.
SKV_AVX2_FMA void block_logits(const float* Q, int R, const float* K, int n, int D, float* S, int ldS) noexcept {
  int r = 0;
  for (; r + 4 <= R; r += 4) {
    const float* q = Q + size_t(r) * D;
    int t = 0;
    for (; t + 2 <= n; t += 2) {
      const float* k0 = K + size_t(t) * D;
      const float* k1 = k0 + D;
      __m256 a[8];
      for (__m256& x : a) x = _mm256_setzero_ps();
      for (int d = 0; d < D; d += 8) {
        const __m256 x0 = _mm256_loadu_ps(k0 + d), x1 = _mm256_loadu_ps(k1 + d);
        for (int i = 0; i < 4; ++i) {
          const __m256 qi = _mm256_loadu_ps(q + size_t(i) * D + d);
          a[i] = _mm256_fmadd_ps(qi, x0, a[i]);
          a[4 + i] = _mm256_fmadd_ps(qi, x1, a[4 + i]);
        }
      }
      alignas(32) float out[8];
      _mm256_store_ps(out, tree8x8(a));
      for (int i = 0; i < 4; ++i) {
        S[size_t(r + i) * ldS + t] = out[i];
        S[size_t(r + i) * ldS + t + 1] = out[4 + i];
      }
    }
    for (; t < n; ++t)
      for (int i = 0; i < 4; ++i) {
        __m256 a = _mm256_setzero_ps();
        for (int d = 0; d < D; d += 8)
          a = _mm256_fmadd_ps(_mm256_loadu_ps(q + size_t(i) * D + d), _mm256_loadu_ps(K + size_t(t) * D + d), a);
        S[size_t(r + i) * ldS + t] = tree8x1(a);
      }
  }
  for (; r < R; ++r)
    for (int t = 0; t < n; ++t) {
      __m256 a = _mm256_setzero_ps();
      for (int d = 0; d < D; d += 8)
        a = _mm256_fmadd_ps(_mm256_loadu_ps(Q + size_t(r) * D + d), _mm256_loadu_ps(K + size_t(t) * D + d), a);
      S[size_t(r) * ldS + t] = tree8x1(a);
    }
}

namespace {
// One query's output, dims d0..D: 8 at a time, then one by one.
SKV_AVX2_FMA void pv_one(const float* p, const float* V, int n, int D, int d0, float* o) {
  int d = d0;
  for (; d + 8 <= D; d += 8) {
    __m256 a = _mm256_loadu_ps(o + d);
    for (int i = 0; i < n; ++i) a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + i), _mm256_loadu_ps(V + size_t(i) * D + d), a);
    _mm256_storeu_ps(o + d, a);
  }
  for (; d < D; ++d) {
    float x = o[d];
    for (int i = 0; i < n; ++i) x = std::fma(p[i], V[size_t(i) * D + d], x);
    o[d] = x;
  }
}
}  // namespace

// Tiles of 4 queries x 16 dims (8 accumulators; per row 2 value loads, 4 broadcasts, 8 FMAs);
// the rest query by query.
SKV_AVX2_FMA void block_pv(const float* P, int R, int ldP, const float* V, int n, int D, float* O) noexcept {
  int r = 0;
  for (; r + 4 <= R; r += 4) {
    const float* p = P + size_t(r) * ldP;
    float* o = O + size_t(r) * D;
    int d = 0;
    for (; d + 16 <= D; d += 16) {
      __m256 a[8];
      for (int q = 0; q < 4; ++q) {
        a[2 * q] = _mm256_loadu_ps(o + size_t(q) * D + d);
        a[2 * q + 1] = _mm256_loadu_ps(o + size_t(q) * D + d + 8);
      }
      for (int i = 0; i < n; ++i) {
        const __m256 v0 = _mm256_loadu_ps(V + size_t(i) * D + d), v1 = _mm256_loadu_ps(V + size_t(i) * D + d + 8);
        for (int q = 0; q < 4; ++q) {
          const __m256 pb = _mm256_broadcast_ss(p + size_t(q) * ldP + i);
          a[2 * q] = _mm256_fmadd_ps(pb, v0, a[2 * q]);
          a[2 * q + 1] = _mm256_fmadd_ps(pb, v1, a[2 * q + 1]);
        }
      }
      for (int q = 0; q < 4; ++q) {
        _mm256_storeu_ps(o + size_t(q) * D + d, a[2 * q]);
        _mm256_storeu_ps(o + size_t(q) * D + d + 8, a[2 * q + 1]);
      }
    }
    for (int q = 0; q < 4 && d < D; ++q) pv_one(p + size_t(q) * ldP, V, n, D, d, o + size_t(q) * D);
  }
  for (; r < R; ++r) pv_one(P + size_t(r) * ldP, V, n, D, 0, O + size_t(r) * D);
}

}  // namespace skv::detail::avx2
#endif
