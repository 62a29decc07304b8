// An inference engine's thread pool in miniature, for `bench --host-pool` and the read-rate peak:
// `threads` threads of which the caller is worker 0, and threads - 1 workers that SPIN between
// jobs (busy-wait on an atomic generation counter, as ggml's thread barrier does) instead of
// sleeping. Its parallel_for is a sampleattn_parallel_for_fn (context options, ABI 1.4).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "sampleattn/sampleattn.h"

namespace sampleattn::cli {

class SpinPool {
 public:
  // The workers start with start(): a bench measures the library's own pool with none running.
  // yield: the waiting threads (workers between jobs, the caller at the end of one) give their core
  // away at each check (std::this_thread::yield) instead of only pausing: for yardsticks that must
  // not depend on whether some other thread holds the core the pool waits for.
  explicit SpinPool(int threads, bool yield = false) : threads_(threads < 1 ? 1 : threads), yield_(yield) {}
  ~SpinPool() { stop(); }
  SpinPool(const SpinPool&) = delete;
  SpinPool& operator=(const SpinPool&) = delete;

  int threads() const { return threads_; }
  void start();  // launches the threads - 1 workers, which spin from then on
  void stop();   // joins them
  // Runs task(context, i) for every i in [0, count) on the pool's threads, the caller included;
  // returns when all have returned. One job at a time (the library runs one call per context).
  // Without start(), the caller runs them all.
  void run(sampleattn_task_fn task, void* context, int64_t count);
  // The jobs run so far (how often the library called parallel_for).
  int64_t jobs() const { return jobs_.load(std::memory_order_relaxed); }

  // The sampleattn_parallel_for_fn: host_pool is a SpinPool*.
  static void parallel_for(void* host_pool, sampleattn_task_fn task, void* task_context, int64_t count);

 private:
  void worker(int id, uint64_t seen);
  void take_tasks();
  void relax() const;

  int threads_;
  bool yield_;
  std::vector<std::thread> workers_;
  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<int64_t> next_{0};
  alignas(64) std::atomic<int> finished_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> jobs_{0};
  // The job, written before generation_ is released and read after it is acquired.
  sampleattn_task_fn task_ = nullptr;
  void* context_ = nullptr;
  int64_t count_ = 0;
};

}  // namespace sampleattn::cli
