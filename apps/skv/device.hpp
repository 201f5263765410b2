// --device cpu|cuda|auto for encode and decode: where each layer is quantized or dequantized.
// The bytes written do not depend on it (the CUDA codec reproduces the CPU one exactly).
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "skv/codec.hpp"

namespace skv::cli {

enum class Device { cpu, cuda };

// Adds --device to `sub`, storing the choice in `choice` (keep its default "auto").
void add_device_option(CLI::App& sub, std::string& choice);
// auto -> cuda when this build has the CUDA codec and a device is usable, else cpu. "cuda"
// without one throws skv::Error "--device cuda: <reason>".
Device resolve_device(const std::string& choice);

// skv::encode() or skv::cuda::encode_cuda().
EncodeResult encode_on(Device device, const KvCache& cache, const Plan& plan, ByteSink& out,
                       const EncodeOptions& opts);

// reader.next_layer(), or its GPU counterpart skv::cuda::LayerDecoder.
class LayerSource {
 public:
  LayerSource(Device device, ContainerReader& reader);
  ~LayerSource();
  bool next_layer(DecodedLayer& out, std::optional<DType> dtype, bool skip);

 private:
  struct Gpu;
  ContainerReader& reader_;
  std::unique_ptr<Gpu> gpu_;
};

}  // namespace skv::cli
