// Options that decide how a cache is encoded (policy, budget, scoring, quantizer settings), shared
// by encode, score and bench, and the function turning them into a Plan.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dump_input.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"
#include "skv/policy.hpp"

namespace skv::cli {

// Budgeted policies without --budget use this: half the FP16 bytes, the operating point the
// published results are quoted at.
inline constexpr double kDefaultBudget = 0.5;

struct PlanArgs {
  std::string policy = "spectrum";
  double budget = 0;        // 0 = none
  std::string tiers_file;   // explicit tier map (overrides the policy)
  std::string scorer = "auto", scores_file, granularity = "cache", pool = "max";
  int pool_kernel = 5, sinks = 4, recent = 0;
  bool no_kv_split = false, no_drop = false;
  std::string probe_file;
  std::string key_transform = "auto";
  int int8_group = 0, int4_group = -1 /* auto */, zstd_level = 0;
  double pdtrim_front = 0.5;
  std::string plan = "fast";  // fast: a sample of window queries; thorough: all of them
  int plan_queries = -1;      // -1 = the library default (skv::kPlanQueries)
  double drop_guard = -1;     // -1 = the library default (skv::kMaxDropMass)
  std::string int2 = "auto";  // auto | on | off
  int threads = 0;
};

// `with_budget` false: bench takes policies and budgets as lists and registers its own --policy
// and --budget.
void add_plan_options(CLI::App& sub, PlanArgs& a, bool with_budget = true);

struct PlanResult {
  Plan plan;
  PolicyReport report;
  std::vector<std::string> notes;  // what the policy decided and why (shown with -v / --json)
};

// `release_layer` (may be empty) runs whenever planning has finished reading a layer, so a mapped
// dump can drop that layer's pages (see PolicyOptions::layer_done).
PlanResult build_plan(const KvCache& cache, const PlanArgs& a,
                      const std::function<void(int)>& release_layer = {});
// Window queries per kv head the plan scores (PolicyOptions::plan_queries): 0 for --plan thorough.
int plan_queries(const PlanArgs& a);

// The scoring options build_plan hands the policy (so `skv score` shows the scores the policy
// saw). `external` keeps a --scores file mapped while the options point into it.
ScoreOptions scoring_options(const PlanArgs& a, SideTensor& external);
nlohmann::json report_json(const PolicyReport& r);

}  // namespace skv::cli
