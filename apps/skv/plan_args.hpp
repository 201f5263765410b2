// Options that decide how a cache is encoded (policy, budget, tiers, quantizer settings), shared
// by encode, score and bench, and the function turning them into a Plan.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "skv/kvcache.hpp"
#include "skv/plan.hpp"

namespace skv::cli {

struct PlanArgs {
  std::string policy = "int8";
  double budget = 0;        // 0 = none
  std::string tiers_file;   // explicit tier map
  int int8_group = 0, int4_group = 32;
  std::string key_transform = "none";
  int zstd_level = 0;
};

void add_plan_options(CLI::App& sub, PlanArgs& a);

struct PlanResult {
  Plan plan;
  std::vector<std::string> notes;  // what the policy decided and why (shown with -v / --json)
};

PlanResult build_plan(const KvCache& cache, const PlanArgs& a);

KeyTransform parse_key_transform(const std::string& s);

}  // namespace skv::cli
