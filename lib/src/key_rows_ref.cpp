// The scalar key-transform kernels: the encoder's and reader's former per-row steps, composed
// from the reference pieces. The ground truth the AVX2 set is tested against.
#include <cstring>
#include <vector>

#include "key_rows.hpp"
#include "quant_rows.hpp"
#include "rope.hpp"

namespace skv::detail {
namespace {

// A row's f32 working copy (on the stack for head_dim up to 512).
struct RowBuffer {
  float stack[512];
  std::vector<float> heap;
  float* get(int d) {
    if (d <= 512) return stack;
    heap.resize(size_t(d));
    return heap.data();
  }
};

void load(const void* x, RowType t, int d, float* o) {
  const RowKernels& K = row_kernels_ref();
  if (t == RowType::f16) K.f16_to_f32(static_cast<const uint16_t*>(x), d, o);
  else if (t == RowType::bf16) K.bf16_to_f32(static_cast<const uint16_t*>(x), d, o);
  else std::memcpy(o, x, size_t(d) * 4);
}

void store(const float* y, RowType t, int d, void* o) {
  const RowKernels& K = row_kernels_ref();
  if (t == RowType::f16) K.f32_to_f16(y, d, static_cast<uint16_t*>(o));
  else if (t == RowType::bf16) K.f32_to_bf16(y, d, static_cast<uint16_t*>(o));
  else std::memcpy(o, y, size_t(d) * 4);
}

// Load, undo RoPE, subtract the centre.
void transform(const void* x, RowType t, int d, const RowRope& r, const float* centre, float* o) {
  load(x, t, d, o);
  if (r.cs) rope_rotate(o, r.cs, r.sn, d / 2, r.gptj, true);
  if (centre)
    for (int i = 0; i < d; ++i) o[i] = o[i] - centre[i];
}

// Row r of a run, and its RoPE.
const void* row_at(const void* x, RowType t, size_t stride, int r) {
  return static_cast<const char*>(x) + size_t(r) * stride * (t == RowType::f32 ? 4 : 2);
}
RowRope rope_at(const RowRope& r, int row) {
  RowRope o = r;
  if (r.cs) o.cs += size_t(row) * r.step, o.sn += size_t(row) * r.step;
  return o;
}

void accumulate(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r, double count,
                double* acc) {
  RowBuffer b;
  float* f = b.get(d);
  for (int row = 0; row < rows; ++row) {
    transform(row_at(x, t, stride, row), t, d, rope_at(r, row), nullptr, f);
    for (int i = 0; i < d; ++i) acc[i] += double(f[i]) / count;
  }
}

int q8(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r, const float* centre, int g,
       int8_t* q, uint16_t* scales) {
  RowBuffer b;
  float* f = b.get(d);
  for (int row = 0; row < rows; ++row) {
    transform(row_at(x, t, stride, row), t, d, rope_at(r, row), centre, f);
    if (!row_kernels_ref().q8(f, d, g, q + size_t(row) * size_t(d), scales + size_t(row) * size_t(d / g)))
      return row;
  }
  return -1;
}

int q4(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r, const float* centre, int g,
       uint8_t* packed, uint16_t* params) {
  RowBuffer b;
  float* f = b.get(d);
  for (int row = 0; row < rows; ++row) {
    transform(row_at(x, t, stride, row), t, d, rope_at(r, row), centre, f);
    if (!row_kernels_ref().q4(f, d, g, packed + size_t(row) * size_t(d / 2),
                              params + size_t(row) * size_t(2 * (d / g))))
      return row;
  }
  return -1;
}

void dq8(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre, const RowRope& r,
         RowType t, void* y) {
  RowBuffer b;
  float* f = b.get(d);
  row_kernels_ref().dq8(q, d, g, scales, centre, f);
  if (r.cs) rope_rotate(f, r.cs, r.sn, d / 2, r.gptj, false);
  store(f, t, d, y);
}

void dq4(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
         const RowRope& r, RowType t, void* y) {
  RowBuffer b;
  float* f = b.get(d);
  row_kernels_ref().dq4(packed, d, g, params, centre, f);
  if (r.cs) rope_rotate(f, r.cs, r.sn, d / 2, r.gptj, false);
  store(f, t, d, y);
}

int q2(const void* x, RowType t, size_t stride, int rows, int d, const RowRope& r, const float* centre, int g,
       uint8_t* packed, uint16_t* params) {
  RowBuffer b;
  float* f = b.get(d);
  for (int row = 0; row < rows; ++row) {
    transform(row_at(x, t, stride, row), t, d, rope_at(r, row), centre, f);
    if (!row_kernels_ref().q2(f, d, g, packed + size_t(row) * size_t(d / 4),
                              params + size_t(row) * size_t(2 * (d / g))))
      return row;
  }
  return -1;
}

void dq2(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
         const RowRope& r, RowType t, void* y) {
  RowBuffer b;
  float* f = b.get(d);
  row_kernels_ref().dq2(packed, d, g, params, centre, f);
  if (r.cs) rope_rotate(f, r.cs, r.sn, d / 2, r.gptj, false);
  store(f, t, d, y);
}

}  // namespace

const KeyRowKernels& key_row_kernels_ref() noexcept {
  static const KeyRowKernels k{"scalar", accumulate, q8, q4, dq8, dq4, q2, dq2};
  return k;
}

const KeyRowKernels& key_row_kernels() noexcept {
  static const KeyRowKernels& best = []() -> const KeyRowKernels& {
    const KeyRowKernels* k = key_row_kernels_avx2();
    return k ? *k : key_row_kernels_ref();
  }();
  return best;
}

}  // namespace skv::detail
