// GPU attention scores against a scalar CPU statement of the same definition (the policy
// scorer's head_attention + pool_row + normalise), to float tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "gpu_util.hpp"
#include "skv/cuda/attention.hpp"
#include "skv/half.hpp"
#include "test_data.hpp"

namespace skv::cuda::test {
namespace {

std::vector<float> cpu_scores(const AttentionShape& s, const std::vector<float>& q, const std::vector<float>& k) {
  const int H = s.kv_heads, T = s.tokens, D = s.head_dim, W = s.window, G = s.q_heads / s.kv_heads;
  const float alpha = float(1.0 / std::sqrt(double(D)));
  std::vector<float> out(size_t(H) * size_t(T));
  for (int h = 0; h < H; ++h) {
    std::vector<float> acc(size_t(T), 0.0f);
    std::vector<float> row(static_cast<size_t>(T));
    for (int g = 0; g < G; ++g)
      for (int i = 0; i < W; ++i) {
        const float* qr = &q[((size_t(h) * G + size_t(g)) * W + size_t(i)) * D];
        const int last = T - W + i;
        float mx = -INFINITY;
        for (int t = 0; t <= last; ++t) {
          const size_t kr = s.layout == Layout::THD ? size_t(t) * H + size_t(h) : size_t(h) * T + size_t(t);
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(qr[d]) * double(k[kr * D + size_t(d)]);
          row[size_t(t)] = float(dot) * alpha;
          mx = std::max(mx, row[size_t(t)]);
        }
        double sum = 0;
        for (int t = 0; t <= last; ++t) {
          row[size_t(t)] = std::exp(row[size_t(t)] - mx);
          sum += row[size_t(t)];
        }
        const float inv = float(1.0 / sum);
        for (int t = 0; t <= last; ++t) acc[size_t(t)] += row[size_t(t)] * inv;
      }
    std::vector<float> pooled = acc;
    if (s.pool != PoolKind::none && s.pool_kernel > 1) {
      const int r = s.pool_kernel / 2;
      for (int t = 0; t < T; ++t) {
        const int lo = std::max(0, t - r), hi = std::min(T - 1, t + r);
        float m = s.pool == PoolKind::max ? acc[size_t(lo)] : 0.0f;
        for (int j = lo; j <= hi; ++j) m = s.pool == PoolKind::max ? std::max(m, acc[size_t(j)]) : m + acc[size_t(j)];
        pooled[size_t(t)] = s.pool == PoolKind::max ? m : m / float(s.pool_kernel);
      }
    }
    double sum = 0;
    for (float x : pooled) sum += x;
    for (int t = 0; t < T; ++t) out[size_t(h) * T + size_t(t)] = float(pooled[size_t(t)] / sum);
  }
  return out;
}

TEST_F(Gpu, AttentionScoresMatchCpu) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  struct Shape { int H, Hq, W, T, D; DType dt; Layout layout; PoolKind pool; int kernel; };
  for (const Shape& sh : {Shape{2, 8, 8, 100, 64, DType::F16, Layout::HTD, PoolKind::max, 5},
                          Shape{1, 1, 1, 1, 128, DType::F32, Layout::HTD, PoolKind::avg, 7},
                          Shape{4, 8, 16, 333, 128, DType::BF16, Layout::THD, PoolKind::avg, 5},
                          Shape{2, 4, 5, 40, 80, DType::F16, Layout::THD, PoolKind::none, 1},
                          Shape{1, 2, 3, 70, 256, DType::F32, Layout::HTD, PoolKind::max, 3}}) {
    SCOPED_TRACE("H=" + std::to_string(sh.H) + " T=" + std::to_string(sh.T) + " D=" + std::to_string(sh.D));
    AttentionShape s;
    s.kv_heads = sh.H;
    s.q_heads = sh.Hq;
    s.window = sh.W;
    s.tokens = sh.T;
    s.head_dim = sh.D;
    s.k_dtype = s.q_dtype = sh.dt;
    s.layout = sh.layout;
    s.pool = sh.pool;
    s.pool_kernel = sh.kernel;
    const size_t nk = size_t(sh.H) * sh.T * sh.D, nq = size_t(sh.Hq) * sh.W * sh.D;
    std::vector<float> k(nk), q(nq);
    for (auto& x : k) x = nd(rng) * 2.0f;
    for (auto& x : q) x = nd(rng) * 2.0f;
    // Round through the dtype so the CPU sees exactly what the GPU reads.
    std::vector<uint8_t> kb(nk * dtype_size(sh.dt)), qb(nq * dtype_size(sh.dt));
    for (size_t i = 0; i < nk; ++i) {
      put_value(kb, i, sh.dt, k[i]);
      k[i] = sh.dt == DType::F32 ? k[i] : sh.dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(k[i])) : f16_to_f32(f32_to_f16(k[i]));
    }
    for (size_t i = 0; i < nq; ++i) {
      put_value(qb, i, sh.dt, q[i]);
      q[i] = sh.dt == DType::F32 ? q[i] : sh.dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(q[i])) : f16_to_f32(f32_to_f16(q[i]));
    }
    const std::vector<float> want = cpu_scores(s, q, k);
    DevBuf dk(kb.size()), dq(qb.size()), out(size_t(sh.H) * sh.T * 4), ws(attention_workspace_bytes(s));
    dk.upload(kb);
    dq.upload(qb);
    attention_scores_async(s, dq.get(), dk.get(), out.get<float>(), ws.get(), attention_workspace_bytes(s), nullptr);
    const auto bytes = out.download(size_t(sh.H) * sh.T * 4);
    std::vector<float> got(size_t(sh.H) * sh.T);
    std::memcpy(got.data(), bytes.data(), bytes.size());
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (!(std::fabs(got[i] - want[i]) <= 1e-5f + 1e-3f * std::fabs(want[i]))) {
        if (bad++ < 5) ADD_FAILURE() << "score " << i << ": gpu " << got[i] << " cpu " << want[i];
      }
    EXPECT_EQ(bad, 0);
    for (int h = 0; h < sh.H; ++h) {
      double sum = 0;
      for (int t = 0; t < sh.T; ++t) sum += got[size_t(h) * sh.T + size_t(t)];
      EXPECT_NEAR(sum, 1.0, 1e-4) << "head " << h;
    }
  }
}

}  // namespace
}  // namespace skv::cuda::test
