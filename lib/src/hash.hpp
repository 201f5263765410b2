// XXH3-64 of one contiguous range, the checksum of every section (formats/skv.md). Same value
// as libxxhash's XXH3_64bits; on CPUs with AVX2 it runs the AVX2 form of the same algorithm
// (the packaged library is built for SSE2 only, and payload hashing is on the codec's critical
// path: every layer is hashed once by the writer and once by the reader).
#pragma once
#include <cstddef>
#include <cstdint>

namespace skv::detail {

uint64_t xxh3_64(const void* p, size_t n) noexcept;
uint64_t xxh3_64_avx2(const void* p, size_t n) noexcept;  // AVX2 CPUs only (hash_avx2.cpp)

}  // namespace skv::detail
