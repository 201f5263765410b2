#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <cmath>
#include <random>

#include "skv/allocate.hpp"
#include "skv/error.hpp"
#include "skv/synthetic.hpp"

using namespace skv;

namespace {

double plan_distortion(const Distortion& d, const Plan& p) {
  double s = 0;
  for (size_t e = 0; e < d.drop.size(); ++e) {
    if (p.k_tiers[e] == Tier::DROP) {
      s += d.drop[e];
      continue;
    }
    s += d.k[e][size_t(p.k_tiers[e])] + d.v[e][size_t(p.v_tiers[e])];
  }
  return s;
}

// One (layer, K or V, token) at H heads x D dims: FP16 payload, INT8 + one f16 scale per group,
// INT4 + f16 scale and minimum per group.
SizeModel model_for(int H, int D, uint64_t fixed, int g8 = 0, int g4 = 32) {
  g8 = g8 ? g8 : D;
  SizeModel m;
  m.fixed_bytes = fixed;
  m.token_bytes = {uint64_t(H) * D * 2, uint64_t(H) * (D + D / g8 * 2), uint64_t(H) * (D / 2 + D / g4 * 4), 0};
  return m;
}

Scores shared_scores(int T, const std::vector<float>& v) {
  Scores s;
  s.rows = 1;
  s.tokens = T;
  s.value = v;
  s.pinned.assign(size_t(T), 0);
  return s;
}

}  // namespace

TEST(Greedy, PublishedFractions) {
  struct Row { double b; bool int4; double f16, f8, f4, drop; };
  // Values from the SpectrumKV paper: b = 0.3 is 20% INT8 + 80% INT4 (3-tier) or 60% INT8 (2-tier).
  for (const Row& r : {Row{0.3, true, 0, 0.2, 0.8, 0}, Row{0.3, false, 0, 0.6, 0, 0.4},
                       Row{0.5, true, 0, 1, 0, 0}, Row{0.25, true, 0, 0, 1, 0}, Row{0.75, true, 0.5, 0.5, 0, 0},
                       Row{1.0, false, 1, 0, 0, 0}, Row{0.1, true, 0, 0, 0.4, 0.6}, Row{0.4, true, 0, 0.6, 0.4, 0}}) {
    const TierFractions f = greedy_fractions(r.b, r.int4);
    EXPECT_NEAR(f.fp16, r.f16, 1e-12) << r.b;
    EXPECT_NEAR(f.int8, r.f8, 1e-12) << r.b;
    EXPECT_NEAR(f.int4, r.f4, 1e-12) << r.b;
    EXPECT_NEAR(f.drop, r.drop, 1e-12) << r.b;
    // The nominal cost of the fractions is the budget.
    EXPECT_NEAR(f.fp16 + f.int8 / 2 + f.int4 / 4, r.b, 1e-12);
  }
  EXPECT_THROW(greedy_fractions(1.5, true), Error);
}

TEST(Greedy, TokensTakeTiersInImportanceOrder) {
  const int T = 100, L = 2;
  std::vector<float> v(T);
  for (int t = 0; t < T; ++t) v[size_t(t)] = float((t * 37) % 101);  // a permutation of scores
  Scores s = shared_scores(T, v);
  s.pinned[3] = 1;  // pinned first regardless of its score
  // Scale/min bytes set to 0 so the nominal and real budgets coincide.
  SizeModel m;
  m.token_bytes = {256, 128, 64, 0};
  const uint64_t fp16 = uint64_t(L) * 2 * T * 256;
  const Plan p = allocate_greedy(s, L, {}, m, uint64_t(0.3 * fp16), 0.3, true);
  int n8 = 0, n4 = 0;
  for (int t = 0; t < T; ++t) {
    n8 += p.k(0, t) == Tier::INT8;
    n4 += p.k(0, t) == Tier::INT4;
    EXPECT_EQ(p.k(0, t), p.k(1, t));
  }
  EXPECT_EQ(n8, 20);
  EXPECT_EQ(n4, 80);
  EXPECT_EQ(p.k(0, 3), Tier::INT8);
  for (int a = 0; a < T; ++a)
    for (int b = 0; b < T; ++b)
      if (a != 3 && b != 3 && v[size_t(a)] > v[size_t(b)]) {
        EXPECT_LE(int(p.k(0, a)), int(p.k(0, b)));
      }
  EXPECT_LE(plan_bytes(m, p), uint64_t(0.3 * fp16));
}

TEST(Greedy, LowersNominalBudgetUntilRealBytesFit) {
  const int T = 64;
  Scores s = shared_scores(T, std::vector<float>(T, 1.0f));
  const SizeModel m = model_for(2, 64, 1000);
  const uint64_t fp16 = 2ull * T * 2 * 64 * 2;
  for (double b : {0.1, 0.3, 0.5, 0.9, 1.0}) {
    const uint64_t B = uint64_t(b * double(fp16));
    const Plan p = allocate_greedy(s, 1, {}, m, B, b, true);
    EXPECT_LE(plan_bytes(m, p), B) << b;
    EXPECT_GT(double(plan_bytes(m, p)), double(B) * 0.85) << b;  // and does not give much away
  }
}

TEST(Distortion, BeatsGreedyOnWeightedError) {
  SyntheticOptions o;
  o.spec = "llama3-8b:384";
  o.window = 16;
  o.needle = true;
  const SyntheticCache sc = make_synthetic(o);
  ScoreOptions so;
  so.per_layer = true;
  const Scores s = score_tokens(sc.cache, so);
  QuantSettings q;
  const Distortion d = measure_distortion(sc.cache, s, q);
  const SizeModel m = model_for(8, 128, 4096);
  for (double b : {0.15, 0.25, 0.3, 0.4, 0.5, 0.7}) {
    const uint64_t B = budget_bytes(b, sc.cache.shape);
    const Plan g = allocate_greedy(s, 32, {}, m, B, b, true);
    double total = 0;
    const Plan p = allocate_distortion(d, s.pinned, m, B, {}, &total);
    EXPECT_LE(plan_bytes(m, p), B);
    EXPECT_NEAR(plan_distortion(d, p), total, 1e-6 * total + 1e-12);
    EXPECT_LT(plan_distortion(d, p), plan_distortion(d, g)) << b;
    // Without kv_split it can only be as good or worse than with it.
    AllocOptions joint;
    joint.kv_split = false;
    EXPECT_LE(plan_distortion(d, p), plan_distortion(d, allocate_distortion(d, s.pinned, m, B, joint)) * (1 + 1e-6));
  }
}

TEST(Distortion, SpendsTheBudgetAndKeepsPinnedAndForced) {
  const int L = 3, T = 50;
  Distortion d;
  d.layers = L;
  d.tokens = T;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.01f, 1.0f);
  for (int e = 0; e < L * T; ++e) {
    const float w = u(rng);
    d.k.push_back({0, w * 0.1f, w * 0.5f});
    d.v.push_back({0, w * 0.05f, w * 0.3f});
    d.drop.push_back(w * 2);
  }
  d.forced.assign(size_t(L) * T, 0);
  d.forced[5] = 2;       // masked: must drop
  d.forced[T + 7] = 1;   // non-finite: must stay FP16
  std::vector<uint8_t> pinned(T, 0);
  pinned[0] = pinned[1] = 1;
  const SizeModel m = model_for(1, 64, 100);
  const uint64_t fp16 = uint64_t(L) * 2 * T * 128;
  for (double b : {0.08, 0.2, 0.35, 0.6, 0.95}) {
    const uint64_t B = uint64_t(b * double(fp16));
    const Plan p = allocate_distortion(d, pinned, m, B, {});
    EXPECT_LE(plan_bytes(m, p), B);
    EXPECT_GT(plan_bytes(m, p) + 2 * m.token_bytes[0], B) << "left a whole FP16 entry unspent at " << b;
    EXPECT_EQ(p.k(0, 5), Tier::DROP);
    EXPECT_EQ(p.v(0, 5), Tier::DROP);
    EXPECT_EQ(p.k(1, 7), Tier::FP16);
    if (b >= 0.2) {
      for (int l = 0; l < L; ++l) EXPECT_EQ(p.k(l, 0), Tier::FP16) << b;
    }
    for (size_t e = 0; e < p.k_tiers.size(); ++e)
      EXPECT_EQ(p.k_tiers[e] == Tier::DROP, p.v_tiers[e] == Tier::DROP);
  }
  AllocOptions no_int4;
  no_int4.int4 = false;
  const Plan p2 = allocate_distortion(d, pinned, m, uint64_t(0.3 * double(fp16)), no_int4);
  for (Tier t : p2.k_tiers) EXPECT_NE(t, Tier::INT4);
  for (Tier t : p2.v_tiers) EXPECT_NE(t, Tier::INT4);
}

TEST(Distortion, DropBeatsInt4WhereKeysAreRuined) {
  // Entry 0: INT4 keys ruin attention (distortion above dropping); entry 1: INT4 is nearly free.
  Distortion d;
  d.layers = 1;
  d.tokens = 2;
  d.k = {{0, 0.1f, 50.0f}, {0, 0.001f, 0.002f}};
  d.v = {{0, 0.01f, 0.05f}, {0, 0.001f, 0.002f}};
  d.drop = {10.0f, 10.0f};
  d.forced.assign(2, 0);
  SizeModel m;
  m.token_bytes = {128, 64, 32, 0};
  // The budget holds both entries at INT4 exactly; the allocator drops entry 0 instead and
  // spends its bytes on entry 1.
  const Plan p = allocate_distortion(d, {}, m, 4 * 32, {});
  EXPECT_EQ(p.k(0, 0), Tier::DROP);
  EXPECT_EQ(p.k(0, 1), Tier::INT8);
  EXPECT_EQ(p.v(0, 1), Tier::INT8);
}

TEST(Distortion, ImpossibleBudgetNamesTheMinimum) {
  Distortion d;
  d.layers = 1;
  d.tokens = 4;
  d.k.assign(4, {0, 1, 2});
  d.v.assign(4, {0, 1, 2});
  d.drop.assign(4, 5);
  d.forced = {1, 0, 0, 0};
  const SizeModel m = model_for(1, 64, 500);
  try {
    allocate_distortion(d, {}, m, 600, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::budget);
    EXPECT_NE(std::string(e.what()).find(std::to_string(500 + 2 * 128)), std::string::npos) << e.what();
  }
  AllocOptions nodrop;
  nodrop.drop = false;
  EXPECT_THROW(allocate_distortion(d, {}, m, 500 + 2 * 128 + 100, nodrop), Error);
}

TEST(ErrorModel, AnalyticTracksExact) {
  for (const char* spec : {"tiny:200", "qwen2.5-7b:64"}) {
    SyntheticOptions o;
    o.spec = spec;
    o.window = 8;
    const SyntheticCache sc = make_synthetic(o);
    const Scores s = score_tokens(sc.cache, {});
    QuantSettings q;
    q.key_transform = KeyTransform::centre;
    ErrorOptions ea, ex;
    ex.model = ErrorModel::exact;
    const Distortion a = measure_distortion(sc.cache, s, q, ea), x = measure_distortion(sc.cache, s, q, ex);
    for (int tier = 1; tier <= 2; ++tier) {
      double sa = 0, sx = 0, sva = 0, svx = 0;
      for (size_t e = 0; e < a.k.size(); ++e) {
        sa += a.k[e][size_t(tier)];
        sx += x.k[e][size_t(tier)];
        sva += a.v[e][size_t(tier)];
        svx += x.v[e][size_t(tier)];
      }
      EXPECT_NEAR(sa / sx, 1.0, 0.25) << spec << " tier " << tier;
      EXPECT_NEAR(sva / svx, 1.0, 0.25) << spec << " tier " << tier;
    }
  }
}

// Timing (not run by default): allocation for a 32-layer, 8-head, 128-dim, 32k-token cache.
TEST(Perf, DISABLED_AllocateLargeCache) {
  const int L = 32, T = 32768;
  Distortion d;
  d.layers = L;
  d.tokens = T;
  std::mt19937 rng(1);
  std::lognormal_distribution<float> w(0, 2);
  for (int e = 0; e < L * T; ++e) {
    const float x = w(rng);
    d.k.push_back({0, x * 0.01f, x * 0.2f});
    d.v.push_back({0, x * 0.005f, x * 0.1f});
    d.drop.push_back(x);
  }
  d.forced.assign(size_t(L) * T, 0);
  std::vector<uint8_t> pinned(T, 0);
  for (int t = 0; t < 4; ++t) pinned[size_t(t)] = 1;
  const SizeModel m = model_for(8, 128, 65536);
  const uint64_t fp16 = uint64_t(L) * 2 * T * 8 * 128 * 2;
  for (double b : {0.2, 0.3, 0.5}) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    const Plan p = allocate_distortion(d, pinned, m, uint64_t(b * double(fp16)), {});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("allocate 32x8x128x32768 b=%.2f: %.3f s wall, %.3f s cpu (achieved %.4f)\n", b, s,
                double(std::clock() - c0) / CLOCKS_PER_SEC, double(plan_bytes(m, p)) / double(fp16));
  }
}
