// RoPE as the container defines it (formats/skv.md, "Key transforms"): f32 cos/sin tables computed
// in f64, rotations spelled out with explicit fmaf so a GPU reproduces them bit for bit.
#pragma once
#include <cstdint>
#include <vector>

#include "skv/kvcache.hpp"

namespace skv::detail {

class RopeTable {
 public:
  RopeTable(double theta, RopeStyle style, int head_dim);
  // Fills cos/sin for position p (head_dim / 2 entries each).
  void angles(int64_t p, float* cs, float* sn) const;
  void apply(float* x, const float* cs, const float* sn) const;  // rotate by +angle
  void undo(float* x, const float* cs, const float* sn) const;   // rotate by -angle

 private:
  std::vector<double> inv_freq_;
  RopeStyle style_;
  int half_;
};

}  // namespace skv::detail
