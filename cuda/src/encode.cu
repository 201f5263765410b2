// encode_layer_async: device K/V -> raw LAYR payload. Kernels restate the CPU reference
// (skv/quant.hpp, formats/skv.md "Quantization" and "Key transforms") one operation at a time.
#include <algorithm>
#include <cfloat>

#include "device_math.cuh"
#include "launch.hpp"
#include "skv/cuda/check.hpp"
#include "skv/cuda/codec.hpp"

namespace skv::cuda {
namespace {

using namespace dev;

// Key centre of one (head, channel): c = f32(sum over quantized tokens, ascending, of
// f64(x) / f64(count)), x after undoing RoPE for prerope_centre. The f64 sum is sequential by
// definition, so one thread owns one (head, channel) and walks the token list in order.
struct CentreArgs {
  const uint8_t* k;
  const int32_t* qlist;
  uint32_t nq;
  float* centre;       // payload stream 2, [H][D]
  const float* rope;   // [T][D/2] cos, then [T][D/2] sin; null unless prerope_centre
  int H, T, D, dtype;
  bool thd, neox;
};

__global__ void centre_kernel(CentreArgs a) {
  const int h = blockIdx.y, d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= a.D) return;
  const size_t row_bytes = size_t(a.D) * size_t(elem_size(a.dtype));
  const double count = double(a.nq);
  const int half = a.D / 2;
  const RopePair pr = rope_pair(d, a.D, a.neox);
  double acc = 0.0;
#pragma unroll 4
  for (uint32_t i = 0; i < a.nq; ++i) {
    const int t = min(max(a.qlist[i], 0), a.T - 1);  // a bad list is reported by the prep kernel
    const uint8_t* row = a.k + row_index(a.thd, h, t, a.H, a.T) * row_bytes;
    float x = load_elem(row, a.dtype, d);
    if (a.rope) {
      const float* cs = a.rope + size_t(t) * size_t(half);
      const float* sn = cs + size_t(a.T) * size_t(half);
      x = rope_undo(x, load_elem(row, a.dtype, pr.partner), cs[pr.j], sn[pr.j], pr.is_a);
    }
    acc = __dadd_rn(acc, __ddiv_rn(double(x), count));
  }
  a.centre[size_t(h) * size_t(a.D) + size_t(d)] = __double2float_rn(acc);
}

// One tier of one layer, K and V (blockIdx.z), head blockIdx.y, rows [blockIdx.x * rows, +rows)
// of that tier. Thread = C consecutive elements of one row.
struct TierArgs {
  const uint8_t* src[2];
  const int32_t* list[2];  // this tier's tokens, ascending
  uint32_t n[2];           // this tier's token count
  uint8_t* vals[2];        // values stream (tier rows [H][n][...])
  uint8_t* params[2];      // INT8 scales / INT4 and INT2 (scale, min) pairs
  const float* centre;     // K only; null when key_transform is none
  const float* rope;
  DeviceStatus* status;
  int H, T, D, g, C, cpr, rows, dtype;
  bool thd, neox;
};

struct RowPos {
  bool active;
  int kv, h, c, e0, t;
  uint64_t r;
};

__device__ __forceinline__ RowPos row_pos(const TierArgs& a) {
  RowPos p;
  p.kv = int(blockIdx.z);
  p.h = int(blockIdx.y);
  const int j = int(threadIdx.x) / a.cpr;
  p.c = int(threadIdx.x) % a.cpr;
  p.e0 = p.c * a.C;
  p.r = uint64_t(blockIdx.x) * uint64_t(a.rows) + uint64_t(j);
  p.active = j < a.rows && p.r < a.n[p.kv];
  p.t = p.active ? min(max(a.list[p.kv][p.r], 0), a.T - 1) : 0;
  return p;
}

// FP16 tier: the source's 16 bits for F16/BF16, f16(x) for F32.
__global__ void fp16_tier_kernel(TierArgs a) {
  const RowPos p = row_pos(a);
  if (!p.active) return;
  const int es = elem_size(a.dtype);
  const uint8_t* row = a.src[p.kv] + row_index(a.thd, p.h, p.t, a.H, a.T) * size_t(a.D) * size_t(es);
  const uint64_t row_out = uint64_t(p.h) * a.n[p.kv] + p.r;
  uint8_t* out = a.vals[p.kv] + (row_out * uint64_t(a.D) + uint64_t(p.e0)) * 2;
  uint32_t w[4];
  load_bytes(row + size_t(p.e0) * size_t(es), a.C * es, w);
  if (a.dtype != kF32) {
    store_bytes(out, a.C * 2, w);
    return;
  }
  uint32_t o[4] = {0, 0, 0, 0};
#pragma unroll
  for (int i = 0; i < kMaxChunk; ++i)
    if (i < a.C) put_elem(o, 2, i, f32_to_f16(__uint_as_float(get_elem(w, 4, i))));
  store_bytes(out, a.C * 2, o);
}

// x of skv.md: the source value as f32; for keys of a centred layer, RoPE undone (prerope) and
// the centre subtracted (one f32 subtraction).
__device__ __forceinline__ void load_x(const TierArgs& a, const RowPos& p, float (&x)[kMaxChunk]) {
  const uint8_t* row =
      a.src[p.kv] + row_index(a.thd, p.h, p.t, a.H, a.T) * size_t(a.D) * size_t(elem_size(a.dtype));
  load_chunk(row, a.dtype, p.e0, a.C, x);
  if (p.kv != 0 || !a.centre) return;
  if (a.rope) {
    const int half = a.D / 2;
    const float* cs = a.rope + size_t(p.t) * size_t(half);
    const float* sn = cs + size_t(a.T) * size_t(half);
    float y[kMaxChunk];
#pragma unroll
    for (int i = 0; i < kMaxChunk; ++i) {
      y[i] = x[i];
      if (i < a.C) {
        const RopePair pr = rope_pair(p.e0 + i, a.D, a.neox);
        y[i] = rope_undo(x[i], load_elem(row, a.dtype, pr.partner), cs[pr.j], sn[pr.j], pr.is_a);
      }
    }
#pragma unroll
    for (int i = 0; i < kMaxChunk; ++i) x[i] = y[i];
  }
  const float* c = a.centre + size_t(p.h) * size_t(a.D) + size_t(p.e0);
#pragma unroll
  for (int i = 0; i < kMaxChunk; ++i)
    if (i < a.C) x[i] = __fsub_rn(x[i], c[i]);
}

// rne(clamp(v, lo, hi)): the clamp is done in f32 before rounding, as the CPU does.
__device__ __forceinline__ int rne_clamped(float v, float lo, float hi) {
  return __float2int_rn(fminf(fmaxf(v, lo), hi));
}

// INT8 (TIER 1), INT4 (TIER 2) and INT2 (TIER 4). Each thread reduces its chunk; the group's statistic is then
// read from shared memory by every thread of the group (groups never straddle rows). A chunk
// holding a non-finite value contributes +-inf, which no finite group statistic can equal.
template <int TIER>
__global__ void quant_tier_kernel(TierArgs a) {
  extern __shared__ float part[];  // [2][blockDim.x]: INT8 absmax | INT4 / INT2 min, max
  const RowPos p = row_pos(a);
  const int tid = int(threadIdx.x), nt = int(blockDim.x);
  float x[kMaxChunk];
  float s0 = 0.0f, s1 = 0.0f;
  if (p.active) {
    load_x(a, p, x);
    bool finite = true;
    if constexpr (TIER == 1) {
      float m = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxChunk; ++i)
        if (i < a.C) {
          finite = finite && isfinite(x[i]);
          m = fmaxf(m, fabsf(x[i]));
        }
      s0 = finite ? m : INFINITY;
    } else {
      float mn = x[0], mx = x[0];
#pragma unroll
      for (int i = 0; i < kMaxChunk; ++i)
        if (i < a.C) {
          finite = finite && isfinite(x[i]);
          mn = fminf(mn, x[i]);
          mx = fmaxf(mx, x[i]);
        }
      s0 = finite ? mn : -INFINITY;
      s1 = finite ? mx : INFINITY;
    }
  }
  part[tid] = s0;
  part[nt + tid] = s1;
  __syncthreads();
  if (!p.active) return;

  const int k = a.g / a.C;             // chunks per group
  const int first = tid - (p.c % k);   // this group's first chunk in the block
  const bool leader = p.c % k == 0;
  const int G = a.D / a.g, gi = p.e0 / a.g;
  const uint64_t row_out = uint64_t(p.h) * a.n[p.kv] + p.r;
  uint32_t w[4] = {0, 0, 0, 0};

  if constexpr (TIER == 1) {
    float amax = 0.0f;
    for (int i = first; i < first + k; ++i) amax = fmaxf(amax, part[i]);
    if (!(amax <= FLT_MAX)) {
      if (leader) report_bad_row(a.status, p.kv, p.h, p.t, TIER, a.H, a.T);
      return;
    }
    // s16 = f16(min(a / 127, 65504)); s = f32(s16); inv = s > 0 ? 1 / s : 0
    const uint32_t s16 = f32_to_f16(fminf(__fdiv_rn(amax, 127.0f), 65504.0f));
    const float s = f16_to_f32(s16);
    const float inv = s > 0.0f ? __fdiv_rn(1.0f, s) : 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxChunk; ++i)
      if (i < a.C) put_elem(w, 1, i, uint32_t(rne_clamped(__fmul_rn(x[i], inv), -127.0f, 127.0f)));
    store_bytes(a.vals[p.kv] + row_out * uint64_t(a.D) + uint64_t(p.e0), a.C, w);
    if (leader)
      reinterpret_cast<uint16_t*>(a.params[p.kv])[row_out * uint64_t(G) + uint64_t(gi)] = uint16_t(s16);
  } else {
    float mn = INFINITY, mx = -INFINITY;
    for (int i = first; i < first + k; ++i) {
      mn = fminf(mn, part[i]);
      mx = fmaxf(mx, part[nt + i]);
    }
    if (!(mn >= -FLT_MAX) || !(mx <= FLT_MAX)) {
      if (leader) report_bad_row(a.status, p.kv, p.h, p.t, TIER, a.H, a.T);
      return;
    }
    mn = __fadd_rn(mn, 0.0f);  // "+ 0": a zero extreme is +0 whatever its sign
    mx = __fadd_rn(mx, 0.0f);
    constexpr float kSteps = TIER == 2 ? 15.0f : 3.0f;
    const uint32_t s16 = f32_to_f16(fminf(__fdiv_rn(__fsub_rn(mx, mn), kSteps), 65504.0f));
    const uint32_t m16 = f32_to_f16(mn);
    if ((m16 & 0x7fffu) == 0x7c00u) {  // minimum beyond FP16 range
      if (leader) report_bad_row(a.status, p.kv, p.h, p.t, TIER, a.H, a.T);
      return;
    }
    const float s = f16_to_f32(s16), m = f16_to_f32(m16);
    const float inv = s > 0.0f ? __fdiv_rn(1.0f, s) : 0.0f;
    if constexpr (TIER == 2) {
#pragma unroll
      for (int i = 0; i < kMaxChunk; i += 2)
        if (i < a.C) {
          const uint32_t lo = uint32_t(rne_clamped(__fmul_rn(__fsub_rn(x[i], m), inv), 0.0f, 15.0f));
          const uint32_t hi = uint32_t(rne_clamped(__fmul_rn(__fsub_rn(x[i + 1], m), inv), 0.0f, 15.0f));
          put_elem(w, 1, i / 2, lo | (hi << 4));
        }
      store_bytes(a.vals[p.kv] + (row_out * uint64_t(a.D) + uint64_t(p.e0)) / 2, a.C / 2, w);
    } else {  // INT2: element 4i + j at bits 2j of byte i (C is a multiple of 4)
#pragma unroll
      for (int i = 0; i < kMaxChunk; i += 4)
        if (i < a.C) {
          uint32_t b = 0;
#pragma unroll
          for (int j = 0; j < 4; ++j)
            b |= uint32_t(rne_clamped(__fmul_rn(__fsub_rn(x[i + j], m), inv), 0.0f, 3.0f)) << (2 * j);
          put_elem(w, 1, i / 4, b);
        }
      store_bytes(a.vals[p.kv] + (row_out * uint64_t(a.D) + uint64_t(p.e0)) / 4, a.C / 4, w);
    }
    if (leader)
      reinterpret_cast<uint32_t*>(a.params[p.kv])[row_out * uint64_t(G) + uint64_t(gi)] = s16 | (m16 << 16);
  }
}

void launch_tier(int tier, const LayerPlan& plan, TierArgs a, cudaStream_t stream) {
  const uint32_t n = std::max(a.n[0], a.n[1]);
  if (n == 0) return;
  const LayerGeometry& g = plan.geo;
  const int group = tier == 1 ? g.int8_group : tier == 2 ? g.int4_group : tier == 4 ? g.int2_group : g.head_dim;
  const detail::RowTiling tl = detail::row_tiling(g.head_dim, group, dev::elem_size(int(g.dtype)));
  a.g = group;
  a.C = tl.C;
  a.cpr = tl.cpr;
  a.rows = tl.rows;
  const dim3 grid((n + uint32_t(tl.rows) - 1) / uint32_t(tl.rows), uint32_t(g.kv_heads), 2);
  const size_t shared = 2 * size_t(tl.threads) * sizeof(float);
  if (tier == 0) fp16_tier_kernel<<<grid, tl.threads, 0, stream>>>(a);
  else if (tier == 1) quant_tier_kernel<1><<<grid, tl.threads, shared, stream>>>(a);
  else if (tier == 2) quant_tier_kernel<2><<<grid, tl.threads, shared, stream>>>(a);
  else quant_tier_kernel<4><<<grid, tl.threads, shared, stream>>>(a);
  SKV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void encode_layer_async(const LayerPlan& plan, const LayerInputs& in, uint8_t* payload,
                        size_t payload_capacity, void* workspace, size_t workspace_size,
                        cudaStream_t stream) {
  using detail::require;
  using detail::require_aligned;
  const LayerGeometry& g = plan.geo;
  require(payload_capacity >= plan.payload_bytes, "encode: payload buffer smaller than the plan's payload");
  require(workspace_size >= workspace_bytes(g), "encode: workspace smaller than workspace_bytes()");
  require(in.k && in.v && in.k_tiers && in.v_tiers && payload && workspace, "encode: null pointer");
  require(g.key_transform != KeyTransform::prerope_centre || in.rope,
          "encode: prerope_centre needs the device RoPE table");
  require_aligned(in.k, 16, "encode: K");
  require_aligned(in.v, 16, "encode: V");
  require_aligned(payload, kPayloadAlign, "encode: payload");
  require_aligned(workspace, kPayloadAlign, "encode: workspace");

  const Workspace ws = carve_workspace(workspace, g.tokens);
  SKV_CUDA_CHECK(cudaMemsetAsync(ws.status, 0xff, sizeof(DeviceStatus), stream));
  detail::launch_prep(plan, in.k_tiers, in.v_tiers, ws, payload, nullptr, stream);

  const bool centred = g.centred();
  const bool prerope = g.key_transform == KeyTransform::prerope_centre;
  float* centre = reinterpret_cast<float*>(payload + plan.offset[kKCentre]);
  if (centred) {
    CentreArgs c{};
    c.k = static_cast<const uint8_t*>(in.k);
    c.qlist = ws.qlist;
    c.nq = plan.count[0][1] + plan.count[0][2] + plan.count[0][4];
    c.centre = centre;
    c.rope = prerope ? in.rope : nullptr;
    c.H = g.kv_heads;
    c.T = g.tokens;
    c.D = g.head_dim;
    c.dtype = int(g.dtype);
    c.thd = g.layout == Layout::THD;
    c.neox = g.rope_style == RopeStyle::neox;
    const dim3 grid(uint32_t((g.head_dim + 31) / 32), uint32_t(g.kv_heads));
    centre_kernel<<<grid, 32, 0, stream>>>(c);
    SKV_CUDA_CHECK(cudaGetLastError());
  }

  for (int tier : {0, 1, 2, 4}) {  // DROP (3) writes nothing
    if (tier == 4 && !g.int2) continue;
    TierArgs a{};
    for (int kv = 0; kv < 2; ++kv) {
      a.src[kv] = static_cast<const uint8_t*>(kv ? in.v : in.k);
      uint32_t base = 0;
      for (int t = 0; t < tier; ++t) base += plan.count[size_t(kv)][size_t(t)];
      a.list[kv] = ws.list[kv] + base;
      a.n[kv] = plan.count[size_t(kv)][size_t(tier)];
      const int s = tier == 4 ? int(kv ? kVInt2Values : kKInt2Values)
                              : int(kv ? kVTierBase : kKTierBase) +
                                    int(tier == 0 ? kFp16Values : tier == 1 ? kInt8Values : kInt4Values);
      a.vals[kv] = payload + plan.offset[size_t(s)];
      a.params[kv] = tier == 0 ? nullptr : payload + plan.offset[size_t(s + 1)];
    }
    a.centre = centred ? centre : nullptr;
    a.rope = prerope ? in.rope : nullptr;
    a.status = ws.status;
    a.H = g.kv_heads;
    a.T = g.tokens;
    a.D = g.head_dim;
    a.dtype = int(g.dtype);
    a.thd = g.layout == Layout::THD;
    a.neox = g.rope_style == RopeStyle::neox;
    launch_tier(tier, plan, a, stream);
  }
}

}  // namespace skv::cuda
