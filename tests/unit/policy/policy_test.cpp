#include <gtest/gtest.h>

#include <random>

#include "skv/error.hpp"
#include "skv/policy.hpp"
#include "skv/synthetic.hpp"

using namespace skv;

namespace {
const PolicyKind kAll[] = {PolicyKind::spectrum, PolicyKind::spectrum3, PolicyKind::spectrum2,
                           PolicyKind::greedy,   PolicyKind::pdtrim,    PolicyKind::snapkv,
                           PolicyKind::fp16,     PolicyKind::int8,      PolicyKind::int4};
}

TEST(Policy, Names) {
  for (PolicyKind p : kAll) EXPECT_EQ(policy_from_name(policy_name(p)), p);
  EXPECT_FALSE(policy_from_name("spectrum4"));
}

// Property: over random shapes, dtypes, layouts, masks and budgets, every policy either fits the
// byte budget (by the codec's own SizeModel) or refuses with Errc::budget.
TEST(Policy, BudgetNeverExceeded) {
  std::mt19937 rng(12345);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int dims[] = {64, 80, 96, 128, 256};
  int fitted = 0, refused = 0;
  for (int iter = 0; iter < 30; ++iter) {
    SyntheticOptions o;
    const int L = pick(1, 4), H = pick(1, 3), D = dims[pick(0, 4)], T = pick(1, 200);
    o.spec = std::to_string(L) + "x" + std::to_string(H) + "x" + std::to_string(D) + ":" + std::to_string(T);
    o.dtype = std::array{DType::F16, DType::BF16, DType::F32}[size_t(pick(0, 2))];
    o.layout = pick(0, 1) ? Layout::THD : Layout::HTD;
    o.window = pick(0, 1) ? std::min(T, pick(1, 8)) : 0;
    o.group = pick(1, 3);
    o.seed = uint64_t(iter);
    o.outliers = pick(0, 1) ? 25 : 0;
    SyntheticCache sc = make_synthetic(o);
    std::vector<Tensor> masks;
    if (pick(0, 2) == 0) {  // some layers miss some tokens
      for (int l = 0; l < L; ++l) {
        Tensor& m = masks.emplace_back(DType::U8, Shape{T});
        for (int t = 0; t < T; ++t) m.as<uint8_t>()[t] = uint8_t(pick(0, 4) != 0);
      }
      for (int l = 0; l < L; ++l) sc.cache.layers[size_t(l)].mask = masks[size_t(l)].view();
    }
    for (PolicyKind pk : kAll) {
      PolicyOptions po;
      po.policy = pk;
      po.budget = std::uniform_real_distribution<double>(0.05, 1.0)(rng);
      po.quant.int4_group = D % 32 ? 16 : 32;
      po.kv_split = pick(0, 1);
      po.int4_safe = pick(0, 1);
      const std::string what = o.spec + " " + policy_name(pk) + " b=" + std::to_string(po.budget);
      try {
        PolicyReport r;
        const Plan p = make_plan(sc.cache, po, &r);
        const SizeModel m = size_model(sc.cache, p.quant, policy_name(pk), po.budget);
        const uint64_t B = budget_bytes(po.budget, sc.cache.shape);
        EXPECT_LE(plan_bytes(m, p), B) << what;
        EXPECT_LE(m.bound(p), B) << what;
        EXPECT_EQ(r.predicted_bytes, plan_bytes(m, p)) << what;
        ASSERT_EQ(p.k_tiers.size(), size_t(L) * T);
        for (int l = 0; l < L; ++l)
          for (int t = 0; t < T; ++t) {
            const auto& mk = sc.cache.layers[size_t(l)].mask;
            if (mk && mk->bytes[size_t(t)] == std::byte{0}) {
              EXPECT_EQ(p.k(l, t), Tier::DROP) << what;
            }
            if (!r.int4_allowed) {
              EXPECT_NE(p.k(l, t), Tier::INT4) << what;
            }
          }
        ++fitted;
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::budget) << what << ": " << e.what();
        ++refused;
      }
    }
  }
  EXPECT_GT(fitted, 100);
  EXPECT_GT(refused, 0);
}

TEST(Policy, SpectrumPinsSinksAndRespectsInt4Safety) {
  SyntheticOptions o;
  o.spec = "llama3-8b:256";
  o.window = 16;
  const SyntheticCache sc = make_synthetic(o);
  PolicyOptions po;
  po.budget = 0.3;
  PolicyReport r;
  Plan p = make_plan(sc.cache, po, &r);
  EXPECT_EQ(r.scorer, Scorer::attention);
  for (int l = 0; l < 32; ++l)
    for (int t = 0; t < 4; ++t) {
      EXPECT_EQ(p.k(l, t), Tier::FP16);
      EXPECT_EQ(p.v(l, t), Tier::FP16);
    }
  EXPECT_GT(r.k_tiers[size_t(Tier::INT4)] + r.v_tiers[size_t(Tier::INT4)], 0u);
  po.int4_safe = false;
  p = make_plan(sc.cache, po, &r);
  for (Tier t : p.k_tiers) EXPECT_NE(t, Tier::INT4);
  EXPECT_LE(r.predicted_bytes, r.budget_bytes);
}

TEST(Policy, PdtrimKeepsBothEndsAndSnapkvTheAttended) {
  SyntheticOptions o;
  o.spec = "tiny:400";
  o.window = 8;
  o.needle = true;
  const SyntheticCache sc = make_synthetic(o);
  PolicyOptions po;
  po.policy = PolicyKind::pdtrim;
  po.budget = 0.3;
  const Plan p = make_plan(sc.cache, po);
  EXPECT_EQ(p.k(0, 0), Tier::FP16);
  EXPECT_EQ(p.k(0, 399), Tier::FP16);
  EXPECT_EQ(p.k(0, 200), Tier::DROP);
  int kept = 0;
  for (int t = 0; t < 400; ++t) kept += p.k(0, t) == Tier::FP16;
  EXPECT_LE(kept, 120);
  EXPECT_GT(kept, 100);  // overheads cost a few tokens, not many
  po.policy = PolicyKind::snapkv;
  const Plan s = make_plan(sc.cache, po);
  for (int64_t t = *sc.cache.meta.needle_start; t < *sc.cache.meta.needle_start + *sc.cache.meta.needle_len; ++t)
    EXPECT_EQ(s.k(1, int(t)), Tier::FP16);
}

TEST(Policy, BadOptions) {
  SyntheticOptions o;
  o.spec = "tiny:16";
  const SyntheticCache sc = make_synthetic(o);
  auto code = [&](PolicyOptions po) {
    try {
      make_plan(sc.cache, po);
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::io;
  };
  PolicyOptions po;
  EXPECT_EQ(code(po), Errc::invalid_argument);  // spectrum without budget
  po.budget = 1.5;
  EXPECT_EQ(code(po), Errc::invalid_argument);
  po.budget = 0.001;
  EXPECT_EQ(code(po), Errc::budget);
  po.policy = PolicyKind::int8;
  po.budget = 0;
  EXPECT_EQ(code(po), Errc::io);  // no budget: fine for a uniform policy
  po.budget = 0.3;
  EXPECT_EQ(code(po), Errc::budget);
}
