// Observation-window attention scoring on the GPU, mirroring the CPU scorer (skv::score_tokens,
// Scorer::attention) for one layer: for each kv head h and token t,
//   acc[h][t] = sum over the group's query heads g and window rows i of softmax_i(q . K^T / sqrt(D))[t]
// with query i at position T - W + i seeing tokens <= it (causal), then 1-D pooling over tokens
// (max, or avg with zero padding as avg_pool1d), then each head's row normalised to sum 1
// (uniform when the sum is not positive and finite). Rows whose maximum logit is not finite are
// skipped, as on the CPU. Results agree with the CPU to float rounding, not bit for bit (the dot
// products and sums run in another order).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "skv/dtype.hpp"
#include "skv/kvcache.hpp"

namespace skv::cuda {

enum class PoolKind : uint8_t { max = 0, avg = 1, none = 2 };  // skv::Pool's order

struct AttentionShape {
  int kv_heads = 0, q_heads = 0, window = 0, tokens = 0, head_dim = 0;  // q_heads % kv_heads == 0
  DType k_dtype = DType::F16, q_dtype = DType::F16;
  Layout layout = Layout::HTD;  // of K; queries are always [q_heads, window, head_dim]
  PoolKind pool = PoolKind::max;
  int pool_kernel = 5;          // odd, >= 1
};

size_t attention_workspace_bytes(const AttentionShape& s);

// scores: device F32 [kv_heads, tokens] (skv::Scores::head for this layer). Four launches.
// Throws Errc::invalid_argument for an impossible shape, Errc::cuda when a launch fails.
void attention_scores_async(const AttentionShape& s, const void* q, const void* k, float* scores,
                            void* workspace, size_t workspace_size, cudaStream_t stream);

}  // namespace skv::cuda
