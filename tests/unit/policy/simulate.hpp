// Test helper: executes a Plan with the reference quantizers (skv/quant.hpp), centring and
// pre-RoPE centring keys the way the container spec describes, without the container. Lets the
// policy tests measure attention error before (and independently of) the codec.
#pragma once
#include <cmath>
#include <numeric>
#include <vector>

#include "../../../lib/src/row_convert.hpp"
#include "../../../lib/src/rope.hpp"
#include "skv/half.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"
#include "skv/quant.hpp"

namespace skv::test {

struct Simulated {
  std::vector<Tensor> tensors;
  KvCache cache;  // F32, HTD; masks where tokens were dropped
};

inline void quant_row(float* x, int n, Tier t, int g8, int g4, int g2) {
  int8_t q8[512];
  uint8_t q4[256];
  uint16_t s, m;
  if (t == Tier::FP16) {
    for (int i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
  } else if (t == Tier::INT8) {
    for (int i = 0; i < n; i += g8) {
      quant::q8_ref(x + i, size_t(g8), q8, &s);
      quant::dq8_ref(q8, size_t(g8), s, nullptr, x + i);
    }
  } else if (t == Tier::INT4) {
    for (int i = 0; i < n; i += g4) {
      quant::q4_ref(x + i, size_t(g4), q4, &s, &m);
      quant::dq4_ref(q4, size_t(g4), s, m, nullptr, x + i);
    }
  } else if (t == Tier::INT2) {
    for (int i = 0; i < n; i += g2) {
      quant::q2_ref(x + i, size_t(g2), q4, &s, &m);
      quant::dq2_ref(q4, size_t(g2), s, m, nullptr, x + i);
    }
  } else {
    for (int i = 0; i < n; ++i) x[i] = 0;
  }
}

inline Simulated simulate(const KvCache& c, const Plan& p) {
  const int L = c.shape.layers, H = c.shape.kv_heads, T = c.shape.tokens, D = c.shape.head_dim;
  const int g8 = p.quant.int8_group ? p.quant.int8_group : D, g4 = p.quant.int4_group ? p.quant.int4_group : D;
  const int g2 = p.quant.int2_group == QuantSettings::kAutoGroup ? std::gcd(32, D)
                 : p.quant.int2_group                             ? p.quant.int2_group
                                                                  : D;
  const KeyTransform tf = p.quant.key_transform;
  std::optional<detail::RopeTables> rope;
  if (tf == KeyTransform::prerope_centre) rope.emplace(c.meta, L, D, T);
  Simulated out;
  out.cache = c;
  out.cache.shape.dtype = DType::F32;
  out.cache.layout = Layout::HTD;
  out.tensors.reserve(size_t(L) * 3);
  for (int l = 0; l < L; ++l) {
    Tensor& K = out.tensors.emplace_back(DType::F32, Shape{H, T, D});
    Tensor& V = out.tensors.emplace_back(DType::F32, Shape{H, T, D});
    Tensor& M = out.tensors.emplace_back(DType::U8, Shape{T});
    bool any_drop = false;
    for (int t = 0; t < T; ++t) {
      M.as<uint8_t>()[t] = p.k(l, t) != Tier::DROP;
      any_drop |= p.k(l, t) == Tier::DROP;
    }
    for (int h = 0; h < H; ++h) {
      std::vector<double> centre(static_cast<size_t>(D), 0.0);
      int nq = 0;
      std::vector<float> row(static_cast<size_t>(D));
      auto key_in = [&](int t) {
        detail::load_row(c.row(l, false, h, t), c.shape.dtype, D, row.data());
        if (rope) rope->layer(l).rotate(row.data(), t, true);
      };
      if (tf != KeyTransform::none) {
        for (int t = 0; t < T; ++t) {
          if (!is_quantized(p.k(l, t))) continue;
          key_in(t);
          for (int d = 0; d < D; ++d) centre[d] += row[d];
          ++nq;
        }
        for (auto& x : centre) x = nq ? float(x / nq) : 0.0f;  // centres are stored as f32 here
      }
      for (int t = 0; t < T; ++t) {
        float* k = K.as<float>() + (size_t(h) * T + t) * D;
        float* v = V.as<float>() + (size_t(h) * T + t) * D;
        const Tier tk = p.k(l, t), tv = p.v(l, t);
        const bool q = is_quantized(tk);
        if (q && tf != KeyTransform::none) {
          key_in(t);
          for (int d = 0; d < D; ++d) row[d] -= float(centre[d]);
          quant_row(row.data(), D, tk, g8, g4, g2);
          for (int d = 0; d < D; ++d) row[d] += float(centre[d]);
          if (rope) rope->layer(l).rotate(row.data(), t, false);
          std::copy(row.begin(), row.end(), k);
        } else {
          detail::load_row(c.row(l, false, h, t), c.shape.dtype, D, k);
          quant_row(k, D, tk, g8, g4, g2);
        }
        detail::load_row(c.row(l, true, h, t), c.shape.dtype, D, v);
        quant_row(v, D, tv, g8, g4, g2);
      }
    }
    KvLayer& kl = out.cache.layers[size_t(l)];
    kl.k = K.view();
    kl.v = V.view();
    kl.mask = any_drop ? std::optional<TensorView>(M.view()) : std::nullopt;
  }
  return out;
}

}  // namespace skv::test
