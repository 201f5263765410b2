#include "plan_args.hpp"

#include <fmt/core.h>

#include <fstream>
#include <numeric>

#include "dump_input.hpp"
#include "skv/error.hpp"
#include "skv/json.hpp"

namespace skv::cli {

void add_plan_options(CLI::App& sub, PlanArgs& a, bool with_budget) {
  if (with_budget)
    sub.add_option("--policy", a.policy,
                   "How tokens get tiers: spectrum (default: distortion-aware, 3-tier unless a probe "
                   "says INT4 is unsafe), spectrum3, spectrum2, greedy, pdtrim, snapkv, fp16, int8, int4")
        ->check(CLI::IsMember({"spectrum", "spectrum3", "spectrum2", "greedy", "pdtrim", "snapkv",
                               "fp16", "int8", "int4"}));
  if (with_budget)
    sub.add_option("--budget", a.budget,
                   "Byte budget: container bytes / FP16 bytes of the cache, every byte counted (0 < B <= 1; default 0.5 for budgeted policies)")
        ->check(CLI::Range(0.0, 1.0));
  sub.add_option("--tiers", a.tiers_file,
                 "Explicit tier map instead of a policy: .npy/.safetensors U8 [tokens] or "
                 "[layers, tokens], 0=FP16 1=INT8 2=INT4 3=DROP (or tiers_k + tiers_v, as skv score -o writes)");
  sub.add_option("--scorer", a.scorer,
                 "Importance signal: auto (attention when the dump has queries, else keynorm), "
                 "attention, keynorm, position")
      ->check(CLI::IsMember({"auto", "attention", "keynorm", "position"}));
  sub.add_option("--scores", a.scores_file,
                 "External importance scores: .npy/.safetensors F32 [tokens] or [layers, tokens]");
  sub.add_option("--granularity", a.granularity,
                 "cache: one score per token (mean over layers); layer: one per layer and token")
      ->check(CLI::IsMember({"cache", "layer"}));
  sub.add_option("--pool", a.pool, "Attention smoothing over neighbouring tokens: max, avg, none")
      ->check(CLI::IsMember({"max", "avg", "none"}));
  sub.add_option("--pool-kernel", a.pool_kernel, "Pooling width in tokens (odd)")->check(CLI::PositiveNumber);
  sub.add_option("--sinks", a.sinks, "First tokens pinned to the top tier")->check(CLI::NonNegativeNumber);
  sub.add_option("--recent", a.recent, "Last tokens pinned to the top tier")->check(CLI::NonNegativeNumber);
  sub.add_flag("--no-kv-split", a.no_kv_split, "Give a token's key and value the same tier");
  sub.add_flag("--no-drop", a.no_drop, "Distortion-aware policies: never drop a token");
  sub.add_option("--probe", a.probe_file,
                 "Result of skv probe (JSON); INT4 is avoided when it says int4_safe: false");
  sub.add_option("--key-transform", a.key_transform,
                 "Keys before quantizing: auto (measured: each step none -> centre -> prerope must cut the key error by a quarter), none, centre "
                 "(per-channel mean removed), prerope (undo RoPE, centre; needs rope_theta/rope_style)")
      ->check(CLI::IsMember({"auto", "none", "centre", "prerope"}));
  sub.add_option("--int8-group", a.int8_group, "Elements per INT8 scale (0 = head_dim)")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--int4-group", a.int4_group,
                 "Elements per INT4 scale/min pair (0 = head_dim; default 32, or gcd(32, head_dim) when 32 does not divide it)")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--zstd", a.zstd_level,
                 "zstd level for every stream (0 = off); a stream stays raw when zstd does not shrink it")
      ->check(CLI::Range(0, 22));
  sub.add_option("--plan", a.plan,
                 "Planning effort: fast (default: attention from an evenly spread sample of the window "
                 "queries) or thorough (every window query; several times slower on GQA models)")
      ->check(CLI::IsMember({"fast", "thorough"}));
  sub.add_option("--plan-queries", a.plan_queries,
                 "Window queries per kv head that fast planning scores (default " + std::to_string(kPlanQueries) +
                     "; 0 = all, as --plan thorough)")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--int2", a.int2,
                 "Distortion-aware policies: the INT2 tier (a format 1.1 container): auto (below budget " +
                     std::to_string(kInt2Below).substr(0, 3) + "), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  sub.add_option("--drop-guard", a.drop_guard,
                 "Distortion-aware policies: no token drops whose dropping, with every token of lower "
                 "attention, takes more than this share of a window query's attention (default " +
                     std::to_string(kMaxDropMass).substr(0, 4) + "; loosened only as far as the budget needs; 1 = off)")
      ->check(CLI::Range(0.0, 1.0));
  sub.add_option("--pdtrim-front", a.pdtrim_front, "pdtrim: share of kept tokens taken from the front")
      ->check(CLI::Range(0.0, 1.0));
}

namespace {

KeyTransform parse_transform(const std::string& s) {
  if (s == "none") return KeyTransform::none;
  if (s == "centre") return KeyTransform::centre;
  return KeyTransform::prerope_centre;
}

// INT4 safety from a probe result file, else from the dump's metadata (skv_int4_safe).
bool int4_safe(const KvCache& cache, const std::string& probe_file, std::vector<std::string>& notes) {
  if (!probe_file.empty()) {
    std::ifstream f(probe_file, std::ios::binary);
    if (!f) fail(Errc::io, probe_file, "cannot open probe result");
    // A probe result is a few hundred bytes: read a bounded prefix, never a whole device.
    constexpr size_t kMaxProbe = 1 << 20;
    std::string text(kMaxProbe + 1, '\0');
    f.read(text.data(), std::streamsize(text.size()));
    text.resize(size_t(f.gcount()));
    if (text.size() > kMaxProbe)
      fail(Errc::format, probe_file, "larger than " + std::to_string(kMaxProbe) + " bytes; not a probe result");
    const nlohmann::json j = parse_json(text, probe_file, "probe result");
    if (!j.is_object() || !j.contains("int4_safe") || !j["int4_safe"].is_boolean())
      fail(Errc::format, probe_file, "expected a JSON object with a boolean 'int4_safe'");
    const bool safe = j["int4_safe"].get<bool>();
    notes.push_back(fmt::format("probe {}: INT4 {}", probe_file, safe ? "safe" : "unsafe, 2-tier"));
    return safe;
  }
  auto it = cache.metadata.find("skv_int4_safe");
  if (it != cache.metadata.end()) {
    const bool safe = it->second != "false" && it->second != "0";
    notes.push_back(fmt::format("dump metadata skv_int4_safe={}", it->second));
    return safe;
  }
  return true;
}

// A tier map's codes for one side (K or V) into `dst` [layers * tokens].
void copy_tiers(const KvShape& s, const TensorView& t, const std::string& path, const std::string& name,
                std::vector<Tier>& dst) {
  if (t.dtype != DType::U8)
    fail(Errc::format, path, name + " must be U8, got " + std::string(dtype_name(t.dtype)));
  const bool per_token = t.shape.size() == 1 && t.shape[0] == s.tokens;
  const bool per_layer = t.shape.size() == 2 && t.shape[0] == s.layers && t.shape[1] == s.tokens;
  if (!per_token && !per_layer)
    fail(Errc::format, path,
         fmt::format("{} shape {} fits neither [tokens] = [{}] nor [layers, tokens] = [{}, {}]", name,
                     shape_str(t.shape), s.tokens, s.layers, s.tokens));
  const auto* v = t.as<uint8_t>();
  for (int l = 0; l < s.layers; ++l)
    for (int i = 0; i < s.tokens; ++i) {
      const uint8_t code = v[per_layer ? size_t(l) * size_t(s.tokens) + size_t(i) : size_t(i)];
      if (code > 3) fail(Errc::format, path, fmt::format("{}: tier code {} at token {} is not 0..3", name, code, i));
      dst[size_t(l) * size_t(s.tokens) + size_t(i)] = Tier(code);
    }
}

// A single `tiers` map (K and V alike), or `tiers_k` + `tiers_v` as `skv score -o` writes them.
// `transform` receives the key transform the file names in its metadata (skv_key_transform).
Plan plan_from_tiers_file(const KvCache& cache, const std::string& path, std::string& transform) {
  const auto& s = cache.shape;
  Plan p = Plan::uniform(s.layers, s.tokens, Tier::FP16);
  p.policy = "explicit";
  if (path.size() < 4 || path.compare(path.size() - 4, 4, ".npy") != 0) {
    const auto r = safetensors::Reader::open(path);
    if (auto it = r.metadata().find("skv_key_transform"); it != r.metadata().end()) transform = it->second;
    const auto *tk = r.find("tiers_k"), *tv = r.find("tiers_v");
    if (tk && tv && !r.find("tiers")) {
      copy_tiers(s, r.view(*tk), path, "tiers_k", p.k_tiers);
      copy_tiers(s, r.view(*tv), path, "tiers_v", p.v_tiers);
      return p;
    }
  }
  const SideTensor t = open_side_tensor(path, "tiers");
  copy_tiers(s, t.view, path, "tier map", p.k_tiers);
  p.v_tiers = p.k_tiers;
  return p;
}

}  // namespace

PlanResult build_plan(const KvCache& cache, const PlanArgs& a, const std::function<void(int)>& release_layer) {
  PlanResult r;
  QuantSettings quant;
  quant.int8_group = a.int8_group;
  // 32 is the usual INT4 group; head dims such as 80 or 72 take the largest power of two that
  // divides them instead of failing.
  quant.int4_group = a.int4_group >= 0 ? a.int4_group : std::gcd(32, cache.shape.head_dim);
  quant.zstd_level = a.zstd_level;
  if (!a.tiers_file.empty()) {
    std::string file_transform;
    r.plan = plan_from_tiers_file(cache, a.tiers_file, file_transform);
    r.plan.quant = quant;
    // auto: the transform the tier file was planned with (skv score records it), else none.
    const std::string tf = a.key_transform != "auto" ? a.key_transform
                           : file_transform.empty()  ? "none" : file_transform;
    if (tf != "none" && tf != "centre" && tf != "prerope")
      fail(Errc::format, a.tiers_file, "unknown skv_key_transform '" + tf + "' in metadata");
    r.plan.quant.key_transform = parse_transform(tf);
    r.plan.requested_budget = a.budget;
    r.notes.push_back("tiers from " + a.tiers_file);
    return r;
  }
  PolicyOptions o;
  o.policy = *policy_from_name(a.policy);
  o.budget = a.budget;
  const bool uniform = o.policy == PolicyKind::fp16 || o.policy == PolicyKind::int8 || o.policy == PolicyKind::int4;
  if (!uniform && o.budget <= 0) {
    o.budget = kDefaultBudget;
    r.notes.push_back(fmt::format("no --budget given: using {}", kDefaultBudget));
  }
  SideTensor external;
  o.scoring = scoring_options(a, external);
  o.int4_safe = int4_safe(cache, a.probe_file, r.notes);
  o.kv_split = !a.no_kv_split;
  o.allow_drop = !a.no_drop;
  if (a.key_transform != "auto") o.key_transform = parse_transform(a.key_transform);
  o.quant = quant;
  o.pdtrim_front = a.pdtrim_front;
  o.plan_queries = plan_queries(a);
  if (a.drop_guard >= 0) o.max_drop_mass = a.drop_guard;
  if (a.int2 != "auto") o.int2 = a.int2 == "on";
  o.threads = a.threads;
  o.layer_done = release_layer;
  r.plan = make_plan(cache, o, &r.report);
  r.notes.push_back(fmt::format("scorer {}, key transform {} ({})", scorer_name(r.report.scorer),
                                a.key_transform == "auto" ? "auto" : a.key_transform,
                                r.report.key_transform_reason));
  return r;
}

int plan_queries(const PlanArgs& a) {
  if (a.plan == "thorough") return 0;
  return a.plan_queries >= 0 ? a.plan_queries : kPlanQueries;
}

ScoreOptions scoring_options(const PlanArgs& a, SideTensor& external) {
  ScoreOptions so;
  so.query_sample = plan_queries(a);
  so.scorer = *scorer_from_name(a.scorer);
  if (!a.scores_file.empty()) {
    external = open_side_tensor(a.scores_file, "scores");
    so.scorer = Scorer::external;
    so.external = external.view;
  }
  so.pool = a.pool == "max" ? Pool::max : a.pool == "avg" ? Pool::avg : Pool::none;
  so.pool_kernel = a.pool_kernel;
  so.per_layer = a.granularity == "layer";
  so.sinks = a.sinks;
  so.recent = a.recent;
  so.threads = a.threads;
  return so;
}

nlohmann::json report_json(const PolicyReport& r) {
  nlohmann::json k, v;
  for (int t = 0; t < kNumTiers; ++t) {
    k[tier_name(Tier(t))] = r.k_tiers[size_t(t)];
    v[tier_name(Tier(t))] = r.v_tiers[size_t(t)];
  }
  return {{"policy", r.policy},
          {"scorer", scorer_name(r.scorer)},
          {"per_layer", r.per_layer},
          {"key_transform", int(r.key_transform) == 0 ? "none" : int(r.key_transform) == 1 ? "centre" : "prerope"},
          {"key_transform_reason", r.key_transform_reason},
          {"int4_allowed", r.int4_allowed},
          {"budget_bytes", r.budget_bytes},
          {"predicted_bytes", r.predicted_bytes},
          {"predicted_budget", r.predicted_budget},
          {"nominal_budget", r.nominal_budget},
          {"distortion", r.distortion},
          {"drop_mass", r.drop_mass},
          {"tiers_k", k},
          {"tiers_v", v},
          {"seconds", {{"score", r.seconds_score}, {"errors", r.seconds_errors}, {"allocate", r.seconds_allocate}}}};
}

}  // namespace skv::cli
