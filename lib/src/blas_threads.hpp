// Holds OpenBLAS to one thread for a scope. skv's walks already run one head per thread, and
// OpenBLAS's own threads on their small products only spin and yield (a third of the CPU time
// when scoring). OpenBLAS has no per-call thread count, hence the global setting, restored on exit.
#pragma once
#include <cblas.h>

namespace skv::detail {

class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) {
    if (saved_ > 1) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (saved_ > 1) openblas_set_num_threads(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

}  // namespace skv::detail
