// Device helpers shared by the kernels: 16-bit float conversions that match skv/half.hpp bit for
// bit (NaN payloads included), vectorised byte loads/stores, element access, RoPE pairs.
// Every float operation is an explicitly rounded intrinsic, and the library is compiled with
// -fmad=false, so nvcc can neither contract nor approximate anything.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "workspace.hpp"

namespace skv::cuda::dev {

enum : int { kF16 = 0, kBF16 = 1, kF32 = 2 };  // skv::DType codes
__host__ __device__ constexpr int elem_size(int dtype) { return dtype == kF32 ? 4 : 2; }

// skv::f16_to_f32: exact widening; Inf/NaN keep sign and payload.
__device__ __forceinline__ float f16_to_f32(uint32_t h) {
  if ((h & 0x7c00u) == 0x7c00u)
    return __uint_as_float(((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13));
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
}

// skv::f32_to_f16: round to nearest even (IEEE, as cvt.rn.f16.f32), NaN as the CPU spells it.
__device__ __forceinline__ uint32_t f32_to_f16(float f) {
  const uint32_t u = __float_as_uint(f), a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return ((u >> 16) & 0x8000u) | 0x7e00u | ((a >> 13) & 0x3ffu);
  return __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ float bf16_to_f32(uint32_t h) { return __uint_as_float(h << 16); }

// skv::f32_to_bf16, the same integer steps.
__device__ __forceinline__ uint32_t f32_to_bf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

__device__ __forceinline__ float to_f32(uint32_t bits, int dtype) {
  return dtype == kF32 ? __uint_as_float(bits) : dtype == kBF16 ? bf16_to_f32(bits) : f16_to_f32(bits);
}
__device__ __forceinline__ uint32_t from_f32(float f, int dtype) {
  return dtype == kF32 ? __float_as_uint(f) : dtype == kBF16 ? f32_to_bf16(f) : f32_to_f16(f);
}

// n bytes (1, 2, 4, 8 or 16; p aligned to n) <-> four little-endian words.
__device__ __forceinline__ void load_bytes(const uint8_t* p, int n, uint32_t (&w)[4]) {
  w[0] = w[1] = w[2] = w[3] = 0;
  if (n == 16) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
  } else if (n == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    w[0] = v.x; w[1] = v.y;
  } else if (n == 4) {
    w[0] = *reinterpret_cast<const uint32_t*>(p);
  } else if (n == 2) {
    w[0] = *reinterpret_cast<const uint16_t*>(p);
  } else {
    w[0] = *p;
  }
}
__device__ __forceinline__ void store_bytes(uint8_t* p, int n, const uint32_t (&w)[4]) {
  if (n == 16) *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  else if (n == 8) *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  else if (n == 4) *reinterpret_cast<uint32_t*>(p) = w[0];
  else if (n == 2) *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(w[0]);
  else *p = static_cast<uint8_t>(w[0]);
}

// Element i (of size es = 1, 2 or 4 bytes) of a 16-byte word group, and its inverse.
__device__ __forceinline__ uint32_t get_elem(const uint32_t (&w)[4], int es, int i) {
  if (es == 4) return w[i & 3];
  if (es == 2) return (w[(i >> 1) & 3] >> ((i & 1) * 16)) & 0xffffu;
  return (w[(i >> 2) & 3] >> ((i & 3) * 8)) & 0xffu;
}
__device__ __forceinline__ void put_elem(uint32_t (&w)[4], int es, int i, uint32_t v) {
  if (es == 4) w[i & 3] = v;
  else if (es == 2) w[(i >> 1) & 3] |= (v & 0xffffu) << ((i & 1) * 16);
  else w[(i >> 2) & 3] |= (v & 0xffu) << ((i & 3) * 8);
}

inline constexpr int kMaxChunk = 8;  // elements one thread handles: 16 bytes of 16-bit data

// Loads elements [e0, e0 + C) of a row as f32 (C * elem_size <= 16, e0 a multiple of C).
__device__ __forceinline__ void load_chunk(const uint8_t* row, int dtype, int e0, int C,
                                           float (&x)[kMaxChunk]) {
  const int es = elem_size(dtype);
  uint32_t w[4];
  load_bytes(row + size_t(e0) * size_t(es), C * es, w);
#pragma unroll
  for (int i = 0; i < kMaxChunk; ++i) x[i] = i < C ? to_f32(get_elem(w, es, i), dtype) : 0.0f;
}

__device__ __forceinline__ float load_elem(const uint8_t* row, int dtype, int e) {
  if (dtype == kF32) return reinterpret_cast<const float*>(row)[e];
  return to_f32(reinterpret_cast<const uint16_t*>(row)[e], dtype);
}

// Element index of (head h, token t) rows: [H,T,D] or [T,H,D].
__device__ __forceinline__ size_t row_index(bool thd, int h, int t, int H, int T) {
  return thd ? size_t(t) * size_t(H) + size_t(h) : size_t(h) * size_t(T) + size_t(t);
}

// RoPE pairs (skv.md "Key transforms"): neox (j, j + D/2), gptj (2j, 2j + 1). For element d:
// its pair index j, its partner element, and whether it is the pair's first member a.
struct RopePair { int j, partner; bool is_a; };
__device__ __forceinline__ RopePair rope_pair(int d, int D, bool neox) {
  if (neox) {
    const int half = D / 2;
    return d < half ? RopePair{d, d + half, true} : RopePair{d - half, d - half, false};
  }
  return RopePair{d >> 1, d ^ 1, (d & 1) == 0};
}
// undo:  a = fmaf(a', cs, b' * sn);   b = fmaf(b', cs, -(a' * sn))
__device__ __forceinline__ float rope_undo(float v, float partner, float cs, float sn, bool is_a) {
  const float p = __fmul_rn(partner, sn);
  return __fmaf_rn(v, cs, is_a ? p : -p);
}
// apply: a' = fmaf(a, cs, -(b * sn)); b' = fmaf(b, cs, a * sn)
__device__ __forceinline__ float rope_apply(float v, float partner, float cs, float sn, bool is_a) {
  const float p = __fmul_rn(partner, sn);
  return __fmaf_rn(v, cs, is_a ? -p : p);
}

// Records the first (kv, head, token) that cannot be quantized; atomicMin keeps it deterministic.
__device__ __forceinline__ void report_bad_row(DeviceStatus* s, int kv, int h, int t, int tier,
                                               int H, int T) {
  const unsigned long long key =
      (((static_cast<unsigned long long>(kv) * unsigned(H) + unsigned(h)) * unsigned(T) + unsigned(t)) << 3) |
      unsigned(tier);
  atomicMin(&s->bad_row, key);
}

}  // namespace skv::cuda::dev
