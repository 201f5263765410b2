#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "skv/error.hpp"
#include "skv/half.hpp"
#include "skv/model/dump.hpp"
#include "skv/model/eval.hpp"
#include "skv/model/kv_bridge.hpp"
#include "tiny_model.hpp"

using namespace skv;
using namespace skv::model;

namespace {
std::vector<int32_t> ids_of(int n, int vocab) {
  std::vector<int32_t> ids;
  for (int k = 0; k < n; ++k) ids.push_back(int32_t((k * 13 + 5) % vocab));
  return ids;
}
}  // namespace

TEST(Dump, CanonicalTensorsAndMetadata) {
  const auto cfg = test::tiny_config(RopeStyle::neox);
  const Model m(cfg, test::tiny_weights(cfg, true, false, 2));
  const auto ids = ids_of(7, cfg.vocab);
  const Dump d = make_dump(m, ids, 3);
  ASSERT_EQ(d.names.size(), size_t(3 * cfg.n_layers));
  ASSERT_EQ(d.names.size(), d.tensors.size());
  EXPECT_EQ(d.names[0], "layers.0.k");
  EXPECT_EQ(d.names[5], "layers.1.q");
  EXPECT_EQ(d.tensors[0].shape, (Shape{cfg.n_kv_heads, 7, cfg.head_dim}));
  EXPECT_EQ(d.tensors[0].dtype, DType::F16);
  EXPECT_EQ(d.tensors[2].shape, (Shape{cfg.n_heads, 3, cfg.head_dim}));
  EXPECT_EQ(d.metadata.at("rope_style"), "neox");
  EXPECT_EQ(d.metadata.at("architecture"), "qwen2");
  EXPECT_EQ(d.metadata.at("position_offset"), "0");
  EXPECT_EQ(d.metadata.at("tokens"), "7");
  EXPECT_EQ(std::stod(d.metadata.at("rope_theta")), 100.0);
  std::string list;
  for (int32_t id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  EXPECT_EQ(d.metadata.at("token_ids"), list);

  // K values are the cache's, rounded to F16.
  auto cache = m.new_cache();
  m.forward(cache, ids, ids.size());
  const auto k1 = cache.layer_k(1);
  const auto* h = d.tensors[3].as<uint16_t>();
  for (size_t i = 0; i < k1.size(); ++i) ASSERT_EQ(h[i], f32_to_f16(k1[i]));

  EXPECT_THROW(make_dump(m, {}, 1), Error);
  EXPECT_EQ(d.metadata.count("rotary_dim"), 0u);  // every dim rotates
}

// Partial rotary embedding: the dump says so, and skv then refuses prerope_centre on it.
TEST(Dump, PartialRotaryIsRecordedAndMakesPreRopeUnavailable) {
  const auto cfg = test::tiny_config(RopeStyle::gptj, 4);
  const Model m(cfg, test::tiny_weights(cfg, false, true, 3));
  const Dump d = make_dump(m, ids_of(5, cfg.vocab), 0);
  EXPECT_EQ(d.metadata.at("rotary_dim"), "4");
  const KvMeta meta = parse_kv_meta(d.metadata, "tiny.safetensors", cfg.n_layers);
  const KvShape shape{cfg.n_layers, cfg.n_kv_heads, 5, cfg.head_dim};
  EXPECT_FALSE(meta.prerope_ok(shape));
  EXPECT_NE(meta.prerope_unavailable(shape).find("rotary_dim 4"), std::string::npos);
}

TEST(Eval, PerplexityMatchesForwardAndSeesTheTransform) {
  const auto cfg = test::tiny_config(RopeStyle::gptj);
  const Model m(cfg, test::tiny_weights(cfg, false, true, 4));
  const auto all = ids_of(30, cfg.vocab);
  const std::span ctx(all.data(), 20), tgt(all.data() + 20, 10);
  const auto r = perplexity(m, ctx, tgt);
  // The same number straight from one forward pass over everything.
  auto cache = m.new_cache();
  const auto logits = m.forward(cache, all, 19);
  double nll = 0;
  for (size_t t = 0; t < 10; ++t) {
    const float* row = logits.data() + t * size_t(cfg.vocab);
    double mx = -1e300, s = 0;
    for (int k = 0; k < cfg.vocab; ++k) mx = std::max(mx, double(row[k]));
    for (int k = 0; k < cfg.vocab; ++k) s += std::exp(double(row[k]) - mx);
    nll -= double(row[size_t(tgt[t])]) - mx - std::log(s);
  }
  EXPECT_NEAR(r.mean_nll, nll / 10, 1e-4);
  EXPECT_NEAR(r.ppl, std::exp(nll / 10), 1e-3 * r.ppl);
  EXPECT_EQ(r.targets, 10);

  int calls = 0, seen_tokens = 0;
  const auto same = perplexity(m, ctx, tgt, [&](KvCacheObject& c) { ++calls; seen_tokens = c.tokens(); });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen_tokens, 19);
  EXPECT_NEAR(same.ppl, r.ppl, 1e-9);
  const auto dropped = perplexity(m, ctx, tgt, [](KvCacheObject& c) {
    for (int j = 0; j < 15; ++j) c.mask_token(j);
  });
  EXPECT_NE(dropped.ppl, r.ppl);
}

namespace {
std::string model_path() {
  return std::string(SKV_SOURCE_DIR) + "/samples/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}
std::string gpl3() {
  std::ifstream in("/usr/share/common-licenses/GPL-3");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

// Real model: plausible perplexity on English prose (GPL-3 text from Debian's common-licenses),
// a dump of real shape, and a short needle that the model finds.
TEST(EvalModel, RealModelPerplexityDumpAndNeedle) {
  if (!std::filesystem::exists(model_path())) GTEST_SKIP() << "no model: run samples/fetch-model";
  const std::string text = gpl3();
  if (text.size() < 20000) GTEST_SKIP() << "no /usr/share/common-licenses/GPL-3";
  const Model m = Model::load(model_path());
  EXPECT_EQ(m.config().n_layers, 30);
  EXPECT_EQ(m.config().n_kv_heads, 3);
  EXPECT_EQ(m.config().head_dim, 64);
  const auto ids = m.tokenizer().encode(text.substr(2000, 6000));
  ASSERT_GT(ids.size(), 300u);
  const std::span all(ids);
  const auto r = perplexity(m, all.first(192), all.subspan(192, 64));
  EXPECT_GT(r.ppl, 1.5);
  EXPECT_LT(r.ppl, 30.0);
  // Dropping most of the context must hurt.
  const auto d = perplexity(m, all.first(192), all.subspan(192, 64), [](KvCacheObject& c) {
    for (int j = 1; j < c.tokens() - 8; ++j) c.mask_token(j);
  });
  EXPECT_GT(d.ppl, r.ppl);

  const Dump dump = make_dump(m, all.first(40), 8);
  EXPECT_EQ(dump.tensors.size(), 90u);
  EXPECT_EQ(dump.tensors[0].shape, (Shape{3, 40, 64}));
  EXPECT_EQ(dump.tensors[2].shape, (Shape{9, 8, 64}));
  EXPECT_EQ(dump.metadata.at("rope_style"), "gptj");

  const auto p = make_needle_prompt(m.tokenizer(), text.substr(3000, 3000), 160, 0.5, 48213);
  EXPECT_EQ(m.tokenizer().decode(std::span(p.haystack).subspan(size_t(p.needle_start), size_t(p.needle_len))),
            " The secret number is 48213. ");
  const auto n = needle_trial(m, p);
  EXPECT_TRUE(n.success) << n.answer;
}

TEST(KvBridge, AssignsDecodedLayersAndMasks) {
  const auto cfg = test::tiny_config(RopeStyle::gptj);
  const Model m(cfg, test::tiny_weights(cfg, false, true, 8));
  const auto ids = ids_of(6, cfg.vocab);
  const Dump d = make_dump(m, ids, 0);
  auto cache = m.new_cache();
  m.forward(cache, ids, ids.size());
  // A decoded skv cache: the dump's F16 tensors (HTD), with token 2 dropped in layer 1.
  KvCache kv;
  kv.shape = {cfg.n_layers, cfg.n_kv_heads, 6, cfg.head_dim};
  kv.source = "decoded.safetensors";
  std::vector<uint8_t> mask = {1, 1, 0, 1, 1, 1};
  for (int l = 0; l < cfg.n_layers; ++l) {
    KvLayer L;
    L.k = d.tensors[size_t(2 * l)].view();
    L.v = d.tensors[size_t(2 * l + 1)].view();
    if (l == 1) L.mask = TensorView{DType::U8, {6}, std::as_bytes(std::span(mask))};
    kv.layers.push_back(L);
  }
  auto dst = m.new_cache();
  m.forward(dst, ids, ids.size());
  for (int l = 0; l < cfg.n_layers; ++l) {  // scramble, so the assignment must restore it
    auto k = dst.layer_k(l);
    for (auto& x : k) x = -x;
    dst.set_layer(l, k, dst.layer_v(l));
  }
  assign_from(dst, kv);
  for (int l = 0; l < cfg.n_layers; ++l) {
    const auto a = dst.layer_k(l), b = cache.layer_k(l);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-3 * (1 + std::abs(b[i])));
  }
  EXPECT_EQ(dst.mask(0)[2], 1);
  EXPECT_EQ(dst.mask(1)[2], 0);
  kv.shape.tokens = 5;
  EXPECT_THROW(assign_from(dst, kv), Error);
}
