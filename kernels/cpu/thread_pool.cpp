#include "kernels/cpu/thread_pool.h"

#include <algorithm>

namespace draftwise::cpu {

namespace {

// Workers spin this many rounds on the generation counter before sleeping: a decode step
// issues hundreds of short loops, and a futex wake-up per loop would cost more than the work.
constexpr int kSpinRounds = 20000;

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  num_threads = std::max(num_threads, 1);
  workers_.reserve(static_cast<size_t>(num_threads - 1));
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::run_tasks() {
  for (;;) {
    const int64_t index = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (index >= num_tasks_) return;
    (*task_)(index);
    finished_tasks_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::parallel_for(int64_t num_tasks, const std::function<void(int64_t)>& task) {
  if (num_tasks <= 0) return;
  if (workers_.empty() || num_tasks == 1) {
    for (int64_t i = 0; i < num_tasks; ++i) task(i);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    task_ = &task;
    num_tasks_ = num_tasks;
    next_task_.store(0, std::memory_order_relaxed);
    finished_tasks_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_tasks();
  // Wait for the tasks other threads took, then for every worker to leave run_tasks, so that
  // the next call can reset the counters safely.
  while (finished_tasks_.load(std::memory_order_acquire) < num_tasks) std::this_thread::yield();
  std::unique_lock lock(mutex_);
  done_.wait(lock, [this] { return busy_workers_ == 0; });
  task_ = nullptr;
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    for (int spin = 0; spin < kSpinRounds; ++spin) {
      if (generation_.load(std::memory_order_acquire) != seen) break;
    }
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    seen = generation_.load(std::memory_order_acquire);
    if (stopping_) return;
    if (task_ == nullptr) continue;
    ++busy_workers_;
    lock.unlock();
    run_tasks();
    lock.lock();
    if (--busy_workers_ == 0) done_.notify_all();
  }
}

}  // namespace draftwise::cpu
