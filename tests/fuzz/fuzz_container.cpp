// libFuzzer target: arbitrary bytes through the container reader. Anything but skv::Error
// (a crash, a hang, another exception, a sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "skv/codec.hpp"
#include "skv/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  skv::SpanSource src(std::span(reinterpret_cast<const std::byte*>(data), size));
  try {
    skv::ContainerReader reader(src, "fuzz");
    reader.set_threads(1);
    skv::DecodedLayer layer;
    while (reader.next_layer(layer)) {
    }
  } catch (const skv::Error&) {
  }
  return 0;
}
