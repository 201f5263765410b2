#include "skv/score.hpp"


#include <algorithm>
#include <cmath>
#include <numeric>

#include "head_pass.hpp"
#include "layer_walk.hpp"
#include "row_convert.hpp"
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
      out.drop_mass.assign(out.head.size(), 0.0f);
      out.uniform_weight.assign(size_t(L) * H, 0.0f);
      out.top_k = detail::kTopK;
      out.group_queries = int(detail::sample_queries(s.q_heads / H, s.window, o.query_sample).rows.size());
      out.top.assign(size_t(L) * H * size_t(out.group_queries) * detail::kTopK, Scores::Top{});
    }
    detail::ScratchPool<detail::HeadPass> pool;
    const detail::QuerySample queries =
        use == Scorer::attention ? detail::sample_queries(s.q_heads / H, s.window, o.query_sample) : detail::QuerySample{};
    out.query_weight = queries.weight;
    std::vector<uint8_t> pins(size_t(T), 0);  // as out.pinned: kept out of the drop guard's order
    for (int t = 0; t < std::min(o.sinks, T); ++t) pins[size_t(t)] = 1;
    for (int t = std::max(0, T - o.recent); t < T; ++t) pins[size_t(t)] = 1;
    // Layer group by layer group, so that a mapped dump can drop each layer once it is read.
    detail::walk_layers(L, H, o.threads, [&](int l, int h) {
      const size_t task = size_t(l) * H + h;
      std::vector<float> acc;
      if (use == Scorer::attention) {
        std::unique_ptr<detail::HeadPass> scratch = pool.take();
        detail::HeadPass& a = *scratch;
        a.load(c, l, h, &queries, nullptr, pins);
        a.attend();
        a.second(true, nullptr, {}, 0, false);
        a.weights();
        detail::pool_row(a.share, o.pool, o.pool_kernel);
        detail::pool_row(a.quant, o.pool, o.pool_kernel);
        detail::pool_row(a.drop, o.pool, o.pool_kernel);
        std::copy(a.quant.begin(), a.quant.end(), out.quant_weight.begin() + ptrdiff_t(task * T));
        std::copy(a.drop.begin(), a.drop.end(), out.drop_weight.begin() + ptrdiff_t(task * T));
        std::copy(a.drop_mass.begin(), a.drop_mass.end(), out.drop_mass.begin() + ptrdiff_t(task * T));
        std::copy(a.top().begin(), a.top().end(), out.top.begin() + ptrdiff_t(task * a.top().size()));
        out.uniform_weight[task] = float(a.uniform);
        acc = std::move(a.share);
        pool.give(std::move(scratch));
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
