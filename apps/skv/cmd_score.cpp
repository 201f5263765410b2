// skv score: the importance scores of a dump and the tier each token would get under a policy and
// budget; with --compare, the attention-level quality of a decoded dump against its original.
#include <fmt/core.h>

#include <algorithm>
#include <numeric>

#include "cli.hpp"
#include "dump_input.hpp"
#include "plan_args.hpp"
#include "report.hpp"
#include "skv/codec.hpp"
#include "skv/error.hpp"
#include "skv/formats/safetensors.hpp"
#include "skv/metrics.hpp"
#include "skv/query_split.hpp"
#include "skv/score.hpp"

namespace skv::cli {
namespace {

struct ScoreArgs {
  std::string input, output, layout = "htd";
  std::vector<std::string> compare;  // ORIG DECODED
  bool force = false, json = false;
  int threads = 0, top = 10;
  Holdout holdout = Holdout::none;
  PlanArgs plan;
};

const char* transform_cli_name(KeyTransform t) {
  return t == KeyTransform::none ? "none" : t == KeyTransform::centre ? "centre" : "prerope";
}

std::string shape_text(const KvShape& s) {
  return fmt::format("{} layers x {} kv heads x {} tokens x {} dims", s.layers, s.kv_heads, s.tokens, s.head_dim);
}

// "0-3,4090-4095": runs of set entries.
std::string ranges_text(const std::vector<uint8_t>& flags) {
  std::string out;
  const int n = int(flags.size());
  for (int i = 0; i < n;) {
    if (!flags[size_t(i)]) { ++i; continue; }
    int j = i;
    while (j + 1 < n && flags[size_t(j + 1)]) ++j;
    if (!out.empty()) out += ",";
    out += i == j ? fmt::format("{}", i) : fmt::format("{}-{}", i, j);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

// ---- --compare -------------------------------------------------------------------------------

int run_compare(const ScoreArgs& a, const Globals& g) {
  const Layout layout = parse_layout(a.layout);
  const std::string& orig_path = a.compare[0];
  const std::string& dec_path = a.compare[1];
  Dump orig = open_dump(orig_path, layout);
  const KvShape& so = orig.cache.shape;
  if (so.window <= 0 || orig.cache.layers.empty() || !orig.cache.layers[0].q)
    fail(Errc::invalid_argument, orig_path,
         "no observation queries (layers.{L}.q); --compare needs an original that carries them");
  Dump dec = open_dump(dec_path, layout);
  const KvShape& sd = dec.cache.shape;
  if (so.layers != sd.layers || so.kv_heads != sd.kv_heads || so.tokens != sd.tokens || so.head_dim != sd.head_dim)
    fail(Errc::invalid_argument, dec_path,
         fmt::format("shape {} differs from {}'s {}", shape_text(sd), orig_path, shape_text(so)));
  const AttentionMetrics m = attention_metrics(orig.cache, dec.cache, a.threads);
  // --holdout half: the same metrics on the window positions a --holdout half plan saw (in
  // sample) and on those it did not (held out), chosen by the rule of query_split.hpp.
  std::optional<AttentionMetrics> fit, held;
  if (a.holdout == Holdout::half) {
    if (so.window < 2)
      fail(Errc::invalid_argument, orig_path, "--holdout half needs a window of at least 2 queries");
    fit = attention_metrics(orig.cache, dec.cache, window_half(so.window, QueryHalf::fit), a.threads);
    held = attention_metrics(orig.cache, dec.cache, window_half(so.window, QueryHalf::held_out), a.threads);
  }
  const auto metrics_json = [](const AttentionMetrics& x) {
    nlohmann::json j = {{"queries", x.queries},
                        {"attn_rel_err", x.rel_error},
                        {"attn_rel_err_max", x.max_rel_error},
                        {"top1_agree", x.top1_agreement}};
    if (x.needle_top1) {
      j["needle_top1"] = *x.needle_top1;
      j["needle_top1_original"] = *x.needle_top1_original;
    }
    return j;
  };
  if (a.json) {
    nlohmann::json j = {{"original", orig_path}, {"decoded", dec_path}};
    j.update(metrics_json(m));
    j["holdout"] = holdout_name(a.holdout);
    if (fit) {
      j["in_sample"] = metrics_json(*fit);
      j["held_out"] = metrics_json(*held);
    }
    print_json(j);
  } else if (g.verbosity > 0 && !fit) {
    fmt::print("{} vs {}: {} queries\n", orig_path, dec_path, m.queries);
    fmt::print("  attention output rel. error  {:.6f} mean, {:.6f} max\n", m.rel_error, m.max_rel_error);
    fmt::print("  top-1 agreement              {:.4f}\n", m.top1_agreement);
    if (m.needle_top1)
      fmt::print("  needle top-1 share           {:.4f} (original {:.4f})\n", *m.needle_top1, *m.needle_top1_original);
  } else if (g.verbosity > 0) {
    fmt::print("{} vs {}: {} queries; holdout half: in-sample = the {} window positions a --holdout half plan "
               "saw, held-out = the other {}\n",
               orig_path, dec_path, m.queries, window_half(so.window, QueryHalf::fit).size(),
               window_half(so.window, QueryHalf::held_out).size());
    fmt::print("  {:<28} {:>10} {:>10} {:>10}\n", "", "all", "in-sample", "held-out");
    fmt::print("  {:<28} {:>10.6f} {:>10.6f} {:>10.6f}\n", "attention output rel. error", m.rel_error,
               fit->rel_error, held->rel_error);
    fmt::print("  {:<28} {:>10.6f} {:>10.6f} {:>10.6f}\n", "  max", m.max_rel_error, fit->max_rel_error,
               held->max_rel_error);
    fmt::print("  {:<28} {:>10.4f} {:>10.4f} {:>10.4f}\n", "top-1 agreement", m.top1_agreement,
               fit->top1_agreement, held->top1_agreement);
    if (m.needle_top1)
      fmt::print("  {:<28} {:>10.4f} {:>10.4f} {:>10.4f}  (original {:.4f} / {:.4f} / {:.4f})\n",
                 "needle top-1 share", *m.needle_top1, *fit->needle_top1, *held->needle_top1,
                 *m.needle_top1_original, *fit->needle_top1_original, *held->needle_top1_original);
  }
  return kExitOk;
}

// ---- scoring ---------------------------------------------------------------------------------

void write_scores(const ScoreArgs& a, const KvCache& cache, const Scores& sc, const PlanResult* pr) {
  const KvShape& s = cache.shape;
  std::vector<NamedTensor> out;
  const auto bytes_of = [](const auto& v) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(v[0]));
  };
  const Shape score_shape = sc.rows == 1 ? Shape{sc.tokens} : Shape{sc.rows, sc.tokens};
  out.push_back({"scores", {DType::F32, score_shape, bytes_of(sc.value)}});
  out.push_back({"pinned", {DType::U8, {sc.tokens}, bytes_of(sc.pinned)}});
  std::vector<uint8_t> tk, tv;
  safetensors::Metadata meta{{"skv_scorer", scorer_name(sc.used)}, {"source", a.input}};
  if (pr) {
    tk.resize(pr->plan.k_tiers.size());
    tv.resize(pr->plan.v_tiers.size());
    std::transform(pr->plan.k_tiers.begin(), pr->plan.k_tiers.end(), tk.begin(), [](Tier t) { return uint8_t(t); });
    std::transform(pr->plan.v_tiers.begin(), pr->plan.v_tiers.end(), tv.begin(), [](Tier t) { return uint8_t(t); });
    out.push_back({"tiers_k", {DType::U8, {s.layers, s.tokens}, bytes_of(tk)}});
    out.push_back({"tiers_v", {DType::U8, {s.layers, s.tokens}, bytes_of(tv)}});
    meta["skv_policy"] = pr->report.policy.empty() ? pr->plan.policy : pr->report.policy;
    meta["skv_budget"] = fmt::format("{}", pr->plan.requested_budget);
    // `skv encode --tiers` with --key-transform auto takes the transform the tiers were planned for.
    meta["skv_key_transform"] = transform_cli_name(pr->plan.quant.key_transform);
    if (a.holdout != Holdout::none) meta["skv_holdout"] = holdout_name(a.holdout);
  }
  safetensors::write_file(a.output, out, meta, {.force = a.force});
}

int run_score(const ScoreArgs& a, const Globals& g) {
  if (!a.compare.empty()) {
    if (!a.input.empty())
      fail(Errc::invalid_argument, "skv score", "give either DUMP or --compare ORIG DECODED, not both");
    return run_compare(a, g);
  }
  if (a.input.empty()) fail(Errc::invalid_argument, "skv score", "no DUMP given (or use --compare ORIG DECODED)");
  Dump dump = open_dump(a.input, parse_layout(a.layout));
  // --holdout half: scores and plan see only the fitting half of the window queries.
  std::optional<QuerySubset> fit;
  if (a.holdout == Holdout::half) fit.emplace(query_half(dump.cache, QueryHalf::fit));
  const KvCache& cache = fit ? fit->cache : dump.cache;
  PlanArgs pa = a.plan;
  pa.threads = a.threads;

  SideTensor external;
  const Scores sc = score_tokens(cache, scoring_options(pa, external));
  const auto pk = *policy_from_name(pa.policy);
  const bool budgeted = !(pk == PolicyKind::fp16 || pk == PolicyKind::int8 || pk == PolicyKind::int4);
  const bool planned = !budgeted || pa.budget > 0 || !pa.tiers_file.empty();
  std::optional<PlanResult> pr;
  if (planned) pr = build_plan(cache, pa);

  // Mean score over rows, and the top tokens by it.
  std::vector<double> mean(size_t(sc.tokens), 0.0);
  for (int r = 0; r < sc.rows; ++r)
    for (int t = 0; t < sc.tokens; ++t) mean[size_t(t)] += double(sc.value[size_t(r) * size_t(sc.tokens) + size_t(t)]) / sc.rows;
  std::vector<int> order(size_t(sc.tokens));
  std::iota(order.begin(), order.end(), 0);
  const size_t ntop = std::min(order.size(), size_t(std::max(a.top, 0)));
  std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(ntop), order.end(),
                    [&](int x, int y) { return mean[size_t(x)] != mean[size_t(y)] ? mean[size_t(x)] > mean[size_t(y)] : x < y; });
  order.resize(ntop);
  const int pinned = int(std::count(sc.pinned.begin(), sc.pinned.end(), uint8_t(1)));

  if (!a.output.empty()) write_scores(a, cache, sc, pr ? &*pr : nullptr);

  const PolicyReport* rep = pr && !pr->report.policy.empty() ? &pr->report : nullptr;
  if (a.json) {
    nlohmann::json j = {{"input", a.input},
                        {"layers", cache.shape.layers},
                        {"tokens", cache.shape.tokens},
                        {"scorer", scorer_name(sc.used)},
                        {"score_rows", sc.rows},
                        {"pinned", pinned},
                        {"pinned_tokens", ranges_text(sc.pinned)},
                        {"holdout", holdout_name(a.holdout)},
                        {"planner_window", cache.shape.window}};
    nlohmann::json top = nlohmann::json::array();
    for (int t : order) top.push_back({{"token", t}, {"score", mean[size_t(t)]}});
    j["top_tokens"] = top;
    if (!a.output.empty()) j["output"] = a.output;
    if (pr) {
      j["policy"] = rep ? rep->policy : pr->plan.policy;
      j["budget"] = pa.budget;
      j["key_transform"] = transform_cli_name(pr->plan.quant.key_transform);
      j["nominal_budget"] = pr->plan.nominal_budget();
      TierCounts tc;
      for (size_t e = 0; e < pr->plan.k_tiers.size(); ++e) {
        ++tc.k[size_t(pr->plan.k_tiers[e])];
        ++tc.v[size_t(pr->plan.v_tiers[e])];
      }
      nlohmann::json shares;
      const double n = double(2 * pr->plan.k_tiers.size());
      for (int t = 0; t < kNumTiers; ++t) shares[tier_name(Tier(t))] = double(tc.k[size_t(t)] + tc.v[size_t(t)]) / n;
      j["tier_shares"] = shares;
      if (rep) {
        j["plan"] = report_json(*rep);
        j["predicted_budget"] = rep->predicted_budget;
        nlohmann::json ke;
        const char* names[] = {"none", "centre", "prerope"};
        for (int t = 0; t < 3; ++t)
          ke[names[t]] = rep->key_error[size_t(t)] >= 0 ? nlohmann::json(rep->key_error[size_t(t)]) : nlohmann::json(nullptr);
        j["key_error"] = ke;
      }
      j["notes"] = pr->notes;
    }
    print_json(j);
    return kExitOk;
  }
  if (g.verbosity <= 0) return kExitOk;
  fmt::print("{}: {}\n", a.input, shape_text(cache.shape));
  fmt::print("  scorer         {}{}\n", scorer_name(sc.used), sc.rows > 1 ? " (per layer)" : "");
  if (fit)
    fmt::print("  holdout        half: planned on {} of the {} window queries (every other, the last among them)\n",
               cache.shape.window, dump.cache.shape.window);
  fmt::print("  pinned         {} tokens: {}\n", pinned, ranges_text(sc.pinned));
  if (pr) {
    fmt::print("  policy         {}{}\n", rep ? rep->policy : pr->plan.policy,
               pa.budget > 0 ? fmt::format(" at budget {:.4f}", pa.budget) : "");
    fmt::print("  key transform  {}", transform_cli_name(pr->plan.quant.key_transform));
    if (rep && !rep->key_transform_reason.empty()) fmt::print(" ({})", rep->key_transform_reason);
    fmt::print("\n");
    if (rep)
      fmt::print("  predicted      budget {:.4f} ({}), nominal {:.4f}\n", rep->predicted_budget,
                 human_bytes(rep->predicted_bytes), rep->nominal_budget);
    TierCounts tc;
    for (size_t e = 0; e < pr->plan.k_tiers.size(); ++e) {
      ++tc.k[size_t(pr->plan.k_tiers[e])];
      ++tc.v[size_t(pr->plan.v_tiers[e])];
    }
    fmt::print("  tiers          {}\n", tier_summary(tc));
  } else {
    fmt::print("  tiers          not planned: policy {} needs --budget\n", pa.policy);
  }
  fmt::print("  top {} tokens by score{}:\n", order.size(), sc.rows > 1 ? " (mean over layers)" : "");
  for (int t : order) fmt::print("    {:>8}  {:.6f}{}\n", t, mean[size_t(t)], sc.pinned[size_t(t)] ? "  pinned" : "");
  if (!a.output.empty()) fmt::print("  wrote {}\n", a.output);
  return kExitOk;
}

}  // namespace

void setup_score(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<ScoreArgs>();
  auto* sub = app.add_subcommand(
      "score", "Score token importance and show the tier each token would get; --compare measures quality");
  sub->add_option("input", a->input, "KV dump (.safetensors)");
  sub->add_option("--compare", a->compare,
                  "ORIG DECODED: attention-output error, top-1 agreement and needle share of a decoded "
                  "dump against its original (which must carry queries)")
      ->expected(2);
  sub->add_option("-o,--output", a->output,
                  "Write scores (F32), pinned (U8) and, when planned, tiers_k/tiers_v (U8 [layers, tokens]) "
                  "to this safetensors file (skv encode --tiers takes it)");
  sub->add_flag("-f,--force", a->force, "Overwrite an existing output file");
  sub->add_option("--layout", a->layout, "Element order of K/V in the dump: htd or thd")
      ->check(CLI::IsMember({"htd", "thd"}));
  sub->add_option("--threads", a->threads, "Worker threads (0 = all cores); results do not depend on it")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--top", a->top, "How many top-scored tokens to list")->check(CLI::NonNegativeNumber);
  sub->add_flag("--json", a->json, "Print a JSON summary on stdout");
  sub->add_option_function<std::string>(
         "--holdout", [a](const std::string& v) { a->holdout = *holdout_from_name(v); },
         "none (default) or half. Scoring: plan on every other window query only (the last among them). "
         "--compare: also measure on the queries such a plan saw (in-sample) and on the others (held-out)")
      ->check(CLI::IsMember({"none", "half"}));
  add_plan_options(*sub, a->plan);
  ctx.add(sub, [a, &ctx] { return run_score(*a, ctx.globals); });
}

}  // namespace skv::cli
