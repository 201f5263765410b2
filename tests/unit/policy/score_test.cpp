#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "skv/error.hpp"
#include "skv/score.hpp"
#include "skv/synthetic.hpp"

using namespace skv;

namespace {
SyntheticCache cache_with_queries(const char* spec, bool needle, uint64_t seed = 7) {
  SyntheticOptions o;
  o.spec = spec;
  o.window = 16;
  o.needle = needle;
  o.seed = seed;
  return make_synthetic(o);
}
}  // namespace

TEST(Score, AttentionFindsPlantedTokens) {
  for (const char* spec : {"llama3-8b:512", "smollm2-135m:300", "3x2x80:256"}) {
    const SyntheticCache s = cache_with_queries(spec, false);
    ASSERT_GE(s.important.size(), 3u) << spec;
    ScoreOptions so;
    so.pool = Pool::none;
    const Scores sc = score_tokens(s.cache, so);
    EXPECT_EQ(sc.used, Scorer::attention);
    ASSERT_EQ(sc.rows, 1);
    // Rank tokens outside sinks and window; the planted ones must dominate the top.
    const int T = s.cache.shape.tokens, W = 16;
    std::vector<int> idx;
    for (int t = 4; t < T - W; ++t) idx.push_back(t);
    std::sort(idx.begin(), idx.end(), [&](int a, int b) { return sc.at(0, a) > sc.at(0, b); });
    const std::set<int> top(idx.begin(), idx.begin() + ptrdiff_t(s.important.size()));
    int hit = 0;
    for (int t : s.important) hit += top.count(t) > 0;
    EXPECT_GE(double(hit) / double(s.important.size()), 0.8) << spec;
    double sum = 0;
    for (float x : sc.value) sum += x;
    EXPECT_NEAR(sum, 1.0, 1e-4);
  }
}

TEST(Score, AttentionFindsNeedleAndPoolingSpreadsIt) {
  const SyntheticCache s = cache_with_queries("mistral-7b:600", true);
  const int n0 = int(*s.cache.meta.needle_start), nl = int(*s.cache.meta.needle_len);
  ScoreOptions so;
  so.per_layer = true;
  so.pool = Pool::none;
  const Scores sc = score_tokens(s.cache, so);
  ASSERT_EQ(sc.rows, 32);
  for (int l = 0; l < 32; ++l) {
    const std::vector<int> order = importance_order(sc, l);
    // After the 4 pinned sinks a needle token leads, and every needle token ranks in the top 5%.
    EXPECT_TRUE(order[4] >= n0 && order[4] < n0 + nl) << "layer " << l;
    const std::set<int> top(order.begin() + 4, order.begin() + 4 + 30);
    for (int t = n0; t < n0 + nl; ++t) EXPECT_TRUE(top.count(t)) << "layer " << l << " token " << t;
  }
  // Max pooling (kernel 5) gives the needle's neighbours the needle's score.
  so.pool = Pool::max;
  const Scores pooled = score_tokens(s.cache, so);
  EXPECT_GT(sc.at(0, n0), 10 * sc.at(0, n0 - 2));
  EXPECT_GT(pooled.at(0, n0 - 2), 10 * sc.at(0, n0 - 2));
}

TEST(Score, SinksAndRecentArePinnedFirst) {
  SyntheticOptions o;
  o.spec = "tiny:50";
  const SyntheticCache s = make_synthetic(o);
  ScoreOptions so;
  so.sinks = 3;
  so.recent = 5;
  const Scores sc = score_tokens(s.cache, so);
  EXPECT_EQ(sc.used, Scorer::keynorm);
  for (int t = 0; t < 50; ++t) EXPECT_EQ(sc.pinned[size_t(t)], t < 3 || t >= 45) << t;
  const std::vector<int> order = importance_order(sc, -1);
  const std::set<int> first(order.begin(), order.begin() + 8);
  EXPECT_EQ(first, (std::set<int>{0, 1, 2, 45, 46, 47, 48, 49}));
}

TEST(Score, PositionHeuristicShape) {
  SyntheticOptions o;
  o.spec = "tiny:100";
  const SyntheticCache s = make_synthetic(o);
  ScoreOptions so;
  so.scorer = Scorer::position;
  const Scores sc = score_tokens(s.cache, so);
  EXPECT_GT(sc.at(0, 5), sc.at(0, 40));   // decays from the start
  EXPECT_GT(sc.at(0, 99), sc.at(0, 85));  // ramps over the last 20%
  EXPECT_LT(sc.at(0, 79), sc.at(0, 90));
}

TEST(Score, ExternalScoresAndErrors) {
  SyntheticOptions o;
  o.spec = "tiny:10";
  const SyntheticCache s = make_synthetic(o);
  Tensor ext(DType::F32, Shape{2, 10});
  for (int i = 0; i < 20; ++i) ext.as<float>()[i] = float(i % 10 == 7 ? 5 : -1);
  ScoreOptions so;
  so.scorer = Scorer::external;
  so.external = ext.view();
  so.per_layer = true;
  const Scores sc = score_tokens(s.cache, so);
  EXPECT_EQ(importance_order(sc, 1)[4], 7);  // after 4 sinks
  auto code = [&](const ScoreOptions& x) {
    try {
      score_tokens(s.cache, x);
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::io;
  };
  Tensor bad(DType::F32, Shape{3, 10});
  so.external = bad.view();
  EXPECT_EQ(code(so), Errc::invalid_argument);
  ScoreOptions att;
  att.scorer = Scorer::attention;  // no queries in this cache
  EXPECT_EQ(code(att), Errc::invalid_argument);
  ScoreOptions even;
  even.pool_kernel = 4;
  EXPECT_EQ(code(even), Errc::invalid_argument);
}
