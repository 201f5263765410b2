// Error measurement for the distortion-aware allocator (see skv/allocate.hpp for the model): the
// walks over the cache. The per-head arithmetic is in distortion_head.cpp / attention_head.cpp.
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "distortion_head.hpp"
#include "layer_walk.hpp"
#include "row_convert.hpp"
#include "scratch_pool.hpp"
#include "skv/allocate.hpp"
#include "skv/error.hpp"

namespace skv {
namespace {

// Heads of a layer group run in parallel, each writing its own terms; the group's terms are then
// summed over heads in head order: the same float additions, in the same order, as a sequential
// walk, so the tables never depend on the thread count.
class TermTable {
 public:
  TermTable(const KvCache& c, int threads)
      : c_(c), H_(c.shape.kv_heads), T_(c.shape.tokens),
        G_(std::min(detail::layers_per_group(H_, threads), c.shape.layers)),
        terms_(size_t(G_) * H_ * T_), ok_(terms_.size()), mass_(terms_.size()) {
    d.layers = c.shape.layers;
    d.tokens = T_;
    const size_t n = size_t(d.layers) * T_;
    d.k.assign(n, {});
    d.v.assign(n, {});
    d.drop.assign(n, 0.0f);
    d.forced.assign(n, 0);
    d.drop_mass.assign(n, 0.0f);
  }
  detail::HeadTerms* terms(int l, int h) { return &terms_[(size_t(l % G_) * H_ + h) * T_]; }
  uint8_t* ok(int l, int h) { return &ok_[(size_t(l % G_) * H_ + h) * T_]; }
  float* mass(int l, int h) { return &mass_[(size_t(l % G_) * H_ + h) * T_]; }

  void sum_heads(int l0, int n) {
    for (int l = l0; l < l0 + n; ++l) {
      const std::optional<TensorView>& mask = c_.layers[size_t(l)].mask;
      const size_t es = mask ? dtype_size(mask->dtype) : 0;
      for (int t = 0; t < T_; ++t) {
        const size_t e = size_t(l) * T_ + t;
        if (mask && mask->bytes[size_t(t) * es] == std::byte{0}) {  // masked out: must drop
          d.forced[e] = 2;
          continue;
        }
        for (int h = 0; h < H_; ++h) {
          const size_t i = (size_t(l % G_) * H_ + h) * T_ + t;
          d.drop_mass[e] = std::max(d.drop_mass[e], mass_[i]);
          if (!ok_[i]) {  // non-finite in this head: must stay FP16
            d.forced[e] = 1;
            continue;
          }
          const auto& x = terms_[i];
          d.v[e][1] += x[0];
          d.v[e][2] += x[1];
          d.k[e][1] += x[2];
          d.k[e][2] += x[3];
          d.drop[e] += x[4];
          d.v[e][size_t(Tier::INT2)] += x[5];
          d.k[e][size_t(Tier::INT2)] += x[6];
        }
      }
    }
  }

  Distortion d;

 private:
  const KvCache& c_;
  int H_, T_, G_;
  std::vector<detail::HeadTerms> terms_;
  std::vector<uint8_t> ok_;
  std::vector<float> mass_;
};

// The drop guard from a score alone (no per-query attention): the score as one query's share.
void share_masses(const float* share, const std::vector<uint8_t>& absent, const std::vector<uint8_t>& pinned, int T,
                  float* mass) {
  std::vector<int> order;
  for (int t = 0; t < T; ++t) {
    mass[t] = INFINITY;
    if (!absent[size_t(t)] && (pinned.empty() || !pinned[size_t(t)])) order.push_back(t);
  }
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return share[a] < share[b]; });
  float lost = 0;
  for (int t : order) mass[t] = lost += share[t];
}

void check_scores(const KvCache& c, const Scores& sc) {
  if (sc.tokens != c.shape.tokens) fail(Errc::invalid_argument, c.source, "scores do not match the cache's token count");
}

}  // namespace

Distortion measure_distortion(const KvCache& c, const Scores& sc, const QuantSettings& q, const ErrorOptions& o) {
  const detail::ErrorSetup s = detail::make_error_setup(c, q, q.key_transform);
  check_scores(c, sc);
  const int H = s.H, T = s.T;
  TermTable table(c, o.threads);
  const bool second = !sc.quant_weight.empty();
  struct Scratch {
    detail::HeadPass pass;
    std::vector<float> share;
  };
  detail::ScratchPool<Scratch> pool;
  // The score of each token in head h of layer l (the head's when known, else the layer's).
  auto shares = [&](int l, int h, std::vector<float>& buf) {
    buf.resize(size_t(T));
    for (int t = 0; t < T; ++t) buf[size_t(t)] = sc.at(l, h, t);
    return buf.data();
  };
  auto task = [&](int l, int h) {
    std::unique_ptr<Scratch> scratch = pool.take();
    detail::HeadPass& hp = scratch->pass;
    hp.load(c, l, h, nullptr, &s, sc.pinned);
    hp.second(false, &s, detail::query_power(c, l, h), o.logit_spread, o.model == ErrorModel::exact);
    const size_t row0 = (size_t(l) * H + h) * T;
    detail::HeadWeights w;
    if (second) {
      // Second-moment weights, floored at second_moment_floor of a uniformly attended token's,
      // so that tokens the window ignores still count.
      w.quant = &sc.quant_weight[row0];
      w.drop = &sc.drop_weight[row0];
      w.floor = float(o.second_moment_floor * sc.uniform_weight[size_t(l) * H + h]);
    } else {
      w.share = shares(l, h, scratch->share);
      w.floor = float(o.weight_floor / T);
    }
    if (!sc.drop_mass.empty())
      std::copy_n(&sc.drop_mass[row0], T, table.mass(l, h));
    else
      share_masses(shares(l, h, scratch->share), hp.absent(), sc.pinned, T, table.mass(l, h));
    if (!sc.top.empty()) {
      w.top = &sc.top[(size_t(l) * sc.kv_heads + h) * size_t(sc.group_queries) * sc.top_k];
      w.queries = sc.group_queries;
      w.top_k = sc.top_k;
      w.top_weight = sc.query_weight;
    }
    detail::head_terms(hp, w, o, table.terms(l, h), table.ok(l, h));
    pool.give(std::move(scratch));
  };
  detail::walk_layers(s.L, H, o.threads, task, [&](int l0, int n) { table.sum_heads(l0, n); }, o.layer_done);
  return std::move(table.d);
}

Distortion measure_distortion_fused(const KvCache& c, const ScoreOptions& so, const QuantSettings& q,
                                    const ErrorOptions& o, std::vector<uint8_t>* pinned_out) {
  const KvShape& sh = c.shape;
  const bool has_q = sh.window > 0 && sh.q_heads > 0 && !c.layers.empty() && c.layers[0].q.has_value();
  if (!has_q) fail(Errc::invalid_argument, c.source, "attention scoring needs observation queries (layers.N.q)");
  if (sh.q_heads % sh.kv_heads != 0 || sh.window > sh.tokens)
    fail(Errc::invalid_argument, c.source, "queries: q_heads must be a multiple of kv_heads and window <= tokens");
  if (so.pool_kernel < 1 || so.pool_kernel % 2 == 0)
    fail(Errc::invalid_argument, c.source, "pool kernel must be odd and >= 1");
  const detail::ErrorSetup s = detail::make_error_setup(c, q, q.key_transform);
  const int H = s.H, T = s.T;
  std::vector<uint8_t> pinned(size_t(T), 0);
  for (int t = 0; t < std::min(so.sinks, T); ++t) pinned[size_t(t)] = 1;
  for (int t = std::max(0, T - so.recent); t < T; ++t) pinned[size_t(t)] = 1;
  const detail::QuerySample qs = detail::sample_queries(sh.q_heads / H, sh.window, so.query_sample);
  TermTable table(c, o.threads);
  detail::ScratchPool<detail::HeadPass> pool;
  auto task = [&](int l, int h) {
    std::unique_ptr<detail::HeadPass> scratch = pool.take();
    detail::HeadPass& hp = *scratch;
    hp.load(c, l, h, &qs, &s, pinned);
    hp.attend();
    hp.second(true, &s, detail::query_power(c, l, h), o.logit_spread, o.model == ErrorModel::exact);
    hp.weights();
    detail::pool_row(hp.quant, so.pool, so.pool_kernel);
    detail::pool_row(hp.drop, so.pool, so.pool_kernel);
    detail::HeadWeights w;
    w.quant = hp.quant.data();
    w.drop = hp.drop.data();
    w.floor = float(o.second_moment_floor * float(hp.uniform));  // as measure_distortion reads Scores
    w.top = hp.top().data();
    w.queries = hp.queries();
    w.top_k = detail::kTopK;
    w.top_weight = hp.query_weight();
    detail::head_terms(hp, w, o, table.terms(l, h), table.ok(l, h));
    std::copy(hp.drop_mass.begin(), hp.drop_mass.end(), table.mass(l, h));
    pool.give(std::move(scratch));
  };
  detail::walk_layers(s.L, H, o.threads, task, [&](int l0, int n) { table.sum_heads(l0, n); }, o.layer_done);
  if (pinned_out) *pinned_out = std::move(pinned);
  return std::move(table.d);
}

std::array<double, 3> key_transform_errors(const KvCache& c, const QuantSettings& q,
                                           const std::vector<uint8_t>& pinned, int threads,
                                           const std::function<void(int)>& layer_done) {
  std::array<double, 3> out{-1, -1, -1};
  const int L = c.shape.layers, H = c.shape.kv_heads, T = c.shape.tokens, D = c.shape.head_dim;
  const bool rope = c.meta.prerope_ok(c.shape);
  const detail::ErrorSetup s = detail::make_error_setup(c, q, KeyTransform::none);
  // A sample of unpinned tokens, evenly spread, the same in every head: about 16k rows over the
  // whole cache (32 to 128 a head, at most a sixteenth of the tokens) decide one global choice
  // between errors that differ by factors (a step must cut a quarter); more would only cost time.
  std::vector<int> cand;
  for (int t = 0; t < T; ++t)
    if (pinned.empty() || !pinned[size_t(t)]) cand.push_back(t);
  if (cand.empty()) cand.push_back(T - 1);
  const int per_head = int(std::min<int64_t>(std::clamp<int64_t>(16384 / (int64_t(L) * H), 32, 128),
                                             std::max(32, T / 16)));
  std::vector<int> sample;
  const size_t n = std::min(cand.size(), size_t(per_head));
  for (size_t k = 0; k < n; ++k) sample.push_back(cand[(2 * k + 1) * cand.size() / (2 * n)]);
  // RoPE angles of the sampled positions only, per distinct parameter set of the layers.
  struct Angles {
    RopeParams params;
    detail::RopeTable table;
    std::vector<float> cs, sn;
  };
  std::vector<Angles> angles;
  std::vector<int> layer_angles(size_t(L), 0);
  for (int l = 0; l < L && rope; ++l) {
    const RopeParams p = c.meta.rope_for_layer(l);
    size_t i = 0;
    while (i < angles.size() && !(angles[i].params == p)) ++i;
    if (i == angles.size()) {
      Angles a{p, detail::RopeTable(p, c.meta.rope_style, D), std::vector<float>(sample.size() * size_t(D / 2)), {}};
      a.sn.resize(a.cs.size());
      for (size_t j = 0; j < sample.size(); ++j)
        a.table.angles(c.meta.position_offset + sample[j], &a.cs[j * size_t(D / 2)], &a.sn[j * size_t(D / 2)]);
      angles.push_back(std::move(a));
    }
    layer_angles[size_t(l)] = int(i);
  }
  const int variants = rope ? 3 : 2;
  const size_t tasks = size_t(L) * H;
  std::vector<double> per(size_t(variants) * tasks, 0.0);  // [transform, layer, head]
  struct Scratch {
    std::vector<float> rows;  // [variant][sample][D]: plain keys, then keys with RoPE undone
  };
  detail::ScratchPool<Scratch> pool;
  // One walk over the cache: each sampled row is read once and measured under every transform.
  detail::walk_layers(L, H, threads, [&](int l, int h) {
    const std::vector<float> C = detail::query_power(c, l, h);
    const float* w = C.empty() ? nullptr : C.data();
    std::unique_ptr<Scratch> scratch = pool.take();
    const size_t m = sample.size();
    std::vector<float>& rows = scratch->rows;
    rows.resize(2 * m * size_t(D));
    std::vector<double> mean(size_t(2 * D), 0.0);
    for (size_t i = 0; i < m; ++i) {
      float* x = &rows[i * D];
      detail::load_row(c.row(l, false, h, sample[i]), c.shape.dtype, D, x);
      for (int d = 0; d < D; ++d) x[d] = std::isfinite(x[d]) ? x[d] : 0.0f;
      if (rope) {
        float* y = &rows[(m + i) * D];
        std::copy(x, x + D, y);
        const Angles& a = angles[size_t(layer_angles[size_t(l)])];
        a.table.undo(y, &a.cs[i * size_t(D / 2)], &a.sn[i * size_t(D / 2)]);
        for (int d = 0; d < D; ++d) mean[size_t(D + d)] += y[d];
      }
      for (int d = 0; d < D; ++d) mean[size_t(d)] += x[d];
    }
    detail::RowErrorModel error(D, s.g8, s.g4, 0, w);
    std::vector<float> centre(static_cast<size_t>(D));
    for (int v = 0; v < variants; ++v) {
      const float* base = &rows[(v == 2 ? m : 0) * D];
      for (int d = 0; d < D; ++d) centre[size_t(d)] = v == 0 ? 0.0f : float(mean[size_t((v == 2 ? D : 0) + d)] / double(m));
      double acc = 0;
      for (size_t i = 0; i < m; ++i) {
        double e8 = 0, e4 = 0, e2 = 0;
        float dev;
        error(base + i * D, v == 0 ? nullptr : centre.data(), nullptr, e8, e4, e2, dev);
        acc += e8 + e4;
      }
      per[size_t(v) * tasks + size_t(l) * H + h] = acc;
    }
    pool.give(std::move(scratch));
  }, {}, layer_done);
  for (int v = 0; v < variants; ++v) {
    double sum = 0;
    for (size_t j = 0; j < tasks; ++j) sum += per[size_t(v) * tasks + j];
    out[size_t(v)] = sum;
  }
  return out;
}

}  // namespace skv
