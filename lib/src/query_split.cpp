#include "skv/query_split.hpp"

#include <cstring>

#include "skv/error.hpp"

namespace skv {

std::optional<Holdout> holdout_from_name(const std::string& name) {
  if (name == "none") return Holdout::none;
  if (name == "half") return Holdout::half;
  return std::nullopt;
}

const char* holdout_name(Holdout h) { return h == Holdout::half ? "half" : "none"; }

std::vector<int> window_half(int window, QueryHalf half) {
  std::vector<int> out;
  for (int i = 0; i < window; ++i) {
    const bool fit = (window - 1 - i) % 2 == 0;
    if (fit == (half == QueryHalf::fit)) out.push_back(i);
  }
  return out;
}

QuerySubset with_queries(const KvCache& c, std::span<const int> positions) {
  const KvShape& s = c.shape;
  if (s.window <= 0 || s.q_heads <= 0 || c.layers.empty() || !c.layers[0].q)
    fail(Errc::invalid_argument, c.source, "no observation queries (layers.N.q) to split");
  if (positions.empty()) fail(Errc::invalid_argument, c.source, "empty query subset");
  for (size_t k = 0; k < positions.size(); ++k) {
    if (positions[k] < 0 || positions[k] >= s.window)
      fail(Errc::invalid_argument, c.source,
           "query position " + std::to_string(positions[k]) + " outside the window of " + std::to_string(s.window));
    if (k > 0 && positions[k] <= positions[k - 1])
      fail(Errc::invalid_argument, c.source, "query positions must be strictly ascending");
  }
  QuerySubset out;
  out.positions.assign(positions.begin(), positions.end());
  out.cache = c;
  const int n = int(positions.size()), W = s.window, D = s.head_dim;
  out.cache.shape.window = n;
  out.q.reserve(c.layers.size());
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const TensorView& src = *c.layers[l].q;
    const size_t row = size_t(D) * dtype_size(src.dtype);
    Tensor t(src.dtype, {s.q_heads, n, D});
    for (int h = 0; h < s.q_heads; ++h)
      for (int j = 0; j < n; ++j)
        std::memcpy(t.data.data() + (size_t(h) * size_t(n) + size_t(j)) * row,
                    src.bytes.data() + (size_t(h) * size_t(W) + size_t(positions[size_t(j)])) * row, row);
    out.q.push_back(std::move(t));
    out.cache.layers[l].q = out.q.back().view();
  }
  return out;
}

QuerySubset query_half(const KvCache& c, QueryHalf half) {
  if (c.shape.window < 2)
    fail(Errc::invalid_argument, c.source,
         "--holdout half needs an observation window of at least 2 queries (this one has " +
             std::to_string(c.shape.window) + ")");
  const std::vector<int> pos = window_half(c.shape.window, half);
  return with_queries(c, pos);
}

}  // namespace skv
