// What dump, eval and probe share: loading a GGUF model, reading prose, prefill with progress,
// the cache "as skv sees it" (the runner's cache written as a canonical F16 dump) and the
// in-process codec round trip (build_plan -> encode -> ContainerReader -> assign_from).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cli.hpp"
#include "plan_args.hpp"
#include "skv/codec.hpp"
#include "skv/kvcache.hpp"
#include "skv/metrics.hpp"
#include "skv/query_split.hpp"
#include "skv/model/dump.hpp"
#include "skv/model/eval.hpp"
#include "skv/model/model.hpp"

namespace skv::cli {

// Whole file as bytes; throws Errc::io naming the path.
std::string read_text(const std::string& path);

// Loads with a note on stderr (TTY only) because dequantizing takes a moment.
model::Model load_model(const std::string& path, int threads, const Globals& g);

// Appends `ids` to `cache`, in chunks so that progress can be shown on a TTY when it takes more
// than a second; the last forward call covers at least `window` tokens, so that `capture` (may
// be null) receives the post-RoPE queries of the last min(window, ids) tokens.
void prefill(const model::Model& m, model::KvCacheObject& cache, std::span<const int32_t> ids,
             int window, model::QueryCapture* capture, const Globals& g, const std::string& label);

// The prefilled cache as a decode node would receive it: a canonical F16 dump (what skv dump
// writes; K/V, the window queries, __metadata__), a KvCache view over it (what skv encode reads),
// and the runner cache holding exactly the dump's F16 values (the reference every ΔPPL and
// baseline is measured against, so a lossless policy changes nothing).
// With --holdout half, `fit` holds the view with only the fitting half of the window queries
// (query_split.hpp): the planner sees that, the codec still encodes `view`, and the attention
// error is measured on both halves separately.
struct CacheUnderTest {
  model::Dump dump;
  KvCache view;
  model::KvCacheObject reference;
  std::optional<QuerySubset> fit;
  const KvCache& planned() const { return fit ? fit->cache : view; }
};
CacheUnderTest cache_under_test(const model::Model& m, const model::KvCacheObject& cache,
                                std::span<const int32_t> ids, const model::QueryCapture& q,
                                const std::string& name, Holdout holdout = Holdout::none);

struct CodecOutcome {
  double achieved_budget = 0, nominal_budget = 0;
  uint64_t bytes = 0;
  TierCounts tiers;
  std::vector<std::string> notes;
  // With a holdout: attention metrics of the window queries the plan saw (in-sample) and of
  // those it did not (held out), decoded against the cache as dumped.
  std::optional<AttentionMetrics> attn_fit, attn_held_out;
};

// Encodes c.view with the plan the options give (the code path of skv encode) into memory,
// decodes it with ContainerReader (that of skv decode) and loads it into `out` (a copy of
// c.reference): quantized rows replaced, dropped tokens masked out of attention.
CodecOutcome codec_round_trip(const CacheUnderTest& c, const PlanArgs& pa, model::KvCacheObject& out);

// Negative log-likelihood of `targets` when `last` (the context's final token) and then
// targets[0..M-1) run as fresh queries over `cache` (which is consumed: it grows by M tokens).
struct TargetScore {
  double ppl = 0, mean_nll = 0;
  int top1_hits = 0;
  std::vector<double> nll;  // per target token (what the bootstrap resamples)
};
TargetScore score_targets(const model::Model& m, model::KvCacheObject& cache, int32_t last,
                          std::span<const int32_t> targets);

// Greedy generation over `cache` starting with `first` as a fresh query; stops at EOS, after
// max_new tokens, or as soon as the text contains `stop_on` (when not empty).
std::string greedy_answer(const model::Model& m, model::KvCacheObject& cache, int32_t first,
                          int max_new, const std::string& stop_on);

// One needle-in-a-haystack trial: the whole prompt (haystack with the needle, then the question)
// is prefilled except its last token, so the observation window holds the question as a
// retrieval engine would see it; that cache goes through each codec configuration; the last
// prompt token then runs as a fresh query and the answer is generated greedily over the
// round-tripped cache. The baseline runs over the untouched (F16) cache.
struct NeedleCase {
  double depth = 0;
  model::NeedlePrompt prompt;
  std::vector<int32_t> ids;  // the full prompt (BOS when the model adds one)
  int needle_start = 0;      // in ids
};
NeedleCase needle_case(const model::Model& m, const std::string& filler, int haystack_tokens,
                       double depth, uint32_t number);

struct NeedleRun {
  bool success = false;
  std::string answer;
  CodecOutcome codec;  // empty for the baseline
  std::string error;   // the configuration could not run (e.g. budget too small); success false
};
struct NeedleTrial {
  NeedleRun baseline;
  std::vector<NeedleRun> runs;  // parallel to the configurations
};
NeedleTrial run_needle_trial(const model::Model& m, const NeedleCase& c,
                             const std::vector<PlanArgs>& configs, int window, int max_new,
                             const Globals& g, Holdout holdout = Holdout::none);

// The JSON of one attention measurement: queries, attn_rel_err, attn_rel_err_max, top1_agree.
nlohmann::json attention_json(const AttentionMetrics& a);

// Policies that ignore the budget (one uniform tier for every token).
bool is_uniform_policy(const std::string& policy);

// "fp16 12.5%  int8 50.0%  int4 37.5%" (report.hpp), as a JSON object of shares per tier.
nlohmann::json tier_shares_json(const TierCounts& t);

}  // namespace skv::cli
