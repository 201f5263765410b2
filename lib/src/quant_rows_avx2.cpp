// AVX2+F16C+FMA row kernels. Same operations as the reference, in the same order per element;
// only the group reductions (max |x|, min, max) are vectorised, and those are exact and
// order-independent (the reference canonicalises the sign of a zero min/max).
#include "cpu_features.hpp"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "quant_rows.hpp"
#include "skv/half.hpp"

#define SKV_AVX2 __attribute__((target("avx2,f16c,fma")))

namespace skv::detail {
namespace {

constexpr float kF16Max = 65504.0f;

SKV_AVX2 inline uint16_t to_f16(float f) {
  return uint16_t(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}
SKV_AVX2 inline float from_f16(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

SKV_AVX2 inline uint32_t hmax_u32(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
  return uint32_t(_mm_cvtsi128_si32(m));
}
SKV_AVX2 inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
SKV_AVX2 inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Rounded, clamped floats (integral, in int8 range) -> 16 / 8 bytes in element order.
SKV_AVX2 inline __m128i pack16(__m256 a, __m256 b) {
  __m256i w = _mm256_packs_epi32(_mm256_cvttps_epi32(a), _mm256_cvttps_epi32(b));
  w = _mm256_permute4x64_epi64(w, 0xD8);
  return _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}
SKV_AVX2 inline __m128i pack8(__m256 a) {
  const __m256i i = _mm256_cvttps_epi32(a);
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  return _mm_packs_epi16(w, w);
}
SKV_AVX2 inline __m256 round_clamp(__m256 v, __m256 lo, __m256 hi) {
  return _mm256_round_ps(_mm256_min_ps(_mm256_max_ps(v, lo), hi),
                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// The f16 scales of up to 8 groups (one lane each): f16(min(range / steps, 65504)). min(t, 65504)
// equals the scalar "65504 < t ? 65504 : t" for every non-NaN t.
SKV_AVX2 inline __m128i f16_scales(__m256 range, float steps) {
  const __m256 t = _mm256_min_ps(_mm256_div_ps(range, _mm256_set1_ps(steps)), _mm256_set1_ps(kF16Max));
  return _mm256_cvtps_ph(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// 1 / scale per group (0 where the scale is 0), as the scalar kernels compute it.
SKV_AVX2 inline void store_inverses(__m128i s16, float* invs) {
  const __m256 sv = _mm256_cvtph_ps(s16);
  _mm256_store_ps(invs, _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), sv),
                                      _mm256_cmp_ps(sv, _mm256_setzero_ps(), _CMP_GT_OQ)));
}

// The first ng INT4 (scale, minimum) pairs, interleaved as the container stores them.
SKV_AVX2 inline void store_q4_params(__m128i s16, __m128i m16, int ng, uint16_t* params) {
  alignas(16) uint16_t pr[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(pr), _mm_unpacklo_epi16(s16, m16));
  _mm_store_si128(reinterpret_cast<__m128i*>(pr + 8), _mm_unpackhi_epi16(s16, m16));
  std::memcpy(params, pr, size_t(ng) * 4);
}

// Packs one INT4 group of f32 values: q = clamp(round((x - m) * inv), 0, 15), two per byte.
SKV_AVX2 inline void pack_q4_group(const float* xg, int g, __m256 vm, __m256 inv, uint8_t* out) {
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(15.0f);
  const __m128i nib = _mm_set1_epi16(0x1001);  // bytes (1, 16): b[2i] + 16 * b[2i+1]
  int k = 0;
  for (; k + 16 <= g; k += 16) {
    const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xg + k), vm), inv), lo, hi);
    const __m256 v1 = round_clamp(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xg + k + 8), vm), inv), lo, hi);
    const __m128i w = _mm_maddubs_epi16(pack16(v0, v1), nib);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + k / 2), _mm_packus_epi16(w, w));
  }
  if (k < g) {
    const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xg + k), vm), inv), lo, hi);
    const __m128i w = _mm_maddubs_epi16(pack8(v0), nib);
    const int b = _mm_cvtsi128_si32(_mm_packus_epi16(w, w));
    std::memcpy(out + k / 2, &b, 4);
  }
}

SKV_AVX2 bool q8(const float* x, int d, int g, int8_t* q, uint16_t* scales) {
  if (g % 8) return row_kernels_ref().q8(x, d, g, q, scales);
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int i = 0, j = 0; i < d; i += g, ++j) {
    const float* xg = x + i;
    __m256i m = _mm256_setzero_si256();
    for (int k = 0; k < g; k += 8)
      m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(xg + k)), absmask));
    const uint32_t abits = hmax_u32(m);
    if (abits >= 0x7f800000u) return false;  // inf or NaN
    float a;
    std::memcpy(&a, &abits, 4);
    float t = a / 127.0f;
    t = kF16Max < t ? kF16Max : t;
    const uint16_t s16 = to_f16(t);
    const float s = from_f16(s16);
    const __m256 inv = _mm256_set1_ps(s > 0 ? 1.0f / s : 0.0f);
    int k = 0;
    for (; k + 16 <= g; k += 16) {
      const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xg + k), inv), lo, hi);
      const __m256 v1 = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xg + k + 8), inv), lo, hi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i + k), pack16(v0, v1));
    }
    if (k < g) {
      const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xg + k), inv), lo, hi);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i + k), pack8(v0));
    }
    scales[j] = s16;
  }
  return true;
}

SKV_AVX2 bool q4(const float* x, int d, int g, uint8_t* packed, uint16_t* params) {
  if (g % 8) return row_kernels_ref().q4(x, d, g, packed, params);
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    const float* xg = x + i;
    __m256 vmn = _mm256_loadu_ps(xg), vmx = vmn;
    __m256i m = _mm256_setzero_si256();
    for (int k = 0; k < g; k += 8) {
      const __m256 v = _mm256_loadu_ps(xg + k);
      vmn = _mm256_min_ps(vmn, v);
      vmx = _mm256_max_ps(vmx, v);
      m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_castps_si256(v), absmask));
    }
    if (hmax_u32(m) >= 0x7f800000u) return false;
    const float mn = hmin(vmn) + 0.0f, mx = hmax(vmx) + 0.0f;
    float t = (mx - mn) / 15.0f;
    t = kF16Max < t ? kF16Max : t;
    const uint16_t s16 = to_f16(t), m16 = to_f16(mn);
    if ((m16 & 0x7fffu) == 0x7c00u) return false;
    const float s = from_f16(s16);
    const __m256 vm = _mm256_set1_ps(from_f16(m16));
    const __m256 inv = _mm256_set1_ps(s > 0 ? 1.0f / s : 0.0f);
    pack_q4_group(xg, g, vm, inv, packed + i / 2);
    params[j] = s16;
    params[j + 1] = m16;
  }
  return true;
}

SKV_AVX2 void dq8(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre,
                  float* y) {
  if (g % 8) return row_kernels_ref().dq8(q, d, g, scales, centre, y);
  for (int i = 0, j = 0; i < d; i += g, ++j) {
    const __m256 s = _mm256_set1_ps(from_f16(scales[j]));
    for (int k = i; k < i + g; k += 8) {
      const __m256 qf = _mm256_cvtepi32_ps(
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k))));
      const __m256 c = centre ? _mm256_loadu_ps(centre + k) : _mm256_setzero_ps();
      _mm256_storeu_ps(y + k, _mm256_fmadd_ps(qf, s, c));
    }
  }
}

// Eight INT4 elements k..k+7 of a row: unpack the nibbles, y = fmaf(q, s, m) (+ centre).
SKV_AVX2 inline __m256 dq4_8(const uint8_t* packed, int k, __m256 s, __m256 m, const float* centre) {
  const __m128i low4 = _mm_set1_epi8(0x0f);
  int32_t b4;
  std::memcpy(&b4, packed + k / 2, 4);
  const __m128i b = _mm_cvtsi32_si128(b4);
  const __m128i e = _mm_unpacklo_epi8(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
  const __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(e)), s, m);
  return centre ? _mm256_add_ps(v, _mm256_loadu_ps(centre + k)) : v;
}

SKV_AVX2 void dq4(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
                  float* y) {
  if (g % 8) return row_kernels_ref().dq4(packed, d, g, params, centre, y);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    const __m256 s = _mm256_set1_ps(from_f16(params[j]));
    const __m256 m = _mm256_set1_ps(from_f16(params[j + 1]));
    for (int k = i; k < i + g; k += 8) {
      _mm256_storeu_ps(y + k, dq4_8(packed, k, s, m, centre));
    }
  }
}

// F16C quiets signalling NaNs; the reference keeps their bits, so chunks holding an inf/NaN
// take the scalar path.
SKV_AVX2 void f16_to_f32_row(const uint16_t* s, int n, float* o) {
  const __m128i expmask = _mm_set1_epi16(0x7c00);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(h, expmask), expmask))) {
      for (int k = i; k < i + 8; ++k) o[k] = f16_to_f32(s[k]);
      continue;
    }
    _mm256_storeu_ps(o + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) o[i] = f16_to_f32(s[i]);
}
SKV_AVX2 void bf16_to_f32_row(const uint16_t* s, int n, float* o) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), _mm256_slli_epi32(w, 16));
  }
  for (; i < n; ++i) o[i] = bf16_to_f32(s[i]);
}
SKV_AVX2 void f32_to_f16_row(const float* s, int n, uint16_t* o) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) o[i] = f32_to_f16(s[i]);
}


// ---- Fused 16-bit forms. The group reductions run on the 16-bit patterns themselves: for
// F16 and BF16 alike, |x| orders as (bits & 0x7fff) unsigned, and x orders as the signed key
// bits ^ ((bits >> 15) & 0x7fff) (-0 sorts just below +0; the +0 below makes that moot), so
// integer reductions give the exact extremes. The quantizers take 8 groups at a time (across
// rows of a run when a row has fewer): one vector then holds the 8 extremes, and the scales
// are computed once for all 8, one lane per group.

template <bool BF> SKV_AVX2 inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (BF) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  else return _mm256_cvtph_ps(h);
}
template <bool BF> SKV_AVX2 inline __m256 halves_to_f32(__m128i h) {
  if constexpr (BF) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  else return _mm256_cvtph_ps(h);
}
template <bool BF> SKV_AVX2 inline float half_to_f32(uint16_t h) {
  if constexpr (BF) return bf16_to_f32(h);
  else return from_f16(h);
}
template <bool BF> constexpr uint16_t kInfBits = BF ? 0x7f80 : 0x7c00;

SKV_AVX2 inline __m128i load128(const uint16_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
SKV_AVX2 inline __m256i load256(const uint16_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
// bits <-> order key (the map is its own inverse).
SKV_AVX2 inline __m128i order_key(__m128i h) {
  return _mm_xor_si128(h, _mm_srli_epi16(_mm_srai_epi16(h, 15), 1));
}
SKV_AVX2 inline __m256i order_key(__m256i h) {
  return _mm256_xor_si256(h, _mm256_srli_epi16(_mm256_srai_epi16(h, 15), 1));
}

// x * inv rounded and clamped to [lo, hi], as int32 lanes. For F16 sources |x * inv| stays far
// below 2^31 (|x| <= 65504 and a nonzero FP16 scale is >= 2^-24 with |x| <= ~1024 * 15 * s
// or 127 * s), so the conversion rounds exactly (ties to even, as nearbyint) and the clamp is
// left to the saturating packs; BF16 values can be huge, so they are clamped in float first.
template <bool BF> SKV_AVX2 inline __m256i quant8(__m256 v, __m256 lo, __m256 hi) {
  if constexpr (BF) return _mm256_cvttps_epi32(round_clamp(v, lo, hi));
  else return _mm256_cvtps_epi32(v);
}
// int32 lanes -> 16 / 8 int8 bytes in element order (saturating), then clamped to [lo, hi].
SKV_AVX2 inline __m128i pack16i(__m256i a, __m256i b, __m128i lo, __m128i hi) {
  __m256i w = _mm256_packs_epi32(a, b);
  w = _mm256_permute4x64_epi64(w, 0xD8);
  const __m128i r = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
  return _mm_min_epi8(_mm_max_epi8(r, lo), hi);
}
SKV_AVX2 inline __m128i pack8i(__m256i a, __m128i lo, __m128i hi) {
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  return _mm_min_epi8(_mm_max_epi8(_mm_packs_epi16(w, w), lo), hi);
}

// Four int32 x 8 (elements 0..31) -> 32 int16-saturated then byte-saturated lanes in element
// order: two in-lane packs leave dwords as (a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7), one
// cross-lane dword permute restores the order. Signed (int8) or unsigned (0..255) bytes.
template <bool Unsigned>
SKV_AVX2 inline __m256i pack32i(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
  const __m256i r = Unsigned ? _mm256_packus_epi16(ab, cd) : _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Per-lane min and max keys of one group (g a multiple of 8), 16 elements at a time.
SKV_AVX2 inline void group_keys(const uint16_t* xg, int g, __m128i& mn, __m128i& mx) {
  int r = 8;
  if (g >= 16) {
    __m256i mn2 = order_key(load256(xg)), mx2 = mn2;
    for (r = 16; r + 16 <= g; r += 16) {
      const __m256i key = order_key(load256(xg + r));
      mn2 = _mm256_min_epi16(mn2, key);
      mx2 = _mm256_max_epi16(mx2, key);
    }
    mn = _mm_min_epi16(_mm256_castsi256_si128(mn2), _mm256_extracti128_si256(mn2, 1));
    mx = _mm_max_epi16(_mm256_castsi256_si128(mx2), _mm256_extracti128_si256(mx2, 1));
  } else {
    mn = mx = order_key(load128(xg));
  }
  if (r < g) {  // g = 16k + 8
    const __m128i key = order_key(load128(xg + r));
    mn = _mm_min_epi16(mn, key);
    mx = _mm_max_epi16(mx, key);
  }
}
// Eight vectors of 8 int16 -> one whose lane i is the min (max) of vector i: three rounds of
// interleave-and-reduce, no trip through memory.
enum class Reduce { min_i16, max_i16, max_u16 };
template <Reduce R> SKV_AVX2 inline __m128i reduce_op(__m128i a, __m128i b) {
  if constexpr (R == Reduce::min_i16) return _mm_min_epi16(a, b);
  else if constexpr (R == Reduce::max_i16) return _mm_max_epi16(a, b);
  else return _mm_max_epu16(a, b);
}
template <Reduce R> SKV_AVX2 inline __m128i r16(__m128i a, __m128i b) {
  return reduce_op<R>(_mm_unpacklo_epi16(a, b), _mm_unpackhi_epi16(a, b));
}
template <Reduce R> SKV_AVX2 inline __m128i r32(__m128i a, __m128i b) {
  return reduce_op<R>(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
}
template <Reduce R> SKV_AVX2 inline __m128i lanes_reduce(const __m128i* v) {
  const __m128i b03 = r32<R>(r16<R>(v[0], v[1]), r16<R>(v[2], v[3]));
  const __m128i b47 = r32<R>(r16<R>(v[4], v[5]), r16<R>(v[6], v[7]));
  return reduce_op<R>(_mm_unpacklo_epi64(b03, b47), _mm_unpackhi_epi64(b03, b47));
}
SKV_AVX2 inline __m128i lanes_min(const __m128i* v) { return lanes_reduce<Reduce::min_i16>(v); }
SKV_AVX2 inline __m128i lanes_max(const __m128i* v) { return lanes_reduce<Reduce::max_i16>(v); }
SKV_AVX2 inline __m128i lanes_max_u(const __m128i* v) { return lanes_reduce<Reduce::max_u16>(v); }

// Where the groups of a run of rows lie: rows `stride` elements apart, d / g groups each.
// Visited in order, the flat group index f = row * (d / g) + k matches the outputs' layout.
struct GroupWalk {
  const uint16_t* x;
  size_t stride;
  int g, per_row, row = 0, k = 0;
  const uint16_t* next() {
    const uint16_t* p = x + size_t(row) * stride + size_t(k) * size_t(g);
    if (++k == per_row) k = 0, ++row;
    return p;
  }
};

// INT8 over a run of rows, 8 groups at a time: their |x| maxima (as 16-bit patterns) in one
// vector, the scales in one lane per group (the scalar formula's IEEE operations, so the same
// bits), then the values. Returns -1, or the first row holding inf/NaN.
template <bool BF>
SKV_AVX2 int q8_h_rows_t(const uint16_t* x, size_t stride, int rows, int d, int g, int8_t* q, uint16_t* scales) {
  const __m128i absmask = _mm_set1_epi16(0x7fff);
  const __m256i absmask2 = _mm256_set1_epi16(0x7fff);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m128i lo8 = _mm_set1_epi8(-127), hi8 = _mm_set1_epi8(127);
  const __m256i lo32 = _mm256_set1_epi8(-127);
  const int per_row = d / g, total = rows * per_row;
  GroupWalk walk{x, stride, g, per_row};
  for (int f0 = 0; f0 < total; f0 += 8) {
    const int ng = std::min(8, total - f0);
    const uint16_t* src[8];
    __m128i m[8];
    for (int gi = 0; gi < 8; ++gi) {
      if (gi >= ng) {
        m[gi] = _mm_setzero_si128();
        continue;
      }
      const uint16_t* xg = src[gi] = walk.next();
      __m256i m2 = _mm256_setzero_si256();
      int r = 0;
      for (; r + 16 <= g; r += 16) m2 = _mm256_max_epu16(m2, _mm256_and_si256(load256(xg + r), absmask2));
      __m128i v = _mm_max_epu16(_mm256_castsi256_si128(m2), _mm256_extracti128_si256(m2, 1));
      if (r < g) v = _mm_max_epu16(v, _mm_and_si128(load128(xg + r), absmask));
      m[gi] = v;
    }
    const __m128i abits = lanes_max_u(m);
    // Unsigned abits >= inf bits: inf or NaN.
    const __m128i bad = _mm_cmpeq_epi16(_mm_max_epu16(abits, _mm_set1_epi16(int16_t(kInfBits<BF>))), abits);
    if (const int mask = _mm_movemask_epi8(bad) & ((1 << (2 * ng)) - 1))
      return (f0 + __builtin_ctz(unsigned(mask)) / 2) / per_row;
    const __m128i s16 = f16_scales(halves_to_f32<BF>(abits), 127.0f);
    alignas(32) float invs[8];
    store_inverses(s16, invs);
    alignas(16) uint16_t sc[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(sc), s16);
    std::memcpy(scales + f0, sc, size_t(ng) * 2);
    for (int gi = 0; gi < ng; ++gi) {
      const uint16_t* xg = src[gi];
      int8_t* out = q + size_t(f0 + gi) * size_t(g);
      const __m256 inv = _mm256_set1_ps(invs[gi]);
      int k = 0;
      for (; k + 32 <= g; k += 32) {  // saturating packs give <= 127; only -128 needs the clamp
        const __m256i v = pack32i<false>(quant8<BF>(_mm256_mul_ps(load8<BF>(xg + k), inv), lo, hi),
                                         quant8<BF>(_mm256_mul_ps(load8<BF>(xg + k + 8), inv), lo, hi),
                                         quant8<BF>(_mm256_mul_ps(load8<BF>(xg + k + 16), inv), lo, hi),
                                         quant8<BF>(_mm256_mul_ps(load8<BF>(xg + k + 24), inv), lo, hi));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), _mm256_max_epi8(v, lo32));
      }
      for (; k + 16 <= g; k += 16) {
        const __m256i v0 = quant8<BF>(_mm256_mul_ps(load8<BF>(xg + k), inv), lo, hi);
        const __m256i v1 = quant8<BF>(_mm256_mul_ps(load8<BF>(xg + k + 8), inv), lo, hi);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), pack16i(v0, v1, lo8, hi8));
      }
      if (k < g) {
        const __m256i v0 = quant8<BF>(_mm256_mul_ps(load8<BF>(xg + k), inv), lo, hi);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + k), pack8i(v0, lo8, hi8));
      }
    }
  }
  return -1;
}

// INT4 over a run of rows, as q8_h_rows_t. Returns -1, or the first row holding inf/NaN (or
// whose minimum FP16 cannot hold).
template <bool BF>
SKV_AVX2 int q4_h_rows_t(const uint16_t* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params) {
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(15.0f);
  const __m128i lo8 = _mm_setzero_si128(), hi8 = _mm_set1_epi8(15);
  const __m128i nib = _mm_set1_epi16(0x1001);
  const __m256i nib32 = _mm256_set1_epi16(0x1001), hi32 = _mm256_set1_epi8(15);
  // Keys of +inf and -inf: anything at or beyond them is inf or NaN.
  constexpr int16_t kPosInf = int16_t(kInfBits<BF>), kNegInf = int16_t(uint16_t(kInfBits<BF> | 0x8000u) ^ 0x7fffu);
  const int per_row = d / g, total = rows * per_row;
  GroupWalk walk{x, stride, g, per_row};
  for (int f0 = 0; f0 < total; f0 += 8) {
    // Up to 8 groups at a time: their extremes first, then their parameters with one lane per
    // group (the same IEEE operations as the scalar formulas, so the same bits), then the values.
    const int ng = std::min(8, total - f0);
    const uint16_t* src[8];
    __m128i vmn[8], vmx[8];
    for (int gi = 0; gi < 8; ++gi) {
      if (gi < ng) group_keys(src[gi] = walk.next(), g, vmn[gi], vmx[gi]);
      else vmn[gi] = vmx[gi] = _mm_setzero_si128();  // key of +0: a harmless spare lane
    }
    // Lane gi of kmn / kmx: the key of group gi's min / max, reduced in registers.
    const __m128i kmn = lanes_min(vmn), kmx = lanes_max(vmx);
    const __m128i bad = _mm_or_si128(_mm_cmpgt_epi16(kmx, _mm_set1_epi16(int16_t(kPosInf - 1))),
                                     _mm_cmpgt_epi16(_mm_set1_epi16(int16_t(kNegInf + 1)), kmn));
    const int valid = (1 << (2 * ng)) - 1;
    const __m256 zero = _mm256_setzero_ps();
    const __m256 mn = _mm256_add_ps(halves_to_f32<BF>(order_key(kmn)), zero);
    const __m256 mx = _mm256_add_ps(halves_to_f32<BF>(order_key(kmx)), zero);
    const __m128i s16 = f16_scales(_mm256_sub_ps(mx, mn), 15.0f);
    const __m128i m16 = _mm256_cvtps_ph(mn, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const int minf = _mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(m16, _mm_set1_epi16(0x7fff)),
                                                       _mm_set1_epi16(0x7c00)));
    // The first group (so the first row) with a non-finite value or an unstorable minimum.
    if (const int mask = (_mm_movemask_epi8(bad) | minf) & valid) return (f0 + __builtin_ctz(unsigned(mask)) / 2) / per_row;
    alignas(32) float invs[8], ms[8];
    store_inverses(s16, invs);
    _mm256_store_ps(ms, _mm256_cvtph_ps(m16));
    store_q4_params(s16, m16, ng, params + 2 * f0);
    for (int gi = 0; gi < ng; ++gi) {
      const uint16_t* xg = src[gi];
      const __m256 vm = _mm256_set1_ps(ms[gi]);
      const __m256 inv = _mm256_set1_ps(invs[gi]);
      uint8_t* out = packed + size_t(f0 + gi) * size_t(g / 2);
      int k = 0;
      for (; k + 32 <= g; k += 32) {  // unsigned saturation clamps at 0, min_epu8 at 15
        const __m256i v = pack32i<true>(
            quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k), vm), inv), lo, hi),
            quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k + 8), vm), inv), lo, hi),
            quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k + 16), vm), inv), lo, hi),
            quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k + 24), vm), inv), lo, hi));
        const __m256i w = _mm256_maddubs_epi16(_mm256_min_epu8(v, hi32), nib32);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k / 2),
                         _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
      }
      for (; k + 16 <= g; k += 16) {
        const __m256i v0 = quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k), vm), inv), lo, hi);
        const __m256i v1 = quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k + 8), vm), inv), lo, hi);
        const __m128i w = _mm_maddubs_epi16(pack16i(v0, v1, lo8, hi8), nib);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + k / 2), _mm_packus_epi16(w, w));
      }
      if (k < g) {
        const __m256i v0 = quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k), vm), inv), lo, hi);
        const __m128i w = _mm_maddubs_epi16(pack8i(v0, lo8, hi8), nib);
        const int b = _mm_cvtsi128_si32(_mm_packus_epi16(w, w));
        std::memcpy(out + k / 2, &b, 4);
      }
    }
  }
  return -1;
}

// 8 floats -> 8 BF16 (round to nearest even, NaNs quieted; as f32_to_bf16).
SKV_AVX2 inline __m128i to_bf16_8(__m256 f) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1),
                quiet = _mm256_set1_epi32(0x40);
  const __m256i u = _mm256_castps_si256(f);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
  const __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(_mm256_srli_epi32(u, 16), one)), 16);
  const __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
  __m256i w = _mm256_blendv_epi8(r, qn, nan);
  w = _mm256_permute4x64_epi64(_mm256_packus_epi32(w, w), 0xD8);
  return _mm256_castsi256_si128(w);
}
template <bool BF> SKV_AVX2 inline void store8(uint16_t* p, __m256 v) {
  __m128i h;
  if constexpr (BF) h = to_bf16_8(v);
  else h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
}

template <bool BF> SKV_AVX2 void dq8_h_t(const int8_t* q, int d, int g, const uint16_t* scales,
                                         const float* centre, uint16_t* y) {
  for (int i = 0, j = 0; i < d; i += g, ++j) {
    const __m256 s = _mm256_set1_ps(from_f16(scales[j]));
    for (int k = i; k < i + g; k += 8) {
      const __m256 qf = _mm256_cvtepi32_ps(
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k))));
      const __m256 c = centre ? _mm256_loadu_ps(centre + k) : _mm256_setzero_ps();
      store8<BF>(y + k, _mm256_fmadd_ps(qf, s, c));
    }
  }
}

template <bool BF> SKV_AVX2 void dq4_h_t(const uint8_t* packed, int d, int g, const uint16_t* params,
                                         const float* centre, uint16_t* y) {
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    const __m256 s = _mm256_set1_ps(from_f16(params[j]));
    const __m256 m = _mm256_set1_ps(from_f16(params[j + 1]));
    int k = i;
    for (; k + 32 <= i + g; k += 32) {  // 16 bytes -> 32 elements: one load, one nibble split
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + k / 2));
      const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
      const __m128i e[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
      for (int h = 0; h < 2; ++h)
        for (int r = 0; r < 2; ++r) {
          const int at = k + 16 * h + 8 * r;
          const __m128i q = r ? _mm_srli_si128(e[h], 8) : e[h];
          const __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), s, m);
          store8<BF>(y + at, centre ? _mm256_add_ps(v, _mm256_loadu_ps(centre + at)) : v);
        }
    }
    for (; k < i + g; k += 8) store8<BF>(y + k, dq4_8(packed, k, s, m, centre));
  }
}

SKV_AVX2 int q8_h_rows(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, int8_t* q,
                       uint16_t* scales) {
  if (g % 8) return row_kernels_ref().q8_h_rows(x, stride, rows, bf16, d, g, q, scales);
  return bf16 ? q8_h_rows_t<true>(x, stride, rows, d, g, q, scales) : q8_h_rows_t<false>(x, stride, rows, d, g, q, scales);
}
SKV_AVX2 int q4_h_rows(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, uint8_t* packed,
                       uint16_t* params) {
  if (g % 8) return row_kernels_ref().q4_h_rows(x, stride, rows, bf16, d, g, packed, params);
  return bf16 ? q4_h_rows_t<true>(x, stride, rows, d, g, packed, params)
              : q4_h_rows_t<false>(x, stride, rows, d, g, packed, params);
}
SKV_AVX2 bool q8_h(const uint16_t* x, bool bf16, int d, int g, int8_t* q, uint16_t* scales) {
  return q8_h_rows(x, size_t(d), 1, bf16, d, g, q, scales) < 0;
}
SKV_AVX2 bool q4_h(const uint16_t* x, bool bf16, int d, int g, uint8_t* packed, uint16_t* params) {
  return q4_h_rows(x, size_t(d), 1, bf16, d, g, packed, params) < 0;
}
SKV_AVX2 void dq8_h(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre,
                    bool bf16, uint16_t* y) {
  if (g % 8) return row_kernels_ref().dq8_h(q, d, g, scales, centre, bf16, y);
  if (bf16) dq8_h_t<true>(q, d, g, scales, centre, y);
  else dq8_h_t<false>(q, d, g, scales, centre, y);
}
SKV_AVX2 void dq4_h(const uint8_t* packed, int d, int g, const uint16_t* params,
                    const float* centre, bool bf16, uint16_t* y) {
  if (g % 8) return row_kernels_ref().dq4_h(packed, d, g, params, centre, bf16, y);
  if (bf16) dq4_h_t<true>(packed, d, g, params, centre, y);
  else dq4_h_t<false>(packed, d, g, params, centre, y);
}

SKV_AVX2 void f32_to_bf16_row(const float* s, int n, uint16_t* o) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i), to_bf16_8(_mm256_loadu_ps(s + i)));
  for (; i < n; ++i) o[i] = f32_to_bf16(s[i]);
}

// ---- f32 runs (keys after the transform): as the 16-bit runs, 8 groups at a time, with the
// reductions in f32 (|x| as its bit pattern, min / max canonicalised by + 0 as the reference).

// Eight vectors of 8 lanes -> one whose lane i reduces vector i: pairs, then quads inside each
// 128-bit half, then the halves.
template <class Op> SKV_AVX2 inline __m256 reduce_pairs(__m256 a, __m256 b, Op op) {
  return op(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
}
template <class Op> SKV_AVX2 inline __m256 reduce_quads(__m256 a, __m256 b, Op op) {
  const __m256d x = _mm256_castps_pd(a), y = _mm256_castps_pd(b);
  return op(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)), _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
}
template <class Op> SKV_AVX2 inline __m256 lanes_reduce8(const __m256* v, Op op) {
  const __m256 abcd = reduce_quads(reduce_pairs(v[0], v[1], op), reduce_pairs(v[2], v[3], op), op);
  const __m256 efgh = reduce_quads(reduce_pairs(v[4], v[5], op), reduce_pairs(v[6], v[7], op), op);
  return op(_mm256_permute2f128_ps(abcd, efgh, 0x20), _mm256_permute2f128_ps(abcd, efgh, 0x31));
}
struct MaxU32 {
  SKV_AVX2 __m256 operator()(__m256 a, __m256 b) const {
    return _mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
  }
};
struct MinF {
  SKV_AVX2 __m256 operator()(__m256 a, __m256 b) const { return _mm256_min_ps(a, b); }
};
struct MaxF {
  SKV_AVX2 __m256 operator()(__m256 a, __m256 b) const { return _mm256_max_ps(a, b); }
};

struct GroupWalkF {
  const float* x;
  size_t stride;
  int g, per_row, row = 0, k = 0;
  const float* next() {
    const float* p = x + size_t(row) * stride + size_t(k) * size_t(g);
    if (++k == per_row) k = 0, ++row;
    return p;
  }
};

SKV_AVX2 int q8_rows_f(const float* x, size_t stride, int rows, int d, int g, int8_t* q, uint16_t* scales) {
  if (g % 8) return row_kernels_ref().q8_rows(x, stride, rows, d, g, q, scales);
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256 zero = _mm256_setzero_ps();
  const int per_row = d / g, total = rows * per_row;
  GroupWalkF walk{x, stride, g, per_row};
  for (int f0 = 0; f0 < total; f0 += 8) {
    const int ng = std::min(8, total - f0);
    const float* src[8];
    __m256 m[8];
    for (int gi = 0; gi < 8; ++gi) {
      if (gi >= ng) {
        m[gi] = zero;
        continue;
      }
      const float* xg = src[gi] = walk.next();
      __m256i a = _mm256_setzero_si256();
      for (int k = 0; k < g; k += 8)
        a = _mm256_max_epu32(a, _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(xg + k)), absmask));
      m[gi] = _mm256_castsi256_ps(a);
    }
    const __m256 a = lanes_reduce8(m, MaxU32{});  // |x| maxima, one lane per group
    const __m256i bad = _mm256_cmpgt_epi32(_mm256_castps_si256(a), _mm256_set1_epi32(0x7f7fffff));
    if (const int mask = _mm256_movemask_ps(_mm256_castsi256_ps(bad)) & ((1 << ng) - 1))
      return (f0 + __builtin_ctz(unsigned(mask))) / per_row;
    const __m128i s16 = f16_scales(a, 127.0f);
    alignas(32) float invs[8];
    store_inverses(s16, invs);
    alignas(16) uint16_t sc[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(sc), s16);
    std::memcpy(scales + f0, sc, size_t(ng) * 2);
    for (int gi = 0; gi < ng; ++gi) {
      const float* xg = src[gi];
      int8_t* out = q + size_t(f0 + gi) * size_t(g);
      const __m256 inv = _mm256_set1_ps(invs[gi]);
      int k = 0;
      for (; k + 16 <= g; k += 16) {
        const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xg + k), inv), lo, hi);
        const __m256 v1 = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xg + k + 8), inv), lo, hi);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), pack16(v0, v1));
      }
      if (k < g) {
        const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xg + k), inv), lo, hi);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + k), pack8(v0));
      }
    }
  }
  return -1;
}

SKV_AVX2 int q4_rows_f(const float* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params) {
  if (g % 8) return row_kernels_ref().q4_rows(x, stride, rows, d, g, packed, params);
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256 zero = _mm256_setzero_ps();
  const int per_row = d / g, total = rows * per_row;
  GroupWalkF walk{x, stride, g, per_row};
  for (int f0 = 0; f0 < total; f0 += 8) {
    const int ng = std::min(8, total - f0);
    const float* src[8];
    __m256 vmn[8], vmx[8], m[8];
    for (int gi = 0; gi < 8; ++gi) {
      if (gi >= ng) {
        vmn[gi] = vmx[gi] = m[gi] = zero;
        continue;
      }
      const float* xg = src[gi] = walk.next();
      __m256 mn = _mm256_loadu_ps(xg), mx = mn;
      __m256i a = _mm256_and_si256(_mm256_castps_si256(mn), absmask);
      for (int k = 8; k < g; k += 8) {
        const __m256 v = _mm256_loadu_ps(xg + k);
        mn = _mm256_min_ps(mn, v);
        mx = _mm256_max_ps(mx, v);
        a = _mm256_max_epu32(a, _mm256_and_si256(_mm256_castps_si256(v), absmask));
      }
      vmn[gi] = mn;
      vmx[gi] = mx;
      m[gi] = _mm256_castsi256_ps(a);
    }
    const __m256 a = lanes_reduce8(m, MaxU32{});
    const __m256i bad = _mm256_cmpgt_epi32(_mm256_castps_si256(a), _mm256_set1_epi32(0x7f7fffff));
    const __m256 mn = _mm256_add_ps(lanes_reduce8(vmn, MinF{}), zero);
    const __m256 mx = _mm256_add_ps(lanes_reduce8(vmx, MaxF{}), zero);
    const __m128i s16 = f16_scales(_mm256_sub_ps(mx, mn), 15.0f);
    const __m128i m16 = _mm256_cvtps_ph(mn, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // Per group: a non-finite value, or a minimum beyond FP16 range (one bit per group).
    const __m128i minf16 = _mm_cmpeq_epi16(_mm_and_si128(m16, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
    const int minf = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cvtepi16_epi32(minf16)));
    if (const int mask = (_mm256_movemask_ps(_mm256_castsi256_ps(bad)) | minf) & ((1 << ng) - 1))
      return (f0 + __builtin_ctz(unsigned(mask))) / per_row;
    alignas(32) float invs[8], ms[8];
    store_inverses(s16, invs);
    _mm256_store_ps(ms, _mm256_cvtph_ps(m16));
    store_q4_params(s16, m16, ng, params + 2 * f0);
    for (int gi = 0; gi < ng; ++gi) {
      const float* xg = src[gi];
      const __m256 vm = _mm256_set1_ps(ms[gi]);
      const __m256 inv = _mm256_set1_ps(invs[gi]);
      pack_q4_group(xg, g, vm, inv, packed + size_t(f0 + gi) * size_t(g / 2));
    }
  }
  return -1;
}


// ---- INT2 (format 1.1): the INT4 kernels with 3 steps, four codes per byte.

// 16 bytes of codes 0..3 (elements 0..15) -> 4 packed bytes (element 4i + j at bits 2j of byte
// i), in the low 32 bits: pairs to nibbles (c0 + 4 c1), then nibble pairs to bytes (n0 + 16 n1).
SKV_AVX2 inline int pack2_16(__m128i codes) {
  const __m128i n = _mm_maddubs_epi16(codes, _mm_set1_epi16(0x0401));
  const __m128i w = _mm_maddubs_epi16(_mm_packus_epi16(n, n), _mm_set1_epi16(0x1001));
  return _mm_cvtsi128_si32(_mm_packus_epi16(w, w));
}

// Packs one INT2 group of f32 values: q = clamp(round((x - m) * inv), 0, 3), four per byte.
SKV_AVX2 inline void pack_q2_group(const float* xg, int g, __m256 vm, __m256 inv, uint8_t* out) {
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(3.0f);
  int k = 0;
  for (; k + 16 <= g; k += 16) {
    const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xg + k), vm), inv), lo, hi);
    const __m256 v1 = round_clamp(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xg + k + 8), vm), inv), lo, hi);
    const int b = pack2_16(pack16(v0, v1));
    std::memcpy(out + k / 4, &b, 4);
  }
  if (k < g) {
    const __m256 v0 = round_clamp(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xg + k), vm), inv), lo, hi);
    const int b = pack2_16(pack8(v0));
    std::memcpy(out + k / 4, &b, 2);
  }
}

SKV_AVX2 bool q2(const float* x, int d, int g, uint8_t* packed, uint16_t* params) {
  if (g % 8) return row_kernels_ref().q2(x, d, g, packed, params);
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    const float* xg = x + i;
    __m256 vmn = _mm256_loadu_ps(xg), vmx = vmn;
    __m256i m = _mm256_setzero_si256();
    for (int k = 0; k < g; k += 8) {
      const __m256 v = _mm256_loadu_ps(xg + k);
      vmn = _mm256_min_ps(vmn, v);
      vmx = _mm256_max_ps(vmx, v);
      m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_castps_si256(v), absmask));
    }
    if (hmax_u32(m) >= 0x7f800000u) return false;
    const float mn = hmin(vmn) + 0.0f, mx = hmax(vmx) + 0.0f;
    float t = (mx - mn) / 3.0f;
    t = kF16Max < t ? kF16Max : t;
    const uint16_t s16 = to_f16(t), m16 = to_f16(mn);
    if ((m16 & 0x7fffu) == 0x7c00u) return false;
    const float s = from_f16(s16);
    const __m256 vm = _mm256_set1_ps(from_f16(m16));
    const __m256 inv = _mm256_set1_ps(s > 0 ? 1.0f / s : 0.0f);
    pack_q2_group(xg, g, vm, inv, packed + i / 4);
    params[j] = s16;
    params[j + 1] = m16;
  }
  return true;
}

// Eight INT2 elements k..k+7 of a row (k a multiple of 8: two whole bytes): every lane takes the
// 16 bits and shifts its own code down, then y = fmaf(q, s, m) (+ centre).
SKV_AVX2 inline __m256 dq2_8(const uint8_t* packed, int k, __m256 s, __m256 m, const float* centre) {
  uint16_t b2;
  std::memcpy(&b2, packed + k / 4, 2);
  const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(b2)), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                     _mm256_set1_epi32(3));
  const __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), s, m);
  return centre ? _mm256_add_ps(v, _mm256_loadu_ps(centre + k)) : v;
}

SKV_AVX2 void dq2(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre, float* y) {
  if (g % 8) return row_kernels_ref().dq2(packed, d, g, params, centre, y);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    const __m256 s = _mm256_set1_ps(from_f16(params[j]));
    const __m256 m = _mm256_set1_ps(from_f16(params[j + 1]));
    for (int k = i; k < i + g; k += 8) _mm256_storeu_ps(y + k, dq2_8(packed, k, s, m, centre));
  }
}

template <bool BF> SKV_AVX2 void dq2_h_t(const uint8_t* packed, int d, int g, const uint16_t* params,
                                         const float* centre, uint16_t* y) {
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    const __m256 s = _mm256_set1_ps(from_f16(params[j]));
    const __m256 m = _mm256_set1_ps(from_f16(params[j + 1]));
    for (int k = i; k < i + g; k += 8) store8<BF>(y + k, dq2_8(packed, k, s, m, centre));
  }
}

// INT2 over a run of 16-bit rows, as q4_h_rows_t (the same extremes, checks and parameters
// with 3 steps). Returns -1, or the first row holding inf/NaN (or an unstorable minimum).
template <bool BF>
SKV_AVX2 int q2_h_rows_t(const uint16_t* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params) {
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(3.0f);
  const __m128i lo8 = _mm_setzero_si128(), hi8 = _mm_set1_epi8(3);
  constexpr int16_t kPosInf = int16_t(kInfBits<BF>), kNegInf = int16_t(uint16_t(kInfBits<BF> | 0x8000u) ^ 0x7fffu);
  const int per_row = d / g, total = rows * per_row;
  GroupWalk walk{x, stride, g, per_row};
  for (int f0 = 0; f0 < total; f0 += 8) {
    const int ng = std::min(8, total - f0);
    const uint16_t* src[8];
    __m128i vmn[8], vmx[8];
    for (int gi = 0; gi < 8; ++gi) {
      if (gi < ng) group_keys(src[gi] = walk.next(), g, vmn[gi], vmx[gi]);
      else vmn[gi] = vmx[gi] = _mm_setzero_si128();
    }
    const __m128i kmn = lanes_min(vmn), kmx = lanes_max(vmx);
    const __m128i bad = _mm_or_si128(_mm_cmpgt_epi16(kmx, _mm_set1_epi16(int16_t(kPosInf - 1))),
                                     _mm_cmpgt_epi16(_mm_set1_epi16(int16_t(kNegInf + 1)), kmn));
    const int valid = (1 << (2 * ng)) - 1;
    const __m256 zero = _mm256_setzero_ps();
    const __m256 mn = _mm256_add_ps(halves_to_f32<BF>(order_key(kmn)), zero);
    const __m256 mx = _mm256_add_ps(halves_to_f32<BF>(order_key(kmx)), zero);
    const __m128i s16 = f16_scales(_mm256_sub_ps(mx, mn), 3.0f);
    const __m128i m16 = _mm256_cvtps_ph(mn, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const int minf = _mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(m16, _mm_set1_epi16(0x7fff)),
                                                       _mm_set1_epi16(0x7c00)));
    if (const int mask = (_mm_movemask_epi8(bad) | minf) & valid) return (f0 + __builtin_ctz(unsigned(mask)) / 2) / per_row;
    alignas(32) float invs[8], ms[8];
    store_inverses(s16, invs);
    _mm256_store_ps(ms, _mm256_cvtph_ps(m16));
    store_q4_params(s16, m16, ng, params + 2 * f0);
    for (int gi = 0; gi < ng; ++gi) {
      const uint16_t* xg = src[gi];
      const __m256 vm = _mm256_set1_ps(ms[gi]);
      const __m256 inv = _mm256_set1_ps(invs[gi]);
      uint8_t* out = packed + size_t(f0 + gi) * size_t(g / 4);
      int k = 0;
      for (; k + 16 <= g; k += 16) {
        const __m256i v0 = quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k), vm), inv), lo, hi);
        const __m256i v1 = quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k + 8), vm), inv), lo, hi);
        const int b = pack2_16(pack16i(v0, v1, lo8, hi8));
        std::memcpy(out + k / 4, &b, 4);
      }
      if (k < g) {
        const __m256i v0 = quant8<BF>(_mm256_mul_ps(_mm256_sub_ps(load8<BF>(xg + k), vm), inv), lo, hi);
        const int b = pack2_16(pack8i(v0, lo8, hi8));
        std::memcpy(out + k / 4, &b, 2);
      }
    }
  }
  return -1;
}

SKV_AVX2 int q2_h_rows(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, uint8_t* packed,
                       uint16_t* params) {
  if (g % 8) return row_kernels_ref().q2_h_rows(x, stride, rows, bf16, d, g, packed, params);
  return bf16 ? q2_h_rows_t<true>(x, stride, rows, d, g, packed, params)
              : q2_h_rows_t<false>(x, stride, rows, d, g, packed, params);
}
SKV_AVX2 bool q2_h(const uint16_t* x, bool bf16, int d, int g, uint8_t* packed, uint16_t* params) {
  return q2_h_rows(x, size_t(d), 1, bf16, d, g, packed, params) < 0;
}
SKV_AVX2 void dq2_h(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
                    bool bf16, uint16_t* y) {
  if (g % 8) return row_kernels_ref().dq2_h(packed, d, g, params, centre, bf16, y);
  if (bf16) dq2_h_t<true>(packed, d, g, params, centre, y);
  else dq2_h_t<false>(packed, d, g, params, centre, y);
}

// INT2 over a run of f32 rows, as q4_rows_f.
SKV_AVX2 int q2_rows_f(const float* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params) {
  if (g % 8) return row_kernels_ref().q2_rows(x, stride, rows, d, g, packed, params);
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256 zero = _mm256_setzero_ps();
  const int per_row = d / g, total = rows * per_row;
  GroupWalkF walk{x, stride, g, per_row};
  for (int f0 = 0; f0 < total; f0 += 8) {
    const int ng = std::min(8, total - f0);
    const float* src[8];
    __m256 vmn[8], vmx[8], m[8];
    for (int gi = 0; gi < 8; ++gi) {
      if (gi >= ng) {
        vmn[gi] = vmx[gi] = m[gi] = zero;
        continue;
      }
      const float* xg = src[gi] = walk.next();
      __m256 mn = _mm256_loadu_ps(xg), mx = mn;
      __m256i a = _mm256_and_si256(_mm256_castps_si256(mn), absmask);
      for (int k = 8; k < g; k += 8) {
        const __m256 v = _mm256_loadu_ps(xg + k);
        mn = _mm256_min_ps(mn, v);
        mx = _mm256_max_ps(mx, v);
        a = _mm256_max_epu32(a, _mm256_and_si256(_mm256_castps_si256(v), absmask));
      }
      vmn[gi] = mn;
      vmx[gi] = mx;
      m[gi] = _mm256_castsi256_ps(a);
    }
    const __m256 a = lanes_reduce8(m, MaxU32{});
    const __m256i bad = _mm256_cmpgt_epi32(_mm256_castps_si256(a), _mm256_set1_epi32(0x7f7fffff));
    const __m256 mn = _mm256_add_ps(lanes_reduce8(vmn, MinF{}), zero);
    const __m256 mx = _mm256_add_ps(lanes_reduce8(vmx, MaxF{}), zero);
    const __m128i s16 = f16_scales(_mm256_sub_ps(mx, mn), 3.0f);
    const __m128i m16 = _mm256_cvtps_ph(mn, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i minf16 = _mm_cmpeq_epi16(_mm_and_si128(m16, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
    const int minf = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cvtepi16_epi32(minf16)));
    if (const int mask = (_mm256_movemask_ps(_mm256_castsi256_ps(bad)) | minf) & ((1 << ng) - 1))
      return (f0 + __builtin_ctz(unsigned(mask))) / per_row;
    alignas(32) float invs[8], ms[8];
    store_inverses(s16, invs);
    _mm256_store_ps(ms, _mm256_cvtph_ps(m16));
    store_q4_params(s16, m16, ng, params + 2 * f0);
    for (int gi = 0; gi < ng; ++gi)
      pack_q2_group(src[gi], g, _mm256_set1_ps(ms[gi]), _mm256_set1_ps(invs[gi]),
                    packed + size_t(f0 + gi) * size_t(g / 4));
  }
  return -1;
}

}  // namespace

const RowKernels* row_kernels_avx2() noexcept {
  static const RowKernels k{"avx2",          q8,
                            q4,              dq8,
                            dq4,             f16_to_f32_row,
                            bf16_to_f32_row, f32_to_f16_row,
                            f32_to_bf16_row, q8_h,
                            q4_h,            dq8_h,
                            dq4_h,           q8_h_rows,
                            q4_h_rows,       q8_rows_f,
                            q4_rows_f,       q2,
                            dq2,             q2_h,
                            dq2_h,           q2_h_rows,
                            q2_rows_f};
  return cpu_has_avx2_fma_f16c() ? &k : nullptr;
}

}  // namespace skv::detail
