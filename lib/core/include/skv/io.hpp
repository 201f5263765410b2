// Byte sinks and sources: what the container writer and reader stream through. formats/ provides
// file-backed ones (OutputFile, InputStream); these in-memory ones serve tests and fuzzers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

namespace skv {

struct ByteSink {
  virtual ~ByteSink() = default;
  virtual void write(const void* src, size_t n) = 0;
  // Sinks over fixed memory may hand out the next n bytes for the caller to fill in place (so
  // nothing is copied): they count as written at once, must be filled before the sink's bytes
  // are used, and stay where they are until then. Null (the default): use write() instead.
  virtual std::byte* claim(size_t /*n*/) { return nullptr; }
};

struct ByteSource {
  virtual ~ByteSource() = default;
  // Reads up to n bytes; returns fewer only at the end of input.
  virtual size_t read(void* dst, size_t n) = 0;
  // Bytes left to read when the source knows (memory, a regular file), else nullopt (a pipe):
  // readers refuse a size the input cannot hold before allocating for it.
  virtual std::optional<uint64_t> remaining() const { return std::nullopt; }
};

struct VectorSink final : ByteSink {
  std::vector<std::byte> bytes;
  void write(const void* src, size_t n) override {
    const auto* p = static_cast<const std::byte*>(src);
    bytes.insert(bytes.end(), p, p + n);
  }
};

struct SpanSource final : ByteSource {
  std::span<const std::byte> bytes;
  size_t pos = 0;
  explicit SpanSource(std::span<const std::byte> b) : bytes(b) {}
  size_t read(void* dst, size_t n) override {
    const size_t k = n < bytes.size() - pos ? n : bytes.size() - pos;
    if (k) std::memcpy(dst, bytes.data() + pos, k);
    pos += k;
    return k;
  }
  std::optional<uint64_t> remaining() const override { return pos < bytes.size() ? bytes.size() - pos : 0; }
};

}  // namespace skv
