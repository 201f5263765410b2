// A small multi-layer KvCache + Plan built from test_data.hpp's tensors and tier maps, with the
// matching LayerGeometry, for tests that run whole containers (CPU codec vs reference, CPU vs GPU).
#pragma once
#include <string>
#include <vector>

#include "skv/codec.hpp"
#include "skv/cuda/layer_plan.hpp"
#include "test_data.hpp"

namespace skv::cuda::test {

struct CacheCase {
  DType dtype = DType::F16;
  int layers = 2, heads = 2, tokens = 37, head_dim = 64;
  Layout layout = Layout::HTD;
  KeyTransform transform = KeyTransform::none;
  RopeStyle rope_style = RopeStyle::neox;
  int int8_group = 0, int4_group = 0, zstd_level = 0;
  bool int2 = false;                          // declare INT2 (format 1.1)
  int int2_group = QuantSettings::kAutoGroup;
  std::vector<double> tier_odds{1, 1, 1, 1};  // FP16, INT8, INT4, DROP (, INT2)
  uint32_t seed = 1;
};

struct TestCache {
  LayerGeometry geo;
  KvCache cache;
  Plan plan;
  std::vector<std::vector<uint8_t>> k, v, k_tiers, v_tiers;  // per layer
  std::vector<float> rope;                                    // fill_rope_table(), theta 1e4, offset 3

  explicit TestCache(const CacheCase& c) {
    KvShape s;
    s.layers = c.layers;
    s.kv_heads = c.heads;
    s.tokens = c.tokens;
    s.head_dim = c.head_dim;
    s.dtype = c.dtype;
    QuantSettings q;
    q.int8_group = c.int8_group;
    q.int4_group = c.int4_group;
    q.key_transform = c.transform;
    q.zstd_level = c.zstd_level;
    q.int2 = c.int2;
    q.int2_group = c.int2_group;
    geo = make_geometry(s, c.layout, q, c.rope_style, "test");
    cache.shape = s;
    cache.layout = c.layout;
    cache.meta.rope_theta = {10000.0};
    cache.meta.rope_style = c.rope_style;
    cache.meta.position_offset = 3;
    cache.source = "test";
    plan.layers = c.layers;
    plan.tokens = c.tokens;
    plan.quant = q;
    const Shape shape = c.layout == Layout::HTD ? Shape{c.heads, c.tokens, c.head_dim}
                                                : Shape{c.tokens, c.heads, c.head_dim};
    for (int l = 0; l < c.layers; ++l) {
      const uint32_t base = c.seed * 100 + uint32_t(l) * 10;
      k.push_back(make_tensor(geo, base));
      v.push_back(make_tensor(geo, base + 1));
      k_tiers.push_back(make_tiers(c.tokens, base + 2, c.tier_odds));
      v_tiers.push_back(make_tiers(c.tokens, base + 3, c.tier_odds));
      for (uint8_t x : k_tiers.back()) plan.k_tiers.push_back(Tier(x));
      for (uint8_t x : v_tiers.back()) plan.v_tiers.push_back(Tier(x));
    }
    for (int l = 0; l < c.layers; ++l) {
      KvLayer L;
      const auto view = [&](const std::vector<uint8_t>& b) {
        return TensorView{c.dtype, shape, std::as_bytes(std::span<const uint8_t>(b))};
      };
      L.k = view(k[size_t(l)]);
      L.v = view(v[size_t(l)]);
      L.k_name = "layers." + std::to_string(l) + ".k";
      L.v_name = "layers." + std::to_string(l) + ".v";
      cache.layers.push_back(L);
    }
    rope.resize(rope_table_floats(geo));
    if (!rope.empty()) fill_rope_table(geo, 10000.0, 3, rope.data());
  }

  LayerPlan layer_plan(int l) const {
    return plan_layer(geo, k_tiers[size_t(l)].data(), v_tiers[size_t(l)].data(), "test");
  }
};

}  // namespace skv::cuda::test
