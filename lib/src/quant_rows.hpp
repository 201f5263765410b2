// Row kernels: quantize / dequantize / convert one head_dim row, group by group. Two
// implementations with identical results: the scalar one built on quant.hpp's reference, and an
// AVX2+F16C+FMA one picked at run time when the CPU has those (tests compare them bit for bit).
#pragma once
#include <cstddef>
#include <cstdint>

namespace skv::detail {

struct RowKernels {
  const char* name;
  // Return false when a group holds a non-finite value (or, for INT4, an unrepresentable minimum).
  bool (*q8)(const float* x, int d, int g, int8_t* q, uint16_t* scales);
  bool (*q4)(const float* x, int d, int g, uint8_t* packed, uint16_t* params);  // (scale, min) pairs
  void (*dq8)(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre, float* y);
  void (*dq4)(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
              float* y);
  void (*f16_to_f32)(const uint16_t* src, int n, float* dst);
  void (*bf16_to_f32)(const uint16_t* src, int n, float* dst);
  void (*f32_to_f16)(const float* src, int n, uint16_t* dst);
  void (*f32_to_bf16)(const float* src, int n, uint16_t* dst);
  // Fused forms for 16-bit rows (F16, or BF16 when bf16): load + quantize and dequantize + store
  // in one pass. Same results as converting the row to f32 first (q8/q4) or after (dq8/dq4).
  bool (*q8_h)(const uint16_t* x, bool bf16, int d, int g, int8_t* q, uint16_t* scales);
  bool (*q4_h)(const uint16_t* x, bool bf16, int d, int g, uint8_t* packed, uint16_t* params);
  void (*dq8_h)(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre,
                bool bf16, uint16_t* y);
  void (*dq4_h)(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
                bool bf16, uint16_t* y);
  // q8_h / q4_h over `rows` rows, row r at x + r * stride elements, outputs row after row (as
  // consecutive rows of a tier stream), so per-group work is shared across rows. Returns -1, or
  // the first row that q8_h / q4_h would refuse (the outputs are then unspecified).
  int (*q8_h_rows)(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, int8_t* q,
                   uint16_t* scales);
  int (*q4_h_rows)(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, uint8_t* packed,
                   uint16_t* params);
  // q8 / q4 over `rows` f32 rows, as q8_h_rows / q4_h_rows (the key transform's rows).
  int (*q8_rows)(const float* x, size_t stride, int rows, int d, int g, int8_t* q, uint16_t* scales);
  int (*q4_rows)(const float* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params);
  // INT2 (g a multiple of 4; d / 4 packed bytes per row, (scale, min) pairs as INT4): the same
  // forms as the INT4 kernels above.
  bool (*q2)(const float* x, int d, int g, uint8_t* packed, uint16_t* params);
  void (*dq2)(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
              float* y);
  bool (*q2_h)(const uint16_t* x, bool bf16, int d, int g, uint8_t* packed, uint16_t* params);
  void (*dq2_h)(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
                bool bf16, uint16_t* y);
  int (*q2_h_rows)(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, uint8_t* packed,
                   uint16_t* params);
  int (*q2_rows)(const float* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params);
};

const RowKernels& row_kernels_ref() noexcept;
const RowKernels* row_kernels_avx2() noexcept;  // null when the CPU lacks AVX2/F16C/FMA
const RowKernels& row_kernels() noexcept;       // the fastest available

}  // namespace skv::detail
