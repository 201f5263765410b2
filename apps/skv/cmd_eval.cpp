// skv eval: what the codec does to a real model. `ppl` scores text after a round-tripped context
// cache (ΔPPL% against the untouched cache); `niah` asks for a needle planted in a haystack whose
// cache went through the codec. Both use the code path of skv encode / skv decode, in memory.
#include <fmt/core.h>

#include <cmath>
#include <limits>
#include <random>

#include "cli.hpp"
#include "model_session.hpp"
#include "report.hpp"
#include "skv/bootstrap.hpp"
#include "skv/error.hpp"
#include "skv/query_split.hpp"

namespace skv::cli {
namespace {

constexpr const char* kDefaultFiller = "/usr/share/common-licenses/GPL-3";

struct EvalCommon {
  std::string model;
  std::vector<std::string> policies{"spectrum"};
  std::vector<double> budgets;
  int window = 32, threads = 0;
  bool json = false;
  Holdout holdout = Holdout::none;
  PlanArgs plan;
};

// One codec configuration of the sweep: uniform policies run once, budgeted ones per budget.
struct Config {
  std::string policy;
  double budget = 0;  // 0 for uniform policies
  PlanArgs args;
};

std::vector<Config> configs_of(const EvalCommon& c) {
  std::vector<Config> out;
  for (const auto& p : c.policies) {
    if (is_uniform_policy(p)) {
      Config k{p, 0, c.plan};
      k.args.policy = p;
      k.args.budget = 0;
      k.args.threads = c.threads;
      out.push_back(k);
      continue;
    }
    if (c.budgets.empty())
      fail(Errc::invalid_argument, "--policy " + p, "needs --budget (only fp16, int8 and int4 run without one)");
    for (double b : c.budgets) {
      Config k{p, b, c.plan};
      k.args.policy = p;
      k.args.budget = b;
      k.args.threads = c.threads;
      out.push_back(k);
    }
  }
  return out;
}

std::string budget_str(double b) { return b > 0 ? fmt::format("{:.2f}", b) : "-"; }
nlohmann::json budget_json(double b) { return b > 0 ? nlohmann::json(b) : nlohmann::json(nullptr); }

// Registers the options ppl and niah share: the shared policy options of encode, with --policy
// and --budget taking comma-separated lists.
void add_common(CLI::App& sub, EvalCommon& c) {
  sub.add_option("--model", c.model, "GGUF model file")->required();
  add_plan_options(sub, c.plan, /*with_budget=*/false);
  sub.add_option("--policy", c.policies,
                 "Policies to compare, comma-separated: spectrum, spectrum3, spectrum2, greedy, "
                 "pdtrim, snapkv, fp16, int8, int4 (uniform ones ignore the budget)")
      ->delimiter(',')
      ->check(CLI::IsMember({"spectrum", "spectrum3", "spectrum2", "greedy", "pdtrim", "snapkv",
                             "fp16", "int8", "int4"}));
  sub.add_option("--budget", c.budgets, "Byte budgets, comma-separated (0 < B <= 1)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0));
  sub.add_option("--window", c.window, "Observation window: queries of the last W context tokens feed attention scoring")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--threads", c.threads, "Threads for BLAS and the codec (0 = default)")->check(CLI::NonNegativeNumber);
  sub.add_flag("--json", c.json, "Print the results as JSON on stdout");
  sub.add_option_function<std::string>(
         "--holdout", [&c](const std::string& v) { c.holdout = *holdout_from_name(v); },
         "none (default) or half: plan on every other window query only (the last among them) and report "
         "the attention error on the queries the plan saw and on those it did not")
      ->check(CLI::IsMember({"none", "half"}));
}

// ---------------------------------------------------------------------------------------------
struct PplArgs {
  EvalCommon common;
  std::vector<std::string> texts;
  int context = 1024, target = 256, offset = 0;
  int bootstrap = 1000;
  uint64_t seed = 1;
};

constexpr double kLevel = 0.95;

nlohmann::json num_or_null(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }
nlohmann::json interval_json(const Interval& iv) {
  return {{"mean", iv.mean}, {"ci_lo", num_or_null(iv.lo)}, {"ci_hi", num_or_null(iv.hi)}};
}
std::string ci_cell(double x) { return std::isfinite(x) ? fmt::format("{:+8.2f}", x) : fmt::format("{:>8}", "-"); }

// One text's results: baseline and, per configuration, its ΔPPL and bootstrap replicates.
struct TextResult {
  std::string path;
  TargetScore f32, base;
  size_t tokens = 0;
  std::vector<double> point;                 // per configuration (NaN: did not run)
  std::vector<std::vector<double>> replicates;
  nlohmann::json rows = nlohmann::json::array();
};

TextResult run_ppl_text(const model::Model& m, const PplArgs& a, const std::vector<Config>& configs,
                        const std::string& path, std::span<const int32_t> all, uint64_t stream, int& window,
                        const Globals& g) {
  TextResult r;
  r.path = path;
  r.tokens = all.size();
  const auto context = all.subspan(size_t(a.offset), size_t(a.context));
  const auto targets = all.subspan(size_t(a.offset + a.context), size_t(a.target));
  // The cache under test holds context[0..N-1); context[N-1] and the targets run as fresh queries.
  const auto cached = context.first(context.size() - 1);
  model::KvCacheObject cache = m.new_cache();
  model::QueryCapture q;
  prefill(m, cache, cached, a.common.window, &q, g, "prefill " + path);
  window = q.rows;
  const CacheUnderTest cut = cache_under_test(m, cache, cached, q, path, a.common.holdout);
  {
    model::KvCacheObject work = cache;
    r.f32 = score_targets(m, work, context.back(), targets);
  }
  {
    model::KvCacheObject work = cut.reference;
    r.base = score_targets(m, work, context.back(), targets);
  }
  // One set of resamples per text, shared by every configuration (paired with the baseline and
  // comparable across configurations).
  const Resamples rs = make_resamples(targets.size(), a.bootstrap, a.seed, stream);
  const bool human = !a.common.json && g.verbosity > 0;
  const bool held = a.common.holdout == Holdout::half;
  if (human) {
    fmt::print("{}: {} context tokens (cache of {}), {} target tokens of {}\n",
               m.config().name.empty() ? a.common.model : m.config().name, a.context, cached.size(), a.target, path);
    fmt::print("baseline ppl {:.4f} (cache as dumped, F16; F32 runner cache {:.4f})\n", r.base.ppl, r.f32.ppl);
    fmt::print("{:<10} {:>6} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}{}  {}\n", "policy", "budget", "achieved", "nominal",
               "ppl", "dPPL%", "ci_lo", "ci_hi", held ? fmt::format(" {:>9} {:>9}", "attn_fit", "attn_held") : "",
               "tiers (K and V entries)");
  }
  for (const Config& c : configs) {
    model::KvCacheObject work = cut.reference;
    nlohmann::json row{{"policy", c.policy}, {"budget", budget_json(c.budget)}};
    CodecOutcome o;
    try {
      o = codec_round_trip(cut, c.args, work);
    } catch (const Error& e) {
      if (e.code() != Errc::budget) throw;
      row["error"] = e.what();
      r.rows.push_back(row);
      r.point.push_back(std::numeric_limits<double>::quiet_NaN());
      r.replicates.emplace_back();
      if (human) fmt::print("{:<10} {:>6}  n/a: {}\n", c.policy, budget_str(c.budget), e.what());
      continue;
    }
    const TargetScore sc = score_targets(m, work, context.back(), targets);
    const double delta = delta_ppl_pct(r.base.nll, sc.nll);
    r.replicates.push_back(resampled_delta_ppl(rs, r.base.nll, sc.nll));
    r.point.push_back(delta);
    const Interval iv = percentile_interval(delta, r.replicates.back(), kLevel);
    row.update({{"achieved_budget", o.achieved_budget},
                {"nominal_budget", o.nominal_budget},
                {"ppl", sc.ppl},
                {"delta_ppl_pct", delta},
                {"delta_ppl", interval_json(iv)},
                {"top1_hits", sc.top1_hits},
                {"container_bytes", o.bytes},
                {"tiers", tier_shares_json(o.tiers)}});
    if (o.attn_fit) row["attn_in_sample"] = attention_json(*o.attn_fit);
    if (o.attn_held_out) row["attn_held_out"] = attention_json(*o.attn_held_out);
    r.rows.push_back(row);
    if (human) {
      fmt::print("{:<10} {:>6} {:>8.4f} {:>8.4f} {:>10.4f} {:>+8.2f} {} {}{}  {}\n", c.policy, budget_str(c.budget),
                 o.achieved_budget, o.nominal_budget, sc.ppl, delta, ci_cell(iv.lo), ci_cell(iv.hi),
                 held ? fmt::format(" {:>9.6f} {:>9.6f}", o.attn_fit->rel_error, o.attn_held_out->rel_error) : "",
                 tier_summary(o.tiers));
      std::fflush(stdout);
    }
    if (g.verbosity > 1)
      for (const auto& n : o.notes) fmt::print(stderr, "  {} {}: {}\n", c.policy, budget_str(c.budget), n);
  }
  return r;
}

int run_ppl(const PplArgs& a, const Globals& g) {
  const std::vector<Config> configs = configs_of(a.common);
  const model::Model m = load_model(a.common.model, a.common.threads, g);
  // Every text read and long enough before the first prefill.
  std::vector<std::vector<int32_t>> texts;
  const size_t need = size_t(a.offset) + size_t(a.context) + size_t(a.target);
  for (const auto& path : a.texts) {
    texts.push_back(m.tokenizer().encode(read_text(path), m.tokenizer().add_bos_default()));
    if (texts.back().size() < need)
      fail(Errc::invalid_argument, path,
           fmt::format("has {} tokens; --offset {} + --context {} + --target {} need {}", texts.back().size(),
                       a.offset, a.context, a.target, need));
  }
  const bool human = !a.common.json && g.verbosity > 0;
  const bool held = a.common.holdout == Holdout::half;
  if (human) {
    fmt::print("dPPL% = 100 (ppl - baseline) / baseline; ci_lo..ci_hi: {:.0f}% paired bootstrap interval over the "
               "target tokens ({} resamples, seed {})\n",
               100 * kLevel, a.bootstrap, a.seed);
    if (held)
      fmt::print("holdout half: the planner sees every other window query (the last among them); attn_fit / "
                 "attn_held = attention-output rel. error on the queries it saw / did not see. Perplexity is "
                 "out of sample either way (the targets are new queries).\n");
  }
  std::vector<TextResult> results;
  int window = 0;
  for (size_t k = 0; k < texts.size(); ++k) {
    if (human && k > 0) fmt::print("\n");
    results.push_back(run_ppl_text(m, a, configs, a.texts[k], texts[k], k, window, g));
  }
  // Pooled: the mean ΔPPL over texts; its interval from resampling within each text.
  nlohmann::json pooled = nlohmann::json::array();
  if (human && results.size() > 1) {
    fmt::print("\npooled over {} texts: mean of the texts' dPPL%, {:.0f}% interval resampling target tokens within "
               "each text\n",
               results.size(), 100 * kLevel);
    fmt::print("{:<10} {:>6} {:>10} {:>8} {:>8}\n", "policy", "budget", "mean dPPL%", "ci_lo", "ci_hi");
  }
  for (size_t i = 0; i < configs.size(); ++i) {
    nlohmann::json row{{"policy", configs[i].policy}, {"budget", budget_json(configs[i].budget)}};
    std::vector<double> points;
    std::vector<std::vector<double>> reps;
    std::string missing;
    for (const auto& r : results) {
      if (!std::isfinite(r.point[i])) {
        missing = r.rows[i].value("error", std::string("did not run")) + " (" + r.path + ")";
        break;
      }
      points.push_back(r.point[i]);
      reps.push_back(r.replicates[i]);
    }
    if (!missing.empty()) {
      row["error"] = missing;
      if (human && results.size() > 1)
        fmt::print("{:<10} {:>6}  n/a: {}\n", configs[i].policy, budget_str(configs[i].budget), missing);
    } else {
      const Interval iv = pooled_interval(points, reps, kLevel);
      row["delta_ppl"] = interval_json(iv);
      if (human && results.size() > 1)
        fmt::print("{:<10} {:>6} {:>+10.2f} {} {}\n", configs[i].policy, budget_str(configs[i].budget), iv.mean,
                   ci_cell(iv.lo), ci_cell(iv.hi));
    }
    pooled.push_back(row);
  }
  if (a.common.json) {
    nlohmann::json tj = nlohmann::json::array();
    for (const auto& r : results)
      tj.push_back({{"text", r.path},
                    {"tokens", r.tokens},
                    {"baseline_ppl", r.base.ppl},
                    {"f32_ppl", r.f32.ppl},
                    {"baseline_top1_hits", r.base.top1_hits},
                    {"rows", r.rows}});
    nlohmann::json j{{"model", m.config().name},
                     {"model_file", a.common.model},
                     {"offset", a.offset},
                     {"context", a.context},
                     {"target", a.target},
                     {"window", window},
                     {"holdout", holdout_name(a.common.holdout)},
                     {"planner_window", held ? int(window_half(window, QueryHalf::fit).size()) : window},
                     {"bootstrap", {{"replicates", a.bootstrap}, {"seed", a.seed}, {"level", kLevel}}},
                     {"texts", tj},
                     {"pooled", {{"texts", results.size()}, {"rows", pooled}}}};
    if (results.size() == 1) {  // the single-text keys of earlier versions
      const TextResult& r = results[0];
      j.update({{"text", r.path},
                {"baseline_ppl", r.base.ppl},
                {"f32_ppl", r.f32.ppl},
                {"baseline_top1_hits", r.base.top1_hits},
                {"rows", r.rows}});
    }
    print_json(j);
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------------------------
struct NiahArgs {
  EvalCommon common;
  std::string filler = kDefaultFiller;
  int context = 2048, trials = 3, max_new = 32;
  std::vector<double> depths{0.1, 0.5, 0.9};
  uint32_t seed = 1;
};

int run_niah(const NiahArgs& a, const Globals& g) {
  const std::vector<Config> configs = configs_of(a.common);
  std::vector<PlanArgs> plans;
  for (const auto& c : configs) plans.push_back(c.args);
  const model::Model m = load_model(a.common.model, a.common.threads, g);
  const std::string filler = read_text(a.filler);
  std::mt19937 rng(a.seed);
  std::uniform_int_distribution<uint32_t> pick(10000, 99999);

  const size_t D = a.depths.size();
  std::vector<int> base_hits(D, 0);
  std::vector<std::vector<int>> hits(configs.size(), std::vector<int>(D, 0));
  std::vector<double> achieved(configs.size(), 0), nominal(configs.size(), 0);
  std::vector<double> attn_fit(configs.size(), 0), attn_held(configs.size(), 0);
  const bool held = a.common.holdout == Holdout::half;
  std::vector<int> ran(configs.size(), 0);
  std::vector<std::string> errors(configs.size());
  nlohmann::json detail = nlohmann::json::array();
  int prompt_tokens = 0;
  for (size_t d = 0; d < D; ++d)
    for (int t = 0; t < a.trials; ++t) {
      const NeedleCase nc = needle_case(m, filler, a.context, a.depths[d], pick(rng));
      prompt_tokens = int(nc.ids.size());
      const NeedleTrial r = run_needle_trial(m, nc, plans, a.common.window, a.max_new, g, a.common.holdout);
      base_hits[d] += r.baseline.success;
      nlohmann::json runs = nlohmann::json::array();
      for (size_t i = 0; i < configs.size(); ++i) {
        const NeedleRun& x = r.runs[i];
        if (!x.error.empty()) {
          errors[i] = x.error;
          runs.push_back({{"policy", configs[i].policy}, {"budget", budget_json(configs[i].budget)}, {"error", x.error}});
          continue;
        }
        hits[i][d] += x.success;
        achieved[i] += x.codec.achieved_budget;
        nominal[i] += x.codec.nominal_budget;
        if (x.codec.attn_fit) attn_fit[i] += x.codec.attn_fit->rel_error;
        if (x.codec.attn_held_out) attn_held[i] += x.codec.attn_held_out->rel_error;
        ++ran[i];
        nlohmann::json run{{"policy", configs[i].policy}, {"budget", budget_json(configs[i].budget)},
                           {"success", x.success}, {"answer", x.answer}};
        if (x.codec.attn_fit) run["attn_in_sample"] = attention_json(*x.codec.attn_fit);
        if (x.codec.attn_held_out) run["attn_held_out"] = attention_json(*x.codec.attn_held_out);
        runs.push_back(run);
      }
      detail.push_back({{"depth", a.depths[d]}, {"number", nc.prompt.number}, {"needle_start", nc.needle_start},
                        {"prompt_tokens", nc.ids.size()},
                        {"baseline", {{"success", r.baseline.success}, {"answer", r.baseline.answer}}},
                        {"runs", runs}});
      if (g.verbosity > 1)
        fmt::print(stderr, "depth {:.2f} number {}: baseline {}\n", a.depths[d], nc.prompt.number,
                   r.baseline.success ? "found" : "missed: " + r.baseline.answer);
    }
  const int per_depth = a.trials, total = a.trials * int(D);
  auto acc = [&](const std::vector<int>& h) {
    int s = 0;
    for (int x : h) s += x;
    return double(s) / double(total);
  };
  const double base_acc = acc(base_hits);
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < configs.size(); ++i) {
    nlohmann::json pd = nlohmann::json::array();
    for (size_t d = 0; d < D; ++d)
      pd.push_back({{"depth", a.depths[d]}, {"successes", hits[i][d]}, {"trials", per_depth},
                    {"baseline_successes", base_hits[d]}});
    nlohmann::json row{{"policy", configs[i].policy}, {"budget", budget_json(configs[i].budget)}};
    if (ran[i] == 0) {
      row["error"] = errors[i];
    } else {
      row.update({{"achieved_budget", achieved[i] / ran[i]}, {"nominal_budget", nominal[i] / ran[i]},
                  {"per_depth", pd}, {"accuracy", acc(hits[i])}, {"baseline_accuracy", base_acc}});
      if (held) {
        row["attn_rel_err_in_sample"] = attn_fit[i] / ran[i];
        row["attn_rel_err_held_out"] = attn_held[i] / ran[i];
      }
    }
    rows.push_back(row);
  }
  if (a.common.json) {
    nlohmann::json bd = nlohmann::json::array();
    for (size_t d = 0; d < D; ++d) bd.push_back({{"depth", a.depths[d]}, {"successes", base_hits[d]}, {"trials", per_depth}});
    print_json({{"model", m.config().name}, {"model_file", a.common.model}, {"filler", a.filler},
                {"context", a.context}, {"prompt_tokens", prompt_tokens}, {"trials", a.trials},
                {"seed", a.seed}, {"depths", a.depths}, {"holdout", holdout_name(a.common.holdout)},
                {"baseline", {{"per_depth", bd}, {"accuracy", base_acc}}}, {"rows", rows}, {"detail", detail}});
    return kExitOk;
  }
  if (g.verbosity <= 0) return kExitOk;
  fmt::print("{}: needle in a {}-token haystack of {} ({} prompt tokens with the question), {} trial(s) per depth, seed {}\n",
             m.config().name.empty() ? a.common.model : m.config().name, a.context, a.filler, prompt_tokens,
             a.trials, a.seed);
  if (held)
    fmt::print("holdout half: the planner sees every other window query (the last among them); attn_fit / attn_held "
               "= mean attention-output rel. error on the queries it saw / did not see\n");
  std::string head = fmt::format("{:<10} {:>6} {:>8} {:>8}", "policy", "budget", "achieved", "nominal");
  for (double d : a.depths) head += fmt::format(" {:>7}", fmt::format("d={:.2f}", d));
  fmt::print("{} {:>8} {:>9}{}\n", head, "overall", "baseline",
             held ? fmt::format(" {:>9} {:>9}", "attn_fit", "attn_held") : "");
  auto cells = [&](const std::vector<int>& h) {
    std::string s;
    for (int x : h) s += fmt::format(" {:>7}", fmt::format("{}/{}", x, per_depth));
    return s;
  };
  fmt::print("{:<10} {:>6} {:>8} {:>8}{} {:>7.0f}% {:>8.0f}%\n", "untouched", "-", "1.0000", "1.0000",
             cells(base_hits), 100 * base_acc, 100 * base_acc);
  for (size_t i = 0; i < configs.size(); ++i) {
    if (ran[i] == 0) {
      fmt::print("{:<10} {:>6}  n/a: {}\n", configs[i].policy, budget_str(configs[i].budget), errors[i]);
      continue;
    }
    fmt::print("{:<10} {:>6} {:>8.4f} {:>8.4f}{} {:>7.0f}% {:>8.0f}%{}\n", configs[i].policy,
               budget_str(configs[i].budget), achieved[i] / ran[i], nominal[i] / ran[i], cells(hits[i]),
               100 * acc(hits[i]), 100 * base_acc,
               held ? fmt::format(" {:>9.6f} {:>9.6f}", attn_fit[i] / ran[i], attn_held[i] / ran[i]) : "");
  }
  return kExitOk;
}

}  // namespace

void setup_eval(CLI::App& app, Context& ctx) {
  auto* ev = app.add_subcommand("eval", "Measure what the codec does to a real model: perplexity (ppl) and needle retrieval (niah)");
  ev->require_subcommand(1);

  auto p = std::make_shared<PplArgs>();
  auto* ppl = ev->add_subcommand("ppl", "Perplexity of text after a context whose cache went through the codec (dPPL% per policy x budget)");
  add_common(*ppl, p->common);
  ppl->add_option("--text", p->texts,
                  "Prose to score (UTF-8); several texts repeated or comma-separated, each scored on its own "
                  "and pooled")
      ->required()
      ->delimiter(',');
  ppl->add_option("--context", p->context, "Context tokens whose cache goes through the codec")->check(CLI::Range(2, 1 << 20));
  ppl->add_option("--target", p->target, "Tokens scored after the context")->check(CLI::Range(1, 1 << 20));
  ppl->add_option("--offset", p->offset, "Tokens of the text skipped before the context")->check(CLI::NonNegativeNumber);
  ppl->add_option("--bootstrap", p->bootstrap,
                  "Bootstrap resamples of the target tokens for the 95% interval of dPPL% (0 = none)")
      ->check(CLI::Range(0, 1000000));
  ppl->add_option("--seed", p->seed, "Seed of the bootstrap resamples");
  ctx.add(ppl, [p, &ctx] { return run_ppl(*p, ctx.globals); });

  auto n = std::make_shared<NiahArgs>();
  auto* niah = ev->add_subcommand("niah", "Needle-in-a-haystack retrieval with a round-tripped prompt cache (accuracy per depth)");
  add_common(*niah, n->common);
  niah->add_option("--context", n->context, "Haystack tokens (the question adds about 20)")->check(CLI::Range(16, 1 << 20));
  niah->add_option("--depths", n->depths, "Needle depths, comma-separated (0 = start, 1 = end)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0));
  niah->add_option("--trials", n->trials, "Trials per depth, each with its own random number")->check(CLI::PositiveNumber);
  niah->add_option("--seed", n->seed, "Seed of the needles' random numbers");
  niah->add_option("--filler", n->filler, std::string("Haystack prose, repeated as needed (default ") + kDefaultFiller + ")");
  niah->add_option("--max-new", n->max_new, "Most tokens generated per answer")->check(CLI::Range(1, 4096));
  ctx.add(niah, [n, &ctx] { return run_niah(*n, ctx.globals); });
}

}  // namespace skv::cli
