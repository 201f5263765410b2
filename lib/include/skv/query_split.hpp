// Held-out observation queries: the window queries of a dump (layers.N.q, [q_heads, window,
// head_dim]) split into two disjoint halves by alternate window positions, so that a plan can be
// fitted on one half and its attention error measured on the other (out of sample).
#pragma once
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "skv/kvcache.hpp"
#include "skv/tensor.hpp"

namespace skv {

// How the window is split: none (plan and measure on every query) or half (alternate positions).
enum class Holdout : uint8_t { none = 0, half = 1 };

// "none" / "half"; nullopt otherwise.
std::optional<Holdout> holdout_from_name(const std::string& name);
const char* holdout_name(Holdout h);

enum class QueryHalf : uint8_t { fit, held_out };

// Window positions (0 = oldest query, window-1 = the query of the last token), ascending, of one
// half. Counting back from the last query, positions alternate fit, held-out, fit, ...: fit holds
// window-1, window-3, ... (ceil(window/2) of them, the last query among them), held_out the rest
// (floor(window/2)). Disjoint; their union is 0..window-1; deterministic.
std::vector<int> window_half(int window, QueryHalf half);

// A KvCache that shares K, V and masks with its source but carries only the queries of the given
// window positions, copied into buffers of its own; shape.window is their count. Attention
// scoring reads query j of the subset as sitting at token tokens - count + j (the scorer's
// convention), so a subset of spread-out positions sees a few more recent tokens than the
// original queries did; the attention metrics take exact positions instead (metrics.hpp).
struct QuerySubset {
  std::vector<int> positions;  // window positions of the original, ascending
  std::vector<Tensor> q;       // per layer, [q_heads, positions.size(), head_dim]
  KvCache cache;

  QuerySubset() = default;
  QuerySubset(QuerySubset&&) = default;
  QuerySubset& operator=(QuerySubset&&) = default;
  QuerySubset(const QuerySubset&) = delete;
  QuerySubset& operator=(const QuerySubset&) = delete;
};

// Throws Errc::invalid_argument when `c` has no queries, a position is outside the window, or
// `positions` is empty or not strictly ascending.
QuerySubset with_queries(const KvCache& c, std::span<const int> positions);

// with_queries(c, window_half(c.shape.window, half)); throws Errc::invalid_argument (naming the
// source) when the window is too small for both halves to be non-empty (window < 2).
QuerySubset query_half(const KvCache& c, QueryHalf half);

}  // namespace skv
