#include "skv/allocate.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <string>

#include "skv/error.hpp"

namespace skv {
namespace {

std::string budget_str(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", b);
  return buf;
}

// fp16: the cache's FP16 bytes (the FP16 tier's payload of every entry), the budget's denominator.
[[noreturn]] void too_small(uint64_t min_bytes, uint64_t budget, uint64_t fp16) {
  fail(Errc::budget, "allocation",
       "budget of " + std::to_string(budget) + " bytes (" + budget_str(double(budget) / double(fp16)) +
           ") is below the cheapest allowed plan: " + std::to_string(min_bytes) + " bytes, budget " +
           budget_str(std::ceil(double(min_bytes) / double(fp16) * 1e4) / 1e4));
}

}  // namespace

uint64_t plan_bytes(const SizeModel& m, const Plan& p) {
  uint64_t n[kNumTiers] = {};
  for (Tier t : p.k_tiers) ++n[size_t(t)];
  for (Tier t : p.v_tiers) ++n[size_t(t)];
  uint64_t b = m.fixed_bytes;
  for (int i = 0; i < kNumTiers; ++i) b += n[i] * m.token_bytes[size_t(i)];
  return b;
}

uint64_t budget_bytes(double budget, const KvShape& shape) {
  return uint64_t(std::floor(budget * double(shape.fp16_bytes())));
}

TierFractions greedy_fractions(double b, bool int4) {
  if (!(b >= 0 && b <= 1))
    fail(Errc::invalid_argument, "greedy", "budget must lie in [0, 1], got " + budget_str(b));
  TierFractions f;
  if (b >= 0.5) {
    f.fp16 = 2 * b - 1;
    f.int8 = 2 - 2 * b;
  } else if (int4 && b >= 0.25) {
    f.int8 = 4 * b - 1;
    f.int4 = 2 - 4 * b;
  } else if (int4) {
    f.int4 = 4 * b;
    f.drop = 1 - 4 * b;
  } else {
    f.int8 = 2 * b;
    f.drop = 1 - 2 * b;
  }
  return f;
}

Plan allocate_greedy(const Scores& s, int layers, const std::vector<uint8_t>& forced_drop,
                     const SizeModel& model, uint64_t budget_b, double budget, bool int4) {
  const int T = s.tokens, L = layers;
  std::vector<std::vector<int>> order;  // per score row, present tokens only filtered later
  for (int r = 0; r < s.rows; ++r) order.push_back(importance_order(s, r));
  auto build = [&](double b) {
    Plan p = Plan::uniform(L, T, Tier::DROP);
    const TierFractions f = greedy_fractions(b, int4);
    for (int l = 0; l < L; ++l) {
      const std::vector<int>& ord = order[size_t(s.rows == 1 ? 0 : l)];
      int n = 0;
      for (int t : ord) n += forced_drop.empty() || !forced_drop[size_t(l) * T + t];
      const int64_t c16 = std::llround(f.fp16 * n), c8 = std::llround((f.fp16 + f.int8) * n),
                    c4 = std::llround((f.fp16 + f.int8 + f.int4) * n);
      int64_t i = 0;
      for (int t : ord) {
        const size_t e = size_t(l) * T + t;
        if (!forced_drop.empty() && forced_drop[e]) continue;
        const Tier tier = i < c16 ? Tier::FP16 : i < c8 ? Tier::INT8 : i < c4 ? Tier::INT4 : Tier::DROP;
        p.k_tiers[e] = p.v_tiers[e] = tier;
        ++i;
      }
    }
    p.policy = "greedy";
    p.requested_budget = budget;
    return p;
  };
  Plan p = build(budget);
  if (plan_bytes(model, p) <= budget_b) return p;
  Plan lo_plan = build(0);
  if (plan_bytes(model, lo_plan) > budget_b) too_small(plan_bytes(model, lo_plan), budget_b, model.token_bytes[0] * 2 * uint64_t(L) * T);
  double lo = 0, hi = budget;  // largest nominal budget whose real bytes fit
  for (int it = 0; it < 40 && hi - lo > 1e-9; ++it) {
    const double mid = 0.5 * (lo + hi);
    Plan m = build(mid);
    if (plan_bytes(model, m) <= budget_b) {
      lo = mid;
      lo_plan = std::move(m);
    } else {
      hi = mid;
    }
  }
  return lo_plan;
}

Plan allocate_distortion(const Distortion& d, const std::vector<uint8_t>& pinned,
                         const SizeModel& model, uint64_t budget_b, const AllocOptions& o,
                         double* total) {
  const int L = d.layers, T = d.tokens;
  const size_t N = size_t(L) * T;
  // Candidate (K tier, V tier) pairs; DROP is joint.
  struct Opt { uint8_t k, v; };
  std::vector<Opt> free_opts;
  const bool allowed[kNumTiers] = {true, o.int8, o.int4, false, o.int2};  // DROP is joint, below
  for (int a = 0; a < kNumTiers; ++a)
    for (int b = 0; b < kNumTiers; ++b)
      if (allowed[a] && allowed[b] && (o.kv_split || a == b)) free_opts.push_back({uint8_t(a), uint8_t(b)});
  if (o.drop) free_opts.push_back({3, 3});
  const Opt fp16_only[1] = {{0, 0}}, drop_only[1] = {{3, 3}};
  const auto& tb = model.token_bytes;
  const bool guard = o.drop && o.max_drop_mass < 1 && d.drop_mass.size() == N;
  // Costs are the same for every entry: order the options by bytes once.
  std::stable_sort(free_opts.begin(), free_opts.end(),
                   [&](Opt a, Opt b) { return tb[a.k] + tb[a.v] < tb[b.k] + tb[b.v]; });

  // Per entry: lower convex hull of (bytes, distortion), cheapest first.
  std::vector<uint32_t> hoff(N + 1);
  std::vector<Opt> hopt;
  std::vector<uint32_t> hcost;
  std::vector<double> hdist;
  hopt.reserve(N * 4);
  hcost.reserve(N * 4);
  hdist.reserve(N * 4);
  struct Pt { uint32_t c; double dist; Opt opt; };
  Pt pts[kNumTiers * kNumTiers + 1], hull[kNumTiers * kNumTiers + 1];
  uint64_t base = model.fixed_bytes;
  for (size_t e = 0; e < N; ++e) {
    hoff[e] = uint32_t(hopt.size());
    const uint8_t f = d.forced.empty() ? 0 : d.forced[e];
    const Opt* opts = f == 1 ? fp16_only : f == 2 ? drop_only : free_opts.data();
    size_t no = f ? 1 : free_opts.size();
    // The drop guard: DROP is the cheapest option, so leaving it out is dropping the first.
    if (!f && guard && d.drop_mass[e] > o.max_drop_mass && free_opts[0].k == 3) {
      ++opts;
      --no;
    }
    for (size_t i = 0; i < no; ++i) {
      const Opt op = opts[i];
      pts[i].opt = op;
      pts[i].c = uint32_t(tb[op.k] + tb[op.v]);
      pts[i].dist = op.k == 3 ? double(d.drop[e]) : double(d.k[e][op.k]) + double(d.v[e][op.v]);
    }
    int h = 0;
    for (size_t i = 0; i < no; ++i) {  // monotone chain over options in byte order
      const Pt& p = pts[i];
      if (h && p.c == hull[h - 1].c) {  // same bytes: keep the better one
        if (p.dist >= hull[h - 1].dist) continue;
        --h;
      }
      if (h && p.dist >= hull[h - 1].dist) continue;  // costs more, no better
      while (h >= 2) {  // keep slopes strictly decreasing (convex)
        const Pt &a = hull[h - 2], &b = hull[h - 1];
        const double s1 = (a.dist - b.dist) / double(b.c - a.c), s2 = (b.dist - p.dist) / double(p.c - b.c);
        if (s2 >= s1) --h; else break;
      }
      hull[h++] = p;
    }
    base += hull[0].c;
    for (int i = 0; i < h; ++i) {
      hopt.push_back(hull[i].opt);
      hcost.push_back(hull[i].c);
      hdist.push_back(hull[i].dist);
    }
  }
  hoff[N] = uint32_t(hopt.size());
  if (base > budget_b) too_small(base, budget_b, model.token_bytes[0] * 2 * N);

  // Upgrade segments (hull point j-1 -> j), best distortion reduction per byte first; pinned
  // entries before all. Keys keep the order of slopes: (pinned << 31) | (float bits >> 1); within
  // an entry they never increase (convex hull), so any key threshold takes a prefix of each hull.
  const size_t P = hopt.size();
  std::vector<uint32_t> key(P, 0);
  constexpr int kBucketShift = 16;
  std::vector<uint64_t> bucket_cost(size_t(1) << 16, 0);
  for (size_t e = 0; e < N; ++e) {
    const bool pin = !pinned.empty() && pinned[e % size_t(T)];
    for (uint32_t j = hoff[e] + 1; j < hoff[e + 1]; ++j) {
      const float slope = float((hdist[j - 1] - hdist[j]) / double(hcost[j] - hcost[j - 1]));
      const uint32_t k = (std::bit_cast<uint32_t>(std::max(slope, 0.0f)) >> 1) | (pin ? 0x80000000u : 0u);
      key[j] = k;
      bucket_cost[k >> kBucketShift] += hcost[j] - hcost[j - 1];
    }
  }
  uint64_t left = budget_b - base;
  // Whole buckets from the top while they fit; `cut` is the first that does not.
  int64_t cut = int64_t(bucket_cost.size()) - 1;
  for (; cut >= 0 && bucket_cost[size_t(cut)] <= left; --cut) left -= bucket_cost[size_t(cut)];
  std::vector<uint32_t> level(N, 0);  // hull index reached per entry
  for (size_t e = 0; e < N; ++e)
    for (uint32_t j = hoff[e] + 1; j < hoff[e + 1] && int64_t(key[j] >> kBucketShift) > cut; ++j) ++level[e];
  // Then exact greedy order: the cut bucket's segments, then rounds over each entry's next
  // segment (the leftover fill), always best key first, taking what still fits.
  struct Cand { uint32_t key, j, e; };
  std::vector<Cand> cand;
  auto take_sorted = [&]() {
    std::sort(cand.begin(), cand.end(), [](const Cand& a, const Cand& b) { return a.key != b.key ? a.key > b.key : a.j < b.j; });
    bool any = false;
    for (const Cand& c : cand) {
      if (hoff[c.e] + level[c.e] + 1 != c.j) continue;
      const uint64_t dc = hcost[c.j] - hcost[c.j - 1];
      if (dc > left) continue;
      left -= dc;
      ++level[c.e];
      any = true;
    }
    return any;
  };
  if (cut >= 0) {
    for (size_t e = 0; e < N; ++e)
      for (uint32_t j = hoff[e] + level[e] + 1; j < hoff[e + 1] && int64_t(key[j] >> kBucketShift) == cut; ++j)
        cand.push_back({key[j], j, uint32_t(e)});
    take_sorted();
    for (int round = 0; round < 4 && left > 0; ++round) {
      cand.clear();
      for (size_t e = 0; e < N; ++e) {
        const uint32_t j = hoff[e] + level[e] + 1;
        if (j < hoff[e + 1] && hcost[j] - hcost[j - 1] <= left) cand.push_back({key[j], j, uint32_t(e)});
      }
      if (cand.empty() || !take_sorted()) break;
    }
  }

  Plan p = Plan::uniform(L, T, Tier::FP16);
  double sum = 0;
  for (size_t e = 0; e < N; ++e) {
    const uint32_t j = hoff[e] + level[e];
    p.k_tiers[e] = Tier(hopt[j].k);
    p.v_tiers[e] = Tier(hopt[j].v);
    sum += hdist[j];
  }
  p.policy = "spectrum";
  if (total) *total = sum;
  return p;
}

}  // namespace skv
