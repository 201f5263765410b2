// A tiny random-weight model and an independent, loop-by-loop reference forward pass (no BLAS,
// no cache, one token at a time) to check the runner against.
#pragma once
#include <cmath>
#include <random>

#include "skv/model/model.hpp"

namespace skv::test {

inline model::ModelConfig tiny_config(RopeStyle style, int n_rot = 8) {
  model::ModelConfig c;
  c.name = "tiny";
  c.architecture = style == RopeStyle::neox ? "qwen2" : "llama";
  c.n_layers = 2; c.d_model = 16; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.d_ff = 24;
  c.vocab = 40; c.n_rot = n_rot; c.rope_theta = 100.0f; c.rms_eps = 1e-5f; c.rope_style = style;
  return c;
}

inline model::Weights tiny_weights(const model::ModelConfig& c, bool bias, bool tied, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.4f);
  auto vec = [&](size_t k, float scale = 1.0f, float shift = 0.0f) {
    std::vector<float> v(k);
    for (auto& x : v) x = shift + scale * n(rng);
    return v;
  };
  const size_t d = size_t(c.d_model), qd = size_t(c.n_heads * c.head_dim), kd = size_t(c.n_kv_heads * c.head_dim),
               ff = size_t(c.d_ff), V = size_t(c.vocab);
  model::Weights w;
  w.tok_embd = vec(V * d, 2.0f);
  w.out_norm = vec(d, 0.2f, 1.0f);
  if (!tied) w.output = vec(V * d);
  for (int l = 0; l < c.n_layers; ++l) {
    model::LayerWeights L;
    L.attn_norm = vec(d, 0.2f, 1.0f); L.ffn_norm = vec(d, 0.2f, 1.0f);
    L.wq = vec(qd * d); L.wk = vec(kd * d); L.wv = vec(kd * d); L.wo = vec(d * qd);
    if (bias) { L.bq = vec(qd); L.bk = vec(kd); L.bv = vec(kd); }
    L.w_gate = vec(ff * d); L.w_up = vec(ff * d); L.w_down = vec(d * ff);
    w.layers.push_back(std::move(L));
  }
  return w;
}

// Reference logits for every position; keep[j] == false removes key j from every layer's
// attention for query positions >= keep_from (the tokens run after the cache was masked).
inline std::vector<std::vector<float>> reference_logits(const model::ModelConfig& c, const model::Weights& w,
                                                        const std::vector<int32_t>& ids,
                                                        const std::vector<bool>& keep = {}, int keep_from = 0) {
  const int T = int(ids.size()), d = c.d_model, hd = c.head_dim;
  auto matvec = [](const std::vector<float>& W, const std::vector<float>& x, size_t out) {
    std::vector<double> y(out, 0.0);
    for (size_t o = 0; o < out; ++o)
      for (size_t i = 0; i < x.size(); ++i) y[o] += double(W[o * x.size() + i]) * x[i];
    return std::vector<float>(y.begin(), y.end());
  };
  auto norm = [&](const std::vector<float>& x, const std::vector<float>& g) {
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double s = 1.0 / std::sqrt(ss / double(x.size()) + c.rms_eps);
    std::vector<float> y(x.size());
    for (size_t k = 0; k < x.size(); ++k) y[k] = float(x[k] * s * g[k]);
    return y;
  };
  auto rope = [&](std::vector<float>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < c.n_rot / 2; ++i) {
        const double th = pos / std::pow(double(c.rope_theta), 2.0 * i / c.n_rot);
        const int a = c.rope_style == RopeStyle::neox ? i : 2 * i;
        const int b = c.rope_style == RopeStyle::neox ? i + c.n_rot / 2 : 2 * i + 1;
        const double x0 = v[size_t(h * hd + a)], x1 = v[size_t(h * hd + b)];
        v[size_t(h * hd + a)] = float(x0 * std::cos(th) - x1 * std::sin(th));
        v[size_t(h * hd + b)] = float(x0 * std::sin(th) + x1 * std::cos(th));
      }
  };
  std::vector<std::vector<float>> x(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t)
    x[size_t(t)].assign(w.tok_embd.begin() + ids[size_t(t)] * d, w.tok_embd.begin() + (ids[size_t(t)] + 1) * d);
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& L = w.layers[size_t(l)];
    std::vector<std::vector<float>> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)), v(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) {
      const auto h = norm(x[size_t(t)], L.attn_norm);
      q[size_t(t)] = matvec(L.wq, h, size_t(c.n_heads * hd));
      k[size_t(t)] = matvec(L.wk, h, size_t(c.n_kv_heads * hd));
      v[size_t(t)] = matvec(L.wv, h, size_t(c.n_kv_heads * hd));
      for (size_t i = 0; i < L.bq.size(); ++i) q[size_t(t)][i] += L.bq[i];
      for (size_t i = 0; i < L.bk.size(); ++i) k[size_t(t)][i] += L.bk[i];
      for (size_t i = 0; i < L.bv.size(); ++i) v[size_t(t)][i] += L.bv[i];
      rope(q[size_t(t)], c.n_heads, t);
      rope(k[size_t(t)], c.n_kv_heads, t);
    }
    for (int t = 0; t < T; ++t) {
      std::vector<float> o(size_t(c.n_heads * hd), 0.0f);
      for (int h = 0; h < c.n_heads; ++h) {
        const int g = h / (c.n_heads / c.n_kv_heads);
        std::vector<double> s;
        std::vector<int> js;
        for (int j = 0; j <= t; ++j) {
          if (!keep.empty() && t >= keep_from && !keep[size_t(j)]) continue;
          double dot = 0;
          for (int e = 0; e < hd; ++e) dot += double(q[size_t(t)][size_t(h * hd + e)]) * k[size_t(j)][size_t(g * hd + e)];
          s.push_back(dot / std::sqrt(double(hd)));
          js.push_back(j);
        }
        double mx = -1e300, sum = 0;
        for (double z : s) mx = std::max(mx, z);
        for (double& z : s) sum += (z = std::exp(z - mx));
        for (size_t m = 0; m < s.size(); ++m)
          for (int e = 0; e < hd; ++e)
            o[size_t(h * hd + e)] += float(s[m] / sum * v[size_t(js[m])][size_t(g * hd + e)]);
      }
      const auto a = matvec(L.wo, o, size_t(d));
      for (int e = 0; e < d; ++e) x[size_t(t)][size_t(e)] += a[size_t(e)];
    }
    for (int t = 0; t < T; ++t) {
      const auto h = norm(x[size_t(t)], L.ffn_norm);
      auto gt = matvec(L.w_gate, h, size_t(c.d_ff));
      const auto up = matvec(L.w_up, h, size_t(c.d_ff));
      for (size_t i = 0; i < gt.size(); ++i) gt[i] = gt[i] / (1.0f + std::exp(-gt[i])) * up[i];
      const auto dn = matvec(L.w_down, gt, size_t(d));
      for (int e = 0; e < d; ++e) x[size_t(t)][size_t(e)] += dn[size_t(e)];
    }
  }
  std::vector<std::vector<float>> out;
  for (int t = 0; t < T; ++t)
    out.push_back(matvec(w.output.empty() ? w.tok_embd : w.output, norm(x[size_t(t)], w.out_norm), size_t(c.vocab)));
  return out;
}

}  // namespace skv::test
