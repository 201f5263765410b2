// Internal: walks a cache's (layer, kv head) pairs layer group by layer group so that a pass over
// a memory-mapped dump keeps only a few layers resident. Not installed; not part of the public API.
#pragma once
#include <functional>

namespace skv::detail {

// Layers per group: enough (layer, head) tasks to keep `threads` workers busy, never more layers
// than workers (0 = all cores), at least 1.
int layers_per_group(int heads, int threads) noexcept;

// Runs task(l, h) for every layer l in [0, layers) and head h in [0, heads) on up to `threads`
// workers, one group of layers_per_group() consecutive layers at a time. After a group's tasks
// are all done, group_done(first, count) runs on the calling thread (may be empty), then
// layer_done(l) for each layer of the group in increasing order (may be empty). No task of a
// later group starts before both returned, so at most one group of layers is being read at any
// moment. Work is split by index: results never depend on the thread count.
void walk_layers(int layers, int heads, int threads, const std::function<void(int, int)>& task,
                 const std::function<void(int, int)>& group_done, const std::function<void(int)>& layer_done);

}  // namespace skv::detail
