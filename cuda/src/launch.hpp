// Host-side pieces shared by the launchers in encode.cu and decode.cu.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "skv/cuda/layer_plan.hpp"
#include "workspace.hpp"

namespace skv::cuda::detail {

// Builds the token lists (and, for decode, the mask) from device tier maps and checks them
// against the plan. Encode also copies the maps into the payload and writes the directory and
// the zero padding between streams. One launch of 3 blocks.
void launch_prep(const LayerPlan& plan, const uint8_t* k_map, const uint8_t* v_map,
                 const Workspace& ws, uint8_t* payload_or_null, uint8_t* mask_or_null,
                 cudaStream_t stream);

// Thread mapping of the row kernels: each thread handles C consecutive elements of one row
// (C a power of two dividing `group`, C * max_elem_bytes <= 16); a block covers `rows` rows.
struct RowTiling {
  int C, cpr, rows, threads;
};
RowTiling row_tiling(int head_dim, int group, int max_elem_bytes);

void require_aligned(const void* p, size_t alignment, const char* what);
void require(bool ok, const std::string& what);  // Errc::invalid_argument "cuda: <what>"

}  // namespace skv::cuda::detail
