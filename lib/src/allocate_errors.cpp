// Error measurement for the distortion-aware allocator (see skv/allocate.hpp for the model).
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "layer_walk.hpp"
#include "policy_detail.hpp"
#include "rope.hpp"
#include "scratch_pool.hpp"
#include "skv/allocate.hpp"
#include "skv/error.hpp"
#include "skv/half.hpp"
#include "skv/quant.hpp"

namespace skv {
namespace {

constexpr float kHuge = 1e30f;  // distortion of a tier that cannot hold the row (non-finite)

inline float f16r(float x) { return f16_to_f32(f32_to_f16(std::min(x, 65504.0f))); }

// Weighted squared error of quantizing x (n values, groups of g) at INT8 / INT4; w = nullptr
// weighs every channel 1. Analytic: every element errs by a uniform step^2/12.
double group_error(const float* x, int n, int g, const float* w, bool int4, bool exact) {
  double total = 0;
  int8_t q8[256];
  uint8_t q4[128];
  float y[256];
  for (int s = 0; s < n; s += g) {
    const float* xs = x + s;
    if (exact && g <= 256) {
      uint16_t sc = 0, mn = 0;
      if (int4) {
        if (!quant::q4_ref(xs, size_t(g), q4, &sc, &mn)) return kHuge;
        quant::dq4_ref(q4, size_t(g), sc, mn, nullptr, y);
      } else {
        if (!quant::q8_ref(xs, size_t(g), q8, &sc)) return kHuge;
        quant::dq8_ref(q8, size_t(g), sc, nullptr, y);
      }
      for (int i = 0; i < g; ++i) {
        const double e = double(y[i]) - xs[i];
        total += (w ? w[s + i] : 1.0f) * e * e;
      }
      continue;
    }
    float lo = xs[0], hi = xs[0], am = 0;
    for (int i = 0; i < g; ++i) {
      lo = std::min(lo, xs[i]);
      hi = std::max(hi, xs[i]);
      am = std::max(am, std::fabs(xs[i]));
    }
    if (!std::isfinite(lo) || !std::isfinite(hi)) return kHuge;
    const float step = int4 ? f16r((hi - lo) / 15.0f) : f16r(am / 127.0f);
    double ws = 0;
    for (int i = 0; i < g; ++i) ws += w ? w[s + i] : 1.0f;
    total += ws * double(step) * step / 12.0;
  }
  return total;
}

// Analytic INT8 and INT4 errors of one row in one pass (what group_error's analytic branch
// computes for each, with the same additions in the same order): the INT4 groups' min/max/absmax
// also give the INT8 groups' absmax when g8 is a multiple of g4. ws8/ws4 hold each group's
// summed channel weight (precomputed once per head). Returns false when that does not apply
// (g8 not a multiple of g4) or the row is not finite.
struct RowErrors {
  double e8 = 0, e4 = 0;
};
bool analytic_errors(const float* x, int n, int g8, int g4, const double* ws8, const double* ws4, RowErrors& out) {
  if (g8 % g4) return false;
  float am8 = 0;
  double e8 = 0, e4 = 0;
  for (int s = 0, k = 0; s < n; s += g4, ++k) {
    const float* xs = x + s;
    float lo = xs[0], hi = xs[0], am = 0;
    for (int i = 0; i < g4; ++i) {
      lo = std::min(lo, xs[i]);
      hi = std::max(hi, xs[i]);
      am = std::max(am, std::fabs(xs[i]));
    }
    if (!std::isfinite(lo) || !std::isfinite(hi)) return false;
    const float step4 = f16r((hi - lo) / 15.0f);
    e4 += ws4[k] * double(step4) * step4 / 12.0;
    am8 = std::max(am8, am);
    if ((s + g4) % g8 == 0) {
      const float step8 = f16r(am8 / 127.0f);
      e8 += ws8[(s + g4) / g8 - 1] * double(step8) * step8 / 12.0;
      am8 = 0;
    }
  }
  out = {e8, e4};
  return true;
}

// Summed weight of each group of g channels (w = nullptr: every channel 1), in group_error's order.
std::vector<double> group_weights(const float* w, int n, int g) {
  std::vector<double> ws(size_t(n / g), 0.0);
  for (int s = 0; s < n; s += g)
    for (int i = 0; i < g; ++i) ws[size_t(s / g)] += w ? w[s + i] : 1.0f;
  return ws;
}

// E|exp(x) - 1|^2 for a Gaussian logit error of variance x, capped at 4 (beyond that the token's
// attention share is simply wrong; dropping it is as good).
inline double logit_penalty(double x) {
  if (x > 2) return 4;
  return std::min(4.0, std::exp(2 * x) - 2 * std::exp(0.5 * x) + 1);
}

// Q(x) = P(N(0,1) > x): the chance a logit error of std sigma closes a gap of x * sigma.
inline double gauss_tail(double gap, double var) {
  if (!(var > 0)) return gap > 0 ? 0.0 : 0.5;
  return 0.5 * std::erfc(gap / std::sqrt(2.0 * var));
}

// Adds the expected top-1 flips of (l, h)'s window queries to the K and DROP terms (see
// skv/allocate.hpp). sig[t] = E[dlogit^2] of token t's key at INT8 / INT4; ok[t] = 0 marks tokens
// with no terms (absent or non-finite), which are left alone.
void add_top1_terms(const Scores& sc, int l, int h, double cost, const std::vector<std::array<float, 2>>& sig,
                    const uint8_t* ok, std::array<float, 5>* out) {
  const int R = sc.group_queries, K = sc.top_k;
  const Scores::Top* base = &sc.top[(size_t(l) * sc.kv_heads + h) * size_t(R) * K];
  for (int r = 0; r < R; ++r) {
    const Scores::Top* top = base + size_t(r) * K;
    const int a = top[0].token;
    if (a < 0 || K < 2 || top[1].token < 0) continue;
    const double gap1 = double(top[0].logit) - top[1].logit;
    if (ok[a]) {
      out[a][2] += float(cost * gauss_tail(gap1, sig[size_t(a)][0]));
      out[a][3] += float(cost * gauss_tail(gap1, sig[size_t(a)][1]));
      out[a][4] += float(cost);
    }
    for (int j = 1; j < K && top[j].token >= 0; ++j) {
      const int t = top[j].token;
      if (!ok[t]) continue;
      const double gap = double(top[0].logit) - top[j].logit;
      out[t][2] += float(cost * gauss_tail(gap, sig[size_t(t)][0]));
      out[t][3] += float(cost * gauss_tail(gap, sig[size_t(t)][1]));
    }
  }
}

struct Setup {
  int L, H, T, D, g8, g4;
  KeyTransform tf;
  std::optional<detail::RopeTables> rope;
};

Setup make_setup(const KvCache& c, const QuantSettings& q, KeyTransform tf) {
  Setup s{c.shape.layers, c.shape.kv_heads, c.shape.tokens, c.shape.head_dim, 0, 0, tf, std::nullopt};
  s.g8 = q.int8_group ? q.int8_group : s.D;
  s.g4 = q.int4_group ? q.int4_group : s.D;
  if (s.D % s.g8 || s.D % s.g4 || s.g8 > 256 || s.g4 > 256)
    fail(Errc::invalid_argument, c.source,
         "quantizer groups (int8 " + std::to_string(s.g8) + ", int4 " + std::to_string(s.g4) +
             ") must divide head_dim " + std::to_string(s.D) + " and be at most 256");
  if (tf == KeyTransform::prerope_centre) {
    if (!c.meta.prerope_ok(c.shape))
      fail(Errc::invalid_argument, c.source, "prerope_centre: " + c.meta.prerope_unavailable(c.shape));
    s.rope.emplace(c.meta, s.L, s.D, s.T);
  }
  return s;
}

// Mean square of each query channel over the window and the group's heads, divided by d:
// E[dlogit^2] = sum_c C_c dk_c^2 for logits q.k / sqrt(d). Empty without queries.
std::vector<float> query_power(const KvCache& c, int l, int h) {
  const KvShape& s = c.shape;
  const KvLayer& kl = c.layers[size_t(l)];
  if (!kl.q || s.window <= 0 || s.q_heads % s.kv_heads) return {};
  const int G = s.q_heads / s.kv_heads, D = s.head_dim, W = s.window;
  const size_t es = dtype_size(kl.q->dtype);
  std::vector<double> acc(size_t(D), 0.0);
  std::vector<float> row(static_cast<size_t>(D));
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < W; ++i) {
      detail::load_row(kl.q->bytes.data() + (size_t(h * G + g) * W + i) * D * es, kl.q->dtype, D, row.data());
      for (int d = 0; d < D; ++d) acc[d] += std::isfinite(row[d]) ? double(row[d]) * row[d] : 0.0;
    }
  std::vector<float> out(static_cast<size_t>(D));
  for (int d = 0; d < D; ++d) out[d] = float(acc[d] / (double(G) * W) / D);
  return out;
}

void to_key_space(const Setup& s, int l, float* row, int t, const std::vector<float>& centre) {
  if (s.tf == KeyTransform::prerope_centre) s.rope->layer(l).rotate(row, t, true);
  if (s.tf != KeyTransform::none)
    for (int d = 0; d < s.D; ++d) row[d] -= centre[d];
}

// Centre of the key rows of `tokens` in the transform's space (zero for none).
std::vector<float> key_centre(const KvCache& c, const Setup& s, int l, int h, const std::vector<int>& tokens) {
  std::vector<float> centre(size_t(s.D), 0.0f);
  if (s.tf == KeyTransform::none || tokens.empty()) return centre;
  std::vector<double> acc(size_t(s.D), 0.0);
  std::vector<float> row(size_t(s.D));
  const std::vector<float> zero(size_t(s.D), 0.0f);
  for (int t : tokens) {
    detail::load_row(c.row(l, false, h, t), c.shape.dtype, s.D, row.data());
    if (s.tf == KeyTransform::prerope_centre) s.rope->layer(l).rotate(row.data(), t, true);
    for (int d = 0; d < s.D; ++d) acc[d] += std::isfinite(row[d]) ? row[d] : 0.0f;
  }
  for (int d = 0; d < s.D; ++d) centre[d] = float(acc[d] / double(tokens.size()));
  return centre;
}

}  // namespace

Distortion measure_distortion(const KvCache& c, const Scores& sc, const QuantSettings& q, const ErrorOptions& o) {
  const Setup s = make_setup(c, q, q.key_transform);
  const int L = s.L, H = s.H, T = s.T, D = s.D;
  if (sc.tokens != T) fail(Errc::invalid_argument, c.source, "scores do not match the cache's token count");
  Distortion d;
  d.layers = L;
  d.tokens = T;
  d.k.assign(size_t(L) * T, {0, 0, 0});
  d.v.assign(size_t(L) * T, {0, 0, 0});
  d.drop.assign(size_t(L) * T, 0.0f);
  d.forced.assign(size_t(L) * T, 0);
  const bool exact = o.model == ErrorModel::exact;
  const float floor_w = float(o.weight_floor / T);
  auto present = [&](const KvLayer& kl, int t) {
    if (!kl.mask) return true;
    const size_t es = dtype_size(kl.mask->dtype);
    return kl.mask->bytes[size_t(t) * es] != std::byte{0};
  };

  // Heads of a layer group run in parallel, each writing its own terms; the group's terms are then
  // summed over heads in head order: the same float additions, in the same order, as a sequential
  // walk, so the tables never depend on the thread count.
  const int G = std::min(detail::layers_per_group(H, o.threads), L);
  const size_t layer_terms = size_t(H) * T;
  std::vector<std::array<float, 5>> terms(size_t(G) * layer_terms);  // v INT8, v INT4, k INT8, k INT4, drop
  std::vector<uint8_t> finite(terms.size());
  // Row buffers (2 x tokens x head_dim floats), reused across tasks.
  struct Rows {
    std::vector<float> k, v;
  };
  detail::ScratchPool<Rows> pool;
  auto head_terms = [&](int l, int h) {
    std::unique_ptr<Rows> rows = pool.take();
    std::vector<float>& K = rows->k;
    std::vector<float>& V = rows->v;
    K.resize(size_t(T) * D);
    V.resize(size_t(T) * D);
    const KvLayer& kl = c.layers[size_t(l)];
    std::array<float, 5>* out = &terms[size_t(l % G) * layer_terms + size_t(h) * T];
    uint8_t* ok = &finite[size_t(l % G) * layer_terms + size_t(h) * T];
    std::vector<int> unpinned;
    for (int t = 0; t < T; ++t)
      if (present(kl, t) && (sc.pinned.empty() || !sc.pinned[size_t(t)])) unpinned.push_back(t);
    if (unpinned.empty())
      for (int t = 0; t < T; ++t) if (present(kl, t)) unpinned.push_back(t);
    // The head's rows are converted once (keys into the transform's space before centring).
    std::vector<float> k(static_cast<size_t>(D));
    std::vector<double> vbar(static_cast<size_t>(D), 0.0), kbar(static_cast<size_t>(D), 0.0),
        k2(static_cast<size_t>(D), 0.0);
    const double n_unp = double(std::max<size_t>(unpinned.size(), 1));
    for (int t = 0; t < T; ++t) {
      float* kr = &K[size_t(t) * D];
      detail::load_row(c.row(l, false, h, t), c.shape.dtype, D, kr);
      detail::load_row(c.row(l, true, h, t), c.shape.dtype, D, &V[size_t(t) * D]);
      if (s.tf == KeyTransform::prerope_centre) s.rope->layer(l).rotate(kr, t, true);
    }
    // Value mean, key centre and key spread over the tokens likely to be quantized.
    for (int t : unpinned) {
      const float* vr = &V[size_t(t) * D];
      const float* kr = &K[size_t(t) * D];
      for (int i = 0; i < D; ++i) {
        vbar[i] += std::isfinite(vr[i]) ? vr[i] : 0.0f;
        const double x = std::isfinite(kr[i]) ? kr[i] : 0.0f;
        kbar[i] += x;
        k2[i] += x * x;
      }
    }
    std::vector<float> centre(static_cast<size_t>(D), 0.0f);
    double spread = 0;
    for (int i = 0; i < D; ++i) {
      vbar[i] /= n_unp;
      if (s.tf != KeyTransform::none) centre[i] = float(kbar[i] / n_unp);
      spread += k2[i] / n_unp - (kbar[i] / n_unp) * (kbar[i] / n_unp);
    }
    std::vector<std::array<float, 2>> sig(sc.top.empty() ? 0 : size_t(T));  // E[dlogit^2] INT8, INT4
    std::vector<float> C = query_power(c, l, h);
    if (C.empty())  // isotropic queries whose logits spread by logit_spread over tokens
      C.assign(static_cast<size_t>(D), float(o.logit_spread * o.logit_spread / std::max(spread, 1e-20)));
    // Second-moment weights when the scorer measured them (see Scores::quant_weight), floored at
    // second_moment_floor of a uniformly attended token's, so that tokens the window ignores
    // still count; else the score.
    const bool second = !sc.quant_weight.empty();
    const size_t row0 = (size_t(l) * H + h) * T;
    const float floor_q =
        second ? float(o.second_moment_floor * sc.uniform_weight[size_t(l) * H + h]) : floor_w;
    const std::vector<double> ones8 = group_weights(nullptr, D, s.g8), ones4 = group_weights(nullptr, D, s.g4),
                              c8 = group_weights(C.data(), D, s.g8), c4 = group_weights(C.data(), D, s.g4);
    for (int t = 0; t < T; ++t) {
      ok[t] = 0;
      if (!present(kl, t)) continue;
      const float w = second ? sc.quant_weight[row0 + t] + floor_q : sc.at(l, h, t) + floor_w;
      const float wd = second ? sc.drop_weight[row0 + t] + floor_q : w;
      const float* v = &V[size_t(t) * D];
      const float* kr = &K[size_t(t) * D];
      double vdev = 0;
      bool fin = true;
      for (int i = 0; i < D; ++i) {
        fin = fin && std::isfinite(v[i]) && std::isfinite(kr[i]);
        vdev += (v[i] - vbar[i]) * (v[i] - vbar[i]);
        k[i] = kr[i] - centre[i];
      }
      if (!fin) continue;
      ok[t] = 1;
      RowErrors ve, ke;
      if (exact || !analytic_errors(v, D, s.g8, s.g4, ones8.data(), ones4.data(), ve))
        ve = {group_error(v, D, s.g8, nullptr, false, exact), group_error(v, D, s.g4, nullptr, true, exact)};
      if (exact || !analytic_errors(k.data(), D, s.g8, s.g4, c8.data(), c4.data(), ke))
        ke = {group_error(k.data(), D, s.g8, C.data(), false, exact), group_error(k.data(), D, s.g4, C.data(), true, exact)};
      const double v8 = ve.e8, v4 = ve.e4, x8 = ke.e8, x4 = ke.e4;
      out[t] = {float(w * v8), float(w * v4), float(w * vdev * logit_penalty(x8)),
                float(w * vdev * logit_penalty(x4)), float(wd * vdev)};
      if (!sc.top.empty()) sig[size_t(t)] = {float(x8), float(x4)};
    }
    if (!sc.top.empty() && o.top1_cost > 0) add_top1_terms(sc, l, h, o.top1_cost, sig, ok, out);
    pool.give(std::move(rows));
  };
  auto sum_heads = [&](int l0, int n) {
    for (int l = l0; l < l0 + n; ++l) {
      const KvLayer& kl = c.layers[size_t(l)];
      for (int t = 0; t < T; ++t) {
        const size_t e = size_t(l) * T + t;
        if (!present(kl, t)) {  // masked out: must drop
          d.forced[e] = 2;
          continue;
        }
        for (int h = 0; h < H; ++h) {
          const size_t i = size_t(l % G) * layer_terms + size_t(h) * T + t;
          if (!finite[i]) {  // non-finite in this head: must stay FP16
            d.forced[e] = 1;
            continue;
          }
          const auto& x = terms[i];
          d.v[e][1] += x[0];
          d.v[e][2] += x[1];
          d.k[e][1] += x[2];
          d.k[e][2] += x[3];
          d.drop[e] += x[4];
        }
      }
    }
  };
  detail::walk_layers(L, H, o.threads, head_terms, sum_heads, o.layer_done);
  return d;
}

std::array<double, 3> key_transform_errors(const KvCache& c, const QuantSettings& q,
                                           const std::vector<uint8_t>& pinned, int threads,
                                           const std::function<void(int)>& layer_done) {
  std::array<double, 3> out{-1, -1, -1};
  const int L = c.shape.layers, H = c.shape.kv_heads, T = c.shape.tokens, D = c.shape.head_dim;
  std::vector<int> sample;
  const int step = std::max(1, T / 256);
  for (int t = 0; t < T; t += step)
    if (pinned.empty() || !pinned[size_t(t)]) sample.push_back(t);
  if (sample.empty()) sample.push_back(T - 1);
  std::vector<Setup> setups;
  for (KeyTransform tf : {KeyTransform::none, KeyTransform::centre, KeyTransform::prerope_centre}) {
    if (tf == KeyTransform::prerope_centre && !c.meta.prerope_ok(c.shape))
      continue;
    setups.push_back(make_setup(c, q, tf));
  }
  // One walk over the cache measures every transform, so each layer is read once.
  const size_t tasks = size_t(L) * H;
  std::vector<double> per(setups.size() * tasks, 0.0);  // [transform, layer, head]
  detail::walk_layers(L, H, threads, [&](int l, int h) {
    const std::vector<float> C = query_power(c, l, h);
    const float* w = C.empty() ? nullptr : C.data();
    std::vector<float> k(static_cast<size_t>(D));
    for (size_t i = 0; i < setups.size(); ++i) {
      const Setup& s = setups[i];
      const std::vector<float> centre = key_centre(c, s, l, h, sample);
      double acc = 0;
      for (int t : sample) {
        detail::load_row(c.row(l, false, h, t), c.shape.dtype, D, k.data());
        to_key_space(s, l, k.data(), t, centre);
        acc += group_error(k.data(), D, s.g8, w, false, false) + group_error(k.data(), D, s.g4, w, true, false);
      }
      per[i * tasks + size_t(l) * H + h] = acc;
    }
  }, {}, layer_done);
  for (size_t i = 0; i < setups.size(); ++i) {
    double sum = 0;
    for (size_t j = 0; j < tasks; ++j) sum += per[i * tasks + j];
    out[size_t(setups[i].tf)] = sum;
  }
  return out;
}

}  // namespace skv
