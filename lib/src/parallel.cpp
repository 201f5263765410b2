#include "skv/parallel.hpp"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace skv {
namespace {

// One job of parallel_for: indices handed out one by one, the first exception kept.
struct Job {
  const std::function<void(int)>* fn = nullptr;
  int n = 0;
  std::atomic<int> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;

  void work() {
    for (int i; (i = next.fetch_add(1)) < n;) {
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;  // stop handing out work
      }
    }
  }
};

thread_local bool t_in_worker = false;

// Workers kept for the life of the process: planning and coding walk the cache in many short
// parallel steps (one per layer group), and starting threads for each cost more than the work
// of a small cache. One job at a time; a caller that finds the pool busy (another thread's job)
// or is itself inside a job starts threads of its own, as before.
class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool;  // never destroyed: workers may outlive static destruction
    return *pool;
  }

  // Runs job on the calling thread and up to `helpers` workers; false when the pool is busy.
  bool run(Job& job, int helpers) {
    std::unique_lock busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard lock(m_);
      while (int(workers_.size()) < helpers) workers_.emplace_back([this] { loop(); });
      job_ = &job;
      wanted_ = helpers;
      running_ = 0;
      ++generation_;
    }
    cv_.notify_all();
    t_in_worker = true;  // a parallel_for inside fn must not wait for this pool
    job.work();
    t_in_worker = false;
    std::unique_lock lock(m_);
    wanted_ = 0;  // every index is handed out: workers not yet awake need not join
    done_.wait(lock, [&] { return running_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void loop() {
    t_in_worker = true;
    uint64_t seen = 0;
    std::unique_lock lock(m_);
    for (;;) {
      cv_.wait(lock, [&] { return generation_ != seen && wanted_ > 0; });
      seen = generation_;
      --wanted_;
      ++running_;
      Job* job = job_;
      lock.unlock();
      job->work();
      lock.lock();
      if (--running_ == 0) done_.notify_all();
    }
  }

  std::mutex busy_;  // held by the one caller whose job the pool runs
  std::mutex m_;
  std::condition_variable cv_, done_;
  std::vector<std::thread> workers_;
  Job* job_ = nullptr;
  int wanted_ = 0, running_ = 0;  // workers still to join the job, and those in it
  uint64_t generation_ = 0;
};

}  // namespace

int default_threads() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

void parallel_for(int n, int threads, const std::function<void(int)>& fn) {
  if (threads <= 0) threads = default_threads();
  if (threads > n) threads = n;
  if (threads <= 1) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  Job job;
  job.fn = &fn;
  job.n = n;
  if (t_in_worker || !Pool::get().run(job, threads - 1)) {
    std::vector<std::thread> own;
    for (int t = 1; t < threads; ++t) own.emplace_back([&] { job.work(); });
    job.work();
    for (auto& t : own) t.join();
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace skv
