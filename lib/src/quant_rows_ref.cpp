#include <cstddef>
#include "quant_rows.hpp"

#include "skv/half.hpp"
#include "skv/quant.hpp"

#include <vector>

namespace skv::detail {
namespace {

bool q8(const float* x, int d, int g, int8_t* q, uint16_t* scales) {
  for (int i = 0, j = 0; i < d; i += g, ++j)
    if (!quant::q8_ref(x + i, size_t(g), q + i, scales + j)) return false;
  return true;
}

bool q4(const float* x, int d, int g, uint8_t* packed, uint16_t* params) {
  for (int i = 0, j = 0; i < d; i += g, j += 2)
    if (!quant::q4_ref(x + i, size_t(g), packed + i / 2, params + j, params + j + 1)) return false;
  return true;
}

void dq8(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre, float* y) {
  for (int i = 0, j = 0; i < d; i += g, ++j)
    quant::dq8_ref(q + i, size_t(g), scales[j], centre ? centre + i : nullptr, y + i);
}

void dq4(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
         float* y) {
  for (int i = 0, j = 0; i < d; i += g, j += 2)
    quant::dq4_ref(packed + i / 2, size_t(g), params[j], params[j + 1],
                   centre ? centre + i : nullptr, y + i);
}

void f16_to_f32_row(const uint16_t* s, int n, float* o) {
  for (int i = 0; i < n; ++i) o[i] = f16_to_f32(s[i]);
}
void bf16_to_f32_row(const uint16_t* s, int n, float* o) {
  for (int i = 0; i < n; ++i) o[i] = bf16_to_f32(s[i]);
}
void f32_to_f16_row(const float* s, int n, uint16_t* o) {
  for (int i = 0; i < n; ++i) o[i] = f32_to_f16(s[i]);
}
void f32_to_bf16_row(const float* s, int n, uint16_t* o) {
  for (int i = 0; i < n; ++i) o[i] = f32_to_bf16(s[i]);
}

// The fused forms, one group at a time through an f32 buffer (on the stack for usual groups).
struct GroupBuffer {
  float stack[256];
  std::vector<float> heap;
  float* get(int g) {
    if (g <= 256) return stack;
    heap.resize(size_t(g));
    return heap.data();
  }
};

void load(const uint16_t* s, bool bf16, int n, float* o) {
  (bf16 ? bf16_to_f32_row : f16_to_f32_row)(s, n, o);
}
void store(const float* s, bool bf16, int n, uint16_t* o) {
  (bf16 ? f32_to_bf16_row : f32_to_f16_row)(s, n, o);
}

bool q8_h(const uint16_t* x, bool bf16, int d, int g, int8_t* q, uint16_t* scales) {
  GroupBuffer b;
  float* f = b.get(g);
  for (int i = 0, j = 0; i < d; i += g, ++j) {
    load(x + i, bf16, g, f);
    if (!quant::q8_ref(f, size_t(g), q + i, scales + j)) return false;
  }
  return true;
}

bool q4_h(const uint16_t* x, bool bf16, int d, int g, uint8_t* packed, uint16_t* params) {
  GroupBuffer b;
  float* f = b.get(g);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    load(x + i, bf16, g, f);
    if (!quant::q4_ref(f, size_t(g), packed + i / 2, params + j, params + j + 1)) return false;
  }
  return true;
}

void dq8_h(const int8_t* q, int d, int g, const uint16_t* scales, const float* centre, bool bf16,
           uint16_t* y) {
  GroupBuffer b;
  float* f = b.get(g);
  for (int i = 0, j = 0; i < d; i += g, ++j) {
    quant::dq8_ref(q + i, size_t(g), scales[j], centre ? centre + i : nullptr, f);
    store(f, bf16, g, y + i);
  }
}

void dq4_h(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre,
           bool bf16, uint16_t* y) {
  GroupBuffer b;
  float* f = b.get(g);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    quant::dq4_ref(packed + i / 2, size_t(g), params[j], params[j + 1],
                   centre ? centre + i : nullptr, f);
    store(f, bf16, g, y + i);
  }
}

int q8_h_rows(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, int8_t* q, uint16_t* scales) {
  for (int r = 0; r < rows; ++r)
    if (!q8_h(x + size_t(r) * stride, bf16, d, g, q + size_t(r) * size_t(d), scales + size_t(r) * size_t(d / g)))
      return r;
  return -1;
}

int q4_h_rows(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, uint8_t* packed,
              uint16_t* params) {
  for (int r = 0; r < rows; ++r)
    if (!q4_h(x + size_t(r) * stride, bf16, d, g, packed + size_t(r) * size_t(d / 2),
              params + size_t(r) * size_t(2 * (d / g))))
      return r;
  return -1;
}

int q8_rows(const float* x, size_t stride, int rows, int d, int g, int8_t* q, uint16_t* scales) {
  for (int r = 0; r < rows; ++r)
    if (!q8(x + size_t(r) * stride, d, g, q + size_t(r) * size_t(d), scales + size_t(r) * size_t(d / g)))
      return r;
  return -1;
}

int q4_rows(const float* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params) {
  for (int r = 0; r < rows; ++r)
    if (!q4(x + size_t(r) * stride, d, g, packed + size_t(r) * size_t(d / 2),
            params + size_t(r) * size_t(2 * (d / g))))
      return r;
  return -1;
}

bool q2(const float* x, int d, int g, uint8_t* packed, uint16_t* params) {
  for (int i = 0, j = 0; i < d; i += g, j += 2)
    if (!quant::q2_ref(x + i, size_t(g), packed + i / 4, params + j, params + j + 1)) return false;
  return true;
}

void dq2(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre, float* y) {
  for (int i = 0, j = 0; i < d; i += g, j += 2)
    quant::dq2_ref(packed + i / 4, size_t(g), params[j], params[j + 1], centre ? centre + i : nullptr, y + i);
}

bool q2_h(const uint16_t* x, bool bf16, int d, int g, uint8_t* packed, uint16_t* params) {
  GroupBuffer b;
  float* f = b.get(g);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    load(x + i, bf16, g, f);
    if (!quant::q2_ref(f, size_t(g), packed + i / 4, params + j, params + j + 1)) return false;
  }
  return true;
}

void dq2_h(const uint8_t* packed, int d, int g, const uint16_t* params, const float* centre, bool bf16,
           uint16_t* y) {
  GroupBuffer b;
  float* f = b.get(g);
  for (int i = 0, j = 0; i < d; i += g, j += 2) {
    quant::dq2_ref(packed + i / 4, size_t(g), params[j], params[j + 1], centre ? centre + i : nullptr, f);
    store(f, bf16, g, y + i);
  }
}

int q2_h_rows(const uint16_t* x, size_t stride, int rows, bool bf16, int d, int g, uint8_t* packed,
              uint16_t* params) {
  for (int r = 0; r < rows; ++r)
    if (!q2_h(x + size_t(r) * stride, bf16, d, g, packed + size_t(r) * size_t(d / 4),
              params + size_t(r) * size_t(2 * (d / g))))
      return r;
  return -1;
}

int q2_rows(const float* x, size_t stride, int rows, int d, int g, uint8_t* packed, uint16_t* params) {
  for (int r = 0; r < rows; ++r)
    if (!q2(x + size_t(r) * stride, d, g, packed + size_t(r) * size_t(d / 4),
            params + size_t(r) * size_t(2 * (d / g))))
      return r;
  return -1;
}

}  // namespace

const RowKernels& row_kernels_ref() noexcept {
  static const RowKernels k{"scalar",        q8,
                            q4,              dq8,
                            dq4,             f16_to_f32_row,
                            bf16_to_f32_row, f32_to_f16_row,
                            f32_to_bf16_row, q8_h,
                            q4_h,            dq8_h,
                            dq4_h,           q8_h_rows,
                            q4_h_rows,       q8_rows,
                            q4_rows,         q2,
                            dq2,             q2_h,
                            dq2_h,           q2_h_rows,
                            q2_rows};
  return k;
}

const RowKernels& row_kernels() noexcept {
  static const RowKernels& best = [] () -> const RowKernels& {
    const RowKernels* k = row_kernels_avx2();
    return k ? *k : row_kernels_ref();
  }();
  return best;
}

}  // namespace skv::detail
