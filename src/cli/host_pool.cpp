#include "cli/host_pool.h"

namespace sampleattn::cli {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

void SpinPool::relax() const {
  if (yield_) {
    std::this_thread::yield();
  } else {
    cpu_relax();
  }
}

void SpinPool::start() {
  if (!workers_.empty()) return;
  stop_.store(false, std::memory_order_relaxed);
  const uint64_t now = generation_.load(std::memory_order_relaxed);
  for (int id = 1; id < threads_; ++id) workers_.emplace_back([this, id, now] { worker(id, now); });
}

void SpinPool::stop() {
  if (workers_.empty()) return;
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void SpinPool::take_tasks() {
  for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < count_;
       i = next_.fetch_add(1, std::memory_order_relaxed)) {
    task_(context_, i);
  }
}

void SpinPool::worker(int /*id*/, uint64_t seen) {
  for (;;) {
    uint64_t now;
    // The engine's habit this pool stands for: never sleep between jobs.
    while ((now = generation_.load(std::memory_order_acquire)) == seen) relax();
    seen = now;
    if (stop_.load(std::memory_order_relaxed)) return;
    take_tasks();
    finished_.fetch_add(1, std::memory_order_release);
  }
}

void SpinPool::run(sampleattn_task_fn task, void* context, int64_t count) {
  jobs_.fetch_add(1, std::memory_order_relaxed);
  task_ = task;
  context_ = context;
  count_ = count;
  next_.store(0, std::memory_order_relaxed);
  finished_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  take_tasks();
  const int workers = static_cast<int>(workers_.size());
  while (finished_.load(std::memory_order_acquire) != workers) relax();
}

void SpinPool::parallel_for(void* host_pool, sampleattn_task_fn task, void* task_context, int64_t count) {
  static_cast<SpinPool*>(host_pool)->run(task, task_context, count);
}

}  // namespace sampleattn::cli
