// Overhead of ThreadPool::run(): empty tasks, so the time is the wake-up, the task claiming and
// the wait for the last worker. Compare in the same run against starting and joining fresh
// std::threads (what the pool saves) and against a loop on the calling thread (the floor).
//
//   thread_pool_bench --benchmark_min_time=0.5
//
// Arguments: number of tasks, 0 meaning one task per worker.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "cpu/thread_pool.h"

namespace {

using sampleattn::cpu::ThreadPool;
using sampleattn::cpu::ThreadPoolOptions;

// Null when the pool cannot be created (each benchmark then reports the error).
ThreadPool* shared_pool() {
  static std::unique_ptr<ThreadPool> pool = [] {
    std::unique_ptr<ThreadPool> created;
    sampleattn::Status status = ThreadPool::create(ThreadPoolOptions{}, &created);
    if (!status.is_ok()) created.reset();
    return created;
  }();
  return pool.get();
}

int pool_threads() { return shared_pool() ? shared_pool()->num_threads() : 1; }

int64_t tasks_for(const benchmark::State& state, int threads) {
  return state.range(0) == 0 ? threads : state.range(0);
}

void BM_PoolRunEmpty(benchmark::State& state) {
  if (shared_pool() == nullptr) return state.SkipWithError("could not create the thread pool");
  ThreadPool& pool = *shared_pool();
  const int64_t num_tasks = tasks_for(state, pool.num_threads());
  for (auto _ : state) {
    sampleattn::Status status = pool.run(num_tasks, 0, 0, [&](int64_t task, int, void*) {
      benchmark::DoNotOptimize(task);
    });
    if (!status.is_ok()) {
      state.SkipWithError(status.message().c_str());
      break;
    }
  }
  state.counters["threads"] = pool.num_threads();
  state.counters["numa_nodes"] = pool.num_numa_nodes();
  state.counters["bound"] = pool.bound() ? 1 : 0;
  state.counters["tasks/s"] = benchmark::Counter(static_cast<double>(num_tasks),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PoolRunEmpty)->Arg(0)->Arg(1000)->UseRealTime();

// Same work with 64 KiB of scratch requested each call (already allocated after the first).
void BM_PoolRunEmptyWithScratch(benchmark::State& state) {
  if (shared_pool() == nullptr) return state.SkipWithError("could not create the thread pool");
  ThreadPool& pool = *shared_pool();
  const int64_t num_tasks = tasks_for(state, pool.num_threads());
  for (auto _ : state) {
    sampleattn::Status status = pool.run(num_tasks, 64 << 10, 0, [&](int64_t task, int, void* s) {
      benchmark::DoNotOptimize(s);
      benchmark::DoNotOptimize(task);
    });
    if (!status.is_ok()) {
      state.SkipWithError(status.message().c_str());
      break;
    }
  }
}
BENCHMARK(BM_PoolRunEmptyWithScratch)->Arg(0)->Arg(1000)->UseRealTime();

// Baseline: start one std::thread per worker for each call, tasks claimed the same way.
void BM_SpawnJoinEmpty(benchmark::State& state) {
  const int threads = pool_threads();
  const int64_t num_tasks = tasks_for(state, threads);
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads));
  for (auto _ : state) {
    std::atomic<int64_t> next{0};
    for (int w = 0; w < threads; ++w) {
      workers.emplace_back([&] {
        for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < num_tasks;) {
          benchmark::DoNotOptimize(task);
        }
      });
    }
    for (std::thread& worker : workers) worker.join();
    workers.clear();
  }
}
BENCHMARK(BM_SpawnJoinEmpty)->Arg(0)->Arg(1000)->UseRealTime();

// Floor: the same tasks as a plain loop on the calling thread.
void BM_SerialLoopEmpty(benchmark::State& state) {
  const int64_t num_tasks = tasks_for(state, pool_threads());
  for (auto _ : state) {
    for (int64_t task = 0; task < num_tasks; ++task) benchmark::DoNotOptimize(task);
  }
}
BENCHMARK(BM_SerialLoopEmpty)->Arg(0)->Arg(1000)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
