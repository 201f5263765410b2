#include "layer_walk.hpp"

#include <algorithm>

#include "skv/parallel.hpp"

namespace skv::detail {

int layers_per_group(int heads, int threads) noexcept {
  const int n = threads > 0 ? threads : default_threads();
  return std::max(1, (n + std::max(heads, 1) - 1) / std::max(heads, 1));
}

void walk_layers(int layers, int heads, int threads, const std::function<void(int, int)>& task,
                 const std::function<void(int, int)>& group_done, const std::function<void(int)>& layer_done) {
  const int g = layers_per_group(heads, threads);
  for (int l0 = 0; l0 < layers; l0 += g) {
    const int n = std::min(g, layers - l0);
    parallel_for(n * heads, threads, [&](int i) { task(l0 + i / heads, i % heads); });
    if (group_done) group_done(l0, n);
    if (layer_done)
      for (int l = l0; l < l0 + n; ++l) layer_done(l);
  }
}

}  // namespace skv::detail
