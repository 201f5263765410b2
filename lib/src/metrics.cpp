#include "skv/metrics.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>

#include "blas_threads.hpp"
#include "row_convert.hpp"
#include "skv/error.hpp"
#include "skv/parallel.hpp"

namespace skv {
namespace {

struct HeadStats {
  double err_sum = 0, err_max = 0;
  int64_t top1_same = 0, needle = 0, needle_orig = 0, n = 0;
};

void load_kv(const KvCache& c, int l, int h, bool value, std::vector<float>& out) {
  const int T = c.shape.tokens, D = c.shape.head_dim;
  out.resize(size_t(T) * D);
  for (int t = 0; t < T; ++t) detail::load_row(c.row(l, value, h, t), c.shape.dtype, D, &out[size_t(t) * D]);
}

std::vector<uint8_t> present_of(const KvCache& c, int l) {
  const int T = c.shape.tokens;
  std::vector<uint8_t> p(size_t(T), 1);
  const auto& m = c.layers[size_t(l)].mask;
  if (m) {
    const size_t es = dtype_size(m->dtype);
    for (int t = 0; t < T; ++t) p[size_t(t)] = m->bytes[size_t(t) * es] != std::byte{0};
  }
  return p;
}

// Softmax rows of S in place over tokens 0..last that are present; returns the argmax.
int softmax_row(float* row, int last, const std::vector<uint8_t>& present, int T) {
  float mx = -INFINITY;
  int arg = -1;
  for (int t = 0; t <= last; ++t)
    if (present[size_t(t)] && row[t] > mx) { mx = row[t]; arg = t; }
  double sum = 0;
  for (int t = 0; t < T; ++t) {
    row[t] = (t <= last && present[size_t(t)] && arg >= 0) ? std::exp(row[t] - mx) : 0.0f;
    sum += row[t];
  }
  if (sum > 0)
    for (int t = 0; t <= last; ++t) row[t] = float(row[t] / sum);
  return arg;
}

}  // namespace

AttentionMetrics attention_metrics(const KvCache& a, const KvCache& b, int threads) {
  std::vector<int> all(size_t(std::max(a.shape.window, 0)));
  for (size_t i = 0; i < all.size(); ++i) all[i] = int(i);
  return attention_metrics(a, b, all, threads);
}

AttentionMetrics attention_metrics(const KvCache& a, const KvCache& b, std::span<const int> positions,
                                   int threads) {
  const KvShape& s = a.shape;
  if (s.window <= 0 || s.q_heads <= 0 || a.layers.empty() || !a.layers[0].q)
    fail(Errc::invalid_argument, a.source, "attention metrics need observation queries");
  for (int p : positions)
    if (p < 0 || p >= s.window)
      fail(Errc::invalid_argument, a.source,
           "query position " + std::to_string(p) + " outside the window of " + std::to_string(s.window));
  const KvShape& t2 = b.shape;
  if (s.layers != t2.layers || s.kv_heads != t2.kv_heads || s.tokens != t2.tokens || s.head_dim != t2.head_dim)
    fail(Errc::invalid_argument, b.source, "decoded cache shape differs from the original");
  const int L = s.layers, H = s.kv_heads, T = s.tokens, D = s.head_dim, W = s.window, G = s.q_heads / H;
  const int P = int(positions.size());
  const bool needle = a.meta.needle_start && a.meta.needle_len;
  const int64_t n0 = needle ? *a.meta.needle_start : 0, n1 = needle ? n0 + *a.meta.needle_len : 0;
  std::vector<HeadStats> stats(size_t(L) * H);
  const detail::SingleThreadedBlas one_blas_thread;
  parallel_for(L * H, threads, [&](int task) {
    const int l = task / H, h = task % H;
    std::vector<float> K0, V0, K1, V1;
    load_kv(a, l, h, false, K0);
    load_kv(a, l, h, true, V0);
    load_kv(b, l, h, false, K1);
    load_kv(b, l, h, true, V1);
    const std::vector<uint8_t> p0 = present_of(a, l), p1 = present_of(b, l);
    const TensorView& qv = *a.layers[size_t(l)].q;
    const size_t qes = dtype_size(qv.dtype);
    const int M = G * P;
    if (M == 0) return;
    std::vector<float> Q(size_t(M) * D), S0(size_t(M) * T), S1(size_t(M) * T), O0(size_t(M) * D), O1(size_t(M) * D);
    for (int g = 0; g < G; ++g)
      for (int i = 0; i < P; ++i)
        detail::load_row(qv.bytes.data() + (size_t(h * G + g) * W + size_t(positions[size_t(i)])) * D * qes, qv.dtype, D,
                         &Q[(size_t(g) * P + i) * D]);
    const float scale = float(1.0 / std::sqrt(double(D)));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, T, D, scale, Q.data(), D, K0.data(), D, 0.0f, S0.data(), T);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, T, D, scale, Q.data(), D, K1.data(), D, 0.0f, S1.data(), T);
    HeadStats& st = stats[size_t(task)];
    std::vector<int> top0(static_cast<size_t>(M)), top1(static_cast<size_t>(M));
    for (int r = 0; r < M; ++r) {
      const int last = T - W + positions[size_t(r % P)];
      top0[size_t(r)] = softmax_row(&S0[size_t(r) * T], last, p0, T);
      top1[size_t(r)] = softmax_row(&S1[size_t(r) * T], last, p1, T);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, D, T, 1.0f, S0.data(), T, V0.data(), D, 0.0f, O0.data(), D);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, D, T, 1.0f, S1.data(), T, V1.data(), D, 0.0f, O1.data(), D);
    for (int r = 0; r < M; ++r) {
      double num = 0, den = 0;
      for (int d = 0; d < D; ++d) {
        const double x = O0[size_t(r) * D + d], y = O1[size_t(r) * D + d];
        num += (y - x) * (y - x);
        den += x * x;
      }
      const double e = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
      st.err_sum += e;
      st.err_max = std::max(st.err_max, e);
      st.top1_same += top0[size_t(r)] == top1[size_t(r)];
      st.needle += needle && top1[size_t(r)] >= n0 && top1[size_t(r)] < n1;
      st.needle_orig += needle && top0[size_t(r)] >= n0 && top0[size_t(r)] < n1;
      ++st.n;
    }
  });
  AttentionMetrics m;
  HeadStats tot;
  for (const auto& st : stats) {
    tot.err_sum += st.err_sum;
    tot.err_max = std::max(tot.err_max, st.err_max);
    tot.top1_same += st.top1_same;
    tot.needle += st.needle;
    tot.needle_orig += st.needle_orig;
    tot.n += st.n;
  }
  m.queries = tot.n;
  if (tot.n) {
    m.rel_error = tot.err_sum / double(tot.n);
    m.max_rel_error = tot.err_max;
    m.top1_agreement = double(tot.top1_same) / double(tot.n);
    if (needle) {
      m.needle_top1 = double(tot.needle) / double(tot.n);
      m.needle_top1_original = double(tot.needle_orig) / double(tot.n);
    }
  }
  return m;
}

DecodedCache round_trip(const KvCache& c, const Plan& plan, const EncodeOptions& opts) {
  VectorSink sink;
  encode(c, plan, sink, opts);
  SpanSource src(std::span<const std::byte>(sink.bytes.data(), sink.bytes.size()));
  ContainerReader reader(src, "round-trip of " + c.source);
  DecodedCache out;
  out.container_bytes = sink.bytes.size();
  out.info = reader.info();
  for (;;) {
    DecodedLayer dl;
    if (!reader.next_layer(dl)) break;
    out.layers.push_back(std::move(dl));
  }
  if (int(out.layers.size()) != c.shape.layers)
    fail(Errc::format, c.source, "round trip decoded " + std::to_string(out.layers.size()) + " layers");
  KvCache& k = out.cache;
  k.shape = c.shape;
  k.layout = c.layout;
  k.meta = c.meta;
  k.metadata = c.metadata;
  k.source = "decoded " + c.source;
  k.layers.resize(out.layers.size());
  for (size_t l = 0; l < out.layers.size(); ++l) {
    const DecodedLayer& dl = out.layers[l];
    KvLayer& kl = k.layers[l];
    kl.k = dl.k.view();
    kl.v = dl.v.view();
    kl.q = dl.q ? std::optional<TensorView>(dl.q->view()) : c.layers[l].q;
    if (dl.mask) kl.mask = dl.mask->view();
    kl.k_name = c.layers[l].k_name;
    kl.v_name = c.layers[l].v_name;
    kl.q_name = c.layers[l].q_name;
  }
  if (!out.layers.empty()) k.shape.dtype = out.layers[0].k.dtype;
  return out;
}

}  // namespace skv
