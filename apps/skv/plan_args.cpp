#include "plan_args.hpp"

#include <fmt/core.h>

#include "dump_input.hpp"
#include "skv/error.hpp"

namespace skv::cli {

void add_plan_options(CLI::App& sub, PlanArgs& a) {
  sub.add_option("--policy", a.policy, "How tokens get tiers: fp16, int8, int4 (uniform)")
      ->check(CLI::IsMember({"fp16", "int8", "int4"}));
  sub.add_option("--tiers", a.tiers_file,
                 "Explicit tier map: .npy/.safetensors U8 [tokens] or [layers, tokens], "
                 "0=FP16 1=INT8 2=INT4 3=DROP (overrides --policy)");
  sub.add_option("--int8-group", a.int8_group, "Elements per INT8 scale (0 = head_dim)")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--int4-group", a.int4_group, "Elements per INT4 scale/min pair (0 = head_dim)")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--key-transform", a.key_transform,
                 "Key transform before quantizing: none, centre (per-channel mean removed), "
                 "prerope (undo RoPE, centre; needs rope_theta/rope_style in the dump)")
      ->check(CLI::IsMember({"none", "centre", "prerope"}));
  sub.add_option("--zstd", a.zstd_level, "zstd level for every stream (0 = off); a stream stays raw when zstd does not shrink it")
      ->check(CLI::Range(0, 22));
}

KeyTransform parse_key_transform(const std::string& s) {
  if (s == "none") return KeyTransform::none;
  if (s == "centre" || s == "center") return KeyTransform::centre;
  if (s == "prerope") return KeyTransform::prerope_centre;
  fail(Errc::invalid_argument, "--key-transform", "expected none, centre or prerope, got '" + s + "'");
}

namespace {

Plan plan_from_tiers_file(const KvCache& cache, const std::string& path) {
  const auto& s = cache.shape;
  const SideTensor t = open_side_tensor(path, "tiers");
  if (t.view.dtype != DType::U8)
    fail(Errc::format, path, "tier map must be U8, got " + std::string(dtype_name(t.view.dtype)));
  const bool per_token = t.view.shape.size() == 1 && t.view.shape[0] == s.tokens;
  const bool per_layer = t.view.shape.size() == 2 && t.view.shape[0] == s.layers && t.view.shape[1] == s.tokens;
  if (!per_token && !per_layer)
    fail(Errc::format, path,
         fmt::format("tier map shape {} fits neither [tokens] = [{}] nor [layers, tokens] = [{}, {}]",
                     shape_str(t.view.shape), s.tokens, s.layers, s.tokens));
  Plan p = Plan::uniform(s.layers, s.tokens, Tier::FP16);
  p.policy = "explicit";
  const auto* v = t.view.as<uint8_t>();
  for (int l = 0; l < s.layers; ++l)
    for (int i = 0; i < s.tokens; ++i) {
      const uint8_t code = v[per_layer ? size_t(l) * size_t(s.tokens) + size_t(i) : size_t(i)];
      if (code > 3)
        fail(Errc::format, path, fmt::format("tier code {} at token {} is not 0..3", code, i));
      p.k_tiers[size_t(l) * size_t(s.tokens) + size_t(i)] = Tier(code);
    }
  p.v_tiers = p.k_tiers;
  return p;
}

}  // namespace

PlanResult build_plan(const KvCache& cache, const PlanArgs& a) {
  PlanResult r;
  const auto& s = cache.shape;
  if (!a.tiers_file.empty()) {
    r.plan = plan_from_tiers_file(cache, a.tiers_file);
  } else if (a.policy == "fp16" || a.policy == "int8" || a.policy == "int4") {
    const Tier t = a.policy == "fp16" ? Tier::FP16 : a.policy == "int8" ? Tier::INT8 : Tier::INT4;
    r.plan = Plan::uniform(s.layers, s.tokens, t);
  } else {
    fail(Errc::unsupported, "--policy " + a.policy, "this policy is not built yet");
  }
  r.plan.quant.int8_group = a.int8_group;
  r.plan.quant.int4_group = a.int4_group;
  r.plan.quant.key_transform = parse_key_transform(a.key_transform);
  r.plan.quant.zstd_level = a.zstd_level;
  r.plan.requested_budget = a.budget;
  return r;
}

}  // namespace skv::cli
