// One (layer, kv head) of the distortion tables (the model is in skv/allocate.hpp): the weighted
// squared error of each token at each tier, from the head's raw errors (head_pass.hpp) and its
// attention weights. Not installed; not part of the public API.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "head_pass.hpp"
#include "skv/allocate.hpp"

namespace skv::detail {

// Terms of one token of one head: V INT8, V INT4, K INT8, K INT4, DROP, V INT2, K INT2.
using HeadTerms = std::array<float, 7>;

// Mean square of each query channel over the window and the group's heads, divided by d (so
// E[dlogit^2] = sum_c C_c dk_c^2 for logits q.k / sqrt(d)). Empty without queries.
std::vector<float> query_power(const KvCache& c, int l, int h);

// What a token's error weighs in one head. Second-moment weights (Scores::quant_weight) when
// `quant` is set, each plus `floor`; else the score `share` plus `floor`. With `top`, each of the
// `queries` scored window queries adds top1_cost * `top_weight` times its expected top-1 flips.
struct HeadWeights {
  const float *quant = nullptr, *drop = nullptr, *share = nullptr;  // [tokens]
  float floor = 0;
  const Scores::Top* top = nullptr;  // [queries, top_k]
  int queries = 0, top_k = 0;
  double top_weight = 1;
};

// Fills out[t] / ok[t] (ok = 0: absent or a non-finite row, no terms) from a HeadPass whose
// second() measured errors.
void head_terms(const HeadPass& hp, const HeadWeights& w, const ErrorOptions& o, HeadTerms* out, uint8_t* ok);

}  // namespace skv::detail
