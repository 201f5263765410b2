// Layout of the caller's workspace, shared by encode and decode: a status block (what the kernels
// found in the data), then per-tier token lists. Plain C++ so host code can use it too.
#pragma once
#include <cstddef>
#include <cstdint>

namespace skv::cuda {

// Reset to all ones before each layer; "all ones" means nothing found.
struct DeviceStatus {
  unsigned long long bad_row;  // ((kv * H + head) * T + token) << 3 | tier, minimum over bad rows
  unsigned int bad_map;        // min kv whose device tier map is bad or disagrees with the plan
  unsigned int unused;
};
static_assert(sizeof(DeviceStatus) == 16);

inline constexpr size_t kStatusBlock = 256;

// Token lists: for K and V, the tokens of tier 0, then tier 1, 2, 3, each ascending (a stable
// partition of the tier map, so row r of tier x is token list[base[x] + r]); then the K tokens
// at INT8, INT4 or INT2 in ascending order (the order skv.md sums the key centre in).
struct Workspace {
  DeviceStatus* status;
  int32_t* list[2];
  int32_t* qlist;
};

inline size_t workspace_size_for(int tokens) {
  return kStatusBlock + ((3 * size_t(tokens) * sizeof(int32_t) + 255) & ~size_t(255));
}

inline Workspace carve_workspace(void* base, int tokens) {
  auto* p = static_cast<uint8_t*>(base);
  auto* lists = reinterpret_cast<int32_t*>(p + kStatusBlock);
  return {reinterpret_cast<DeviceStatus*>(p), {lists, lists + tokens}, lists + 2 * size_t(tokens)};
}

}  // namespace skv::cuda
