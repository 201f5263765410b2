// Whole containers on the GPU: the CUDA counterparts of skv::encode() and
// ContainerReader::next_layer(). The kernels produce/consume each layer's 13 raw streams; the CPU
// codec keeps everything else (headers, manifest, zstd, checksums, index), so the bytes are those
// of the CPU path: a GPU-encoded container is byte-identical to the CPU one, and a container
// decodes on the GPU to the same tensors as on the CPU.
#pragma once
#include <cuda_runtime_api.h>

#include <optional>

#include "skv/codec.hpp"

namespace skv::cuda {

// encode() with each layer quantized on the GPU (EncodePipeline: layer L+1 encodes while the host
// compresses and writes layer L). K/V are host tensors (a mapped dump is fine: they are uploaded
// layer by layer) or device pointers. opts.layer_streams is taken over; opts.layer_done is called
// as in encode(). Throws as encode() does, and Errc::cuda when the device fails.
EncodeResult encode_cuda(const KvCache& cache, const Plan& plan, ByteSink& out, const EncodeOptions& opts = {});

// Decodes layers of `reader` on the GPU; use it in place of reader.next_layer() (same contract:
// returns false after the last layer once the trailer is verified; `skip` verifies only).
// Device buffers are sized for one layer and reused.
class LayerDecoder {
 public:
  explicit LayerDecoder(ContainerReader& reader);
  ~LayerDecoder();
  LayerDecoder(const LayerDecoder&) = delete;
  LayerDecoder& operator=(const LayerDecoder&) = delete;

  bool next_layer(DecodedLayer& out, std::optional<DType> out_dtype = std::nullopt, bool skip = false);

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace skv::cuda
