// Built with -mavx2 on x86-64 (lib/CMakeLists.txt): xxhash's header-only XXH3 with its AVX2
// accumulator. Called only after the run-time check in hash.cpp says the CPU has AVX2.
#include "hash.hpp"

#if defined(__AVX2__)
#define XXH_INLINE_ALL  // private, static copies: no clash with the shared library's symbols
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

namespace skv::detail {
uint64_t xxh3_64_avx2(const void* p, size_t n) noexcept { return XXH3_64bits(p, n); }
}  // namespace skv::detail
#endif
