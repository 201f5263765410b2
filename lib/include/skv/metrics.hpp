// Attention-level quality of a decoded cache against its original: what matters is not the
// element error of K and V but how much the attention output of real queries moves.
#pragma once
#include <optional>
#include <span>
#include <vector>

#include "skv/codec.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"

namespace skv {

struct AttentionMetrics {
  // ||o' - o|| / ||o|| of softmax(q K^T / sqrt(d)) V, averaged over layers, query heads and
  // window queries (query i of the window sits at token tokens - window + i and sees tokens
  // <= it; tokens the decoded mask marks absent are excluded from the decoded softmax).
  double rel_error = 0;
  double max_rel_error = 0;
  double top1_agreement = 0;  // share of queries whose most attended token is unchanged
  // When the metadata names a needle span: share of queries whose top-1 token lies in it.
  std::optional<double> needle_top1, needle_top1_original;
  int64_t queries = 0;
};

// Both caches must have the same shape; queries come from `original`. Throws
// Errc::invalid_argument when the original carries no queries or the shapes differ.
AttentionMetrics attention_metrics(const KvCache& original, const KvCache& decoded, int threads = 0);

// The same over the window queries at `positions` only (window indices of the original, each in
// [0, window), query i sitting at token tokens - window + i): what --holdout measures on the
// half of the window a plan did not see (query_split.hpp). Throws Errc::invalid_argument on a
// position outside the window.
AttentionMetrics attention_metrics(const KvCache& original, const KvCache& decoded,
                                   std::span<const int> positions, int threads = 0);

// A cache decoded in memory: owns the tensors `cache` views.
struct DecodedCache {
  std::vector<DecodedLayer> layers;
  ContainerInfo info;
  uint64_t container_bytes = 0;
  KvCache cache;

  DecodedCache() = default;
  DecodedCache(DecodedCache&&) = default;
  DecodedCache& operator=(DecodedCache&&) = default;
  DecodedCache(const DecodedCache&) = delete;
  DecodedCache& operator=(const DecodedCache&) = delete;
};

// encode -> ContainerReader, all in memory (tests, `skv bench`, metric sweeps). Decoded K/V keep
// the source's layout and dtype; queries are carried over from the source when the container
// has none.
DecodedCache round_trip(const KvCache& cache, const Plan& plan, const EncodeOptions& opts = {});

}  // namespace skv
