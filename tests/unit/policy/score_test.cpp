#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

// The allocator's second-moment weights and top candidates, against a direct double-precision
// computation: p = softmax(q K^T / sqrt(d)) per window query, o = p V,
// quant_weight[t] = sum p_t^2 / |o|^2, drop_weight[t] = sum p_t^2 / ((1 - min(p_t, 0.9))^2 |o|^2).
TEST(Score, SecondMomentWeightsAndTopCandidates) {
  SyntheticOptions o;
  o.spec = "2x2x16:40";
  o.window = 6;
  o.group = 2;
  o.dtype = DType::F32;
  const SyntheticCache s = make_synthetic(o);
  const int L = 2, H = 2, T = 40, D = 16, W = 6, G = 2;
  // Layer 1's source mask marks a few tokens absent, the sink 0 among them: they take no part.
  KvCache c = s.cache;
  std::vector<std::byte> mask(size_t(T), std::byte{1});
  for (int t : {0, 7, 8, 30}) mask[size_t(t)] = std::byte{0};
  c.layers[1].mask = TensorView{DType::U8, {T}, std::span<const std::byte>(mask)};
  auto present = [&](int l, int t) { return l == 0 || mask[size_t(t)] != std::byte{0}; };
  ScoreOptions so;
  so.pool = Pool::none;
  const Scores sc = score_tokens(c, so);
  ASSERT_EQ(sc.quant_weight.size(), size_t(L) * H * T);
  ASSERT_EQ(sc.group_queries, G * W);
  ASSERT_GE(sc.top_k, 2);
  auto at = [](const std::byte* p, int i) {
    float x;
    std::memcpy(&x, p + size_t(i) * 4, 4);
    return double(x);
  };
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h) {
      std::vector<double> wq(size_t(T), 0.0), wd(size_t(T), 0.0);
      double uniform = 0;
      double v2 = 0;
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < D; ++d) v2 += at(c.row(l, true, h, t), d) * at(c.row(l, true, h, t), d);
      for (int g = 0; g < G; ++g)
        for (int i = 0; i < W; ++i) {
          const std::byte* q = c.layers[size_t(l)].q->bytes.data() + (size_t(h * G + g) * W + i) * D * 4;
          const int last = T - W + i;
          std::vector<double> z(size_t(last) + 1, -INFINITY);
          for (int t = 0; t <= last; ++t) {
            if (!present(l, t)) continue;
            double dot = 0;
            for (int d = 0; d < D; ++d) dot += at(q, d) * at(c.row(l, false, h, t), d);
            z[size_t(t)] = dot / std::sqrt(double(D));
          }
          const int a = int(std::max_element(z.begin(), z.end()) - z.begin());
          const Scores::Top* top = &sc.top[((size_t(l) * H + h) * size_t(G * W) + size_t(g * W + i)) * size_t(sc.top_k)];
          EXPECT_EQ(top[0].token, a);
          for (int j = 1; j < sc.top_k; ++j) {
            EXPECT_LE(top[j].logit, top[j - 1].logit);
            if (top[j].token >= 0) {
              EXPECT_TRUE(present(l, top[j].token));
            }
          }
          const double mx = z[size_t(a)];
          double sum = 0;
          for (double& x : z) sum += (x = std::exp(x - mx));
          std::vector<double> out(size_t(D), 0.0);
          for (int t = 0; t <= last; ++t)
            for (int d = 0; d < D; ++d) out[size_t(d)] += z[size_t(t)] / sum * at(c.row(l, true, h, t), d);
          double o2 = 0;
          for (double x : out) o2 += x * x;
          o2 = std::max(o2, 1e-2 * v2 / T);
          int seen = 0;
          for (int t = 0; t <= last; ++t) seen += present(l, t);
          uniform += 1.0 / (double(seen) * seen * o2);
          for (int t = 0; t <= last; ++t) {
            const double p = z[size_t(t)] / sum, keep = 1 - std::min(p, 0.9);
            wq[size_t(t)] += p * p / o2;
            wd[size_t(t)] += p * p / o2 / (keep * keep);
          }
        }
      EXPECT_NEAR(sc.uniform_weight[size_t(l) * H + h], uniform, 1e-4 * uniform);
      for (int t = 0; t < T; ++t) {
        const size_t e = (size_t(l) * H + h) * T + t;
        if (!present(l, t)) {
          EXPECT_EQ(sc.head[e], 0.0f);
        }
        EXPECT_NEAR(sc.quant_weight[e], wq[size_t(t)], 1e-4 * wq[size_t(t)] + 1e-9) << l << " " << h << " " << t;
        EXPECT_NEAR(sc.drop_weight[e], wd[size_t(t)], 1e-4 * wd[size_t(t)] + 1e-9) << l << " " << h << " " << t;
      }
    }
}
