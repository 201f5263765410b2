// Reference quantizers: the scalar ground truth that SIMD (lib/) and CUDA (cuda/) paths must
// match bit for bit. Every float operation is spelled out (explicit fmaf, no room for the compiler
// to contract a*b+c differently on another device). formats/skv.md states the same formulas.
//
// INT8, symmetric, one FP16 scale per group of n values:
//   s16 = f16(min(absmax / 127, 65504));  s = f32(s16);  inv = s > 0 ? 1 / s : 0
//   q   = clamp(rne(x * inv), -127, 127)     (int8; clamped in float before rounding)
//   y   = fmaf(q, s, c)                                        (c: key centre, else 0)
// INT4, asymmetric, one FP16 scale and one FP16 minimum per group of n values
// (mn = min x + 0, mx = max x + 0: a zero extreme is +0 whatever its sign):
//   s16 = f16(min((max - min) / 15, 65504));  m16 = f16(min);  s = f32(s16); m = f32(m16)
//   inv = s > 0 ? 1 / s : 0;  q = clamp(rne((x - m) * inv), 0, 15)   (4 bits)
//   y   = fmaf(q, s, m) + c
// Packing: INT4 element 2i is the low nibble of byte i, element 2i+1 the high nibble.
// INT2 (format 1.1), asymmetric as INT4 with 3 steps instead of 15:
//   s16 = f16(min((max - min) / 3, 65504));  m16 = f16(min);  s = f32(s16); m = f32(m16)
//   inv = s > 0 ? 1 / s : 0;  q = clamp(rne((x - m) * inv), 0, 3)     (2 bits)
//   y   = fmaf(q, s, m) + c
// Packing: INT2 element 4i + j is bits 2j..2j+1 of byte i.
// x is the value after the key transform (x = source - c when keys are centred).
// Inputs must be finite: a group holding NaN or Inf is rejected (quantizing it is meaningless);
// such tokens can only be stored at the FP16 tier. So is an INT4 / INT2 group whose f16(min)
// overflows.
#pragma once
#include <cstddef>
#include <cstdint>

namespace skv::quant {

// Returns false if the group holds a non-finite value (nothing is written then).
bool q8_ref(const float* x, size_t n, int8_t* q, uint16_t* scale) noexcept;
void dq8_ref(const int8_t* q, size_t n, uint16_t scale, const float* centre, float* y) noexcept;

bool q4_ref(const float* x, size_t n, uint8_t* packed, uint16_t* scale, uint16_t* minv) noexcept;
void dq4_ref(const uint8_t* packed, size_t n, uint16_t scale, uint16_t minv, const float* centre,
             float* y) noexcept;

// n a multiple of 4 for INT2 (a group fills whole bytes).
bool q2_ref(const float* x, size_t n, uint8_t* packed, uint16_t* scale, uint16_t* minv) noexcept;
void dq2_ref(const uint8_t* packed, size_t n, uint16_t scale, uint16_t minv, const float* centre,
             float* y) noexcept;

// The largest |y - x| the formulas above allow for one group (used by tests and by the
// allocator's error model): half a step, plus what rounding the scale and minimum to FP16 can add.
float q8_error_bound(const float* x, size_t n) noexcept;
float q4_error_bound(const float* x, size_t n) noexcept;
float q2_error_bound(const float* x, size_t n) noexcept;

}  // namespace skv::quant
