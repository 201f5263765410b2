// Internal helpers shared by the synthetic generator, scoring and metrics: row conversion to/from
// float (row_convert.hpp) and a float RoPE table. Not installed; not part of the public API.
#pragma once
#include "row_convert.hpp"
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "skv/dtype.hpp"
#include "skv/half.hpp"
#include "skv/kvcache.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace skv::detail {

// cos/sin of every (position, frequency) pair, computed in double once so the per-element work
// is a multiply-add. neox pairs channel i with i + d/2; gptj pairs 2i with 2i + 1.
class RopeTable {
 public:
  RopeTable(int tokens, int dim, double theta, RopeStyle style, int64_t offset)
      : dim_(dim), style_(style), cs_(size_t(tokens) * size_t(dim / 2) * 2) {
    const int half = dim / 2;
    for (int t = 0; t < tokens; ++t)
      for (int i = 0; i < half; ++i) {
        const double freq = std::pow(theta, -2.0 * i / dim);
        const double a = double(t + offset) * freq;
        cs_[(size_t(t) * half + i) * 2] = float(std::cos(a));
        cs_[(size_t(t) * half + i) * 2 + 1] = float(std::sin(a));
      }
  }
  // Rotates x (dim values) to position `token`; inverse rotates back.
  void apply(float* x, int token, bool inverse) const noexcept {
    const int half = dim_ / 2;
    const float* cs = cs_.data() + size_t(token) * half * 2;
    const float sg = inverse ? -1.0f : 1.0f;
    for (int i = 0; i < half; ++i) {
      const int a = style_ == RopeStyle::gptj ? 2 * i : i;
      const int b = style_ == RopeStyle::gptj ? 2 * i + 1 : i + half;
      const float c = cs[2 * i], s = sg * cs[2 * i + 1];
      const float x1 = x[a], x2 = x[b];
      x[a] = x1 * c - x2 * s;
      x[b] = x2 * c + x1 * s;
    }
  }

 private:
  int dim_;
  RopeStyle style_;
  std::vector<float> cs_;
};

}  // namespace skv::detail
