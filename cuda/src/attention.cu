// Observation-window attention scores (see skv/cuda/attention.hpp). Deliberately simple: a block
// owns (kv head, tile of TT tokens), stages the K tile and TT query rows at a time in shared
// memory as f32, and computes the TT x TT logits with plain fmaf loops. Pass 1 writes per-tile
// softmax statistics (max, sum of exp), a tiny pass combines them per query row, pass 2
// recomputes the logits and accumulates probabilities per token, and a last pass pools and
// normalises each head's row.
#include <algorithm>
#include <cmath>

#include "device_math.cuh"
#include "launch.hpp"
#include "skv/cuda/attention.hpp"
#include "skv/cuda/check.hpp"

namespace skv::cuda {
namespace {

using namespace dev;

struct AttnArgs {
  const uint8_t* q;
  const uint8_t* k;
  int H, G, W, T, D, TT, ntiles, k_dtype, q_dtype;
  bool thd;
  float alpha;      // f32(1 / sqrt(f64(D))), as the CPU passes to sgemm
  float2* stats;    // [H][R][ntiles] (max, sum of exp) per tile
  float* row_max;   // [H][R]
  float* row_inv;   // [H][R]: 1 / sum, 0 for a skipped row
  float* acc;       // [H][T]
};

int tile_tokens(int D) { return std::clamp(4096 / (D + 1), 1, 32); }

template <bool ACCUM>
__global__ void attn_tile_kernel(AttnArgs a) {
  extern __shared__ float sm[];
  const int TT = a.TT, D = a.D, ld = D + 1;  // +1: rows land in different banks
  float* ks = sm;                  // [TT][ld]
  float* qs = ks + TT * ld;        // [TT][ld]
  float* s = qs + TT * ld;         // [TT rows][TT tokens]
  const int h = int(blockIdx.y), tile = int(blockIdx.x), t0 = tile * TT, tid = int(threadIdx.x);
  const int R = a.G * a.W, kes = elem_size(a.k_dtype), qes = elem_size(a.q_dtype);
  for (int idx = tid; idx < TT * D; idx += blockDim.x) {
    const int j = idx / D, d = idx % D, t = t0 + j;
    ks[j * ld + d] = t < a.T ? load_elem(a.k + row_index(a.thd, h, t, a.H, a.T) * size_t(D) * size_t(kes), a.k_dtype, d) : 0.0f;
  }
  float acc = 0.0f;
  for (int r0 = 0; r0 < R; r0 += TT) {
    __syncthreads();  // the previous chunk's consumers are done with qs and s
    for (int idx = tid; idx < TT * D; idx += blockDim.x) {
      const int i = idx / D, d = idx % D, r = r0 + i;
      // row r = g * W + w: query head h * G + g, window row w
      const size_t qrow = (size_t(h) * size_t(a.G) + size_t(r / a.W)) * size_t(a.W) + size_t(r % a.W);
      qs[i * ld + d] = r < R ? load_elem(a.q + qrow * size_t(D) * size_t(qes), a.q_dtype, d) : 0.0f;
    }
    __syncthreads();
    for (int p = tid; p < TT * TT; p += blockDim.x) {
      const int i = p / TT, j = p % TT;
      float dot = 0.0f;
      for (int d = 0; d < D; ++d) dot = __fmaf_rn(qs[i * ld + d], ks[j * ld + d], dot);
      s[p] = __fmul_rn(dot, a.alpha);
    }
    __syncthreads();
    if (!ACCUM) {
      const int i = tid, r = r0 + i;
      if (i < TT && r < R) {
        const int last = a.T - a.W + r % a.W;  // causal: query sees tokens <= last
        float m = -INFINITY;
        for (int j = 0; j < TT; ++j)
          if (t0 + j <= last && t0 + j < a.T) m = fmaxf(m, s[i * TT + j]);
        float l = 0.0f;
        if (isfinite(m))
          for (int j = 0; j < TT; ++j)
            if (t0 + j <= last && t0 + j < a.T) l = __fadd_rn(l, expf(__fsub_rn(s[i * TT + j], m)));
        a.stats[(size_t(h) * size_t(R) + size_t(r)) * size_t(a.ntiles) + size_t(tile)] = make_float2(m, l);
      }
    } else {
      const int j = tid, t = t0 + j;
      if (j < TT && t < a.T)
        for (int i = 0; i < TT && r0 + i < R; ++i) {
          const int r = r0 + i;
          const float inv = a.row_inv[size_t(h) * size_t(R) + size_t(r)];
          if (t <= a.T - a.W + r % a.W && inv > 0.0f)
            acc = __fadd_rn(acc, __fmul_rn(expf(__fsub_rn(s[i * TT + j], a.row_max[size_t(h) * size_t(R) + size_t(r)])), inv));
        }
    }
  }
  if (ACCUM && tid < TT && t0 + tid < a.T) a.acc[size_t(h) * size_t(a.T) + size_t(t0 + tid)] = acc;
}

// Per query row: max over tiles, then sum of exp rescaled to that max (f64), 1 / sum.
__global__ void attn_combine_kernel(AttnArgs a) {
  const int R = a.G * a.W;
  const int idx = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (idx >= a.H * R) return;
  const float2* st = a.stats + size_t(idx) * size_t(a.ntiles);
  float m = -INFINITY;
  for (int i = 0; i < a.ntiles; ++i) m = fmaxf(m, st[i].x);
  double l = 0.0;
  if (isfinite(m))
    for (int i = 0; i < a.ntiles; ++i)
      if (st[i].x > -INFINITY) l += double(st[i].y) * exp(double(st[i].x) - double(m));
  a.row_max[idx] = m;
  a.row_inv[idx] = isfinite(m) && l > 0.0 ? float(1.0 / l) : 0.0f;  // CPU: non-finite max skips the row
}

// One block per head: pool over tokens, then normalise the row to sum 1.
__global__ void attn_pool_kernel(AttnArgs a, float* scores, int pool, int kernel) {
  const int h = int(blockIdx.x), T = a.T, rr = kernel / 2;
  const float* x = a.acc + size_t(h) * size_t(T);
  float* out = scores + size_t(h) * size_t(T);
  double part = 0.0;
  for (int t = int(threadIdx.x); t < T; t += blockDim.x) {
    float v = x[t];
    if (pool != int(PoolKind::none) && kernel > 1) {
      const int lo = max(0, t - rr), hi = min(T - 1, t + rr);
      v = pool == int(PoolKind::max) ? x[lo] : 0.0f;
      for (int j = lo; j <= hi; ++j) v = pool == int(PoolKind::max) ? fmaxf(v, x[j]) : __fadd_rn(v, x[j]);
      if (pool == int(PoolKind::avg)) v = __fdiv_rn(v, float(kernel));  // zero padding, as avg_pool1d
    }
    out[t] = v;
    part += double(v);
  }
  __shared__ double red[256];
  red[threadIdx.x] = part;
  __syncthreads();
  for (int w = int(blockDim.x) / 2; w > 0; w /= 2) {
    if (int(threadIdx.x) < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  const double sum = red[0];
  const bool uniform = !(sum > 0.0) || !isfinite(sum);
  const float inv = uniform ? 0.0f : float(1.0 / sum);
  for (int t = int(threadIdx.x); t < T; t += blockDim.x)
    out[t] = uniform ? __fdiv_rn(1.0f, float(T)) : __fmul_rn(out[t], inv);
}

struct AttnLayout {
  int TT, ntiles, R;
  size_t stats, row_max, row_inv, acc, total;
};

AttnLayout attn_layout(const AttentionShape& s) {
  AttnLayout l{};
  l.TT = tile_tokens(s.head_dim);
  l.ntiles = (s.tokens + l.TT - 1) / l.TT;
  l.R = s.kv_heads > 0 ? s.q_heads / s.kv_heads * s.window : 0;
  auto up = [](size_t n) { return (n + 255) & ~size_t(255); };
  const size_t rows = size_t(s.kv_heads) * size_t(l.R);
  l.stats = 0;
  l.row_max = up(rows * size_t(l.ntiles) * sizeof(float2));
  l.row_inv = l.row_max + up(rows * sizeof(float));
  l.acc = l.row_inv + up(rows * sizeof(float));
  l.total = l.acc + up(size_t(s.kv_heads) * size_t(s.tokens) * sizeof(float));
  return l;
}

}  // namespace

size_t attention_workspace_bytes(const AttentionShape& s) { return attn_layout(s).total; }

void attention_scores_async(const AttentionShape& s, const void* q, const void* k, float* scores,
                            void* workspace, size_t workspace_size, cudaStream_t stream) {
  using detail::require;
  require(s.kv_heads >= 1 && s.q_heads >= s.kv_heads && s.q_heads % s.kv_heads == 0,
          "attention: q_heads must be a positive multiple of kv_heads");
  require(s.window >= 1 && s.window <= s.tokens && s.head_dim >= 1 && s.head_dim <= 4096,
          "attention: need 1 <= window <= tokens and 1 <= head_dim <= 4096");
  require(s.kv_heads <= 65535, "attention: at most 65535 kv_heads");
  require(is_float(s.k_dtype) && is_float(s.q_dtype), "attention: K and Q must be F16, BF16 or F32");
  require(s.pool_kernel >= 1 && s.pool_kernel % 2 == 1, "attention: pool kernel must be odd and >= 1");
  require(q && k && scores && workspace, "attention: null pointer");
  const AttnLayout l = attn_layout(s);
  require(workspace_size >= l.total, "attention: workspace smaller than attention_workspace_bytes()");
  detail::require_aligned(workspace, 256, "attention: workspace");
  detail::require_aligned(q, size_t(dtype_size(s.q_dtype)), "attention: Q");
  detail::require_aligned(k, size_t(dtype_size(s.k_dtype)), "attention: K");

  auto* ws = static_cast<uint8_t*>(workspace);
  AttnArgs a{};
  a.q = static_cast<const uint8_t*>(q);
  a.k = static_cast<const uint8_t*>(k);
  a.H = s.kv_heads;
  a.G = s.q_heads / s.kv_heads;
  a.W = s.window;
  a.T = s.tokens;
  a.D = s.head_dim;
  a.TT = l.TT;
  a.ntiles = l.ntiles;
  a.k_dtype = int(s.k_dtype);
  a.q_dtype = int(s.q_dtype);
  a.thd = s.layout == Layout::THD;
  a.alpha = float(1.0 / std::sqrt(double(s.head_dim)));
  a.stats = reinterpret_cast<float2*>(ws + l.stats);
  a.row_max = reinterpret_cast<float*>(ws + l.row_max);
  a.row_inv = reinterpret_cast<float*>(ws + l.row_inv);
  a.acc = reinterpret_cast<float*>(ws + l.acc);

  const dim3 grid(uint32_t(l.ntiles), uint32_t(s.kv_heads));
  const size_t shared = (2 * size_t(l.TT) * size_t(s.head_dim + 1) + size_t(l.TT) * size_t(l.TT)) * sizeof(float);
  attn_tile_kernel<false><<<grid, 256, shared, stream>>>(a);
  SKV_CUDA_CHECK(cudaGetLastError());
  const int rows = s.kv_heads * l.R;
  attn_combine_kernel<<<(rows + 255) / 256, 256, 0, stream>>>(a);
  SKV_CUDA_CHECK(cudaGetLastError());
  attn_tile_kernel<true><<<grid, 256, shared, stream>>>(a);
  SKV_CUDA_CHECK(cudaGetLastError());
  attn_pool_kernel<<<s.kv_heads, 256, 0, stream>>>(a, scores, int(s.pool), s.pool_kernel);
  SKV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace skv::cuda
