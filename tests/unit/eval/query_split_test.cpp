// --holdout half: the window queries split into a fitting and a held-out half.
#include "skv/query_split.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "skv/error.hpp"
#include "skv/metrics.hpp"
#include "skv/score.hpp"
#include "skv/synthetic.hpp"

using namespace skv;

namespace {

SyntheticCache cache_with_window(int window, bool needle = true) {
  SyntheticOptions o;
  o.spec = "2x2x32:96";
  o.window = window;
  o.group = 2;
  o.needle = needle;
  o.seed = 3;
  return make_synthetic(o);
}

// Bytes of query row (layer, q head, window position) of a cache.
std::span<const std::byte> q_row(const KvCache& c, int l, int h, int i) {
  const TensorView& q = *c.layers[size_t(l)].q;
  const size_t row = size_t(c.shape.head_dim) * dtype_size(q.dtype);
  return q.bytes.subspan((size_t(h) * size_t(c.shape.window) + size_t(i)) * row, row);
}

bool same(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

TEST(QuerySplit, HalvesAreDisjointAndCoverTheWindow) {
  for (int w : {2, 3, 8, 31, 32}) {
    const std::vector<int> fit = window_half(w, QueryHalf::fit), held = window_half(w, QueryHalf::held_out);
    EXPECT_EQ(int(fit.size()), (w + 1) / 2) << w;
    EXPECT_EQ(int(held.size()), w / 2) << w;
    std::vector<int> all(fit);
    all.insert(all.end(), held.begin(), held.end());
    std::sort(all.begin(), all.end());
    ASSERT_EQ(int(all.size()), w);
    for (int i = 0; i < w; ++i) EXPECT_EQ(all[size_t(i)], i) << w;  // union = window, no overlap
    EXPECT_TRUE(std::is_sorted(fit.begin(), fit.end()));
    EXPECT_EQ(fit.back(), w - 1);  // the planner keeps the last query
    for (size_t k = 1; k < fit.size(); ++k) EXPECT_EQ(fit[k] - fit[k - 1], 2);  // alternate
    EXPECT_EQ(window_half(w, QueryHalf::fit), fit);  // deterministic
  }
  EXPECT_TRUE(window_half(0, QueryHalf::fit).empty());
  EXPECT_EQ(*holdout_from_name("half"), Holdout::half);
  EXPECT_EQ(*holdout_from_name("none"), Holdout::none);
  EXPECT_FALSE(holdout_from_name("third"));
}

TEST(QuerySplit, SubsetCopiesExactlyItsQueriesAndSharesKv) {
  const SyntheticCache s = cache_with_window(8);
  const KvCache& c = s.cache;
  const QuerySubset fit = query_half(c, QueryHalf::fit);
  const QuerySubset held = query_half(c, QueryHalf::held_out);
  EXPECT_EQ(fit.cache.shape.window, 4);
  EXPECT_EQ(held.cache.shape.window, 4);
  EXPECT_EQ(fit.positions, (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(held.positions, (std::vector<int>{0, 2, 4, 6}));
  for (int l = 0; l < c.shape.layers; ++l) {
    const TensorView& q = *fit.cache.layers[size_t(l)].q;
    EXPECT_EQ(q.shape, (Shape{c.shape.q_heads, 4, c.shape.head_dim}));
    EXPECT_NE(q.bytes.data(), c.layers[size_t(l)].q->bytes.data());  // owned copy
    EXPECT_EQ(fit.cache.layers[size_t(l)].k.bytes.data(), c.layers[size_t(l)].k.bytes.data());
    for (int h = 0; h < c.shape.q_heads; ++h)
      for (int j = 0; j < 4; ++j) {
        EXPECT_TRUE(same(q_row(fit.cache, l, h, j), q_row(c, l, h, fit.positions[size_t(j)])));
        EXPECT_TRUE(same(q_row(held.cache, l, h, j), q_row(c, l, h, held.positions[size_t(j)])));
      }
  }
  // Moving the subset keeps its views valid.
  QuerySubset moved = query_half(c, QueryHalf::fit);
  QuerySubset other = std::move(moved);
  EXPECT_TRUE(same(q_row(other.cache, 0, 0, 0), q_row(c, 0, 0, 1)));
}

TEST(QuerySplit, PlannerSeesOnlyItsHalf) {
  // Scribble over every held-out query of a copy of the cache: the scores computed on the fitting
  // half do not change at all, while those over the whole window do.
  const SyntheticCache s = cache_with_window(8);
  const KvCache& c = s.cache;
  std::vector<Tensor> scribbled;
  KvCache changed = c;
  const std::vector<int> held = window_half(c.shape.window, QueryHalf::held_out);
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const TensorView& src = *c.layers[l].q;
    Tensor t(src.dtype, src.shape);
    std::memcpy(t.data.data(), src.bytes.data(), src.bytes.size());
    const size_t row = size_t(c.shape.head_dim) * dtype_size(src.dtype);
    for (int h = 0; h < c.shape.q_heads; ++h)
      for (int i : held) {
        // Negate the query (flip the sign bit of every F16 element): any different query will do.
        std::byte* dst = t.data.data() + (size_t(h) * size_t(c.shape.window) + size_t(i)) * row;
        for (size_t b = 1; b < row; b += 2) dst[b] ^= std::byte{0x80};
      }
    scribbled.push_back(std::move(t));
  }
  for (size_t l = 0; l < c.layers.size(); ++l) changed.layers[l].q = scribbled[l].view();

  ScoreOptions o;
  o.threads = 1;
  const Scores full0 = score_tokens(c, o), full1 = score_tokens(changed, o);
  EXPECT_NE(full0.value, full1.value);
  const QuerySubset f0 = query_half(c, QueryHalf::fit), f1 = query_half(changed, QueryHalf::fit);
  const Scores fit0 = score_tokens(f0.cache, o), fit1 = score_tokens(f1.cache, o);
  EXPECT_EQ(fit0.value, fit1.value);
  EXPECT_EQ(fit0.quant_weight, fit1.quant_weight);
  EXPECT_EQ(fit0.group_queries, c.shape.q_heads / c.shape.kv_heads * 4);
}

TEST(QuerySplit, MetricsOnPositionsMatchTheFullWindow) {
  // The position-restricted metrics measure exactly the chosen queries, at their real positions:
  // over both halves together they equal the full-window metrics; identical caches give 0 error.
  const SyntheticCache a = cache_with_window(6), b = cache_with_window(6);
  SyntheticOptions o;
  o.spec = "2x2x32:96";
  o.window = 6;
  o.group = 2;
  o.needle = true;
  o.seed = 4;  // other K/V, same shape
  const SyntheticCache other = make_synthetic(o);
  KvCache mixed = a.cache;
  for (size_t l = 0; l < mixed.layers.size(); ++l) {
    mixed.layers[l].k = other.cache.layers[l].k;
    mixed.layers[l].v = other.cache.layers[l].v;
  }
  const AttentionMetrics all = attention_metrics(a.cache, mixed, 1);
  const std::vector<int> fit = window_half(6, QueryHalf::fit), held = window_half(6, QueryHalf::held_out);
  const AttentionMetrics mf = attention_metrics(a.cache, mixed, fit, 1);
  const AttentionMetrics mh = attention_metrics(a.cache, mixed, held, 1);
  EXPECT_EQ(mf.queries + mh.queries, all.queries);
  EXPECT_NEAR((mf.rel_error * double(mf.queries) + mh.rel_error * double(mh.queries)) / double(all.queries),
              all.rel_error, 1e-9);
  EXPECT_DOUBLE_EQ(std::max(mf.max_rel_error, mh.max_rel_error), all.max_rel_error);
  std::vector<int> every{0, 1, 2, 3, 4, 5};
  const AttentionMetrics me = attention_metrics(a.cache, mixed, every, 1);
  EXPECT_DOUBLE_EQ(me.rel_error, all.rel_error);
  EXPECT_EQ(attention_metrics(a.cache, b.cache, held, 1).rel_error, 0.0);
  EXPECT_THROW(attention_metrics(a.cache, mixed, std::vector<int>{6}, 1), Error);
}

TEST(QuerySplit, RefusesWhatCannotBeSplit) {
  const SyntheticCache one = cache_with_window(1);
  EXPECT_THROW(query_half(one.cache, QueryHalf::fit), Error);
  const SyntheticCache none = cache_with_window(0, false);
  EXPECT_THROW(query_half(none.cache, QueryHalf::fit), Error);
  const SyntheticCache c = cache_with_window(4);
  EXPECT_THROW(with_queries(c.cache, std::vector<int>{2, 1}), Error);
  EXPECT_THROW(with_queries(c.cache, std::vector<int>{}), Error);
  EXPECT_THROW(with_queries(c.cache, std::vector<int>{4}), Error);
}
