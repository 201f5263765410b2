// Building blocks for `skv bench` (timing and printing stay in apps/): layer slices, so a large
// cache is encoded, decoded and measured a few layers at a time in bounded memory; byte sinks that
// never reallocate; and the zstd baseline on raw bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "skv/io.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"
#include "skv/tensor.hpp"

namespace skv {

// Layers [first, first + count) of `cache` as a cache of their own (views, no copies). The codec
// codes every layer independently, so a slice's layer sections carry the same payload as in the
// whole-cache container. Throws Errc::invalid_argument for a range outside the cache.
KvCache slice_layers(const KvCache& cache, int first, int count);
// The same layers of a plan (tiers, quant settings, policy and requested budget kept).
Plan slice_plan(const Plan& plan, int first, int count);

// Writes into a buffer allocated once; throws Errc::invalid_argument when a write would overflow.
class FixedSink final : public ByteSink {
 public:
  explicit FixedSink(size_t capacity) : buf_(capacity) {}
  void write(const void* src, size_t n) override;
  std::byte* claim(size_t n) override;  // in place: the encoder quantizes straight into it
  void clear() noexcept { used_ = 0; }
  size_t size() const noexcept { return used_; }
  size_t capacity() const noexcept { return buf_.size(); }
  std::span<const std::byte> bytes() const noexcept { return {buf_.data(), used_}; }

 private:
  Buffer buf_;
  size_t used_ = 0;
};

// Counts bytes and keeps none (the exact size of a container without holding it).
struct CountingSink final : ByteSink {
  uint64_t bytes = 0;
  void write(const void*, size_t n) override { bytes += n; }
};

// zstd one-shot compression of raw bytes with contexts reused across calls.
class ZstdCoder {
 public:
  // threads > 1 asks zstd for that many compression workers (decompression is single-threaded).
  ZstdCoder(int level, int threads);
  ~ZstdCoder();
  ZstdCoder(const ZstdCoder&) = delete;
  ZstdCoder& operator=(const ZstdCoder&) = delete;
  static size_t bound(size_t n) noexcept;  // worst-case compressed size
  // Returns the compressed size; dst must hold bound(src.size()) bytes.
  size_t compress(std::span<const std::byte> src, std::span<std::byte> dst);
  // dst must be exactly the original size; throws Errc::format when the frame does not fill it.
  void decompress(std::span<const std::byte> src, std::span<std::byte> dst);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skv
