#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../../../lib/src/row_convert.hpp"
#include "../../../lib/src/rope.hpp"
#include "skv/error.hpp"
#include "skv/synthetic.hpp"

using namespace skv;

TEST(Synthetic, NamedShapes) {
  struct Want { const char* spec; int L, H, D, G; };
  for (const Want& w : {Want{"llama2-7b:8", 32, 32, 128, 1}, Want{"llama3-8b:8", 32, 8, 128, 4},
                        Want{"mistral-7b:8", 32, 8, 128, 4}, Want{"qwen2.5-7b:8", 28, 4, 128, 7},
                        Want{"smollm2-135m:8", 30, 3, 64, 3}, Want{"tiny:8", 2, 2, 64, 2},
                        Want{"3x5x80:8", 3, 5, 80, 1}}) {
    SyntheticOptions o;
    o.spec = w.spec;
    o.window = 4;
    const SyntheticCache s = make_synthetic(o);
    EXPECT_EQ(s.cache.shape.layers, w.L) << w.spec;
    EXPECT_EQ(s.cache.shape.kv_heads, w.H) << w.spec;
    EXPECT_EQ(s.cache.shape.head_dim, w.D) << w.spec;
    EXPECT_EQ(s.cache.shape.q_heads, w.H * w.G) << w.spec;
    EXPECT_EQ(s.cache.shape.tokens, 8);
    ASSERT_EQ(s.cache.layers.size(), size_t(w.L));
    EXPECT_EQ(s.cache.layers[0].q->shape, (Shape{w.H * w.G, 4, w.D}));
  }
  int t = 0;
  for (const char* bad : {"llama9:10", "tiny", "tiny:0", "tiny:x", "2x2x63:4", "2x2:4"}) {
    try {
      parse_synthetic_spec(bad, t);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << bad;
    }
  }
}

TEST(Synthetic, DeterministicAndThreadIndependent) {
  SyntheticOptions o;
  o.spec = "smollm2-135m:40";
  o.window = 8;
  o.needle = true;
  o.threads = 1;
  const SyntheticCache a = make_synthetic(o);
  o.threads = 3;
  const SyntheticCache b = make_synthetic(o);
  o.seed = 2;
  const SyntheticCache c = make_synthetic(o);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  bool differs = false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    ASSERT_EQ(a.tensors[i].data.size(), b.tensors[i].data.size());
    EXPECT_EQ(0, std::memcmp(a.tensors[i].data.data(), b.tensors[i].data.data(), a.tensors[i].data.size()));
    differs |= std::memcmp(a.tensors[i].data.data(), c.tensors[i].data.data(), a.tensors[i].data.size()) != 0;
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(a.cache.metadata.at("rope_style"), "neox");
  EXPECT_EQ(a.cache.metadata.at("rope_theta"), "10000");
  EXPECT_EQ(a.cache.metadata.at("needle_len"), std::to_string(*a.cache.meta.needle_len));
}

TEST(Synthetic, LayoutsAndDtypesHoldTheSameValues) {
  SyntheticOptions o;
  o.spec = "tiny:17";
  o.dtype = DType::F32;
  const SyntheticCache ref = make_synthetic(o);
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (Layout lay : {Layout::HTD, Layout::THD}) {
      o.dtype = dt;
      o.layout = lay;
      const SyntheticCache s = make_synthetic(o);
      const KvCache& c = s.cache;
      EXPECT_EQ(c.layers[0].k.shape, lay == Layout::HTD ? (Shape{2, 17, 64}) : (Shape{17, 2, 64}));
      const float tol = dt == DType::BF16 ? 1.0f / 128 : dt == DType::F16 ? 1.0f / 1024 : 0.0f;
      std::vector<float> x(64), y(64);
      for (int l = 0; l < 2; ++l)
        for (int h = 0; h < 2; ++h)
          for (int t = 0; t < 17; ++t)
            for (bool v : {false, true}) {
              detail::load_row(ref.cache.row(l, v, h, t), DType::F32, 64, x.data());
              detail::load_row(c.row(l, v, h, t), dt, 64, y.data());
              for (int d = 0; d < 64; ++d) ASSERT_LE(std::fabs(x[d] - y[d]), tol * std::fabs(x[d]) + 1e-6f);
            }
    }
}

// Keys carry real RoPE: undoing it at the right positions makes two tokens' key products depend
// on content only, so the pre-RoPE per-channel mean is far more stable than the post-RoPE one
// in fast-rotating channels.
TEST(Synthetic, OutliersSitInLowFrequencyChannelsBeforeRope) {
  SyntheticOptions o;
  o.spec = "qwen2.5-7b:256";
  o.dtype = DType::F32;
  const SyntheticCache s = make_synthetic(o);
  const KvCache& c = s.cache;
  const int D = 128, T = 256;
  const detail::RopeTable rope(RopeParams{10000, {}}, RopeStyle::neox, D, 0, T);
  std::vector<double> mean(D, 0.0), typical(D, 0.0);
  std::vector<float> k(D);
  for (int t = 4; t < T; ++t) {
    detail::load_row(c.row(0, false, 0, t), DType::F32, D, k.data());
    rope.rotate(k.data(), t, true);
    for (int d = 0; d < D; ++d) mean[d] += k[d] / (T - 4);
  }
  int outliers = 0;
  for (int d = 0; d < D; ++d)
    if (std::fabs(mean[d]) > 10) {
      ++outliers;
      EXPECT_GE(d % 64, 64 - 16) << "outlier channel " << d << " is not low-frequency";
    }
  EXPECT_GE(outliers, 2);
  // Without outliers no channel is that large.
  o.outliers = 0;
  const SyntheticCache plain = make_synthetic(o);
  for (int t = 4; t < T; ++t) {
    detail::load_row(plain.cache.row(0, false, 0, t), DType::F32, D, k.data());
    for (int d = 0; d < D; ++d) EXPECT_LT(std::fabs(k[d]), 10.0f);
  }
}
