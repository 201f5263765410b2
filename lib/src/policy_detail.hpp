// Internal helpers shared by the synthetic generator, scoring, error measurement and metrics:
// row conversion to/from float. (The RoPE table is rope.hpp's.) Not installed; not part of the public API.
#pragma once
#include "cpu_features.hpp"
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "skv/dtype.hpp"
#include "skv/half.hpp"
#include "skv/kvcache.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace skv::detail {

// F16 <-> F32 for whole rows with F16C when the CPU has it (chosen at run time; the library is
// built for baseline x86-64). Both directions are exact / round-to-nearest-even, so results are
// bit-identical to the scalar f16_to_f32 / f32_to_f16.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SKV_HAVE_F16C_PATH 1
__attribute__((target("avx,f16c"))) inline void f16_row_to_f32(const std::byte* p, int n, float* out) noexcept {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * size_t(i)))));
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * size_t(i), 2);
    out[i] = f16_to_f32(h);
  }
}
__attribute__((target("avx,f16c"))) inline void f32_row_to_f16(const float* in, int n, std::byte* p) noexcept {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(in + i);
    // NaN inputs keep the scalar converter's payload rules: fall back for those lanes' blocks.
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) break;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 2 * size_t(i)), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) {
    const uint16_t h = f32_to_f16(in[i]);
    std::memcpy(p + 2 * size_t(i), &h, 2);
  }
}
inline bool have_f16c() noexcept { return cpu_has_avx_f16c(); }
#endif

inline void load_row(const std::byte* p, DType t, int n, float* out) noexcept {
  switch (t) {
    case DType::F32: std::memcpy(out, p, size_t(n) * 4); return;
    case DType::F16: {
#ifdef SKV_HAVE_F16C_PATH
      if (have_f16c()) return f16_row_to_f32(p, n, out);
#endif
      for (int i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * size_t(i), 2);
        out[i] = f16_to_f32(h);
      }
      return;
    }
    case DType::BF16: {
      for (int i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * size_t(i), 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    }
    default:
      for (int i = 0; i < n; ++i) out[i] = 0;  // callers validate dtypes first
  }
}

inline void store_row(const float* in, DType t, int n, std::byte* p) noexcept {
  switch (t) {
    case DType::F32: std::memcpy(p, in, size_t(n) * 4); return;
    case DType::F16:
#ifdef SKV_HAVE_F16C_PATH
      if (have_f16c()) return f32_row_to_f16(in, n, p);
#endif
      for (int i = 0; i < n; ++i) {
        const uint16_t h = f32_to_f16(in[i]);
        std::memcpy(p + 2 * size_t(i), &h, 2);
      }
      return;
    case DType::BF16:
      for (int i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(in[i]);
        std::memcpy(p + 2 * size_t(i), &h, 2);
      }
      return;
    default: return;
  }
}

}  // namespace skv::detail
