// AVX2+FMA key-transform kernels. Per element the same IEEE operations in the same order as the
// scalar set (one fmaf per rotated element, its product rounded first; one subtraction; one
// f64 division and addition per accumulated element), so the same bits. The conversions and the
// quantizers are the AVX2 row kernels (already bit-identical to the reference); what is new
// here is the rotation, which the scalar loop did one pair at a time.
#include "cpu_features.hpp"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "key_rows.hpp"
#include "quant_rows.hpp"
#include "skv/half.hpp"

#define SKV_AVX2 __attribute__((target("avx2,f16c,fma")))

namespace skv::detail {
namespace {

// Rotates x by -angle (Undo) or +angle in place. The sign of a product is flipped with an
// exclusive or: exactly the scalar -(a * s).
template <bool Undo>
SKV_AVX2 void rotate(float* x, const RowRope& r, int d) {
  const int half = d / 2;
  const float* cs = r.cs;
  const float* sn = r.sn;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int j = 0;
  if (!r.gptj) {
    for (; j + 8 <= half; j += 8) {
      const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + half);
      const __m256 c = _mm256_loadu_ps(cs + j), s = _mm256_loadu_ps(sn + j);
      const __m256 bs = _mm256_mul_ps(b, s), as = _mm256_mul_ps(a, s);
      if (Undo) {
        _mm256_storeu_ps(x + j, _mm256_fmadd_ps(a, c, bs));
        _mm256_storeu_ps(x + j + half, _mm256_fmadd_ps(b, c, _mm256_xor_ps(as, sign)));
      } else {
        _mm256_storeu_ps(x + j, _mm256_fmadd_ps(a, c, _mm256_xor_ps(bs, sign)));
        _mm256_storeu_ps(x + j + half, _mm256_fmadd_ps(b, c, as));
      }
    }
    for (; j < half; ++j) {
      const float a0 = x[j], b0 = x[j + half];
      x[j] = Undo ? std::fmaf(a0, cs[j], b0 * sn[j]) : std::fmaf(a0, cs[j], -(b0 * sn[j]));
      x[j + half] = Undo ? std::fmaf(b0, cs[j], -(a0 * sn[j])) : std::fmaf(b0, cs[j], a0 * sn[j]);
    }
    return;
  }
  // GPT-J: 8 floats hold pairs j..j+3 as (a b a b ...). Swapping neighbours lines each b up
  // with its a; the even lanes take +b*s (undo) and the odd ones -(a*s), or the reverse.
  const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256 flip = Undo ? _mm256_setr_ps(0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f)
                           : _mm256_setr_ps(-0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f);
  for (; j + 4 <= half; j += 4) {
    const __m256 v = _mm256_loadu_ps(x + 2 * j);
    const __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cs + j)), dup);
    const __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sn + j)), dup);
    const __m256 p = _mm256_mul_ps(_mm256_permute_ps(v, 0xB1), s);
    _mm256_storeu_ps(x + 2 * j, _mm256_fmadd_ps(v, c, _mm256_xor_ps(p, flip)));
  }
  for (; j < half; ++j) {
    const float a0 = x[2 * j], b0 = x[2 * j + 1];
    x[2 * j] = Undo ? std::fmaf(a0, cs[j], b0 * sn[j]) : std::fmaf(a0, cs[j], -(b0 * sn[j]));
    x[2 * j + 1] = Undo ? std::fmaf(b0, cs[j], -(a0 * sn[j])) : std::fmaf(b0, cs[j], a0 * sn[j]);
  }
}

// Stack room for a block of rows (or one long row); longer ones on the heap.
struct RowBuffer {
  static constexpr int kFloats = 4096;
  alignas(32) float stack[kFloats];
  std::vector<float> heap;
  float* get(int d) {
    if (d <= kFloats) return stack;
    heap.resize(size_t(d));
    return heap.data();
  }
  // Rows of d floats per block.
  static int block(int d) { return d <= kFloats ? kFloats / d : 1; }
};

// Eight elements i..i+7 of a source row as f32 (see transform() for F16 infs / NaNs).
template <RowType T> SKV_AVX2 inline __m256 load8(const void* x, int i) {
  if constexpr (T == RowType::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(x) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i));
    if constexpr (T == RowType::bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else return _mm256_cvtph_ps(h);
  }
}
// Whether an F16 row holds an inf or NaN (exponent all ones).
SKV_AVX2 inline bool has_special_f16(const uint16_t* p, int d) {
  const __m128i e = _mm_set1_epi16(0x7c00);
  __m128i any = _mm_setzero_si128();
  int i = 0;
  for (; i + 8 <= d; i += 8)
    any = _mm_or_si128(any, _mm_cmpeq_epi16(_mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)), e), e));
  bool special = _mm_movemask_epi8(any) != 0;
  for (; i < d; ++i) special = special || (p[i] & 0x7c00) == 0x7c00;
  return special;
}
template <RowType T> inline float load1(const void* x, int i) {
  if constexpr (T == RowType::f32) return static_cast<const float*>(x)[i];
  else if constexpr (T == RowType::bf16) return bf16_to_f32(static_cast<const uint16_t*>(x)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(x)[i]);
}

// v minus the centre at i, or v itself without a centre (as the reference: even x - 0 would
// quiet a signalling NaN).
SKV_AVX2 inline __m256 less(__m256 v, const float* centre, int i) {
  return centre ? _mm256_sub_ps(v, _mm256_loadu_ps(centre + i)) : v;
}
inline float less(float v, const float* centre, int i) { return centre ? v - centre[i] : v; }

// Load, undo RoPE, subtract the centre: one pass, in registers. NeoX pairs lie a half row
// apart, GPT-J pairs side by side (see rotate()).
template <RowType T>
SKV_AVX2 void transform_t(const void* x, int d, const RowRope& r, const float* centre, float* o) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int i = 0;
  if (!r.cs) {
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(o + i, less(load8<T>(x, i), centre, i));
    for (; i < d; ++i) o[i] = less(load1<T>(x, i), centre, i);
    return;
  }
  const int half = d / 2;
  const float* cs = r.cs;
  const float* sn = r.sn;
  int j = 0;
  if (!r.gptj) {
    for (; j + 8 <= half; j += 8) {
      const __m256 a = load8<T>(x, j), b = load8<T>(x, j + half);
      const __m256 c = _mm256_loadu_ps(cs + j), s = _mm256_loadu_ps(sn + j);
      const __m256 ra = _mm256_fmadd_ps(a, c, _mm256_mul_ps(b, s));
      const __m256 rb = _mm256_fmadd_ps(b, c, _mm256_xor_ps(_mm256_mul_ps(a, s), sign));
      _mm256_storeu_ps(o + j, less(ra, centre, j));
      _mm256_storeu_ps(o + j + half, less(rb, centre, j + half));
    }
    for (; j < half; ++j) {
      const float a0 = load1<T>(x, j), b0 = load1<T>(x, j + half);
      o[j] = less(std::fmaf(a0, cs[j], b0 * sn[j]), centre, j);
      o[j + half] = less(std::fmaf(b0, cs[j], -(a0 * sn[j])), centre, j + half);
    }
    return;
  }
  const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256 flip = _mm256_setr_ps(0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f);
  for (; j + 4 <= half; j += 4) {
    const __m256 v = load8<T>(x, 2 * j);
    const __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cs + j)), dup);
    const __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sn + j)), dup);
    const __m256 p = _mm256_mul_ps(_mm256_permute_ps(v, 0xB1), s);
    _mm256_storeu_ps(o + 2 * j, less(_mm256_fmadd_ps(v, c, _mm256_xor_ps(p, flip)), centre, 2 * j));
  }
  for (; j < half; ++j) {
    const float a0 = load1<T>(x, 2 * j), b0 = load1<T>(x, 2 * j + 1);
    o[2 * j] = less(std::fmaf(a0, cs[j], b0 * sn[j]), centre, 2 * j);
    o[2 * j + 1] = less(std::fmaf(b0, cs[j], -(a0 * sn[j])), centre, 2 * j + 1);
  }
}

// F16C quiets signalling NaNs where the reference keeps their bits, so an F16 row holding an
// inf / NaN (rare: it is refused by the quantizer) is converted first, then transformed as F32.
SKV_AVX2 void transform(const void* x, RowType t, int d, const RowRope& r, const float* centre, float* o) {
  if (t == RowType::f16) {
    const auto* p = static_cast<const uint16_t*>(x);
    if (!has_special_f16(p, d)) return transform_t<RowType::f16>(x, d, r, centre, o);
    for (int i = 0; i < d; ++i) o[i] = f16_to_f32(p[i]);
    return transform_t<RowType::f32>(o, d, r, centre, o);
  }
  if (t == RowType::bf16) transform_t<RowType::bf16>(x, d, r, centre, o);
  else transform_t<RowType::f32>(x, d, r, centre, o);
}

const void* row_at(const void* x, RowType t, size_t stride, int r) {
  return static_cast<const char*>(x) + size_t(r) * stride * (t == RowType::f32 ? 4 : 2);
}
RowRope rope_at(const RowRope& r, int row) {
  RowRope o = r;
  if (r.cs) o.cs += size_t(row) * r.step, o.sn += size_t(row) * r.step;
  return o;
}

// acc += x / count without a division (the division alone was most of the centre pass), when
// count is an integer in [1, 2^31): x * (yh + yl), with yh + yl = 1 / count to about 2^-106,
// as a double-double product rounded once. The exact quotient of a float by such an integer
// lies at least 2^-86 (relative) away from any rounding boundary of doubles (a midpoint would
// need an odd numerator of 54 bits where x has 24), far beyond this error, so the rounding is
// the division's. x = -0 gives +0 where the division gives -0; acc starts at +0 and so is never
// -0, and acc + -0 == acc + +0. (Non-finite x is not covered: such a row is refused later.)
SKV_AVX2 void accumulate(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r,
                         double count, double* acc) {
  RowBuffer b;
  float* f = b.get(d);
  const bool exact = count >= 1 && count < 2147483648.0 && count == std::floor(count);
  const double yh = 1.0 / count, yl = std::fma(-yh, count, 1.0) / count;
  const __m256d vh = _mm256_set1_pd(yh), vl = _mm256_set1_pd(yl), n = _mm256_set1_pd(count);
  for (int row = 0; row < rows; ++row) {
    transform(row_at(x, t, stride, row), t, d, rope_at(r, row), nullptr, f);
    int i = 0;
    for (; i + 4 <= d; i += 4) {
      const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(f + i));
      __m256d q;
      if (exact) {
        const __m256d ph = _mm256_mul_pd(a, vh);
        const __m256d pl = _mm256_fmsub_pd(a, vh, ph);
        q = _mm256_add_pd(ph, _mm256_add_pd(pl, _mm256_mul_pd(a, vl)));
      } else {
        q = _mm256_div_pd(a, n);
      }
      _mm256_storeu_pd(acc + i, _mm256_add_pd(_mm256_loadu_pd(acc + i), q));
    }
    for (; i < d; ++i) acc[i] += double(f[i]) / count;
  }
}

// Transforms a block of rows into the buffer, then quantizes the block in one run-kernel call
// (which computes the scales of 8 groups at once).
template <class Quant>
SKV_AVX2 int transform_runs(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r,
                            const float* centre, Quant quant) {
  RowBuffer b;
  float* f = b.get(d);
  const int block = RowBuffer::block(d);
  for (int r0 = 0; r0 < rows; r0 += block) {
    const int n = std::min(block, rows - r0);
    for (int i = 0; i < n; ++i)
      transform(row_at(x, t, stride, r0 + i), t, d, rope_at(r, r0 + i), centre, f + size_t(i) * size_t(d));
    const int bad = quant(f, r0, n);
    if (bad >= 0) return r0 + bad;
  }
  return -1;
}

SKV_AVX2 int q8(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r, const float* centre,
                int g, int8_t* q, uint16_t* scales) {
  const RowKernels& K = *row_kernels_avx2();
  return transform_runs(x, t, stride, rows, d, r, centre, [&](const float* f, int r0, int n) {
    return K.q8_rows(f, size_t(d), n, d, g, q + size_t(r0) * size_t(d), scales + size_t(r0) * size_t(d / g));
  });
}

SKV_AVX2 int q4(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r, const float* centre,
                int g, uint8_t* packed, uint16_t* params) {
  const RowKernels& K = *row_kernels_avx2();
  return transform_runs(x, t, stride, rows, d, r, centre, [&](const float* f, int r0, int n) {
    return K.q4_rows(f, size_t(d), n, d, g, packed + size_t(r0) * size_t(d / 2),
                     params + size_t(r0) * size_t(2 * (d / g)));
  });
}

SKV_AVX2 void finish(float* f, int d, const RowRope& r, RowType t, void* y) {
  const RowKernels& K = *row_kernels_avx2();
  if (r.cs) rotate<false>(f, r, d);
  if (t == RowType::f16) K.f32_to_f16(f, d, static_cast<uint16_t*>(y));
  else if (t == RowType::bf16) K.f32_to_bf16(f, d, static_cast<uint16_t*>(y));
  else std::memcpy(y, f, size_t(d) * 4);
}

SKV_AVX2 void dq8(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre,
                  const RowRope& r, RowType t, void* y) {
  RowBuffer b;
  float* f = b.get(d);
  row_kernels_avx2()->dq8(q, d, g, scales, centre, f);
  finish(f, d, r, t, y);
}

SKV_AVX2 void dq4(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
                  const RowRope& r, RowType t, void* y) {
  RowBuffer b;
  float* f = b.get(d);
  row_kernels_avx2()->dq4(packed, d, g, params, centre, f);
  finish(f, d, r, t, y);
}

SKV_AVX2 int q2(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r, const float* centre,
                int g, uint8_t* packed, uint16_t* params) {
  const RowKernels& K = *row_kernels_avx2();
  return transform_runs(x, t, stride, rows, d, r, centre, [&](const float* f, int r0, int n) {
    return K.q2_rows(f, size_t(d), n, d, g, packed + size_t(r0) * size_t(d / 4),
                     params + size_t(r0) * size_t(2 * (d / g)));
  });
}

SKV_AVX2 void dq2(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
                  const RowRope& r, RowType t, void* y) {
  RowBuffer b;
  float* f = b.get(d);
  row_kernels_avx2()->dq2(packed, d, g, params, centre, f);
  finish(f, d, r, t, y);
}

}  // namespace

const KeyRowKernels* key_row_kernels_avx2() noexcept {
  static const KeyRowKernels k{"avx2", accumulate, q8, q4, dq8, dq4, q2, dq2};
  return cpu_has_avx2_fma_f16c() ? &k : nullptr;
}

}  // namespace skv::detail
