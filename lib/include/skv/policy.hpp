// Policies: how a KvCache becomes a Plan under a byte budget. Every budgeted policy honours the
// budget honestly: the container's bytes (all headers, maps, scales and centres counted, through
// the codec's SizeModel) never exceed budget x the cache's FP16 bytes.
#pragma once
#include <array>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "skv/allocate.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"
#include "skv/score.hpp"

namespace skv {

enum class PolicyKind : uint8_t {
  spectrum = 0,  // default: distortion-aware; 3-tier (FP16/INT8/INT4, +DROP) when int4_safe,
                 // else 2-tier (FP16/INT8, +DROP)
  spectrum3,     // distortion-aware, INT4 allowed regardless of int4_safe
  spectrum2,     // distortion-aware, INT4 never used
  greedy,        // the published SpectrumKV fractions in importance order (3-tier when int4_safe)
  pdtrim,        // keep the first front*n' and the last (1-front)*n' tokens at FP16, drop the rest;
                 // n' is the largest token count whose real bytes fit the budget
  snapkv,        // keep the n' most attended tokens at FP16 (pinned first), drop the rest
  fp16, int8, int4,  // uniform tier for every token; the budget, when given, is only checked
};
const char* policy_name(PolicyKind p) noexcept;  // "spectrum", "spectrum3", ...
std::optional<PolicyKind> policy_from_name(std::string_view name) noexcept;

// Default PolicyOptions::plan_queries.
inline constexpr int kPlanQueries = 16;
// Default PolicyOptions::max_drop_mass.
inline constexpr double kMaxDropMass = 0.1;
// PolicyOptions::int2 unset: distortion-aware policies take the INT2 tier below this budget, where
// INT4 everywhere (about 0.31 of the FP16 bytes with groups of 32) leaves no room to keep the
// important tokens finer without dropping others.
inline constexpr double kInt2Below = 0.4;

struct PolicyOptions {
  PolicyKind policy = PolicyKind::spectrum;
  // Container bytes / FP16 bytes, in (0, 1]. 0 = no budget: only valid for fp16/int8/int4.
  double budget = 0;
  ScoreOptions scoring;      // scorer, pooling, granularity, sinks, recent pins
  // Window queries per kv head that attention-based planning scores (ScoreOptions::query_sample,
  // which this overrides): the attention products are most of a plan's cost. 0 = every window
  // query (the "thorough" plan).
  int plan_queries = kPlanQueries;
  // False when a probe found INT4 harmful for this model: spectrum and greedy stay 2-tier.
  bool int4_safe = true;
  bool kv_split = true;      // distortion-aware: K and V of a token may take different tiers
  bool allow_drop = true;    // distortion-aware: may drop tokens when that beats quantizing
  // Distortion-aware: the drop guard (AllocOptions::max_drop_mass): no token drops whose
  // dropping, with every token of lower attention, takes more than this share of any scored
  // window query's attention. When the budget cannot be met so, the guard is doubled until it
  // can (PolicyReport::drop_mass says what was used). >= 1: no guard.
  double max_drop_mass = kMaxDropMass;
  // Distortion-aware policies with INT4 allowed: may use the INT2 tier (a format 1.1 file).
  // nullopt = when the budget is below kInt2Below.
  std::optional<bool> int2;
  // Key transform for quantized keys; nullopt = choose automatically from the measured
  // (query-weighted) key error on a sample of unpinned tokens, going none -> centre ->
  // prerope_centre while each step cuts the error by at least a quarter (each costs codec time);
  // prerope_centre is considered only when KvMeta::prerope_ok (RoPE known and reproducible).
  std::optional<KeyTransform> key_transform;
  QuantSettings quant;       // groups and zstd level; key_transform is set by the policy
  ErrorOptions errors;       // distortion model (analytic or exact quantizer errors)
  double pdtrim_front = 0.5; // pdtrim: share of kept tokens taken from the front
  int threads = 0;           // 0 = all cores; plans never depend on it
  // Called, on the calling thread, each time a planning pass (scoring, key-transform measurement,
  // distortion measurement) has finished reading layer L; the caller may drop the layer's pages
  // (e.g. madvise a mapped dump). Each pass walks the layers in order, reading at most `threads`
  // at a time, so a caller that drops them keeps about that many layers resident. Overrides
  // scoring.layer_done / errors.layer_done when set. Plans never depend on it.
  std::function<void(int)> layer_done;
};

struct PolicyReport {
  std::string policy;
  Scorer scorer = Scorer::auto_;     // the scorer that ran (auto_ when none was needed)
  bool per_layer = false;
  KeyTransform key_transform = KeyTransform::none;
  std::string key_transform_reason;  // one line: fixed by the caller, or the measured errors
  std::array<double, 3> key_error{-1, -1, -1};  // by KeyTransform; -1 = not measured
  bool int4_allowed = false;
  uint64_t fp16_bytes = 0, budget_bytes = 0, predicted_bytes = 0;
  double predicted_budget = 0, nominal_budget = 0;
  double distortion = -1;            // distortion-aware policies: the plan's modelled distortion
  double drop_mass = 1;              // distortion-aware policies: the drop guard in force
  std::array<uint64_t, kNumTiers> k_tiers{}, v_tiers{};  // (layer, token) entries per tier
  double seconds_score = 0, seconds_errors = 0, seconds_allocate = 0;
};

// Throws Errc::invalid_argument for bad options (budget outside (0, 1], a budgeted policy
// without budget, attention scoring without queries...), Errc::budget when even the cheapest
// plan of the policy does not fit (the message names the minimum achievable budget).
Plan make_plan(const KvCache& cache, const PolicyOptions& opts, PolicyReport* report = nullptr);

}  // namespace skv
