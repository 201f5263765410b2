#include "skv/score.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "blas_threads.hpp"
#include "layer_walk.hpp"
#include "policy_detail.hpp"
#include "scratch_pool.hpp"
#include "skv/error.hpp"

namespace skv {
namespace {

void normalise(float* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += x[i];
  if (!(s > 0) || !std::isfinite(s)) {
    std::fill(x, x + n, 1.0f / float(n));
    return;
  }
  const float inv = float(1.0 / s);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

void pool_row(std::vector<float>& x, Pool pool, int kernel) {
  if (pool == Pool::none || kernel <= 1) return;
  const int n = int(x.size()), r = kernel / 2;
  std::vector<float> out(x.size());
  for (int i = 0; i < n; ++i) {
    const int lo = std::max(0, i - r), hi = std::min(n - 1, i + r);
    float m = pool == Pool::max ? x[lo] : 0.0f;
    for (int j = lo; j <= hi; ++j) m = pool == Pool::max ? std::max(m, x[j]) : m + x[j];
    out[i] = pool == Pool::max ? m : m / float(kernel);  // avg: zero padding, as avg_pool1d
  }
  x.swap(out);
}

// Observation-window attention of one (layer, kv head), summed over the window and the group's
// query heads: softmax(q K^T / sqrt(d)) with query i at position T - W + i seeing tokens <= it.
// Also the second-moment weights of Scores::quant_weight / drop_weight.
constexpr int kTopK = 16;  // candidates kept per query: enough for any gap a quantizer can close

// Work buffers of one head, reused across heads (detail::ScratchPool).
struct Scratch {
  std::vector<float> K, V, Q, S, O;
  std::vector<uint8_t> absent, live;
  std::vector<int> idx;
};

struct HeadAttention {
  std::vector<float> share, quant, drop;  // [tokens] each
  std::vector<Scores::Top> top;           // [G * W, kTopK]
  double uniform = 0;                     // Scores::uniform_weight of the head
};

void head_attention(const KvCache& c, int l, int h, Scratch& sc, HeadAttention& out) {
  const KvShape& s = c.shape;
  const int T = s.tokens, D = s.head_dim, W = s.window, G = s.q_heads / s.kv_heads;
  const TensorView& qv = *c.layers[size_t(l)].q;
  const size_t qes = dtype_size(qv.dtype);
  std::vector<float>&K = sc.K, &V = sc.V, &Q = sc.Q;
  K.resize(size_t(T) * D);
  V.resize(size_t(T) * D);
  Q.resize(size_t(G) * W * D);
  // Tokens a source mask marks absent take no part in the softmax (as in attention_metrics).
  std::vector<uint8_t>& absent = sc.absent;
  absent.assign(size_t(T), 0);
  if (const auto& mask = c.layers[size_t(l)].mask) {
    const size_t es = dtype_size(mask->dtype);
    for (int t = 0; t < T; ++t) absent[size_t(t)] = mask->bytes[size_t(t) * es] == std::byte{0};
  }
  double v2 = 0;  // mean |v|^2: the floor of |o|^2, so a near-zero output cannot dominate
  for (int t = 0; t < T; ++t) {
    detail::load_row(c.row(l, false, h, t), s.dtype, D, &K[size_t(t) * D]);
    float* v = &V[size_t(t) * D];
    detail::load_row(c.row(l, true, h, t), s.dtype, D, v);
    float r2 = 0;
    for (int d = 0; d < D; ++d) r2 += v[d] * v[d];
    if (std::isfinite(r2)) {
      v2 += r2;
      continue;
    }
    double r = 0;  // a non-finite value must not poison every output; huge ones need doubles
    for (int d = 0; d < D; ++d) {
      v[d] = std::isfinite(v[d]) ? v[d] : 0.0f;
      r += double(v[d]) * v[d];
    }
    v2 += r;
  }
  const double o2_floor = std::max(1e-2 * v2 / T, 1e-30);
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < W; ++i)
      detail::load_row(qv.bytes.data() + (size_t(h * G + g) * W + i) * D * qes, qv.dtype, D,
                       &Q[(size_t(g) * W + i) * D]);
  out.share.assign(size_t(T), 0.0f);
  out.quant.assign(size_t(T), 0.0f);
  out.drop.assign(size_t(T), 0.0f);
  out.top.assign(size_t(G) * W * kTopK, Scores::Top{});
  std::vector<int>& idx = sc.idx;
  idx.resize(size_t(T));
  const int rows = G * W, chunk = 64;
  std::vector<float>&S = sc.S, &O = sc.O;
  S.resize(size_t(std::min(rows, chunk)) * T);
  O.resize(size_t(std::min(rows, chunk)) * D);
  std::vector<uint8_t>& live = sc.live;
  live.resize(size_t(std::min(rows, chunk)));
  for (int r0 = 0; r0 < rows; r0 += chunk) {
    const int m = std::min(chunk, rows - r0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, T, D, float(1.0 / std::sqrt(double(D))),
                &Q[size_t(r0) * D], D, K.data(), D, 0.0f, S.data(), T);
    for (int r = 0; r < m; ++r) {
      const int i = (r0 + r) % W;
      const int last = T - W + i;  // causal: sees tokens 0..last
      float* row = &S[size_t(r) * T];
      float mx = -INFINITY;
      for (int t = 0; t <= last; ++t) {
        if (absent[size_t(t)] || std::isnan(row[t])) row[t] = -INFINITY;  // a NaN key: no weight
        mx = std::max(mx, row[t]);
      }
      live[size_t(r)] = std::isfinite(mx);
      if (!live[size_t(r)]) {  // non-finite queries or keys: no information
        std::fill(row, row + T, 0.0f);
        continue;
      }
      // The query's top candidates by logit (ties: earlier token first, as the metric's argmax).
      const int n = std::min(kTopK, last + 1);
      std::iota(idx.begin(), idx.begin() + last + 1, 0);
      auto before = [row](int a, int b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
      std::partial_sort(idx.begin(), idx.begin() + n, idx.begin() + last + 1, before);
      Scores::Top* top = &out.top[size_t(r0 + r) * kTopK];
      for (int j = 0; j < n && std::isfinite(row[idx[size_t(j)]]); ++j) top[j] = {idx[size_t(j)], row[idx[size_t(j)]]};
      double sum = 0;
      for (int t = 0; t <= last; ++t) {
        row[t] = std::exp(row[t] - mx);
        sum += row[t];
      }
      const float inv = float(1.0 / sum);
      for (int t = 0; t <= last; ++t) row[t] *= inv;
      std::fill(row + last + 1, row + T, 0.0f);
    }
    // o_r = p_r V for the chunk's queries.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, D, T, 1.0f, S.data(), T, V.data(), D, 0.0f,
                O.data(), D);
    for (int r = 0; r < m; ++r) {
      if (!live[size_t(r)]) continue;
      const int last = T - W + (r0 + r) % W;
      double o2 = 0;
      for (int d = 0; d < D; ++d) o2 += double(O[size_t(r) * D + d]) * O[size_t(r) * D + d];
      const double inv_o2 = 1.0 / std::max(o2, o2_floor);
      const float* row = &S[size_t(r) * T];
      int seen = 0;
      for (int t = 0; t <= last; ++t) seen += !absent[size_t(t)];
      out.uniform += inv_o2 / (double(seen) * seen);
      for (int t = 0; t <= last; ++t) {
        const double p = row[t];
        out.share[size_t(t)] += row[t];
        const double q = p * p * inv_o2;
        out.quant[size_t(t)] += float(q);
        const double keep = 1.0 - std::min(p, 0.9);  // beyond 0.9 the token *is* the output
        out.drop[size_t(t)] += float(q / (keep * keep));
      }
    }
  }
}

void keynorm_head(const KvCache& c, int l, int h, int skip, std::vector<float>& acc) {
  const int T = c.shape.tokens, D = c.shape.head_dim;
  std::vector<float> row(static_cast<size_t>(D));
  std::vector<double> mean(size_t(D), 0.0);
  int n = 0;
  for (int t = std::min(skip, T - 1); t < T; ++t, ++n) {
    detail::load_row(c.row(l, false, h, t), c.shape.dtype, D, row.data());
    for (int d = 0; d < D; ++d) mean[d] += std::isfinite(row[d]) ? row[d] : 0.0f;
  }
  for (auto& m : mean) m /= std::max(n, 1);
  acc.assign(size_t(T), 0.0f);
  for (int t = 0; t < T; ++t) {
    detail::load_row(c.row(l, false, h, t), c.shape.dtype, D, row.data());
    double s = 0;
    for (int d = 0; d < D; ++d) s += (row[d] - mean[d]) * (row[d] - mean[d]);
    acc[size_t(t)] = std::isfinite(s) ? float(std::sqrt(s)) : 0.0f;
  }
}

}  // namespace

const char* scorer_name(Scorer s) noexcept {
  switch (s) {
    case Scorer::auto_: return "auto";
    case Scorer::attention: return "attention";
    case Scorer::keynorm: return "keynorm";
    case Scorer::position: return "position";
    case Scorer::external: return "external";
  }
  return "?";
}

std::optional<Scorer> scorer_from_name(std::string_view n) noexcept {
  for (Scorer s : {Scorer::auto_, Scorer::attention, Scorer::keynorm, Scorer::position, Scorer::external})
    if (n == scorer_name(s)) return s;
  return std::nullopt;
}

Scores score_tokens(const KvCache& c, const ScoreOptions& o) {
  const KvShape& s = c.shape;
  const int L = s.layers, H = s.kv_heads, T = s.tokens;
  Scores out;
  out.tokens = T;
  Scorer use = o.scorer;
  const bool has_q = s.window > 0 && s.q_heads > 0 && !c.layers.empty() && c.layers[0].q.has_value();
  if (use == Scorer::auto_) use = has_q ? Scorer::attention : Scorer::keynorm;
  if (use == Scorer::attention && !has_q)
    fail(Errc::invalid_argument, c.source, "attention scoring needs observation queries (layers.N.q)");
  if (use == Scorer::attention && (s.q_heads % s.kv_heads != 0 || s.window > T))
    fail(Errc::invalid_argument, c.source, "queries: q_heads must be a multiple of kv_heads and window <= tokens");
  if (o.pool_kernel < 1 || o.pool_kernel % 2 == 0)
    fail(Errc::invalid_argument, c.source, "pool kernel must be odd and >= 1");
  out.used = use;

  std::vector<float> per_layer;  // [L, T]
  if (use == Scorer::attention || use == Scorer::keynorm) {
    out.head.assign(size_t(L) * H * T, 0.0f);
    out.kv_heads = H;
    if (use == Scorer::attention) {
      out.quant_weight.assign(out.head.size(), 0.0f);
      out.drop_weight.assign(out.head.size(), 0.0f);
      out.uniform_weight.assign(size_t(L) * H, 0.0f);
      out.top_k = kTopK;
      out.group_queries = s.q_heads / H * s.window;
      out.top.assign(size_t(L) * H * size_t(out.group_queries) * kTopK, Scores::Top{});
    }
    detail::ScratchPool<Scratch> pool;
    const detail::SingleThreadedBlas one_blas_thread;
    // Layer group by layer group, so that a mapped dump can drop each layer once it is read.
    detail::walk_layers(L, H, o.threads, [&](int l, int h) {
      const size_t task = size_t(l) * H + h;
      std::vector<float> acc;
      if (use == Scorer::attention) {
        HeadAttention a;
        std::unique_ptr<Scratch> scratch = pool.take();
        head_attention(c, l, h, *scratch, a);
        pool.give(std::move(scratch));
        pool_row(a.share, o.pool, o.pool_kernel);
        pool_row(a.quant, o.pool, o.pool_kernel);
        pool_row(a.drop, o.pool, o.pool_kernel);
        std::copy(a.quant.begin(), a.quant.end(), out.quant_weight.begin() + ptrdiff_t(task * T));
        std::copy(a.drop.begin(), a.drop.end(), out.drop_weight.begin() + ptrdiff_t(task * T));
        std::copy(a.top.begin(), a.top.end(), out.top.begin() + ptrdiff_t(task * a.top.size()));
        out.uniform_weight[task] = float(a.uniform);
        acc = std::move(a.share);
      } else {
        keynorm_head(c, l, h, o.sinks, acc);
      }
      normalise(acc.data(), T);
      std::copy(acc.begin(), acc.end(), out.head.begin() + ptrdiff_t(task * T));
    }, {}, o.layer_done);
    per_layer.assign(size_t(L) * T, 0.0f);
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t)
          per_layer[size_t(l) * T + t] += out.head[(size_t(l) * H + h) * T + t] / float(H);
    if (use == Scorer::keynorm) {  // keynorm is a weak signal per head; keep only the layer rows
      out.head.clear();
      out.kv_heads = 0;
    }
  } else if (use == Scorer::position) {
    per_layer.resize(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) {
      const double x = double(t) / T;
      const double ramp = x > 0.8 ? (x - 0.8) / 0.2 : 0.0;
      per_layer[size_t(t)] = float(std::max(std::exp(-5.0 * x), ramp) + 1e-6);
    }
  } else {  // external
    if (!o.external) fail(Errc::invalid_argument, c.source, "external scorer without external scores");
    const TensorView& e = *o.external;
    const bool shared = e.shape == Shape{T}, layered = e.shape == Shape{L, T};
    if (e.dtype != DType::F32 || !(shared || layered))
      fail(Errc::invalid_argument, c.source,
           "external scores must be F32 [" + std::to_string(T) + "] or [" + std::to_string(L) + ", " +
               std::to_string(T) + "], got " + std::string(dtype_name(e.dtype)) + " " + shape_str(e.shape));
    per_layer.assign(e.as<float>(), e.as<float>() + e.numel());
    float mn = 0;
    for (float x : per_layer) {
      if (!std::isfinite(x)) fail(Errc::invalid_argument, c.source, "external scores hold a non-finite value");
      mn = std::min(mn, x);
    }
    for (float& x : per_layer) x -= mn;  // scores are relative; make them non-negative
  }

  const int rows = int(per_layer.size() / size_t(T));
  if (o.per_layer || rows == 1) {
    out.rows = rows;
    out.value = std::move(per_layer);
  } else {
    out.rows = 1;
    out.value.assign(size_t(T), 0.0f);
    for (int r = 0; r < rows; ++r)
      for (int t = 0; t < T; ++t) out.value[size_t(t)] += per_layer[size_t(r) * T + t];
  }
  for (int r = 0; r < out.rows; ++r) normalise(&out.value[size_t(r) * T], T);

  out.pinned.assign(size_t(T), 0);
  for (int t = 0; t < std::min(o.sinks, T); ++t) out.pinned[size_t(t)] = 1;
  for (int t = std::max(0, T - o.recent); t < T; ++t) out.pinned[size_t(t)] = 1;
  return out;
}

std::vector<int> importance_order(const Scores& s, int row) {
  const int T = s.tokens;
  std::vector<float> key(size_t(T), 0.0f);
  for (int t = 0; t < T; ++t) {
    if (row >= 0) {
      key[size_t(t)] = s.at(row, t);
    } else {
      for (int r = 0; r < s.rows; ++r) key[size_t(t)] += s.value[size_t(r) * T + t];
    }
  }
  std::vector<int> idx(static_cast<size_t>(T));
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int a, int b) {
    if (s.pinned[size_t(a)] != s.pinned[size_t(b)]) return s.pinned[size_t(a)] > s.pinned[size_t(b)];
    if (s.pinned[size_t(a)]) return a < b;
    if (key[size_t(a)] != key[size_t(b)]) return key[size_t(a)] > key[size_t(b)];
    return a > b;
  });
  return idx;
}

}  // namespace skv
