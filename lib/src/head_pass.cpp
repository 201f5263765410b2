#include "head_pass.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "plan_kernels.hpp"
#include "row_convert.hpp"
#include "skv/error.hpp"
#include "skv/quant.hpp"

namespace skv::detail {
namespace {

// Weighted squared error of one finite row at INT8 or INT4, any group size (w = nullptr weighs
// every channel 1). Analytic: every element errs by a uniform step^2/12 (the fallback of
// row_errors() for groups it does not take); exact: the reference quantizers' error.
// levels: 127 (INT8, symmetric), 15 (INT4) or 3 (INT2; asymmetric).
double group_error(const float* x, int n, int g, const float* w, int levels, bool exact) {
  double total = 0;
  int8_t q8[256];
  uint8_t q4[128];
  float y[256];
  const bool int4 = levels != 127;
  for (int s = 0; s < n; s += g) {
    const float* xs = x + s;
    if (exact) {
      uint16_t sc = 0, mn = 0;
      if (levels == 3) {
        if (!quant::q2_ref(xs, size_t(g), q4, &sc, &mn)) return 1e30;
        quant::dq2_ref(q4, size_t(g), sc, mn, nullptr, y);
      } else if (int4) {
        if (!quant::q4_ref(xs, size_t(g), q4, &sc, &mn)) return 1e30;
        quant::dq4_ref(q4, size_t(g), sc, mn, nullptr, y);
      } else {
        if (!quant::q8_ref(xs, size_t(g), q8, &sc)) return 1e30;
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
    const float step = std::min(int4 ? (hi - lo) / float(levels) : am / 127.0f, 65504.0f);
    double ws = 0;
    for (int i = 0; i < g; ++i) ws += w ? w[s + i] : 1.0f;
    total += ws * double(step) * step / 12.0;
  }
  return total;
}

// Summed weight of each group of g channels (w = nullptr: every channel 1).
std::vector<double> group_weights(const float* w, int n, int g) {
  std::vector<double> ws(size_t(n / g), 0.0);
  for (int s = 0; s < n; s += g)
    for (int i = 0; i < g; ++i) ws[size_t(s / g)] += w ? w[s + i] : 1.0f;
  return ws;
}

}  // namespace

RowErrorModel::RowErrorModel(int n, int g8, int g4, int g2, const float* w, bool exact)
    : n_(n), g8_(g8), g4_(g4), g2_(g2), w_(w), ws8_(group_weights(w, n, g8)), ws4_(group_weights(w, n, g4)),
      exact_(exact), y_(size_t(n)) {
  for (double& x : ws8_) x /= 12;  // row_errors() takes the weights of a uniform step^2 / 12 error
  for (double& x : ws4_) x /= 12;
}

bool RowErrorModel::operator()(const float* x, const float* c, const float* m, double& e8, double& e4, double& e2,
                               float& dev) {
  if (!exact_ && g8_ % g4_ == 0 && g4_ % 8 == 0 && (g2_ == g4_ || g2_ == 0))
    return row_errors(x, c, m, n_, g8_, g4_, ws8_.data(), ws4_.data(), e8, e4, e2, dev);
  if (m) {
    for (int i = 0; i < n_; ++i) y_[size_t(i)] = x[i] - m[i];
    dev = sum_squares(y_.data(), n_);
  } else {
    dev = 0;
  }
  for (int i = 0; i < n_; ++i) y_[size_t(i)] = c ? x[i] - c[i] : x[i];
  if (!all_finite(y_.data(), n_)) return false;
  e8 = group_error(y_.data(), n_, g8_, w_, 127, exact_);
  e4 = group_error(y_.data(), n_, g4_, w_, 15, exact_);
  e2 = g2_ ? group_error(y_.data(), n_, g2_, w_, 3, exact_) : 0;
  return true;
}

QuerySample sample_queries(int group_heads, int window, int count) {
  const int n = group_heads * window;
  QuerySample q;
  if (count <= 0 || count >= n) {
    q.rows.resize(size_t(n));
    for (int j = 0; j < n; ++j) q.rows[size_t(j)] = j;
    return q;
  }
  // Positions evenly spread over the window (the middle of each of `count` strata), heads taken in
  // turn: every query head and the whole window are represented. Samples sharing a position are
  // consecutive and fewer than the heads (count <= heads * window), so they take distinct heads.
  for (int r = 0; r < count; ++r) {
    const int i = int((int64_t(2 * r + 1) * window) / (2 * int64_t(count)));
    q.rows.push_back((r % group_heads) * window + i);
  }
  std::sort(q.rows.begin(), q.rows.end());
  q.weight = float(double(n) / double(count));
  return q;
}

ErrorSetup make_error_setup(const KvCache& c, const QuantSettings& q, KeyTransform tf) {
  ErrorSetup s{c.shape.layers, c.shape.kv_heads, c.shape.tokens, c.shape.head_dim, 0, 0, 0, tf, std::nullopt};
  s.g8 = q.int8_group ? q.int8_group : s.D;
  s.g4 = q.int4_group ? q.int4_group : s.D;
  if (q.int2) {  // the INT2 groups as the codec resolves them
    s.g2 = q.int2_group == QuantSettings::kAutoGroup ? std::gcd(32, s.D) : q.int2_group ? q.int2_group : s.D;
    if (s.D % s.g2 || s.g2 % 4 || s.g2 > 256)
      fail(Errc::invalid_argument, c.source,
           "INT2 group " + std::to_string(s.g2) + " must be a multiple of 4, divide head_dim " + std::to_string(s.D) +
               " and be at most 256");
  }
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

void HeadPass::load(const KvCache& c, int l, int h, const QuerySample* qs, const ErrorSetup* setup,
                    const std::vector<uint8_t>& pinned) {
  const KvShape& s = c.shape;
  c_ = &c;
  l_ = l;
  h_ = h;
  T_ = s.tokens;
  D_ = s.head_dim;
  W_ = s.window;
  const int T = T_, D = D_;
  R_ = qs ? int(qs->rows.size()) : 0;
  pinned_ = pinned;
  weight_ = qs ? qs->weight : 1.0f;
  kb_.resize(size_t(kRows) * D);
  vb_.resize(size_t(kRows) * D);
  absent_.assign(size_t(T), 0);
  bad_.assign(size_t(T), 0);
  ksum_.assign(size_t(D), 0.0);
  vsum_.assign(size_t(D), 0.0);
  nsum_ = 0;
  if (const auto& mask = c.layers[size_t(l)].mask) {
    const size_t es = dtype_size(mask->dtype);
    for (int t = 0; t < T; ++t) absent_[size_t(t)] = mask->bytes[size_t(t) * es] == std::byte{0};
  }
  if (R_ > 0) {  // the sampled queries, scaled for logits q.k / sqrt(d)
    const TensorView& qv = *c.layers[size_t(l)].q;
    const size_t qes = dtype_size(qv.dtype);
    const int G = s.q_heads / s.kv_heads;
    const float scale = float(1.0 / std::sqrt(double(D)));
    Q_.resize(size_t(R_) * D);
    qrow_.resize(size_t(R_));
    for (int r = 0; r < R_; ++r) {
      const int j = qs->rows[size_t(r)];
      qrow_[size_t(r)] = j % W_;
      float* q = &Q_[size_t(r) * D];
      load_row(qv.bytes.data() + (size_t(h) * G * W_ + size_t(j)) * D * qes, qv.dtype, D, q);
      for (int d = 0; d < D; ++d) q[d] *= scale;  // logits q.k / sqrt(d)
    }
    S_.resize(size_t(R_) * T);
  }
  prerope_ = setup && setup->tf == KeyTransform::prerope_centre ? &*setup->rope : nullptr;
  double v2 = 0;
  // One streaming pass in blocks of kRows rows, converted into L1-sized buffers: their logits
  // (on the keys as stored), finiteness, |v|^2, and the key / value sums (keys moved into the
  // transform's space first). The sums go through f32 per kSumRows rows (exact enough for a mean;
  // cheaper than f64 per element). Nothing of the head is kept but these: second() reads the
  // rows again (from cache: a head is a few MiB).
  std::vector<float> kacc(static_cast<size_t>(D)), vacc(static_cast<size_t>(D));
  std::vector<uint8_t> use(static_cast<size_t>(kRows));
  for (int t0 = 0; t0 < T; t0 += kRows) {
    const int n = std::min(kRows, T - t0);
    if (t0 % kSumRows == 0) {
      std::fill(kacc.begin(), kacc.end(), 0.0f);
      std::fill(vacc.begin(), vacc.end(), 0.0f);
    }
    load_block(t0, n, false, kb_.data());
    load_block(t0, n, true, vb_.data());
    if (R_ > 0) block_logits(Q_.data(), R_, kb_.data(), n, D, &S_[size_t(t0)], T);
    // Finiteness and |v|^2 block by block; row by row only in a block that holds a non-finite value.
    float ss = 0;
    const bool fine = all_finite(kb_.data(), n * D) && finite_sum_squares32(vb_.data(), n * D, ss) && std::isfinite(ss);
    if (fine) v2 += ss;
    for (int i = 0; i < n && !fine; ++i) {
      const int t = t0 + i;
      float* k = &kb_[size_t(i) * D];
      float* v = &vb_[size_t(i) * D];
      float r2 = 0;
      const bool kfin = all_finite(k, D), vfin = finite_sum_squares(v, D, r2);
      bad_[size_t(t)] = !(kfin && vfin);
      if (vfin && std::isfinite(r2)) {
        v2 += r2;
      } else {  // V's non-finite entries zeroed (one must not poison every output); huge ones need doubles
        double r = 0;
        for (int d = 0; d < D; ++d) {
          v[d] = std::isfinite(v[d]) ? v[d] : 0.0f;
          r += double(v[d]) * v[d];
        }
        v2 += r;
      }
    }
    for (int i = 0; i < n; ++i) {
      const int t = t0 + i;
      use[size_t(i)] = !absent_[size_t(t)] && (pinned.empty() || !pinned[size_t(t)]) && !bad_[size_t(t)];
      if (use[size_t(i)] && prerope_) prerope_->layer(l).rotate(&kb_[size_t(i) * D], t, true);
      nsum_ += use[size_t(i)];
    }
    add_rows(kacc.data(), kb_.data(), n, D, use.data());
    add_rows(vacc.data(), vb_.data(), n, D, use.data());
    if ((t0 + n) % kSumRows == 0 || t0 + n == T)
      for (int d = 0; d < D; ++d) {
        ksum_[size_t(d)] += kacc[size_t(d)];
        vsum_[size_t(d)] += vacc[size_t(d)];
      }
  }
  v2_ = v2;
}

void HeadPass::load_block(int t0, int n, bool values, float* out) const {
  const DType dt = c_->shape.dtype;
  if (c_->layout == Layout::HTD) return load_row(c_->row(l_, values, h_, t0), dt, n * D_, out);  // contiguous rows
  for (int i = 0; i < n; ++i) load_row(c_->row(l_, values, h_, t0 + i), dt, D_, out + size_t(i) * D_);
}

int HeadPass::rows(int t0, bool keys, bool values) {
  const int n = std::min(kRows, T_ - t0);
  if (keys) load_block(t0, n, false, kb_.data());
  if (values) load_block(t0, n, true, vb_.data());
  for (int i = 0; i < n; ++i) {
    const int t = t0 + i;
    if (keys && prerope_ && !bad_[size_t(t)]) prerope_->layer(l_).rotate(&kb_[size_t(i) * D_], t, true);
    if (values && bad_[size_t(t)]) {
      float* v = &vb_[size_t(i) * D_];
      for (int d = 0; d < D_; ++d) v[d] = std::isfinite(v[d]) ? v[d] : 0.0f;
    }
  }
  return n;
}

void HeadPass::attend() {
  const int T = T_;
  top_.assign(size_t(R_) * kTopK, Scores::Top{});
  live_.assign(size_t(R_), 0);
  int32_t idx[kTopK];
  float val[kTopK];
  for (int r = 0; r < R_; ++r) {
    const int last = T - W_ + qrow_[size_t(r)];  // causal: sees tokens 0..last
    float* row = &S_[size_t(r) * T];
    const float mx = mask_and_max(row, last + 1, absent_.data());  // absent or NaN keys: no weight
    live_[size_t(r)] = std::isfinite(mx);
    if (!live_[size_t(r)]) {  // non-finite queries or keys: no information
      std::fill(row, row + T, 0.0f);
      continue;
    }
    // The query's top candidates by logit (ties: earlier token first, as the metric's argmax).
    const int n = top_k(row, last + 1, kTopK, idx, val);
    Scores::Top* top = &top_[size_t(r) * kTopK];
    for (int j = 0; j < n; ++j) top[j] = {idx[j], val[j]};
    const float sum = exp_shifted(row, last + 1, mx);
    scale_row(row, last + 1, 1.0f / sum);
    std::fill(row + last + 1, row + T, 0.0f);
  }
}

void HeadPass::second(bool outputs, const ErrorSetup* setup, const std::vector<float>& C, double logit_spread,
                      bool exact) {
  const int T = T_, D = D_;
  outputs = outputs && R_ > 0;
  if (setup) {
    if (nsum_ == 0) {  // every token pinned: take the mean over all present finite tokens
      for (int t0 = 0; t0 < T; t0 += kRows) {
        const int n = rows(t0, true, true);
        for (int i = 0; i < n; ++i)
          if (!absent_[size_t(t0 + i)] && !bad_[size_t(t0 + i)]) {
            for (int d = 0; d < D; ++d) {
              ksum_[size_t(d)] += kb_[size_t(i) * D + d];
              vsum_[size_t(d)] += vb_[size_t(i) * D + d];
            }
            ++nsum_;
          }
      }
    }
    err_.assign(size_t(T), RawErrors{});
  }
  const double n = std::max(nsum_, 1.0);
  std::vector<float> vbar(static_cast<size_t>(D)), centre(static_cast<size_t>(D));
  for (int d = 0; d < D; ++d) {
    vbar[size_t(d)] = float(vsum_[size_t(d)] / n);
    centre[size_t(d)] = float(ksum_[size_t(d)] / n);
  }
  std::vector<float> Ck = C;
  if (setup && Ck.empty()) {  // isotropic queries whose logits spread by logit_spread over tokens
    double k2 = 0;
    for (int t0 = 0; t0 < T; t0 += kRows) {
      const int m = rows(t0, true, false);
      for (int i = 0; i < m; ++i)
        if (!absent_[size_t(t0 + i)] && !bad_[size_t(t0 + i)])
          for (int d = 0; d < D; ++d) {
            const double x = double(kb_[size_t(i) * D + d]) - centre[size_t(d)];
            k2 += x * x;
          }
    }
    const double spread = k2 / n;
    Ck.assign(size_t(D), float(logit_spread * logit_spread / std::max(spread, 1e-20)));
  }
  const bool centred = setup && setup->tf != KeyTransform::none;
  std::optional<RowErrorModel> ve, ke;
  if (setup) {
    ve.emplace(D, setup->g8, setup->g4, setup->g2, nullptr, exact);
    ke.emplace(D, setup->g8, setup->g4, setup->g2, Ck.data(), exact);
  }
  if (outputs) O_.assign(size_t(R_) * D, 0.0f);
  if (!setup && !outputs) return;
  // The second streaming pass: o_r = p_r V block by block, and each token's raw errors.
  for (int t0 = 0; t0 < T; t0 += kRows) {
    const int m = rows(t0, setup != nullptr, true);
    if (outputs) block_pv(&S_[size_t(t0)], R_, T, vb_.data(), m, D, O_.data());
    for (int i = 0; i < m && setup; ++i) {
      const int t = t0 + i;
      if (absent_[size_t(t)] || bad_[size_t(t)]) continue;
      double v8, v4, v2, k8, k4, k2;
      float vdev, kdev;
      (*ve)(&vb_[size_t(i) * D], nullptr, vbar.data(), v8, v4, v2, vdev);  // the values' errors, and their deviation from the mean
      (*ke)(&kb_[size_t(i) * D], centred ? centre.data() : nullptr, nullptr, k8, k4, k2, kdev);
      err_[size_t(t)] = {float(v8), float(v4), vdev, float(k8), float(k4), float(v2), float(k2)};
    }
  }
}

void HeadPass::weights() {
  const int T = T_, D = D_;
  share.assign(size_t(T), 0.0f);
  quant.assign(size_t(T), 0.0f);
  drop.assign(size_t(T), 0.0f);
  uniform = 0;
  // Present tokens among 0..t, for each query's uniform reference.
  std::vector<int> seen(static_cast<size_t>(T));
  for (int t = 0, n = 0; t < T; ++t) seen[size_t(t)] = n += !absent_[size_t(t)];
  const double o2_floor = std::max(1e-2 * v2_ / T, 1e-30);  // |o|^2 floor: a near-zero output cannot dominate
  for (int r = 0; r < R_; ++r) {
    if (!live_[size_t(r)]) continue;
    const int last = T - W_ + qrow_[size_t(r)];
    double o2 = 0;
    for (int d = 0; d < D; ++d) o2 += double(O_[size_t(r) * D + d]) * O_[size_t(r) * D + d];
    const double inv_o2 = 1.0 / std::max(o2, o2_floor);
    const double n = seen[size_t(last)];
    uniform += inv_o2 / (n * n);
    add_weights(&S_[size_t(r) * T], last + 1, float(inv_o2), share.data(), quant.data(), drop.data());
  }
  // The drop guard's masses: tokens in increasing order of attention share (pinned ones never
  // drop); a token's mass is the largest share of any scored query taken by it and every token
  // before it, i.e. what that query loses if all of them are dropped. Any fixed order keeps that
  // bound; the order is by share to an eighth of a decade (a counting sort: no comparisons).
  drop_mass.assign(size_t(T), INFINITY);
  if (R_ > 0) {
    constexpr int kBuckets = 128;  // 16 decades below the largest share, 8 buckets a decade
    float top = 0;
    for (int t = 0; t < T; ++t) top = std::max(top, share[size_t(t)]);
    std::vector<int> bucket(size_t(T), -1), start(kBuckets + 1, 0), order;
    for (int t = 0; t < T; ++t) {
      if (absent_[size_t(t)] || (!pinned_.empty() && pinned_[size_t(t)])) continue;
      const float x = share[size_t(t)];
      const int b = x > 0 && top > 0 ? std::clamp(int(8 * std::log10(x / top)) + kBuckets - 1, 0, kBuckets - 1) : 0;
      bucket[size_t(t)] = b;
      ++start[size_t(b) + 1];
    }
    for (int b = 0; b < kBuckets; ++b) start[size_t(b) + 1] += start[size_t(b)];
    order.resize(size_t(start[kBuckets]));
    for (int t = 0; t < T; ++t)
      if (bucket[size_t(t)] >= 0) order[size_t(start[size_t(bucket[size_t(t)])]++)] = t;
    for (int t : order) drop_mass[size_t(t)] = 0;
    for (int r = 0; r < R_; ++r) {
      const float* p = &S_[size_t(r) * T];
      float lost = 0;
      for (int t : order) {
        lost += p[t];
        drop_mass[size_t(t)] = std::max(drop_mass[size_t(t)], lost);
      }
    }
    // Each query's running sum never decreases along the order, so neither does their maximum:
    // the masses are already a prefix bound.
  }
  if (weight_ != 1.0f) {
    scale_row(share.data(), T, weight_);
    scale_row(quant.data(), T, weight_);
    scale_row(drop.data(), T, weight_);
    uniform *= weight_;
  }
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

}  // namespace skv::detail
