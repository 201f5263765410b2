#include "rope.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu_features.hpp"

#include <algorithm>
#include <cmath>

namespace skv::detail {

RopeTable::RopeTable(const RopeParams& params, RopeStyle style, int head_dim)
    : params_(params), inv_freq_(size_t(head_dim / 2)), style_(style), half_(head_dim / 2) {
  for (int j = 0; j < half_; ++j) inv_freq_[size_t(j)] = rope_inv_freq(params, j, head_dim);
}

RopeTables::RopeTables(const KvMeta& meta, int layers, int head_dim, int tokens) {
  for (int l = 0; l < layers; ++l) {
    const RopeParams p = meta.rope_for_layer(l);
    size_t i = 0;
    while (i < tables_.size() && !(tables_[i].params() == p)) ++i;
    if (i == tables_.size()) tables_.emplace_back(p, meta.rope_style, head_dim, meta.position_offset, tokens);
    index_.push_back(int(i));
  }
}

void RopeTable::cache_positions(int64_t first, int count) {
  cached_count_ = 0;
  cached_cs_.resize(size_t(count) * size_t(half_));
  cached_sn_.resize(size_t(count) * size_t(half_));
  for (int i = 0; i < count; ++i)
    angles(first + i, cached_cs_.data() + size_t(i) * size_t(half_),
           cached_sn_.data() + size_t(i) * size_t(half_));
  cached_first_ = first;
  cached_count_ = count;
}

void RopeTable::angles(int64_t p, float* cs, float* sn) const {
  if (p >= cached_first_ && p - cached_first_ < cached_count_) {
    const size_t at = size_t(p - cached_first_) * size_t(half_);
    std::copy_n(cached_cs_.data() + at, half_, cs);
    std::copy_n(cached_sn_.data() + at, half_, sn);
    return;
  }
  for (int j = 0; j < half_; ++j) {
    const double a = double(p) * inv_freq_[size_t(j)];
    cs[j] = float(std::cos(a));
    sn[j] = float(std::sin(a));
  }
}

namespace {

// The rotations, written once: a*c -/+ b*s with one explicit fmaf each (formats/skv.md). The
// generic build calls libm's fmaf (no -mfma), which costs a function call per element; the FMA
// build below turns the same fmaf into one instruction. fmaf is exactly rounded either way, so
// both give the same bits.
template <bool Undo>
[[gnu::always_inline]] inline void rotate(float* x, const float* cs, const float* sn, int half,
                                          int step, int off) {
  for (int j = 0; j < half; ++j) {
    float& a = x[j * step];
    float& b = x[j * step + off];
    const float a0 = a, b0 = b;
    if (Undo) {
      a = std::fmaf(a0, cs[j], b0 * sn[j]);
      b = std::fmaf(b0, cs[j], -(a0 * sn[j]));
    } else {
      a = std::fmaf(a0, cs[j], -(b0 * sn[j]));
      b = std::fmaf(b0, cs[j], a0 * sn[j]);
    }
  }
}

template <bool Undo>
void rotate_generic(float* x, const float* cs, const float* sn, int half, int step, int off) {
  rotate<Undo>(x, cs, sn, half, step, off);
}

#if defined(__x86_64__)
// NeoX pairs (j, j + half) are contiguous: eight at a time, the same two roundings per element
// as rotate() (the product, then the fused multiply-add), so the same bits.
template <bool Undo>
__attribute__((target("avx2,fma"))) void rotate_fma(float* x, const float* cs, const float* sn, int half,
                                                    int step, int off) {
  int j = 0;
  if (step == 1 && off == half)
    for (; j + 8 <= half; j += 8) {
      const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + half + j);
      const __m256 c = _mm256_loadu_ps(cs + j), s = _mm256_loadu_ps(sn + j);
      const __m256 neg = _mm256_set1_ps(-0.0f);
      __m256 a1, b1;
      if (Undo) {
        a1 = _mm256_fmadd_ps(a, c, _mm256_mul_ps(b, s));
        b1 = _mm256_fmadd_ps(b, c, _mm256_xor_ps(_mm256_mul_ps(a, s), neg));
      } else {
        a1 = _mm256_fmadd_ps(a, c, _mm256_xor_ps(_mm256_mul_ps(b, s), neg));
        b1 = _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s));
      }
      _mm256_storeu_ps(x + j, a1);
      _mm256_storeu_ps(x + half + j, b1);
    }
  // The rest (and GPT-J's interleaved pairs) element by element.
  if (j == 0) return rotate<Undo>(x, cs, sn, half, step, off);
  for (; j < half; ++j) {
    float& a = x[j];
    float& b = x[j + half];
    const float a0 = a, b0 = b;
    if (Undo) {
      a = std::fmaf(a0, cs[j], b0 * sn[j]);
      b = std::fmaf(b0, cs[j], -(a0 * sn[j]));
    } else {
      a = std::fmaf(a0, cs[j], -(b0 * sn[j]));
      b = std::fmaf(b0, cs[j], a0 * sn[j]);
    }
  }
}
#endif

template <bool Undo>
void rotate_best(float* x, const float* cs, const float* sn, int half, int step, int off) {
#if defined(__x86_64__)
  if (cpu_has_avx2_fma_f16c()) return rotate_fma<Undo>(x, cs, sn, half, step, off);
#endif
  rotate_generic<Undo>(x, cs, sn, half, step, off);
}

}  // namespace

void rope_rotate(float* x, const float* cs, const float* sn, int half, bool gptj, bool undo) {
  const int step = gptj ? 2 : 1, off = gptj ? 1 : half;
  if (undo) rotate_best<true>(x, cs, sn, half, step, off);
  else rotate_best<false>(x, cs, sn, half, step, off);
}

void RopeTable::apply(float* x, const float* cs, const float* sn) const {
  const int step = style_ == RopeStyle::gptj ? 2 : 1, off = style_ == RopeStyle::gptj ? 1 : half_;
  rotate_best<false>(x, cs, sn, half_, step, off);
}

void RopeTable::undo(float* x, const float* cs, const float* sn) const {
  const int step = style_ == RopeStyle::gptj ? 2 : 1, off = style_ == RopeStyle::gptj ? 1 : half_;
  rotate_best<true>(x, cs, sn, half_, step, off);
}

}  // namespace skv::detail
