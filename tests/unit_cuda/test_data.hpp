// Small deterministic test inputs for the CUDA tests: K/V in any dtype and layout, random tier
// maps, edge values (zeros of both signs, subnormals, ties), written as raw bytes.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "skv/cuda/layer_plan.hpp"
#include "skv/half.hpp"

namespace skv::cuda::test {

inline void put_value(std::vector<uint8_t>& buf, size_t i, DType dt, float f) {
  if (dt == DType::F32) {
    std::memcpy(buf.data() + 4 * i, &f, 4);
    return;
  }
  const uint16_t h = dt == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f);
  std::memcpy(buf.data() + 2 * i, &h, 2);
}

// H*T*D values: per-channel offsets (so centring matters), per-token scales, a few outliers,
// exact zeros of both signs and tiny values.
inline std::vector<uint8_t> make_tensor(const LayerGeometry& g, uint32_t seed, float offset_scale = 3.0f) {
  const size_t n = size_t(g.kv_heads) * size_t(g.tokens) * size_t(g.head_dim);
  std::vector<uint8_t> buf(n * dtype_size(g.dtype));
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::vector<float> chan(static_cast<size_t>(g.head_dim));
  for (auto& c : chan) c = offset_scale * nd(rng);
  for (size_t i = 0; i < n; ++i) {
    const size_t d = i % size_t(g.head_dim);
    const float u = ud(rng);
    float x = chan[d] + nd(rng) * (0.1f + 2.0f * ud(rng));
    if (u < 0.01f) x = 0.0f;
    else if (u < 0.02f) x = -0.0f;
    else if (u < 0.025f) x *= 40.0f;        // outlier
    else if (u < 0.03f) x = 1e-6f * nd(rng);  // FP16 subnormal range
    else if (u < 0.035f) x = std::round(x * 2.0f) / 2.0f;  // halves: rounding ties
    put_value(buf, i, g.dtype, x);
  }
  return buf;
}

// Random tier map; `weights` are the odds of FP16, INT8, INT4, DROP.
inline std::vector<uint8_t> make_tiers(int T, uint32_t seed, std::vector<double> weights = {1, 1, 1, 1}) {
  std::mt19937 rng(seed);
  std::discrete_distribution<int> dd(weights.begin(), weights.end());
  std::vector<uint8_t> m(static_cast<size_t>(T));
  for (auto& c : m) c = uint8_t(dd(rng));
  return m;
}

}  // namespace skv::cuda::test
