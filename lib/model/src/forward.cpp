// The forward pass. Activations are [tokens, features] row-major; weights [out, in], so every
// projection is one sgemm Y = X W^T. Attention runs per query head over its KV group, in query
// blocks that only touch the keys the causal mask allows.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "skv/error.hpp"
#include "skv/model/model.hpp"

namespace skv::model {
namespace {

// Y[T, out] (+)= X[T, in] . W[out, in]^T
void matmul_t(const float* X, int T, int in, const float* W, int out, float* Y, bool accumulate) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, X, in, W, in,
              accumulate ? 1.0f : 0.0f, Y, out);
}

void add_bias(float* Y, int T, const std::vector<float>& b) {
  if (b.empty()) return;
  const size_t n = b.size();
  for (int t = 0; t < T; ++t)
    for (size_t k = 0; k < n; ++k) Y[size_t(t) * n + k] += b[k];
}

void rms_norm(const float* X, int T, int d, const float* w, float eps, float* Y) {
  for (int t = 0; t < T; ++t) {
    const float* x = X + size_t(t) * size_t(d);
    float* y = Y + size_t(t) * size_t(d);
    double ss = 0;
    for (int k = 0; k < d; ++k) ss += double(x[k]) * double(x[k]);
    const float s = float(1.0 / std::sqrt(ss / d + double(eps)));
    for (int k = 0; k < d; ++k) y[k] = x[k] * s * w[k];
  }
}

// Rotates the first n_rot dims of each head of X [T, heads, head_dim] at positions p0 + t.
void rope(float* X, int T, int heads, const ModelConfig& c, int p0) {
  const int half = c.n_rot / 2;
  std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
  for (int t = 0; t < T; ++t) {
    const double pos = double(p0 + t);
    for (int i = 0; i < half; ++i) {
      const double theta = pos * std::pow(double(c.rope_theta), -2.0 * i / c.n_rot);
      cs[size_t(i)] = float(std::cos(theta));
      sn[size_t(i)] = float(std::sin(theta));
    }
    for (int h = 0; h < heads; ++h) {
      float* x = X + (size_t(t) * size_t(heads) + size_t(h)) * size_t(c.head_dim);
      for (int i = 0; i < half; ++i) {
        const int a = c.rope_style == RopeStyle::neox ? i : 2 * i;
        const int b = c.rope_style == RopeStyle::neox ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * cs[size_t(i)] - x1 * sn[size_t(i)];
        x[b] = x0 * sn[size_t(i)] + x1 * cs[size_t(i)];
      }
    }
  }
}

constexpr int kQueryBlock = 128;

// The keys a layer's attention reads: the cache itself when nothing is masked, else a compact
// copy of the present rows (so masked rows are never read, not even as 0 * NaN in a product).
struct Keys {
  const float* k = nullptr;
  const float* v = nullptr;
  size_t head_stride = 0;
  std::vector<int> pos;  // position of each compact row; empty = identity
  std::vector<float> kbuf, vbuf;

  Keys(const KvCacheObject& cache, int layer, int n) {
    const auto mask = cache.mask(layer);
    bool all = true;
    for (int j = 0; j < n && all; ++j) all = mask[size_t(j)] != 0;
    if (all) {
      k = cache.k_data(layer);
      v = cache.v_data(layer);
      head_stride = cache.head_stride();
      return;
    }
    for (int j = 0; j < n; ++j)
      if (mask[size_t(j)]) pos.push_back(j);
    const size_t hd = size_t(cache.head_dim()), m = pos.size();
    head_stride = m * hd;
    kbuf.resize(size_t(cache.kv_heads()) * head_stride);
    vbuf.resize(kbuf.size());
    for (int g = 0; g < cache.kv_heads(); ++g)
      for (size_t r = 0; r < m; ++r) {
        const size_t src = size_t(g) * cache.head_stride() + size_t(pos[r]) * hd;
        std::copy_n(cache.k_data(layer) + src, hd, kbuf.data() + size_t(g) * head_stride + r * hd);
        std::copy_n(cache.v_data(layer) + src, hd, vbuf.data() + size_t(g) * head_stride + r * hd);
      }
    k = kbuf.data();
    v = vbuf.data();
  }
  // Rows whose position is <= last.
  int count_upto(int last) const {
    if (pos.empty()) return last + 1;
    return int(std::upper_bound(pos.begin(), pos.end(), last) - pos.begin());
  }
};

// O[T, heads*hd] = softmax(Q K^T / sqrt(hd) + causal mask) V over the present cached keys.
void attention(const float* Q, int T, int p0, const KvCacheObject& cache, int layer,
               const ModelConfig& c, float* O) {
  const int hd = c.head_dim, nq = c.n_heads, group = c.n_heads / c.n_kv_heads;
  const int qstride = nq * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
  const Keys keys(cache, layer, p0 + T);
  std::vector<float> S;
  for (int h = 0; h < nq; ++h) {
    const int g = h / group;
    const float* K = keys.k + size_t(g) * keys.head_stride;
    const float* V = keys.v + size_t(g) * keys.head_stride;
    for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
      const int bt = std::min(kQueryBlock, T - t0);
      const int nk = keys.count_upto(p0 + t0 + bt - 1);  // every key some query in the block sees
      S.resize(size_t(bt) * size_t(nk));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bt, nk, hd, scale,
                  Q + size_t(t0) * size_t(qstride) + size_t(h) * size_t(hd), qstride, K, hd, 0.0f,
                  S.data(), nk);
      for (int r = 0; r < bt; ++r) {
        float* s = S.data() + size_t(r) * size_t(nk);
        const int n = keys.count_upto(p0 + t0 + r);  // causal: this query's keys are s[0, n)
        const float mx = *std::max_element(s, s + n);
        double sum = 0;
        for (int j = 0; j < n; ++j) {
          s[j] = std::exp(s[j] - mx);
          sum += s[j];
        }
        const float inv = float(1.0 / sum);
        for (int j = 0; j < n; ++j) s[j] *= inv;
        std::fill(s + n, s + nk, 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bt, hd, nk, 1.0f, S.data(), nk, V, hd,
                  0.0f, O + size_t(t0) * size_t(qstride) + size_t(h) * size_t(hd), qstride);
    }
  }
}

}  // namespace

std::vector<float> Model::forward(KvCacheObject& cache, std::span<const int32_t> tokens,
                                  size_t logits_from, QueryCapture* capture) const {
  const ModelConfig& c = cfg_;
  if (cache.layers() != c.n_layers || cache.kv_heads() != c.n_kv_heads || cache.head_dim() != c.head_dim)
    fail(Errc::invalid_argument, "forward", "the cache was made for another model shape");
  if (tokens.empty()) return {};
  if (logits_from > tokens.size()) fail(Errc::invalid_argument, "forward", "logits_from beyond the tokens");
  if (tokens.size() > size_t(1 << 24)) fail(Errc::invalid_argument, "forward", "too many tokens");
  for (int32_t id : tokens)
    if (id < 0 || id >= c.vocab)
      fail(Errc::invalid_argument, "forward", "token id " + std::to_string(id) + " is outside the vocabulary");

  const int T = int(tokens.size()), d = c.d_model, hd = c.head_dim;
  // Small batches (decode steps) run BLAS on one thread: waking worker threads for each of the
  // hundreds of tiny products costs more than it saves, badly so on a loaded machine.
  struct BlasThreads {
    int saved = 0;
    explicit BlasThreads(bool single) {
      if (single && (saved = openblas_get_num_threads()) > 1) openblas_set_num_threads(1);
      else saved = 0;
    }
    ~BlasThreads() {
      if (saved > 1) openblas_set_num_threads(saved);
    }
  } blas_threads(T < 16);
  const int qd = c.n_heads * hd, kd = c.n_kv_heads * hd, ff = c.d_ff;
  const int p0 = cache.tokens();
  cache.reserve(p0 + T);
  cache.set_tokens(p0 + T);  // new rows are written below, before anything reads them

  std::vector<float> X(size_t(T) * size_t(d)), H(X.size());
  for (int t = 0; t < T; ++t)
    std::copy_n(w_.tok_embd.data() + size_t(tokens[size_t(t)]) * size_t(d), d, X.data() + size_t(t) * size_t(d));
  std::vector<float> Q(size_t(T) * size_t(qd)), K(size_t(T) * size_t(kd)), Vv(K.size()), O(Q.size());
  std::vector<float> G(size_t(T) * size_t(ff)), U(G.size());

  if (capture) {
    capture->rows = std::min(capture->window, T);
    capture->q.assign(size_t(c.n_layers), {});
  }

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    rms_norm(X.data(), T, d, L.attn_norm.data(), c.rms_eps, H.data());
    matmul_t(H.data(), T, d, L.wq.data(), qd, Q.data(), false);
    matmul_t(H.data(), T, d, L.wk.data(), kd, K.data(), false);
    matmul_t(H.data(), T, d, L.wv.data(), kd, Vv.data(), false);
    add_bias(Q.data(), T, L.bq);
    add_bias(K.data(), T, L.bk);
    add_bias(Vv.data(), T, L.bv);
    rope(Q.data(), T, c.n_heads, c, p0);
    rope(K.data(), T, c.n_kv_heads, c, p0);
    for (int g = 0; g < c.n_kv_heads; ++g)
      for (int t = 0; t < T; ++t) {
        const size_t dst = size_t(g) * cache.head_stride() + size_t(p0 + t) * size_t(hd);
        const size_t src = size_t(t) * size_t(kd) + size_t(g) * size_t(hd);
        std::copy_n(K.data() + src, hd, cache.k_data(l) + dst);
        std::copy_n(Vv.data() + src, hd, cache.v_data(l) + dst);
      }
    if (capture && capture->rows > 0) {
      const int W = capture->rows;
      auto& q = capture->q[size_t(l)];
      q.resize(size_t(c.n_heads) * size_t(W) * size_t(hd));
      for (int h = 0; h < c.n_heads; ++h)
        for (int w = 0; w < W; ++w)
          std::copy_n(Q.data() + size_t(T - W + w) * size_t(qd) + size_t(h) * size_t(hd), hd,
                      q.data() + (size_t(h) * size_t(W) + size_t(w)) * size_t(hd));
    }
    attention(Q.data(), T, p0, cache, l, c, O.data());
    matmul_t(O.data(), T, qd, L.wo.data(), d, X.data(), true);

    rms_norm(X.data(), T, d, L.ffn_norm.data(), c.rms_eps, H.data());
    matmul_t(H.data(), T, d, L.w_gate.data(), ff, G.data(), false);
    matmul_t(H.data(), T, d, L.w_up.data(), ff, U.data(), false);
    for (size_t k = 0; k < G.size(); ++k) G[k] = G[k] / (1.0f + std::exp(-G[k])) * U[k];
    matmul_t(G.data(), T, ff, L.w_down.data(), d, X.data(), true);
  }

  const int n_out = T - int(logits_from);
  if (n_out == 0) return {};
  const float* Xo = X.data() + logits_from * size_t(d);
  rms_norm(Xo, n_out, d, w_.out_norm.data(), c.rms_eps, H.data());
  std::vector<float> logits(size_t(n_out) * size_t(c.vocab));
  const auto& head = w_.output.empty() ? w_.tok_embd : w_.output;
  matmul_t(H.data(), n_out, d, head.data(), c.vocab, logits.data(), false);
  return logits;
}

int32_t argmax(std::span<const float> logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace skv::model
