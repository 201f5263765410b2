#include "distortion_head.hpp"

#include <algorithm>
#include <cmath>

#include "plan_kernels.hpp"
#include "row_convert.hpp"

namespace skv::detail {
namespace {

// E|exp(x) - 1|^2 = exp(2x) - 2 exp(x/2) + 1 for a Gaussian logit error of variance x, capped at 4
// (beyond that the token's attention share is simply wrong; dropping it is as good). With
// a = e^(x/2) - 1, e^2x = (1 + a)^4 and the penalty is 2a + 6a^2 + 4a^3 + a^4: one exp and no
// cancellation between terms (the plain form cancels to nothing for the small x of most tokens).
inline double logit_penalty(double x) {
  if (x < 1e-3) return x * (1 + x * (1.75 + x * (31.0 / 24)));  // the series: next term 0.66 x^4
  if (x > 2) return 4;
  const double a = std::exp(0.5 * x) - 1;  // x >= 1e-3: cancellation costs at most 1e-13 of a
  return std::min(4.0, a * (2 + a * (6 + a * (4 + a))));
}

// Q(x) = P(N(0,1) > x): the chance a logit error of std sigma closes a gap of x * sigma.
inline double gauss_tail(double gap, double var) {
  if (!(var > 0)) return gap > 0 ? 0.0 : 0.5;
  return 0.5 * std::erfc(gap / std::sqrt(2.0 * var));
}

// Adds the expected top-1 flips of the head's window queries to the K and DROP terms (see
// skv/allocate.hpp).
void add_top1_terms(const HeadWeights& w, double cost, const std::vector<RawErrors>& e, const uint8_t* ok,
                    HeadTerms* out) {
  const int K = w.top_k;
  for (int r = 0; r < w.queries; ++r) {
    const Scores::Top* top = w.top + size_t(r) * K;
    const int a = top[0].token;
    if (a < 0 || K < 2 || top[1].token < 0) continue;
    const double gap1 = double(top[0].logit) - top[1].logit;
    if (ok[a]) {
      out[a][2] += float(cost * gauss_tail(gap1, e[size_t(a)].k8));
      out[a][3] += float(cost * gauss_tail(gap1, e[size_t(a)].k4));
      out[a][4] += float(cost);
      out[a][6] += float(cost * gauss_tail(gap1, e[size_t(a)].k2));
    }
    for (int j = 1; j < K && top[j].token >= 0; ++j) {
      const int t = top[j].token;
      if (!ok[t]) continue;
      const double gap = double(top[0].logit) - top[j].logit;
      out[t][2] += float(cost * gauss_tail(gap, e[size_t(t)].k8));
      out[t][3] += float(cost * gauss_tail(gap, e[size_t(t)].k4));
      out[t][6] += float(cost * gauss_tail(gap, e[size_t(t)].k2));
    }
  }
}

}  // namespace

std::vector<float> query_power(const KvCache& c, int l, int h) {
  const KvShape& s = c.shape;
  const KvLayer& kl = c.layers[size_t(l)];
  if (!kl.q || s.window <= 0 || s.q_heads % s.kv_heads) return {};
  const int G = s.q_heads / s.kv_heads, D = s.head_dim, W = s.window;
  const size_t es = dtype_size(kl.q->dtype);
  std::vector<double> acc(size_t(D), 0.0);
  std::vector<float> row(static_cast<size_t>(D));
  for (int j = 0; j < G * W; ++j) {
    load_row(kl.q->bytes.data() + (size_t(h) * G * W + j) * D * es, kl.q->dtype, D, row.data());
    if (all_finite(row.data(), D))
      for (int d = 0; d < D; ++d) acc[d] += double(row[d]) * row[d];
    else  // a non-finite entry counts as 0, the rest of its row as usual
      for (int d = 0; d < D; ++d) acc[d] += std::isfinite(row[d]) ? double(row[d]) * row[d] : 0.0;
  }
  std::vector<float> out(static_cast<size_t>(D));
  for (int d = 0; d < D; ++d) out[d] = float(acc[d] / (double(G) * W) / D);
  return out;
}

void head_terms(const HeadPass& hp, const HeadWeights& w, const ErrorOptions& o, HeadTerms* out, uint8_t* ok) {
  const int T = hp.tokens();
  const std::vector<RawErrors>& e = hp.errors();
  for (int t = 0; t < T; ++t) {
    ok[t] = !(hp.absent()[size_t(t)] || hp.bad()[size_t(t)]);
    out[t] = {0, 0, 0, 0, 0, 0, 0};
    if (!ok[t]) continue;
    const float wq = (w.quant ? w.quant[t] : w.share[t]) + w.floor;
    const float wd = w.quant ? w.drop[t] + w.floor : wq;
    const RawErrors& x = e[size_t(t)];
    out[t] = {wq * x.v8, wq * x.v4, float(wq * x.vdev * logit_penalty(x.k8)),
              float(wq * x.vdev * logit_penalty(x.k4)), wd * x.vdev, wq * x.v2,
              float(wq * x.vdev * logit_penalty(x.k2))};
  }
  if (w.top && o.top1_cost > 0) add_top1_terms(w, o.top1_cost * w.top_weight, e, ok, out);
}

}  // namespace skv::detail
