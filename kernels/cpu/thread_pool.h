// A fixed set of worker threads that run the parallel loops of the CPU kernels.
//
// parallel_for hands out task indices from a shared counter; the caller works too. Which
// thread runs a task is not fixed, so kernels keep every output element's arithmetic inside
// one task: results never depend on the thread count or on scheduling.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace draftwise::cpu {

class ThreadPool {
 public:
  // num_threads counts the caller; 0 picks the number of hardware threads.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(i) for every i in [0, num_tasks) and returns when all have finished. Not
  // reentrant: a task must not call parallel_for on the same pool.
  void parallel_for(int64_t num_tasks, const std::function<void(int64_t)>& task);

 private:
  void worker_loop();
  void run_tasks();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<int64_t> finished_tasks_{0};
  std::atomic<uint64_t> generation_{0};
  int busy_workers_ = 0;
  bool stopping_ = false;
};

}  // namespace draftwise::cpu
