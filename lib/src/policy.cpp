#include "skv/policy.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "skv/error.hpp"

namespace skv {

// A key transform is taken when it leaves at most this share of the cheaper choice's key error.
constexpr double kTransformGain = 0.75;
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string fmt_budget(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", b);
  return buf;
}

bool uniform_policy(PolicyKind p) { return p == PolicyKind::fp16 || p == PolicyKind::int8 || p == PolicyKind::int4; }

// [layers * tokens], 1 where the source's layer mask marks the token absent.
std::vector<uint8_t> masked_out(const KvCache& c) {
  const int L = c.shape.layers, T = c.shape.tokens;
  std::vector<uint8_t> out;
  for (int l = 0; l < L; ++l) {
    const auto& m = c.layers[size_t(l)].mask;
    if (!m) continue;
    if (out.empty()) out.assign(size_t(L) * T, 0);
    const size_t es = dtype_size(m->dtype);
    if (m->numel() != T) fail(Errc::format, c.source, "mask of layer " + std::to_string(l) + " is not [tokens]");
    for (int t = 0; t < T; ++t) out[size_t(l) * T + t] = m->bytes[size_t(t) * es] == std::byte{0};
  }
  return out;
}

// Largest n in [0, hi] with fits(n) (fits is monotone: true up to some n); -1 when even 0 fails.
template <class F> int64_t largest_fit(int64_t hi, F fits) {
  if (!fits(0)) return -1;
  int64_t lo = 0;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) lo = mid; else hi = mid - 1;
  }
  return lo;
}

}  // namespace

const char* policy_name(PolicyKind p) noexcept {
  switch (p) {
    case PolicyKind::spectrum: return "spectrum";
    case PolicyKind::spectrum3: return "spectrum3";
    case PolicyKind::spectrum2: return "spectrum2";
    case PolicyKind::greedy: return "greedy";
    case PolicyKind::pdtrim: return "pdtrim";
    case PolicyKind::snapkv: return "snapkv";
    case PolicyKind::fp16: return "fp16";
    case PolicyKind::int8: return "int8";
    case PolicyKind::int4: return "int4";
  }
  return "?";
}

std::optional<PolicyKind> policy_from_name(std::string_view n) noexcept {
  for (int i = 0; i <= int(PolicyKind::int4); ++i)
    if (n == policy_name(PolicyKind(i))) return PolicyKind(i);
  return std::nullopt;
}

Plan make_plan(const KvCache& c, const PolicyOptions& o, PolicyReport* report) {
  const KvShape& s = c.shape;
  const int L = s.layers, T = s.tokens;
  const PolicyKind pk = o.policy;
  PolicyReport r;
  r.policy = policy_name(pk);
  r.fp16_bytes = s.fp16_bytes();
  if (!(s.dtype == DType::F16 || s.dtype == DType::BF16 || s.dtype == DType::F32))
    fail(Errc::invalid_argument, c.source, "K/V dtype must be F16, BF16 or F32");
  if (L < 1 || T < 1 || int(c.layers.size()) != L) fail(Errc::invalid_argument, c.source, "empty cache");
  if (o.budget != 0 && !(o.budget > 0 && o.budget <= 1))
    fail(Errc::invalid_argument, c.source, "budget must lie in (0, 1], got " + fmt_budget(o.budget));
  if (o.budget == 0 && !uniform_policy(pk))
    fail(Errc::invalid_argument, c.source, std::string("policy ") + r.policy + " needs a budget");
  if (!(o.pdtrim_front >= 0 && o.pdtrim_front <= 1))
    fail(Errc::invalid_argument, c.source, "pdtrim front share must lie in [0, 1]");

  const std::vector<uint8_t> forced = masked_out(c);
  const bool spectrum = pk == PolicyKind::spectrum || pk == PolicyKind::spectrum3 || pk == PolicyKind::spectrum2;
  r.int4_allowed = pk == PolicyKind::int4 || pk == PolicyKind::spectrum3 ||
                   ((pk == PolicyKind::spectrum || pk == PolicyKind::greedy) && o.int4_safe);
  const bool quantizes = spectrum || pk == PolicyKind::greedy || pk == PolicyKind::int8 || pk == PolicyKind::int4;

  // Scores (and pinned tokens). The distortion-aware policies with attention scoring take their
  // weights inside the fused error pass instead (one read of the cache, no Scores kept).
  auto t0 = Clock::now();
  Scores sc;
  const bool has_q = s.window > 0 && s.q_heads > 0 && c.layers[0].q.has_value();
  const Scorer scorer = o.scoring.scorer == Scorer::auto_ ? (has_q ? Scorer::attention : Scorer::keynorm) : o.scoring.scorer;
  const bool fused = spectrum && scorer == Scorer::attention && has_q;
  const bool needs_scores = !fused && (spectrum || pk == PolicyKind::greedy || pk == PolicyKind::snapkv);
  ScoreOptions so = o.scoring;
  so.query_sample = o.plan_queries;
  so.threads = o.threads;
  if (o.layer_done) so.layer_done = o.layer_done;
  if (needs_scores) {
    sc = score_tokens(c, so);
    r.scorer = sc.used;
    r.per_layer = sc.rows > 1;
  } else {
    sc.tokens = T;
    sc.pinned.assign(size_t(T), 0);
    for (int t = 0; t < std::min(o.scoring.sinks, T); ++t) sc.pinned[size_t(t)] = 1;
    if (fused) {
      for (int t = std::max(0, T - o.scoring.recent); t < T; ++t) sc.pinned[size_t(t)] = 1;
      r.scorer = Scorer::attention;
    }
  }
  r.seconds_score = since(t0);

  // Key transform.
  QuantSettings q = o.quant;
  const bool rope_known = c.meta.prerope_ok(c.shape);
  if (!quantizes) {
    q.key_transform = KeyTransform::none;
    r.key_transform_reason = "no quantized tiers";
  } else if (o.key_transform) {
    q.key_transform = *o.key_transform;
    if (q.key_transform == KeyTransform::prerope_centre && !rope_known)
      fail(Errc::invalid_argument, c.source, "prerope_centre: " + c.meta.prerope_unavailable(c.shape));
    r.key_transform_reason = "set by the caller";
  } else {
    r.key_error = key_transform_errors(c, q, sc.pinned, o.threads, o.layer_done);
    KeyTransform best = KeyTransform::none;
    // Each step up (none -> centre -> prerope_centre) costs encode and decode time (the key rows
    // take another pass; RoPE a rotation each way) and centre bytes, so it must cut the key error
    // by a quarter to be taken. Real caches clear that by far (SmolLM2: centring cuts it 5x,
    // Qwen-style offsets 500x); an outlier-free one (18% for synthetic llama2-7b) stays plain
    // and encodes 2-3x faster.
    for (KeyTransform tf : {KeyTransform::centre, KeyTransform::prerope_centre})
      if (r.key_error[size_t(tf)] >= 0 && r.key_error[size_t(tf)] < kTransformGain * r.key_error[size_t(best)]) best = tf;
    q.key_transform = best;
    char buf[200];
    if (r.key_error[2] >= 0)
      std::snprintf(buf, sizeof buf, "sampled key error: none %.4g, centre %.4g, prerope_centre %.4g; a step must cut it by 1/4",
                    r.key_error[0], r.key_error[1], r.key_error[2]);
    else
      std::snprintf(buf, sizeof buf, "sampled key error: none %.4g, centre %.4g (prerope_centre: rope unknown); a step must cut it by 1/4",
                    r.key_error[0], r.key_error[1]);
    r.key_transform_reason = buf;
  }

  // INT2 is declared in the container before any token takes it (its streams are in every layer).
  q.int2 = spectrum && r.int4_allowed && o.budget > 0 && o.int2.value_or(o.budget < kInt2Below);
  const SizeModel model = size_model(c, q, r.policy, o.budget);
  const uint64_t B = o.budget > 0 ? budget_bytes(o.budget, s) : std::numeric_limits<uint64_t>::max();
  r.budget_bytes = o.budget > 0 ? B : 0;

  Plan plan;
  t0 = Clock::now();
  auto apply_forced = [&](Plan& p) {
    for (size_t e = 0; e < forced.size(); ++e)
      if (forced[e]) p.k_tiers[e] = p.v_tiers[e] = Tier::DROP;
  };
  // pdtrim / snapkv: keep `n` present tokens per layer at FP16 chosen by `chosen`, drop the rest.
  auto keep_plan_n = [&](int64_t n, auto chosen) {
    Plan p = Plan::uniform(L, T, Tier::DROP);
    for (int l = 0; l < L; ++l) chosen(l, n, p);
    apply_forced(p);
    return p;
  };
  auto present = [&](int l, int t) { return forced.empty() || !forced[size_t(l) * T + t]; };

  if (uniform_policy(pk)) {
    plan = Plan::uniform(L, T, pk == PolicyKind::fp16 ? Tier::FP16 : pk == PolicyKind::int8 ? Tier::INT8 : Tier::INT4);
    apply_forced(plan);
    if (o.budget > 0 && plan_bytes(model, plan) > B)
      fail(Errc::budget, c.source,
           "policy " + r.policy + " needs " + std::to_string(plan_bytes(model, plan)) + " bytes (budget " +
               fmt_budget(double(plan_bytes(model, plan)) / double(s.fp16_bytes())) + "), more than budget " +
               fmt_budget(o.budget));
  } else if (pk == PolicyKind::greedy) {
    plan = allocate_greedy(sc, L, forced, model, B, o.budget, r.int4_allowed);
  } else if (pk == PolicyKind::pdtrim || pk == PolicyKind::snapkv) {
    std::vector<std::vector<int>> order;
    if (pk == PolicyKind::snapkv)
      for (int row = 0; row < sc.rows; ++row) order.push_back(importance_order(sc, row));
    auto chosen = [&](int l, int64_t n, Plan& p) {
      std::vector<int> pres;
      if (pk == PolicyKind::pdtrim) {
        for (int t = 0; t < T; ++t) if (present(l, t)) pres.push_back(t);
        const int64_t m = std::min<int64_t>(n, int64_t(pres.size()));
        const int64_t front = std::llround(o.pdtrim_front * double(m));
        for (int64_t i = 0; i < front; ++i) p.k_tiers[size_t(l) * T + pres[size_t(i)]] = Tier::FP16;
        for (int64_t i = 0; i < m - front; ++i)
          p.k_tiers[size_t(l) * T + pres[pres.size() - 1 - size_t(i)]] = Tier::FP16;
      } else {
        int64_t k = 0;
        for (int t : order[size_t(sc.rows == 1 ? 0 : l)]) {
          if (k >= n) break;
          if (!present(l, t)) continue;
          p.k_tiers[size_t(l) * T + t] = Tier::FP16;
          ++k;
        }
      }
      for (int t = 0; t < T; ++t) p.v_tiers[size_t(l) * T + t] = p.k_tiers[size_t(l) * T + t];
    };
    const int64_t target = int64_t(std::floor(o.budget * T));
    const int64_t n = largest_fit(target, [&](int64_t k) { return plan_bytes(model, keep_plan_n(k, chosen)) <= B; });
    if (n < 0) {
      const Plan p0 = keep_plan_n(0, chosen);
      fail(Errc::budget, c.source,
           "policy " + r.policy + " needs at least " + std::to_string(plan_bytes(model, p0)) + " bytes (budget " +
               fmt_budget(double(plan_bytes(model, p0)) / double(s.fp16_bytes())) + ")");
    }
    plan = keep_plan_n(n, chosen);
  } else {  // distortion-aware
    const auto te = Clock::now();
    ErrorOptions eo = o.errors;
    eo.threads = o.threads;
    if (o.layer_done) eo.layer_done = o.layer_done;
    const Distortion d = fused ? measure_distortion_fused(c, so, q, eo) : measure_distortion(c, sc, q, eo);
    r.seconds_errors = since(te);
    t0 = Clock::now();
    AllocOptions ao;
    ao.int4 = r.int4_allowed;
    ao.int2 = q.int2;
    ao.drop = o.allow_drop;
    ao.kv_split = o.kv_split;
    // The drop guard, loosened (doubled) only as far as the budget needs.
    for (ao.max_drop_mass = o.max_drop_mass;; ao.max_drop_mass *= 2) {
      try {
        plan = allocate_distortion(d, sc.pinned, model, B, ao, &r.distortion);
        break;
      } catch (const Error& e) {
        if (e.code() != Errc::budget || !(ao.max_drop_mass < 1) || !o.allow_drop) throw;
      }
    }
    r.drop_mass = std::min(ao.max_drop_mass, 1.0);
  }
  r.seconds_allocate = since(t0);
  plan.quant = q;
  plan.policy = r.policy;
  plan.requested_budget = o.budget;
  r.key_transform = q.key_transform;
  r.predicted_bytes = plan_bytes(model, plan);
  r.predicted_budget = double(r.predicted_bytes) / double(s.fp16_bytes());
  r.nominal_budget = plan.nominal_budget();
  for (Tier t : plan.k_tiers) ++r.k_tiers[size_t(t)];
  for (Tier t : plan.v_tiers) ++r.v_tiers[size_t(t)];
  if (o.budget > 0 && r.predicted_bytes > B)  // the allocators guarantee this; keep it checked
    fail(Errc::budget, c.source, "internal: plan of " + std::to_string(r.predicted_bytes) + " bytes exceeds the budget");
  if (report) *report = r;
  return plan;
}

}  // namespace skv
