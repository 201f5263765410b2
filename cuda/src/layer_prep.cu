// Per-layer preparation: tier maps -> token lists (a stable partition by tier, prefix sums in one
// block per K/V), plus the payload frame (directory, padding) for encode and the mask for decode.
#include "device_math.cuh"
#include "launch.hpp"
#include "skv/cuda/check.hpp"

namespace skv::cuda::detail {
namespace {

constexpr int kPrepThreads = 512;
// Tiers 0..4, and "quantized" (INT8, INT4 or INT2) for the centre order.
constexpr int kQuantized = kNumTiers, kCounters = kNumTiers + 1;
__device__ __forceinline__ bool quantized_code(uint32_t code) { return code == 1u || code == 2u || code == 4u; }

struct PrepArgs {
  const uint8_t* map[2];
  uint8_t* map_out[2];  // encode: payload streams 0 and 1
  int32_t* list[2];
  int32_t* qlist;
  uint8_t* mask;
  DeviceStatus* status;
  uint32_t count[2][kNumTiers];
  int T;
  int streams;       // 13, or 17 with INT2
  int dir_bytes;     // 320, or 448 with INT2
  uint8_t* payload;  // encode only: directory and padding are written by block 2
  uint8_t dir[kDirectoryBytes];
  uint64_t offset[kLayerStreams], size[kLayerStreams];
};

__global__ void __launch_bounds__(kPrepThreads) prep_kernel(PrepArgs a) {
  const int tid = threadIdx.x, T = a.T;
  if (blockIdx.x == 2) {  // payload frame: directory, then zero bytes up to each stream
    if (!a.payload) return;
    for (int i = tid; i < a.dir_bytes; i += blockDim.x) a.payload[i] = a.dir[i];
    for (int s = 0; s + 1 < a.streams; ++s) {
      const uint64_t end = a.offset[s] + a.size[s];
      for (uint64_t i = end + tid; i < a.offset[s + 1]; i += blockDim.x) a.payload[i] = 0;
    }
    return;
  }
  const int kv = blockIdx.x;
  const uint8_t* map = a.map[kv];
  __shared__ int scan[kCounters][kPrepThreads];
  __shared__ int total[kCounters];
  const int span = (T + kPrepThreads - 1) / kPrepThreads;
  const int t0 = min(T, tid * span), t1 = min(T, t0 + span);
  int cnt[kCounters] = {};
  bool bad = false;
  for (int t = t0; t < t1; ++t) {
    const uint32_t code = map[t];
    if (a.map_out[kv]) a.map_out[kv][t] = uint8_t(code);
    if (a.mask && kv == 0) a.mask[t] = code != 3u && a.map[1][t] != 3u ? 1 : 0;
    if (code >= uint32_t(kNumTiers)) {
      bad = true;
      continue;
    }
    ++cnt[code];
    if (quantized_code(code)) ++cnt[kQuantized];
  }
  for (int k = 0; k < kCounters; ++k) scan[k][tid] = cnt[k];
  __syncthreads();
  if (tid < kCounters) {  // exclusive scan, one counter per thread; maps are tiny
    int run = 0;
    for (int i = 0; i < kPrepThreads; ++i) {
      const int c = scan[tid][i];
      scan[tid][i] = run;
      run += c;
    }
    total[tid] = run;
  }
  __syncthreads();
  bool mismatch = bad;
  for (int k = 0; k < kNumTiers; ++k) mismatch = mismatch || uint32_t(total[k]) != a.count[kv][k];
  if (mismatch) atomicMin(&a.status->bad_map, unsigned(kv));
  int base[kNumTiers];
  base[0] = 0;
  for (int k = 1; k < kNumTiers; ++k) base[k] = base[k - 1] + total[k - 1];
  int run[kCounters];
  for (int k = 0; k < kCounters; ++k) run[k] = scan[k][tid];
  int32_t* list = a.list[kv];
  int32_t* qlist = kv == 0 ? a.qlist : nullptr;
  for (int t = t0; t < t1; ++t) {
    const uint32_t code = map[t];
    if (code >= uint32_t(kNumTiers)) continue;
    list[base[code] + run[code]++] = t;
    if (qlist && quantized_code(code)) qlist[run[kQuantized]++] = t;
  }
}

}  // namespace

void launch_prep(const LayerPlan& plan, const uint8_t* k_map, const uint8_t* v_map,
                 const Workspace& ws, uint8_t* payload, uint8_t* mask, cudaStream_t stream) {
  PrepArgs a{};
  a.map[0] = k_map;
  a.map[1] = v_map;
  if (payload) {
    a.map_out[0] = payload + plan.offset[kKMap];
    a.map_out[1] = payload + plan.offset[kVMap];
    write_directory(plan, a.dir);
    for (int s = 0; s < kLayerStreams; ++s) {
      a.offset[s] = plan.offset[size_t(s)];
      a.size[s] = plan.size[size_t(s)];
    }
  }
  a.list[0] = ws.list[0];
  a.list[1] = ws.list[1];
  a.qlist = ws.qlist;
  a.mask = mask;
  a.status = ws.status;
  for (int kv = 0; kv < 2; ++kv)
    for (int t = 0; t < kNumTiers; ++t) a.count[kv][t] = plan.count[size_t(kv)][size_t(t)];
  a.T = plan.geo.tokens;
  a.streams = plan.geo.streams();
  a.dir_bytes = int(plan.geo.directory_bytes());
  a.payload = payload;
  prep_kernel<<<3, kPrepThreads, 0, stream>>>(a);
  SKV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace skv::cuda::detail
