// The CUDA codec for one layer: device K/V -> the raw LAYR payload of formats/skv.md (directory,
// 13 streams, or 17 with INT2, zero padding), and back. Bytes are identical to the CPU codec's: the kernels
// restate quant.hpp / skv.md operation by operation with explicitly rounded intrinsics.
//
// FlashInfer/nvcomp style: the caller owns all memory, asks for sizes first, then calls the
// async functions on its stream. Launch failures throw skv::Error(Errc::cuda); problems in the
// data (a non-finite value in a quantized token, device tier maps that disagree with the plan)
// are recorded in the workspace and read with read_status() once the caller synchronises anyway.
// Headers, manifest, checksums and zstd stay on the host (the CPU writer).
//
// Pointer rules (checked, Errc::invalid_argument): K/V inputs and outputs 16-byte aligned, the
// payload and workspace 64-byte aligned (cudaMalloc gives 256).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "skv/cuda/layer_plan.hpp"

namespace skv::cuda {

// True when a CUDA device is usable; otherwise false and the reason in *why ("--device auto").
bool cuda_available(std::string* why = nullptr);

struct LayerInputs {
  const void* k = nullptr;             // [H,T,D] or [T,H,D] (geo.layout), geo.dtype
  const void* v = nullptr;
  const uint8_t* k_tiers = nullptr;    // device copies of the tier maps the plan was made from
  const uint8_t* v_tiers = nullptr;
  const float* rope = nullptr;         // device copy of fill_rope_table(); prerope_centre only
};

// Writes the layer's raw payload (plan.payload_bytes bytes) to `payload`: directory, tier maps,
// K centres, then the tier streams, with zero padding between streams. Five kernel launches (six with INT2).
void encode_layer_async(const LayerPlan& plan, const LayerInputs& in, uint8_t* payload,
                        size_t payload_capacity, void* workspace, size_t workspace_size,
                        cudaStream_t stream);

struct LayerOutputs {
  void* k = nullptr;        // [H,T,D] or [T,H,D] (plan.geo.layout), `dtype`
  void* v = nullptr;
  DType dtype = DType::F16; // F16, BF16 or F32
  uint8_t* mask = nullptr;  // optional U8 [T]: 1 when the token is kept in both K and V
};

// Decodes a raw payload laid out by `plan` (the stream contents of a LAYR section after any zstd
// stage was undone; the directory bytes are not read). DROP tokens decode to zeros.
// `rope` as for encode (prerope_centre only). Up to six kernel launches.
void decode_layer_async(const LayerPlan& plan, const uint8_t* payload, const float* rope,
                        const LayerOutputs& out, void* workspace, size_t workspace_size,
                        cudaStream_t stream);

// What the last encode/decode that used `workspace` found in the data.
struct LayerStatus {
  int bad_kv = -1, bad_head = -1, bad_token = -1;  // first row that cannot be quantized
  int bad_tier = -1;                               // and its tier (1 INT8, 2 INT4, 4 INT2)
  bool map_mismatch = false;  // device tier maps hold a bad code or disagree with the plan
  bool ok() const { return bad_kv < 0 && !map_mismatch; }
};
// Copies the status back and synchronises `stream`.
LayerStatus read_status(const void* workspace, const LayerPlan& plan, cudaStream_t stream);
// The status is the first kStatusBytes of the workspace; pipelines that copy it back themselves
// (cudaMemcpyAsync into pinned memory) decode that copy with parse_status().
inline constexpr size_t kStatusBytes = 16;
LayerStatus parse_status(const void* status_copy, const LayerPlan& plan);
// Throws Errc::format with the CPU writer's message (naming `source`, layer, K/V, head, token),
// or Errc::invalid_argument for a map mismatch.
void throw_if_failed(const LayerStatus& status, const LayerPlan& plan, int layer,
                     const std::string& source);

}  // namespace skv::cuda
