// decode_layer_async: raw LAYR payload -> K/V rows in the source layout, in the asked dtype.
// Mirrors the CPU reader: y = fmaf(q, s, c) for INT8; y = fmaf(q, s, m) (+ c when centred) for
// INT4 and INT2; RoPE re-applied to keys for prerope_centre; FP16-tier bits copied when the output dtype
// is the tier's dtype, else widened and rounded; DROP rows zero.
#include <algorithm>

#include "device_math.cuh"
#include "launch.hpp"
#include "skv/cuda/check.hpp"
#include "skv/cuda/codec.hpp"

namespace skv::cuda {
namespace {

using namespace dev;

struct DecodeArgs {
  const uint8_t* vals[2];
  const uint8_t* params[2];
  const int32_t* list[2];
  uint32_t n[2];
  uint8_t* out[2];
  const float* centre;  // K only; null when key_transform is none
  const float* rope;    // K only; null unless prerope_centre
  int H, T, D, g, C, cpr, rows, out_dtype, tier_dtype;
  bool thd, neox;
};

// Dequantized value of element e of tier row `row` (before RoPE), exactly as the CPU computes it.
template <int TIER>
__device__ __forceinline__ float dequant_elem(const DecodeArgs& a, int kv, uint64_t row, int e,
                                              const float* centre_row) {
  const int G = a.D / a.g, gi = e / a.g;
  if constexpr (TIER == 1) {
    const int q = int(reinterpret_cast<const int8_t*>(a.vals[kv])[row * uint64_t(a.D) + uint64_t(e)]);
    const float s = f16_to_f32(reinterpret_cast<const uint16_t*>(a.params[kv])[row * uint64_t(G) + uint64_t(gi)]);
    return __fmaf_rn(__int2float_rn(q), s, centre_row ? centre_row[e] : 0.0f);
  }
  uint32_t q;
  if constexpr (TIER == 4) {
    q = (uint32_t(a.vals[kv][(row * uint64_t(a.D) + uint64_t(e)) / 4]) >> ((e & 3) * 2)) & 3u;
  } else {
    const uint32_t byte = a.vals[kv][(row * uint64_t(a.D) + uint64_t(e)) / 2];
    q = (byte >> ((e & 1) * 4)) & 15u;
  }
  const uint32_t sm = reinterpret_cast<const uint32_t*>(a.params[kv])[row * uint64_t(G) + uint64_t(gi)];
  const float v = __fmaf_rn(__uint2float_rn(q), f16_to_f32(sm & 0xffffu), f16_to_f32(sm >> 16));
  return centre_row ? __fadd_rn(v, centre_row[e]) : v;
}

// TIER 0 FP16, 1 INT8, 2 INT4, 3 DROP, 4 INT2. K and V (blockIdx.z), head blockIdx.y, tier rows
// [blockIdx.x * rows, +rows); thread = C consecutive elements of one row.
template <int TIER>
__global__ void decode_tier_kernel(DecodeArgs a) {
  const int kv = int(blockIdx.z), h = int(blockIdx.y);
  const int j = int(threadIdx.x) / a.cpr, c = int(threadIdx.x) % a.cpr, e0 = c * a.C;
  const uint64_t r = uint64_t(blockIdx.x) * uint64_t(a.rows) + uint64_t(j);
  if (j >= a.rows || r >= a.n[kv]) return;
  const int t = min(max(a.list[kv][r], 0), a.T - 1);  // a bad list is reported by the prep kernel
  const int oes = elem_size(a.out_dtype);
  uint8_t* out = a.out[kv] + (row_index(a.thd, h, t, a.H, a.T) * size_t(a.D) + size_t(e0)) * size_t(oes);
  const uint64_t row = uint64_t(h) * a.n[kv] + r;
  uint32_t w[4] = {0, 0, 0, 0};
  if constexpr (TIER == 3) {
    store_bytes(out, a.C * oes, w);
    return;
  }
  float y[kMaxChunk];
  if constexpr (TIER == 0) {
    const uint8_t* src = a.vals[kv] + (row * uint64_t(a.D) + uint64_t(e0)) * 2;
    uint32_t in[4];
    load_bytes(src, a.C * 2, in);
    if (a.out_dtype == a.tier_dtype) {  // the stored bits, untouched
      store_bytes(out, a.C * 2, in);
      return;
    }
#pragma unroll
    for (int i = 0; i < kMaxChunk; ++i) y[i] = i < a.C ? to_f32(get_elem(in, 2, i), a.tier_dtype) : 0.0f;
  } else {
    const float* centre = kv == 0 && a.centre ? a.centre + size_t(h) * size_t(a.D) : nullptr;
    // The chunk lies in one group: load its codes once, then the same formula as dequant_elem.
    const int G = a.D / a.g, gi = e0 / a.g;
    uint32_t q[4];
    if constexpr (TIER == 1) {
      load_bytes(a.vals[kv] + row * uint64_t(a.D) + uint64_t(e0), a.C, q);
      const float s = f16_to_f32(reinterpret_cast<const uint16_t*>(a.params[kv])[row * uint64_t(G) + uint64_t(gi)]);
#pragma unroll
      for (int i = 0; i < kMaxChunk; ++i)
        if (i < a.C) {
          const int qi = int(int8_t(uint8_t(get_elem(q, 1, i))));
          y[i] = __fmaf_rn(__int2float_rn(qi), s, centre ? centre[e0 + i] : 0.0f);
        }
    } else if constexpr (TIER == 4) {  // C is a multiple of 4: whole bytes
      load_bytes(a.vals[kv] + (row * uint64_t(a.D) + uint64_t(e0)) / 4, a.C / 4, q);
      const uint32_t sm = reinterpret_cast<const uint32_t*>(a.params[kv])[row * uint64_t(G) + uint64_t(gi)];
      const float s = f16_to_f32(sm & 0xffffu), m = f16_to_f32(sm >> 16);
#pragma unroll
      for (int i = 0; i < kMaxChunk; ++i)
        if (i < a.C) {
          const uint32_t qi = (get_elem(q, 1, i / 4) >> ((i & 3) * 2)) & 3u;
          const float v = __fmaf_rn(__uint2float_rn(qi), s, m);
          y[i] = centre ? __fadd_rn(v, centre[e0 + i]) : v;
        }
    } else {
      load_bytes(a.vals[kv] + (row * uint64_t(a.D) + uint64_t(e0)) / 2, a.C / 2, q);
      const uint32_t sm = reinterpret_cast<const uint32_t*>(a.params[kv])[row * uint64_t(G) + uint64_t(gi)];
      const float s = f16_to_f32(sm & 0xffffu), m = f16_to_f32(sm >> 16);
#pragma unroll
      for (int i = 0; i < kMaxChunk; ++i)
        if (i < a.C) {
          const uint32_t qi = (get_elem(q, 1, i / 2) >> ((i & 1) * 4)) & 15u;
          const float v = __fmaf_rn(__uint2float_rn(qi), s, m);
          y[i] = centre ? __fadd_rn(v, centre[e0 + i]) : v;
        }
    }
    if (kv == 0 && a.rope) {  // re-apply RoPE; the partner may sit in another chunk or group
      const int half = a.D / 2;
      const float* cs = a.rope + size_t(t) * size_t(half);
      const float* sn = cs + size_t(a.T) * size_t(half);
      float z[kMaxChunk];
#pragma unroll
      for (int i = 0; i < kMaxChunk; ++i) {
        z[i] = y[i];
        if (i < a.C) {
          const RopePair pr = rope_pair(e0 + i, a.D, a.neox);
          z[i] = rope_apply(y[i], dequant_elem<TIER>(a, kv, row, pr.partner, centre), cs[pr.j], sn[pr.j], pr.is_a);
        }
      }
#pragma unroll
      for (int i = 0; i < kMaxChunk; ++i) y[i] = z[i];
    }
  }
#pragma unroll
  for (int i = 0; i < kMaxChunk; ++i)
    if (i < a.C) put_elem(w, oes, i, from_f32(y[i], a.out_dtype));
  store_bytes(out, a.C * oes, w);
}

}  // namespace

void decode_layer_async(const LayerPlan& plan, const uint8_t* payload, const float* rope,
                        const LayerOutputs& out, void* workspace, size_t workspace_size,
                        cudaStream_t stream) {
  using detail::require;
  using detail::require_aligned;
  const LayerGeometry& g = plan.geo;
  require(is_float(out.dtype), "decode: output dtype must be F16, BF16 or F32");
  require(workspace_size >= workspace_bytes(g), "decode: workspace smaller than workspace_bytes()");
  require(payload && out.k && out.v && workspace, "decode: null pointer");
  const bool prerope = g.key_transform == KeyTransform::prerope_centre;
  require(!prerope || rope, "decode: prerope_centre needs the device RoPE table");
  require_aligned(payload, kPayloadAlign, "decode: payload");
  require_aligned(workspace, kPayloadAlign, "decode: workspace");
  require_aligned(out.k, 16, "decode: K output");
  require_aligned(out.v, 16, "decode: V output");

  const Workspace ws = carve_workspace(workspace, g.tokens);
  SKV_CUDA_CHECK(cudaMemsetAsync(ws.status, 0xff, sizeof(DeviceStatus), stream));
  detail::launch_prep(plan, payload + plan.offset[kKMap], payload + plan.offset[kVMap], ws, nullptr,
                      out.mask, stream);

  const int oes = dev::elem_size(int(out.dtype));
  for (int tier = 0; tier < kNumTiers; ++tier) {
    DecodeArgs a{};
    uint32_t n = 0;
    for (int kv = 0; kv < 2; ++kv) {
      uint32_t base = 0;
      for (int t = 0; t < tier; ++t) base += plan.count[size_t(kv)][size_t(t)];
      a.list[kv] = ws.list[kv] + base;
      a.n[kv] = plan.count[size_t(kv)][size_t(tier)];
      n = std::max(n, a.n[kv]);
      a.out[kv] = static_cast<uint8_t*>(kv ? out.v : out.k);
      if (tier != 3) {
        const int s = tier == 4 ? int(kv ? kVInt2Values : kKInt2Values)
                                : int(kv ? kVTierBase : kKTierBase) +
                                      int(tier == 0 ? kFp16Values : tier == 1 ? kInt8Values : kInt4Values);
        a.vals[kv] = payload + plan.offset[size_t(s)];
        a.params[kv] = tier == 0 ? nullptr : payload + plan.offset[size_t(s + 1)];
      }
    }
    if (n == 0) continue;
    a.centre = g.centred() ? reinterpret_cast<const float*>(payload + plan.offset[kKCentre]) : nullptr;
    a.rope = prerope ? rope : nullptr;
    a.H = g.kv_heads;
    a.T = g.tokens;
    a.D = g.head_dim;
    a.out_dtype = int(out.dtype);
    a.tier_dtype = int(g.tier_dtype());
    a.thd = g.layout == Layout::THD;
    a.neox = g.rope_style == RopeStyle::neox;
    a.g = tier == 1 ? g.int8_group : tier == 2 ? g.int4_group : tier == 4 ? g.int2_group : g.head_dim;
    // FP16 rows are read as 16-bit values, so their chunk also fits 16 bytes of input.
    const detail::RowTiling tl = detail::row_tiling(g.head_dim, a.g, tier == 0 ? std::max(oes, 2) : oes);
    a.C = tl.C;
    a.cpr = tl.cpr;
    a.rows = tl.rows;
    const dim3 grid((n + uint32_t(tl.rows) - 1) / uint32_t(tl.rows), uint32_t(g.kv_heads), 2);
    switch (tier) {
      case 0: decode_tier_kernel<0><<<grid, tl.threads, 0, stream>>>(a); break;
      case 1: decode_tier_kernel<1><<<grid, tl.threads, 0, stream>>>(a); break;
      case 2: decode_tier_kernel<2><<<grid, tl.threads, 0, stream>>>(a); break;
      case 4: decode_tier_kernel<4><<<grid, tl.threads, 0, stream>>>(a); break;
      default: decode_tier_kernel<3><<<grid, tl.threads, 0, stream>>>(a); break;
    }
    SKV_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace skv::cuda
