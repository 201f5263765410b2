// Key-transform row kernels: one key row through the whole transform of formats/skv.md ("Key
// transforms") in one call. Encode: load (F16 / BF16 / F32), undo RoPE at the row's position,
// subtract the centre, quantize. Decode: dequantize with the centre, re-apply RoPE, store. The
// scalar set composes the reference pieces (row_kernels_ref, rope_rotate) and is the ground
// truth; the AVX2 set does the same IEEE operations per element in the same order, so the same
// bits (tests compare them).
#pragma once
#include <cstddef>
#include <cstdint>

namespace skv::detail {

enum class RowType : uint8_t { f16, bf16, f32 };

// RoPE of a run of rows: row r's cos / sin (head_dim / 2 each) at cs + r * step and
// sn + r * step, or cs == null for none.
struct RowRope {
  const float* cs = nullptr;
  const float* sn = nullptr;
  size_t step = 0;
  bool gptj = false;  // pairs (2j, 2j + 1); else NeoX pairs (j, j + head_dim / 2)
};

struct KeyRowKernels {
  const char* name;
  // The encoder's kernels take a run of `rows` rows, row r at x + r * stride elements.
  // Centre pass: acc[i] += double(x'[i]) / count for each row in order, x' the row with RoPE
  // undone.
  void (*accumulate)(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r,
                     double count, double* acc);
  // x' - centre (centre may be null) quantized as RowKernels::q8 / q4 (/ q2) do, outputs row after row.
  // Returns -1, or the first row they refuse (the outputs are then unspecified).
  int (*q8)(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r,
            const float* centre, int g, int8_t* q, uint16_t* scales);
  int (*q4)(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r,
            const float* centre, int g, uint8_t* packed, uint16_t* params);
  // One row: RowKernels::dq8 / dq4 (centre may be null), then RoPE re-applied, stored as type t.
  void (*dq8)(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre,
              const RowRope& r, RowType t, void* y);
  void (*dq4)(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
              const RowRope& r, RowType t, void* y);
  // INT2, as q4 / dq4 (RowKernels::q2 / dq2).
  int (*q2)(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r,
            const float* centre, int g, uint8_t* packed, uint16_t* params);
  void (*dq2)(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
              const RowRope& r, RowType t, void* y);
};

const KeyRowKernels& key_row_kernels_ref() noexcept;
const KeyRowKernels* key_row_kernels_avx2() noexcept;  // null when the CPU lacks AVX2/F16C/FMA
const KeyRowKernels& key_row_kernels() noexcept;       // the fastest available

}  // namespace skv::detail
