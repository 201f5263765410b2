// Tier allocation under an exact byte budget. Two allocators:
//  - greedy: the published SpectrumKV fractions, tokens assigned in importance order;
//  - distortion-aware (skv's default): per (layer, token) entry, choose the K and V tiers that
//    minimise the summed importance-weighted distortion subject to the byte budget, a
//    multiple-choice knapsack solved on each entry's lower convex hull of (bytes, distortion).
// Budgets are honest: budget b allows floor(b * fp16_bytes) container bytes, every byte counted
// through the codec's SizeModel (fixed bytes + per-entry token bytes).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "skv/codec.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"
#include "skv/score.hpp"

namespace skv {

// ---- accounting -------------------------------------------------------------------------------

// fixed_bytes + sum over (layer, K/V, token) of token_bytes[tier]: the size the allocators honour.
uint64_t plan_bytes(const SizeModel& m, const Plan& p);
// floor(budget * shape.fp16_bytes()).
uint64_t budget_bytes(double budget, const KvShape& shape);

// ---- greedy (published) -----------------------------------------------------------------------

struct TierFractions {
  double fp16 = 0, int8 = 0, int4 = 0, drop = 0;  // shares of tokens, summing to 1
};
// SpectrumKV: 3-tier 0.25 <= b <= 0.5: int8 = 4b-1, int4 = 2-4b; 0.5 <= b <= 1: fp16 = 2b-1,
// int8 = 2-2b; below 0.25 only 4b at INT4, the rest dropped. 2-tier (int4 = false) below 0.5:
// 2b at INT8, the rest dropped. Throws Errc::invalid_argument unless 0 <= b <= 1.
TierFractions greedy_fractions(double budget, bool int4);

// Tokens in importance order (pinned first, per layer when scores are per layer) take the tiers
// in the published fractions of the *nominal* budget; the nominal budget is then lowered until
// the plan's real bytes fit budget_bytes. `forced_drop` ([layers * tokens], may be empty) marks
// entries that must be DROP (absent in the source). Throws Errc::budget when nothing fits.
Plan allocate_greedy(const Scores& scores, int layers, const std::vector<uint8_t>& forced_drop,
                     const SizeModel& model, uint64_t budget_bytes, double budget, bool int4);

// ---- distortion-aware -------------------------------------------------------------------------

// Importance-weighted distortion of storing each (layer, token) entry at each tier, summed over
// heads. Units are those of a squared attention-output error, so K, V and DROP compare directly.
struct Distortion {
  int layers = 0, tokens = 0;
  // [layers * tokens][tier code]: FP16, INT8, INT4, (DROP: unused, see drop), INT2
  std::vector<std::array<float, kNumTiers>> k, v;
  std::vector<float> drop;                 // [layers * tokens]: dropping K and V together
  // [layers * tokens]: 0 free, 1 must stay FP16 (non-finite values), 2 must drop (masked out)
  std::vector<uint8_t> forced;
  // [layers * tokens]: the drop guard, the largest over heads of Scores::drop_mass (may be
  // empty: no guard). AllocOptions::max_drop_mass keeps heavier entries from dropping.
  std::vector<float> drop_mass;
};

struct AllocOptions {
  bool int8 = true, int4 = true;  // allowed quantized tiers (FP16 always is)
  bool int2 = false;              // INT2 too (the plan's QuantSettings::int2 must then be on)
  bool drop = true;               // may drop entries when that costs less distortion per byte
  bool kv_split = true;           // K and V of an entry may take different tiers (DROP is joint)
  // Drop guard: entries whose Distortion::drop_mass exceeds this never drop (>= 1: no guard).
  // Dropping renormalises the rest, an error that grows with the dropped mass and that the
  // per-token model prices only token by token; below this mass it stays small and bounded.
  double max_drop_mass = 1;
};

// Pinned tokens ([tokens]) are served before any other entry. Throws Errc::budget, naming the
// minimum achievable budget, when even the cheapest allowed plan exceeds budget_bytes.
// `total` (optional) receives the plan's summed distortion.
Plan allocate_distortion(const Distortion& d, const std::vector<uint8_t>& pinned,
                         const SizeModel& model, uint64_t budget_bytes, const AllocOptions& o,
                         double* total = nullptr);

// ---- error measurement ------------------------------------------------------------------------

enum class ErrorModel : uint8_t {
  analytic = 0,  // step^2/12 per element from each group's absmax (INT8) or range (INT4)
  exact = 1,     // run the reference quantizers (skv/quant.hpp) and sum the squared errors
};

struct ErrorOptions {
  ErrorModel model = ErrorModel::analytic;
  // Without queries, the assumed spread (std) of attention logits over tokens; converts key
  // error into logit error.
  double logit_spread = 2.0;
  double weight_floor = 0.1;  // every token weighs at least this share of the uniform weight
  // The same floor for the second-moment weights (Scores::quant_weight), as a share of
  // Scores::uniform_weight: no token counts less than it would under uniform attention, since the
  // window is only a sample of the queries to come. (On SmolLM2 at b = 0.3, 0.1 gave dPPL +0.30%
  // and 1 gave +0.02%, with the sample dumps' attention error 0.029 and 0.035.)
  double second_moment_floor = 1.0;
  // With the scorer's top candidates (Scores::top): the cost of one window query's most attended
  // token changing, in the units of the attention-only terms (squared relative output error).
  // Induction and retrieval heads copy whatever they attend most, so a flipped argmax is an
  // error the output norm alone understates. 0 disables the term.
  double top1_cost = 1.0;
  int threads = 0;
  // Called, on the calling thread, once the measurement has finished reading layer L (layers are
  // read a few at a time, at most `threads`); the caller may drop the layer's pages.
  std::function<void(int)> layer_done;
};

// Distortion tables for `quant` (groups and key transform). Per (layer, head, token) with weight w
// (the head's score when known, else the layer's), values v, keys k and their quantized k', v':
//   V tier:  w * |v' - v|^2
//   K tier:  w * |v - vbar|^2 * g(E[dlogit^2]),  E[dlogit^2] = sum_c C_c (k'_c - k_c)^2 / d,
//            C_c = mean square of query channel c (or an isotropic estimate without queries),
//            g(x) = min(exp(2x) - 2 exp(x/2) + 1, 4): E|exp(dlogit) - 1|^2, capped at 4 drops
//   DROP:    w * |v - vbar|^2   (the token's attention share times its value's deviation)
// With the second-moment weights (Scores::quant_weight, drop_weight) w is the token's
// sum_r p_rt^2 / |o_r|^2 (drop: with p / (1 - p)), floored (ErrorOptions::second_moment_floor), and with Scores::top each window query r whose
// top-1 token a leads candidate j by a logit gap G adds top1_cost times the chance of a flip:
// P = Q(G / sigma) to j's key tiers, sigma^2 = E[dlogit^2] of j at that tier, the same with
// j's gap to a's key tiers (smallest gap), and 1 to a's DROP.
// Masked tokens (layer mask 0) are forced to DROP; rows with non-finite values to FP16.
Distortion measure_distortion(const KvCache& cache, const Scores& scores, const QuantSettings& quant,
                              const ErrorOptions& o = {});

// score_tokens() (attention) and measure_distortion() fused into one walk over the cache: each
// head's rows are read and converted once and its terms taken from its attention at once,
// without materialising Scores. Gives exactly measure_distortion(cache, score_tokens(cache,
// scoring), quant, o) (scoring.per_layer and the scores themselves play no part). Needs
// observation queries; `pinned` (may be null) receives the scorer's pinned tokens.
Distortion measure_distortion_fused(const KvCache& cache, const ScoreOptions& scoring, const QuantSettings& quant,
                                    const ErrorOptions& o = {}, std::vector<uint8_t>* pinned = nullptr);

// Query-weighted squared key error (INT8 + INT4, summed, analytic) of a sample of unpinned tokens
// (about 16k rows over the cache, 32 to 128 a head and at most a sixteenth of the tokens, centres taken over the sample) under each
// key transform, indexed by KeyTransform; -1 where the transform is unavailable (prerope_centre
// without rope_theta and a known rope_style). Each sampled row is read once and measured under
// every transform; layer_done (may be empty) runs as for ErrorOptions::layer_done.
std::array<double, 3> key_transform_errors(const KvCache& cache, const QuantSettings& quant,
                                           const std::vector<uint8_t>& pinned, int threads = 0,
                                           const std::function<void(int)>& layer_done = {});

}  // namespace skv
