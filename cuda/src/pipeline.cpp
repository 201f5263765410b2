// EncodePipeline: double-buffered encode (compute stream) + device-to-host copy (copy stream).
#include "skv/cuda/pipeline.hpp"

#include <cstring>

#include "skv/cuda/check.hpp"
#include "skv/cuda/codec.hpp"
#include "skv/error.hpp"

namespace skv::cuda {
namespace {

bool on_device(const void* p) {
  cudaPointerAttributes attr{};
  SKV_CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

}  // namespace

EncodePipeline::EncodePipeline(const LayerGeometry& geo, const float* rope)
    : geo_(geo), rope_(rope), payload_cap_(max_layer_bytes(geo)), workspace_(workspace_bytes(geo)) {
  try {
    SKV_CUDA_CHECK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
    SKV_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    const size_t T = size_t(geo.tokens);
    for (Slot& s : slots_) {
      SKV_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.d_payload), payload_cap_));
      SKV_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.d_maps), 2 * T));
      SKV_CUDA_CHECK(cudaMalloc(&s.d_workspace, workspace_));
      SKV_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&s.h_payload), payload_cap_));
      SKV_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&s.h_maps), 2 * T));
      SKV_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&s.h_status), kStatusBytes));
      SKV_CUDA_CHECK(cudaEventCreateWithFlags(&s.encoded, cudaEventDisableTiming));
      SKV_CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
    }
  } catch (...) {
    release();
    throw;
  }
}

EncodePipeline::~EncodePipeline() { release(); }

void EncodePipeline::release() noexcept {
  // Must not throw: errors while freeing are ignored (the process is usually ending anyway).
  if (compute_) (void)cudaStreamSynchronize(compute_);
  if (copy_) (void)cudaStreamSynchronize(copy_);
  for (Slot& s : slots_) {
    (void)cudaFree(s.d_payload);
    (void)cudaFree(s.d_maps);
    (void)cudaFree(s.d_workspace);
    (void)cudaFree(s.d_kv);
    (void)cudaFreeHost(s.h_payload);
    (void)cudaFreeHost(s.h_maps);
    (void)cudaFreeHost(s.h_status);
    if (s.encoded) (void)cudaEventDestroy(s.encoded);
    if (s.copied) (void)cudaEventDestroy(s.copied);
    s = Slot{};
  }
  if (compute_) (void)cudaStreamDestroy(compute_);
  if (copy_) (void)cudaStreamDestroy(copy_);
  compute_ = copy_ = nullptr;
}

void EncodePipeline::submit(const void* k, const void* v, const uint8_t* k_tiers,
                            const uint8_t* v_tiers, const float* rope) {
  if (in_flight_ == 2) fail(Errc::invalid_argument, "cuda", "EncodePipeline: two layers already in flight");
  Slot& s = slots_[size_t(submitted_ % 2)];
  const std::string ctx = "layer " + std::to_string(submitted_);
  s.plan = plan_layer(geo_, k_tiers, v_tiers, ctx);
  s.layer = submitted_;
  const size_t T = size_t(geo_.tokens);
  // The slot is free: next() has waited for its copy, which follows its encode and map upload.
  std::memcpy(s.h_maps, k_tiers, T);
  std::memcpy(s.h_maps + T, v_tiers, T);
  SKV_CUDA_CHECK(cudaMemcpyAsync(s.d_maps, s.h_maps, 2 * T, cudaMemcpyHostToDevice, compute_));
  LayerInputs in;
  in.k = k;
  in.v = v;
  if (!on_device(k) || !on_device(v)) {
    const size_t bytes = size_t(geo_.kv_heads) * T * size_t(geo_.head_dim) * dtype_size(geo_.dtype);
    const size_t padded = (bytes + 255) & ~size_t(255);
    if (!s.d_kv) SKV_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.d_kv), 2 * padded));
    SKV_CUDA_CHECK(cudaMemcpyAsync(s.d_kv, k, bytes, cudaMemcpyDefault, compute_));
    SKV_CUDA_CHECK(cudaMemcpyAsync(s.d_kv + padded, v, bytes, cudaMemcpyDefault, compute_));
    in.k = s.d_kv;
    in.v = s.d_kv + padded;
  }
  in.k_tiers = s.d_maps;
  in.v_tiers = s.d_maps + T;
  in.rope = rope ? rope : rope_;
  encode_layer_async(s.plan, in, s.d_payload, payload_cap_, s.d_workspace, workspace_, compute_);
  SKV_CUDA_CHECK(cudaEventRecord(s.encoded, compute_));
  SKV_CUDA_CHECK(cudaStreamWaitEvent(copy_, s.encoded, 0));
  SKV_CUDA_CHECK(cudaMemcpyAsync(s.h_payload, s.d_payload, s.plan.payload_bytes, cudaMemcpyDeviceToHost, copy_));
  SKV_CUDA_CHECK(cudaMemcpyAsync(s.h_status, s.d_workspace, kStatusBytes, cudaMemcpyDeviceToHost, copy_));
  SKV_CUDA_CHECK(cudaEventRecord(s.copied, copy_));
  ++submitted_;
  ++in_flight_;
}

EncodePipeline::Done EncodePipeline::next(const std::string& source) {
  if (in_flight_ == 0) fail(Errc::invalid_argument, "cuda", "EncodePipeline: no layer in flight");
  Slot& s = slots_[size_t(completed_ % 2)];
  SKV_CUDA_CHECK(cudaEventSynchronize(s.copied));
  ++completed_;
  --in_flight_;
  throw_if_failed(parse_status(s.h_status, s.plan), s.plan, s.layer, source);
  Done d;
  d.layer = s.layer;
  d.plan = s.plan;
  d.payload = {s.h_payload, size_t(s.plan.payload_bytes)};
  return d;
}

}  // namespace skv::cuda
