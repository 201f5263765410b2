// Work buffers handed from task to task in a parallel walk: a fresh multi-MiB buffer per task
// costs a page fault per 4 KiB, often more than the arithmetic. At most one T per thread is
// ever created; all are freed with the pool.
#pragma once
#include <memory>
#include <mutex>
#include <vector>

namespace skv::detail {

template <class T>
class ScratchPool {
 public:
  // A T from an earlier task (its contents stale), or a new default-constructed one.
  std::unique_ptr<T> take() {
    std::lock_guard lock(mutex_);
    if (spare_.empty()) return std::make_unique<T>();
    std::unique_ptr<T> s = std::move(spare_.back());
    spare_.pop_back();
    return s;
  }
  void give(std::unique_ptr<T> s) {
    std::lock_guard lock(mutex_);
    spare_.push_back(std::move(s));
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> spare_;
};

}  // namespace skv::detail
