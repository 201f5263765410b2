// Run-time CPU feature checks for the hand-vectorised paths. Read through CPUID/XGETBV rather
// than __builtin_cpu_supports because clang (14) does not know "f16c" there, and because AVX is
// only usable when the OS saves the YMM state.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

namespace skv::detail {

// AVX + F16C usable (16-bit float conversions on 256-bit vectors).
inline bool cpu_has_avx_f16c() noexcept {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!(osxsave && avx && f16c)) return false;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6u) == 6u;  // XMM and YMM state saved by the OS
  }();
  return ok;
}

// AVX2 + FMA + F16C usable (the quantizer kernels).
inline bool cpu_has_avx2_fma_f16c() noexcept {
  static const bool ok = [] {
    if (!cpu_has_avx_f16c()) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool fma = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 12));
    const bool avx2 = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 5));
    return fma && avx2;
  }();
  return ok;
}

}  // namespace skv::detail
#endif
