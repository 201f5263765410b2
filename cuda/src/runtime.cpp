// Host plumbing around the CUDA runtime: the checked-call helper, device detection, argument
// checks, row tiling and the status read-back.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "launch.hpp"
#include "skv/cuda/check.hpp"
#include "skv/cuda/codec.hpp"
#include "skv/error.hpp"

namespace skv::cuda {

namespace detail {

void check(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return;
  throw Error(Errc::cuda, std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                              ": " + cudaGetErrorString(err));
}

void require(bool ok, const std::string& what) {
  if (!ok) fail(Errc::invalid_argument, "cuda", what);
}

void require_aligned(const void* p, size_t alignment, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % alignment != 0)
    fail(Errc::invalid_argument, "cuda", std::string(what) + " pointer is not " +
                                             std::to_string(alignment) + "-byte aligned");
}

RowTiling row_tiling(int head_dim, int group, int max_elem_bytes) {
  RowTiling t{};
  t.C = 16 / max_elem_bytes;
  while (t.C > 1 && group % t.C != 0) t.C /= 2;
  t.cpr = head_dim / t.C;
  constexpr int kTarget = 256;
  t.rows = t.cpr <= kTarget ? kTarget / t.cpr : 1;
  t.threads = t.rows * t.cpr;  // <= 1024 because make_geometry caps head_dim at 1024
  return t;
}

}  // namespace detail

bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
    (void)cudaGetLastError();  // clear the error so later calls start clean
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  if (why) why->clear();
  return true;
}

LayerStatus parse_status(const void* status_copy, const LayerPlan& plan) {
  DeviceStatus s;
  std::memcpy(&s, status_copy, sizeof s);
  LayerStatus out;
  out.map_mismatch = s.bad_map != ~0u;
  if (s.bad_row != ~0ull) {
    const uint64_t key = s.bad_row >> 3, H = uint64_t(plan.geo.kv_heads), T = uint64_t(plan.geo.tokens);
    out.bad_tier = int(s.bad_row & 7);
    out.bad_token = int(key % T);
    out.bad_head = int((key / T) % H);
    out.bad_kv = int(key / T / H);
  }
  return out;
}

LayerStatus read_status(const void* workspace, const LayerPlan& plan, cudaStream_t stream) {
  DeviceStatus s;
  SKV_CUDA_CHECK(cudaMemcpyAsync(&s, workspace, sizeof s, cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CHECK(cudaStreamSynchronize(stream));
  return parse_status(&s, plan);
}

void throw_if_failed(const LayerStatus& st, const LayerPlan& plan, int layer, const std::string& source) {
  (void)plan;
  if (st.map_mismatch)
    fail(Errc::invalid_argument, source,
         "layer " + std::to_string(layer) + ": the device tier maps disagree with the layer plan");
  if (st.bad_kv >= 0)
    fail(Errc::format, source,
         "layer " + std::to_string(layer) + (st.bad_kv ? " V" : " K") + " head " +
             std::to_string(st.bad_head) + " token " + std::to_string(st.bad_token) +
             ": a non-finite value (or one beyond FP16 range) cannot be stored at tier " +
             tier_name(Tier(st.bad_tier)) + "; use fp16 for it");
}

}  // namespace skv::cuda
