// Token importance: which (layer, token) entries matter to attention. Produces non-negative scores
// normalised to sum 1 per row (a row is one layer, or the whole cache when shared), plus pinned
// tokens that allocators must serve first.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "skv/kvcache.hpp"
#include "skv/tensor.hpp"

namespace skv {

enum class Scorer : uint8_t {
  auto_ = 0,   // attention when the cache carries queries, else keynorm
  attention,   // observation-window attention (SnapKV-style), needs queries
  keynorm,     // L2 norm of the centred key, averaged over heads (no queries needed)
  position,    // the published position heuristic: decay from the start + ramp over the last 20%
  external,    // ScoreOptions::external, F32 [tokens] or [layers, tokens]
};
const char* scorer_name(Scorer s) noexcept;                    // "auto", "attention", ...
std::optional<Scorer> scorer_from_name(std::string_view name) noexcept;

enum class Pool : uint8_t { max = 0, avg = 1, none = 2 };

struct ScoreOptions {
  Scorer scorer = Scorer::auto_;
  // attention: 1-D pooling of each head's attention over tokens (SnapKV keeps neighbours of a hit).
  Pool pool = Pool::max;
  int pool_kernel = 5;        // odd; 1 = no pooling
  bool per_layer = false;     // granularity: true keeps one row per layer, false averages layers
  int sinks = 4;              // first tokens pinned to the top tier
  int recent = 0;             // last tokens pinned to the top tier
  std::optional<TensorView> external;  // for Scorer::external
  // attention: window queries scored per kv head. 0 = all (q_heads / kv_heads x window); else an
  // evenly spread sample of that many (every query head and the whole window represented), each
  // standing for the queries it replaces, so weights stay unbiased. The attention products are
  // most of a plan's cost, and they scale with this count.
  int query_sample = 0;
  int threads = 0;            // 0 = all cores; results never depend on it
  // Called, on the calling thread, once the scorer has finished reading layer L (attention and
  // keynorm read the cache a few layers at a time, at most `threads`); the caller may drop the
  // layer's pages (e.g. of a mapped dump). Results never depend on it.
  std::function<void(int)> layer_done;
};

struct Scores {
  int rows = 0, tokens = 0;          // rows = layers (per_layer) or 1 (shared)
  std::vector<float> value;          // [rows, tokens], each row sums to 1
  std::vector<float> head;           // attention only: [layers, kv_heads, tokens], rows sum to 1
  int kv_heads = 0;                  // set when `head` is filled
  // Attention only, [layers, kv_heads, tokens], pooled like `head` but not normalised: the weights
  // the distortion allocator gives a token's squared error. A perturbation e of token t moves the
  // output of query r by about p_rt * e, and the errors of different tokens add like independent
  // noise, so the expected squared *relative* output error is sum_r p_rt^2 / |o_r|^2 per unit of
  // squared token error (quant_weight). Dropping t renormalises the rest: p / (1 - p) instead of
  // p (drop_weight). Linear attention shares (`head`) would overvalue the many faint tokens.
  std::vector<float> quant_weight, drop_weight;
  // Attention only, [layers, kv_heads, tokens]: the drop guard. Unpinned tokens taken in
  // increasing order of attention share, a token's mass is the largest share of attention that
  // any scored window query loses when it and every token before it are dropped (infinite for
  // pinned and absent tokens). Dropping tokens of mass <= m costs every query at most m of its
  // attention: an error the model can bound (the renormalisation of a larger loss it cannot).
  std::vector<float> drop_mass;
  // Attention only, [layers, kv_heads]: the quant_weight every token would have if each window
  // query attended uniformly to the tokens it sees (sum_r 1 / (n_r^2 |o_r|^2)); the reference
  // for ErrorOptions::weight_floor.
  std::vector<float> uniform_weight;
  // Attention only: each window query's most attended tokens, for the allocator's top-1 term.
  // [layers, kv_heads, group queries (q_heads / kv_heads * window), top_k], logits q.k / sqrt(d)
  // in decreasing order; token -1 pads rows with fewer candidates (or none: non-finite query).
  struct Top {
    int32_t token = -1;
    float logit = 0;
  };
  std::vector<Top> top;
  int top_k = 0, group_queries = 0;  // group_queries: the queries scored (all, or the sample)
  float query_weight = 1;            // window queries each scored query stands for
  std::vector<uint8_t> pinned;       // [tokens], 1 = sink or recent
  Scorer used = Scorer::auto_;       // the scorer that actually ran

  float at(int layer, int token) const {
    return value[(rows == 1 ? 0 : size_t(layer)) * size_t(tokens) + size_t(token)];
  }
  // Per-head weight when known, else the (layer, token) score spread evenly over heads.
  float at(int layer, int kv_head, int token) const {
    if (!head.empty()) return head[(size_t(layer) * kv_heads + kv_head) * size_t(tokens) + token];
    return at(layer, token);
  }
};

// Throws Errc::invalid_argument for an impossible request (attention without queries, external
// scores of the wrong shape/dtype, an even pool kernel), naming cache.source.
Scores score_tokens(const KvCache& cache, const ScoreOptions& opts);

// Token order for allocators: pinned first (in token order), then by decreasing score of `row`,
// ties broken by position (later first). row < 0 uses the mean over rows.
std::vector<int> importance_order(const Scores& s, int row);

}  // namespace skv
