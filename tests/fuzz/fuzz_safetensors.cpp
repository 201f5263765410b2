// Parses arbitrary bytes as safetensors; a valid parse must give views that lie inside the input
// and are exactly as large as their shape says. Any crash, sanitizer report or contract break is
// a bug; skv::Error is the expected outcome for malformed input.
#include <cstdint>
#include <cstdlib>

#include "skv/error.hpp"
#include "skv/formats/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto r = skv::safetensors::Reader::from_bytes(in, "fuzz");
    uint64_t prev_end = 0;
    unsigned sum = 0;
    for (const auto& t : r.tensors()) {
      const skv::TensorView v = r.view(t);
      if (v.bytes.size() != uint64_t(v.numel()) * skv::dtype_size(v.dtype)) std::abort();
      if (v.bytes.size() && (v.bytes.data() < in.data() || v.bytes.data() + v.bytes.size() > in.data() + in.size()))
        std::abort();
      if (t.begin != prev_end) std::abort();  // contiguous, sorted
      prev_end = t.end;
      for (std::byte b : v.bytes) sum += unsigned(b);  // touch every byte
      if (r.find(t.name) == nullptr) std::abort();
    }
    for (const auto& [k, val] : r.metadata()) sum += unsigned(k.size() + val.size());
    volatile unsigned sink = sum;
    (void)sink;
  } catch (const skv::Error&) {
  }
  return 0;
}
