// Canonical KV dumps from the runner: what `skv dump` writes (the CLI writes the file).
#pragma once
#include <map>
#include <span>
#include <string>
#include <vector>

#include "skv/model/model.hpp"
#include "skv/tensor.hpp"

namespace skv::model {

struct Dump {
  std::vector<std::string> names;  // parallel to tensors
  std::vector<Tensor> tensors;
  std::map<std::string, std::string> metadata;  // the dump's __metadata__
};

// Prefills `ids` and returns, per layer L: layers.{L}.k / layers.{L}.v as F16
// [kv_heads, tokens, head_dim] (post-RoPE, in the weights' dimension order, hence rope_style),
// and layers.{L}.q as F16 [q_heads, W, head_dim] with the post-RoPE queries of the last
// W = min(window, tokens) tokens (omitted when window is 0). Metadata: model, architecture,
// rope_theta, rope_style, position_offset "0", tokens (count), token_ids (comma list), and
// rotary_dim when only the first rope.dimension_count dims rotate.
Dump make_dump(const Model& m, std::span<const int32_t> ids, int window);

// Same tensors from a cache that is already filled (queries as captured, may be null).
Dump dump_cache(const Model& m, const KvCacheObject& cache, std::span<const int32_t> ids,
                const QueryCapture* queries);

}  // namespace skv::model
