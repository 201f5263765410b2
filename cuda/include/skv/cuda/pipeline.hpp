// Layer pipelining for encode: layer L+1 is encoded on a compute stream while layer L's payload
// is copied to pinned host memory on a copy stream. Two slots, so at most two layers are in
// flight; the host writes one layer's bytes while the GPU works on the next.
//
//   EncodePipeline pipe(geo, rope_dev);
//   int next = 0;
//   for (; next < std::min(2, L); ++next) pipe.submit(k[next], v[next], kt[next], vt[next]);
//   while (pipe.in_flight()) {
//     auto done = pipe.next(source);         // waits; throws on data errors
//     writer.layer(done.layer, done.plan, done.payload);
//     if (next < L) { pipe.submit(k[next], v[next], kt[next], vt[next]); ++next; }
//   }
#pragma once
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "skv/cuda/layer_plan.hpp"

namespace skv::cuda {

class EncodePipeline {
 public:
  // rope: device table from fill_rope_table() (prerope_centre only); must outlive the pipeline.
  explicit EncodePipeline(const LayerGeometry& geo, const float* rope = nullptr);
  ~EncodePipeline();
  EncodePipeline(const EncodePipeline&) = delete;
  EncodePipeline& operator=(const EncodePipeline&) = delete;

  // Starts the next layer (layers are numbered in submit order from 0). k and v may be device
  // pointers or host pointers (host data is copied in on the compute stream); the tier maps are
  // host arrays of T bytes, copied before submit() returns. Throws Errc::invalid_argument when
  // two layers are already in flight.
  // `rope`: this layer's device RoPE table (layers with different RoPE frequencies), or null for
  // the one given to the constructor; it must stay valid until the layer's next() returns.
  void submit(const void* k, const void* v, const uint8_t* k_tiers, const uint8_t* v_tiers,
              const float* rope = nullptr);

  struct Done {
    int layer = 0;
    LayerPlan plan;
    std::span<const uint8_t> payload;  // pinned host memory, valid until the next submit()
  };
  // Waits for the oldest layer in flight; throws as throw_if_failed() (naming `source`).
  Done next(const std::string& source);
  int in_flight() const noexcept { return in_flight_; }

 private:
  struct Slot {
    uint8_t* d_payload = nullptr;
    uint8_t* d_maps = nullptr;     // K map, then V map
    void* d_workspace = nullptr;
    uint8_t* d_kv = nullptr;       // staging for host K/V, allocated on first use
    uint8_t* h_payload = nullptr;  // pinned
    uint8_t* h_maps = nullptr;     // pinned
    uint8_t* h_status = nullptr;   // pinned
    cudaEvent_t encoded = nullptr, copied = nullptr;
    LayerPlan plan;
    int layer = -1;
  };
  void release() noexcept;

  LayerGeometry geo_;
  const float* rope_;
  size_t payload_cap_ = 0, workspace_ = 0;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  std::array<Slot, 2> slots_{};
  int submitted_ = 0, completed_ = 0, in_flight_ = 0;
};

}  // namespace skv::cuda
