// AVX2+F16C+FMA row kernels. Same operations as the reference, in the same order per element;
// only the group reductions (max |x|, min, max) are vectorised, and those are exact and
// order-independent (the reference canonicalises the sign of a zero min/max).
#include <cpuid.h>
#include <immintrin.h>

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
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(15.0f);
  const __m128i nib = _mm_set1_epi16(0x1001);  // bytes (1, 16): b[2i] + 16 * b[2i+1]
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
    uint8_t* out = packed + i / 2;
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

SKV_AVX2 void dq4(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
                  float* y) {
  if (g % 8) return row_kernels_ref().dq4(packed, d, g, params, centre, y);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    const __m256 s = _mm256_set1_ps(from_f16(params[j]));
    const __m256 m = _mm256_set1_ps(from_f16(params[j + 1]));
    for (int k = i; k < i + g; k += 8) {
      int32_t b4;
      std::memcpy(&b4, packed + k / 2, 4);
      const __m128i b = _mm_cvtsi32_si128(b4);
      const __m128i e = _mm_unpacklo_epi8(_mm_and_si128(b, low4),
                                          _mm_and_si128(_mm_srli_epi16(b, 4), low4));
      __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(e)), s, m);
      if (centre) v = _mm256_add_ps(v, _mm256_loadu_ps(centre + k));
      _mm256_storeu_ps(y + k, v);
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
SKV_AVX2 void f32_to_bf16_row(const float* s, int n, uint16_t* o) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1),
                quiet = _mm256_set1_epi32(0x40);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
    const __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(_mm256_srli_epi32(u, 16), one)), 16);
    const __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
    __m256i w = _mm256_blendv_epi8(r, qn, nan);
    w = _mm256_permute4x64_epi64(_mm256_packus_epi32(w, w), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i), _mm256_castsi256_si128(w));
  }
  for (; i < n; ++i) o[i] = f32_to_bf16(s[i]);
}

}  // namespace

const RowKernels* row_kernels_avx2() noexcept {
  static const RowKernels k{"avx2",          q8,
                            q4,              dq8,
                            dq4,             f16_to_f32_row,
                            bf16_to_f32_row, f32_to_f16_row,
                            f32_to_bf16_row};
  __builtin_cpu_init();
  // clang's __builtin_cpu_supports does not know "f16c": read CPUID.1:ECX bit 29 directly.
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
  const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  return ok ? &k : nullptr;
}

}  // namespace skv::detail
