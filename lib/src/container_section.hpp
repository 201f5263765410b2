// Writing one section (formats/skv.md, "Section header"): a payload gathered from pieces, hashed
// with its zero padding, written after its header. Shared by the writer's sections.
#pragma once
#include <cstdint>
#include <vector>

#include "container_format.hpp"
#include "skv/io.hpp"

namespace skv::fmt {

inline constexpr uint8_t kZeros[64] = {};

// A payload as a list of byte ranges, with zero padding inserted where asked.
struct Payload {
  struct Part { const uint8_t* p; uint64_t n; };
  std::vector<Part> parts;
  uint64_t size = 0;
  void add(const void* p, uint64_t n) {
    if (n) parts.push_back({static_cast<const uint8_t*>(p), n});
    size += n;
  }
  void pad() { add(kZeros, align64(size) - size); }
};

// Counts what it writes so the writer knows every offset without seeking.
struct CountingSink {
  ByteSink& out;
  uint64_t pos = 0;
  void write(const void* p, uint64_t n) {
    if (n) out.write(p, size_t(n));
    pos += n;
  }
};

void fill_header_hash(uint8_t* header64);  // bytes 56..63 = xxh3(bytes 0..55)
// Writes header + payload + padding; returns the section's total size.
uint64_t write_section(CountingSink& out, uint32_t tag, uint64_t number, const Payload& payload);

}  // namespace skv::fmt
