// Inner loops of planning (scoring and distortion tables), written as plain C++ over fixed 8-lane
// partial results and compiled twice (AVX2 and baseline x86-64, chosen at run time by
// target_clones). Every lane does the same IEEE operations in the same order in both builds and
// the reductions are explicit, so plans do not depend on the CPU, nor on the thread count.
// Not installed; not part of the public API.
#pragma once
#include <cstdint>

namespace skv::detail {

// Tests: run the portable loops even where AVX2 is present (not thread-safe; set it before work).
void force_portable_plan_kernels(bool on) noexcept;

// row[t] = exp(row[t] - mx) for t < n; returns the sum (rows of one softmax). exp is a degree-6
// polynomial on [-ln2/2, ln2/2] times 2^k, relative error below 3e-7; arguments below -87 give 0.
float exp_shifted(float* row, int n, float mx) noexcept;

// Max of row[0..n) after setting row[t] = -inf where absent[t] (may be null) or row[t] is NaN.
float mask_and_max(float* row, int n, const uint8_t* absent) noexcept;

// row[t] *= s for t < n.
void scale_row(float* row, int n, float s) noexcept;

// Indices of the k largest finite values of row[0..n) (k <= 32), in decreasing value order, ties
// by increasing index; returns how many (fewer when the row is short or holds -inf).
int top_k(const float* row, int n, int k, int32_t* idx, float* val) noexcept;

// Per token t < n of one query's attention row p: share[t] += p, quant[t] += p^2 * w,
// drop[t] += p^2 * w / (1 - min(p, 0.9))^2 (dropping renormalises the rest; beyond 0.9 the
// token is the output).
void add_weights(const float* p, int n, float w, float* share, float* quant, float* drop) noexcept;

// True when every x[i] (i < n) is finite.
bool all_finite(const float* x, int n) noexcept;

// Sum of x[i]^2 over i < n (8 partial sums, then added in lane order).
float sum_squares(const float* x, int n) noexcept;

// True when every x[i] is finite; then also ss = sum x[i]^2 (8 partial sums added in order).
bool finite_sum_squares(const float* x, int n, float& ss) noexcept;

// acc[i] += x[i] for i < n.
void add_row(float* acc, const float* x, int n) noexcept;

// acc[d] += X[i * D + d] for each row i < n with use[i], rows in order (the additions of add_row
// row by row).
void add_rows(float* acc, const float* X, int n, int D, const uint8_t* use) noexcept;

// finite_sum_squares over 32 lanes (element i into lane i mod 32; lanes added in order): for
// whole blocks of rows, where one 8-lane chain would wait on its own additions.
bool finite_sum_squares32(const float* x, int n, float& ss) noexcept;

// Logits of a block of keys: S[r * ldS + t] = sum_d Q[r * D + d] * K[t * D + d] for r < R,
// t < n. Each dot product takes 8 lanes of fused multiply-adds over d (d mod 8), added as
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)); D % 8 != 0: one fused sum in d order.
// Written here rather than through BLAS: with a few queries, sgemm spends as long packing the
// keys as multiplying them.
void block_logits(const float* Q, int R, const float* K, int n, int D, float* S, int ldS) noexcept;

// Outputs of a block of values: O[r * D + d] += sum_i P[r * ldP + i] * V[i * D + d] for r < R,
// one fused multiply-add per i in increasing i (so a pass block by block adds in token order).
void block_pv(const float* P, int R, int ldP, const float* V, int n, int D, float* O) noexcept;

// Analytic squared errors of the row y = x - c (c may be null: y = x) quantized at INT8
// (symmetric, groups of g8), INT4 and INT2 (asymmetric min/max, groups of g4): each element errs by
// step^2 / 12, step the group's scale (its f16 rounding left out). ws8 / ws4 hold each group's
// summed channel weight divided by 12. dev = sum (x - m)^2 (m may be null: dev = 0), over 16 lanes
// (d mod 16) folded to 8 (lane l + lane l + 8) and added in order. g8 must be a multiple of g4,
// g4 a multiple of 8. Returns false when y is not finite.
bool row_errors(const float* x, const float* c, const float* m, int n, int g8, int g4, const double* ws8, const double* ws4,
                double& e8, double& e4, double& e2, float& dev) noexcept;

}  // namespace skv::detail
