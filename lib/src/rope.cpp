#include "rope.hpp"

#include <algorithm>
#include <cmath>

namespace skv::detail {

RopeTable::RopeTable(double theta, RopeStyle style, int head_dim)
    : inv_freq_(size_t(head_dim / 2)), style_(style), half_(head_dim / 2) {
  for (int j = 0; j < half_; ++j)
    inv_freq_[size_t(j)] = 1.0 / std::pow(theta, double(2 * j) / double(head_dim));
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

void RopeTable::apply(float* x, const float* cs, const float* sn) const {
  const int step = style_ == RopeStyle::gptj ? 2 : 1, off = style_ == RopeStyle::gptj ? 1 : half_;
  for (int j = 0; j < half_; ++j) {
    float& a = x[j * step];
    float& b = x[j * step + off];
    const float a0 = a, b0 = b;
    a = std::fmaf(a0, cs[j], -(b0 * sn[j]));
    b = std::fmaf(b0, cs[j], a0 * sn[j]);
  }
}

void RopeTable::undo(float* x, const float* cs, const float* sn) const {
  const int step = style_ == RopeStyle::gptj ? 2 : 1, off = style_ == RopeStyle::gptj ? 1 : half_;
  for (int j = 0; j < half_; ++j) {
    float& a = x[j * step];
    float& b = x[j * step + off];
    const float a0 = a, b0 = b;
    a = std::fmaf(a0, cs[j], b0 * sn[j]);
    b = std::fmaf(b0, cs[j], -(a0 * sn[j]));
  }
}

}  // namespace skv::detail
