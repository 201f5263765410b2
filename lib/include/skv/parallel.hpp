// A tiny fork-join helper: runs fn(i) for i in [0, n) on up to `threads` std::threads
// (0 = all cores). Work is split by index, so results never depend on the thread count.
#pragma once
#include <functional>

namespace skv {

int default_threads() noexcept;
void parallel_for(int n, int threads, const std::function<void(int)>& fn);

}  // namespace skv
