#include "hash.hpp"

#include <xxhash.h>

#include "cpu_features.hpp"

namespace skv::detail {

uint64_t xxh3_64(const void* p, size_t n) noexcept {
#if defined(SKV_HASH_AVX2)
  if (cpu_has_avx2_fma_f16c()) return xxh3_64_avx2(p, n);
#endif
  return XXH3_64bits(p, n);
}

}  // namespace skv::detail
