#include "rope.hpp"

#include <cmath>

namespace skv::detail {

RopeTable::RopeTable(double theta, RopeStyle style, int head_dim)
    : inv_freq_(size_t(head_dim / 2)), style_(style), half_(head_dim / 2) {
  for (int j = 0; j < half_; ++j)
    inv_freq_[size_t(j)] = 1.0 / std::pow(theta, double(2 * j) / double(head_dim));
}

void RopeTable::angles(int64_t p, float* cs, float* sn) const {
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
