#include <gtest/gtest.h>

#include "skv/error.hpp"
#include "skv/model/model.hpp"
#include "tiny_model.hpp"

using namespace skv;
using namespace skv::model;

namespace {

std::vector<int32_t> some_ids(int n, int vocab) {
  std::vector<int32_t> ids;
  for (int k = 0; k < n; ++k) ids.push_back(int32_t((k * 17 + 3) % vocab));
  return ids;
}

void expect_close(const float* got, const std::vector<float>& want, double tol, const std::string& what) {
  for (size_t k = 0; k < want.size(); ++k)
    ASSERT_NEAR(got[k], want[k], tol * (1.0 + std::abs(want[k]))) << what << " at " << k;
}

struct Case { RopeStyle style; bool bias, tied; int n_rot; };

}  // namespace

class TinyForward : public ::testing::TestWithParam<Case> {};

TEST_P(TinyForward, MatchesReferenceForEveryPosition) {
  const Case p = GetParam();
  const auto cfg = test::tiny_config(p.style, p.n_rot);
  const auto w = test::tiny_weights(cfg, p.bias, p.tied, 7);
  const Model m(cfg, w);
  // 300 tokens: more than one attention query block.
  const auto ids = some_ids(300, cfg.vocab);
  const auto ref = test::reference_logits(cfg, w, ids);
  auto cache = m.new_cache();
  const auto logits = m.forward(cache, ids, 0);
  ASSERT_EQ(logits.size(), ids.size() * size_t(cfg.vocab));
  for (size_t t = 0; t < ids.size(); t += 37)
    expect_close(logits.data() + t * size_t(cfg.vocab), ref[t], 2e-3, "position " + std::to_string(t));
  EXPECT_EQ(cache.tokens(), 300);
}

TEST_P(TinyForward, IncrementalDecodeMatchesPrefill) {
  const Case p = GetParam();
  const auto cfg = test::tiny_config(p.style, p.n_rot);
  const Model m(cfg, test::tiny_weights(cfg, p.bias, p.tied, 11));
  const auto ids = some_ids(20, cfg.vocab);
  auto full = m.new_cache();
  const auto all = m.forward(full, ids, 0);
  auto inc = m.new_cache();
  auto first = m.forward(inc, std::span(ids).first(5), 4);
  expect_close(first.data(), std::vector<float>(all.begin() + 4 * cfg.vocab, all.begin() + 5 * cfg.vocab), 1e-4, "prefill");
  for (size_t t = 5; t < ids.size(); ++t) {
    const auto step = m.decode_step(inc, ids[t]);
    expect_close(step.data(), std::vector<float>(all.begin() + std::ptrdiff_t(t) * cfg.vocab,
                                                 all.begin() + std::ptrdiff_t(t + 1) * cfg.vocab),
                 1e-4, "step " + std::to_string(t));
  }
  for (int l = 0; l < cfg.n_layers; ++l) {
    expect_close(inc.layer_k(l).data(), full.layer_k(l), 1e-5, "k");
    expect_close(inc.layer_v(l).data(), full.layer_v(l), 1e-5, "v");
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, TinyForward,
                         ::testing::Values(Case{RopeStyle::gptj, false, true, 8},
                                           Case{RopeStyle::neox, true, false, 8},
                                           Case{RopeStyle::gptj, false, false, 4},
                                           Case{RopeStyle::neox, false, true, 6}));

TEST(TinyForwardCache, MaskedTokensAreLeftOutOfAttention) {
  const auto cfg = test::tiny_config(RopeStyle::gptj);
  const auto w = test::tiny_weights(cfg, false, true, 3);
  const Model m(cfg, w);
  const auto ids = some_ids(170, cfg.vocab);  // new tokens span two query blocks
  std::vector<bool> keep(ids.size(), true);
  keep[2] = keep[9] = false;
  const auto ref = test::reference_logits(cfg, w, ids, keep, 16);
  auto cache = m.new_cache();
  m.forward(cache, std::span(ids).first(16), 16);
  cache.mask_token(2);
  cache.mask_token(9);
  // Poison the masked rows: a masked token must never be read.
  for (int l = 0; l < cfg.n_layers; ++l)
    for (int h = 0; h < cfg.n_kv_heads; ++h)
      for (int e = 0; e < cfg.head_dim; ++e) {
        cache.k_data(l)[size_t(h) * cache.head_stride() + 9 * size_t(cfg.head_dim) + size_t(e)] = 1e30f;
        cache.v_data(l)[size_t(h) * cache.head_stride() + 2 * size_t(cfg.head_dim) + size_t(e)] = NAN;
      }
  const auto logits = m.forward(cache, std::span(ids).subspan(16), 0);
  for (size_t t = 16; t < ids.size(); ++t)
    expect_close(logits.data() + (t - 16) * size_t(cfg.vocab), ref[t], 2e-3, "position " + std::to_string(t));
  EXPECT_EQ(cache.mask(0)[9], 0);
  EXPECT_EQ(cache.mask(1)[20], 1);
}

TEST(TinyForwardCache, ReplacedLayersAreUsed) {
  const auto cfg = test::tiny_config(RopeStyle::gptj);
  const Model m(cfg, test::tiny_weights(cfg, false, true, 5));
  const auto ids = some_ids(12, cfg.vocab);
  auto a = m.new_cache();
  m.forward(a, std::span(ids).first(10), 10);
  auto b = m.new_cache();
  m.forward(b, std::span(ids).first(10), 10);
  // Writing back a layer's own contents changes nothing; perturbing it changes the logits.
  b.set_layer(1, b.layer_k(1), b.layer_v(1));
  auto la = m.forward(a, std::span(ids).subspan(10), 0);
  auto lb = m.forward(b, std::span(ids).subspan(10), 0);
  EXPECT_EQ(la, lb);
  a.truncate(10);
  b.truncate(10);
  auto v = b.layer_v(0);
  for (auto& x : v) x *= 0.5f;
  b.set_layer(0, b.layer_k(0), v);
  la = m.forward(a, std::span(ids).subspan(10), 0);
  lb = m.forward(b, std::span(ids).subspan(10), 0);
  EXPECT_NE(la, lb);
  EXPECT_THROW(b.set_layer(0, std::vector<float>(3), v), Error);
}

TEST(TinyForwardCache, CapturesLastQueries) {
  const auto cfg = test::tiny_config(RopeStyle::gptj);
  const Model m(cfg, test::tiny_weights(cfg, false, true, 9));
  const auto ids = some_ids(10, cfg.vocab);
  auto cache = m.new_cache();
  QueryCapture q;
  q.window = 4;
  m.forward(cache, ids, 10, &q);
  ASSERT_EQ(q.rows, 4);
  ASSERT_EQ(q.q.size(), size_t(cfg.n_layers));
  ASSERT_EQ(q.q[0].size(), size_t(cfg.n_heads * 4 * cfg.head_dim));
  // The last query row of a head attends to its own key: q.k over head_dim matches what a
  // decode step of the same token computes (the capture is post-RoPE, like the cache).
  auto c2 = m.new_cache();
  m.forward(c2, std::span(ids).first(9), 9);
  QueryCapture q2;
  q2.window = 1;
  m.forward(c2, std::span(ids).subspan(9), 1, &q2);
  for (int l = 0; l < cfg.n_layers; ++l)
    for (int h = 0; h < cfg.n_heads; ++h)
      for (int e = 0; e < cfg.head_dim; ++e)
        EXPECT_NEAR(q.q[size_t(l)][(size_t(h) * 4 + 3) * size_t(cfg.head_dim) + size_t(e)],
                    q2.q[size_t(l)][size_t(h) * size_t(cfg.head_dim) + size_t(e)], 1e-4);
}

TEST(TinyForwardCache, RejectsBadInput) {
  const auto cfg = test::tiny_config(RopeStyle::gptj);
  const Model m(cfg, test::tiny_weights(cfg, false, true, 1));
  auto cache = m.new_cache();
  const std::vector<int32_t> bad = {1, cfg.vocab};
  EXPECT_THROW(m.forward(cache, bad, 0), Error);
  KvCacheObject other(3, 2, 8);
  const std::vector<int32_t> ok = {1};
  EXPECT_THROW(m.forward(other, ok, 0), Error);
  auto w = test::tiny_weights(cfg, false, true, 1);
  w.layers[1].wq.pop_back();
  EXPECT_THROW(Model(cfg, w), Error);
}
