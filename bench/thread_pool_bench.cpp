// Overhead of ThreadPool::run(): empty tasks, so the time is the wake-up, the task claiming and
// the wait for the last worker. Compare in the same run against starting and joining fresh
// std::threads (what the pool saves), against a loop on the calling thread (the floor), and
// against the pool in host mode on a spinning host pool (sampleattn_context_options.parallel_for,
// ggml-style workers). BM_ForwardHostVsLibraryPool times one dense call on each kind of context
// per iteration and reports host_vs_library, the ratio of the medians.
//
//   thread_pool_bench --benchmark_min_time=0.5
//
// Arguments: number of tasks, 0 meaning one task per worker; for the forward case the sequence
// length (4 query heads over 2 kv heads, d = 64, f32, causal).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "cpu/thread_pool.h"
#include "sampleattn/sampleattn.h"

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

// A host pool as ggml's: threads - 1 workers and the caller claim indices; idle workers spin on
// a generation counter for a while, then sleep (so they leave the cores to the library's pool
// when the two are timed one after the other).
class SpinningHostPool {
 public:
  explicit SpinningHostPool(int threads) : threads_(threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~SpinningHostPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }
  int threads() const { return threads_; }

  static void parallel_for(void* pool, sampleattn_task_fn task, void* context, int64_t count) {
    static_cast<SpinningHostPool*>(pool)->run(task, context, count);
  }

 private:
  void run(sampleattn_task_fn task, void* context, int64_t count) {
    task_ = task;
    context_ = context;
    count_ = count;
    next_.store(0, std::memory_order_relaxed);
    departed_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    claim_all();
    while (departed_.load(std::memory_order_acquire) != threads_ - 1) {
    }
  }
  void claim_all() {
    for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < count_;) task_(context_, i);
  }
  void work() {
    uint64_t seen = 0;
    for (;;) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      auto changed = [&] {
        return stopping_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
      };
      while (!changed() && std::chrono::steady_clock::now() < deadline) {
      }
      if (!changed()) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, changed);
      }
      if (stopping_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      claim_all();
      departed_.fetch_add(1, std::memory_order_release);
    }
  }

  int threads_;
  sampleattn_task_fn task_ = nullptr;
  void* context_ = nullptr;
  int64_t count_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> departed_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
};

// The pool in host mode over a spinning host pool with as many threads as the library pool.
void BM_HostPoolRunEmpty(benchmark::State& state) {
  SpinningHostPool host(pool_threads());
  ThreadPoolOptions options;
  options.num_threads = host.threads();
  options.parallel_for = &SpinningHostPool::parallel_for;
  options.host_pool = &host;
  std::unique_ptr<ThreadPool> pool;
  sampleattn::Status created = ThreadPool::create(options, &pool);
  if (!created.is_ok()) return state.SkipWithError(created.message().c_str());
  const int64_t num_tasks = tasks_for(state, pool->num_threads());
  for (auto _ : state) {
    sampleattn::Status status = pool->run(num_tasks, 0, 0, [&](int64_t task, int, void*) {
      benchmark::DoNotOptimize(task);
    });
    if (!status.is_ok()) {
      state.SkipWithError(status.message().c_str());
      break;
    }
  }
  state.counters["threads"] = pool->num_threads();
}
BENCHMARK(BM_HostPoolRunEmpty)->Arg(0)->Arg(1000)->UseRealTime();

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// One dense causal call on the library's pool and one on the host pool, per iteration.
void BM_ForwardHostVsLibraryPool(benchmark::State& state) {
  constexpr int kHeads = 4, kKvHeads = 2, kDim = 64;
  const int64_t seq = state.range(0);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> q(static_cast<size_t>(seq) * kHeads * kDim), k(static_cast<size_t>(seq) * kKvHeads * kDim);
  for (float& x : q) x = normal(rng);
  for (float& x : k) x = normal(rng);
  std::vector<float> v = k, o(q.size());
  sampleattn_params p;
  sampleattn_params_init(&p);
  p.q = {q.data(), SAMPLEATTN_DTYPE_F32, int64_t{kHeads} * kDim, kDim};
  p.k = {k.data(), SAMPLEATTN_DTYPE_F32, int64_t{kKvHeads} * kDim, kDim};
  p.v = {v.data(), SAMPLEATTN_DTYPE_F32, int64_t{kKvHeads} * kDim, kDim};
  p.o = {o.data(), SAMPLEATTN_DTYPE_F32, int64_t{kHeads} * kDim, kDim};
  p.head_dim = kDim;
  p.num_q_heads = kHeads;
  p.num_kv_heads = kKvHeads;
  p.seqlen_q = p.seqlen_k = seq;
  p.causal = 1;

  SpinningHostPool host(pool_threads());
  sampleattn_context_options options;
  sampleattn_context_options_init(&options);
  options.backend = SAMPLEATTN_BACKEND_CPU;
  options.num_threads = host.threads();
  sampleattn_context* library = nullptr;
  sampleattn_context* hosted = nullptr;
  if (sampleattn_context_create(&options, &library) != SAMPLEATTN_SUCCESS) {
    return state.SkipWithError(sampleattn_last_error());
  }
  options.parallel_for = &SpinningHostPool::parallel_for;
  options.host_pool = &host;
  if (sampleattn_context_create(&options, &hosted) != SAMPLEATTN_SUCCESS) {
    sampleattn_context_destroy(library);
    return state.SkipWithError(sampleattn_last_error());
  }
  auto seconds_of = [&](sampleattn_context* ctx) {
    const auto t0 = std::chrono::steady_clock::now();
    const sampleattn_status status = sampleattn_forward(ctx, &p, nullptr);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return status == SAMPLEATTN_SUCCESS ? t : -1.0;
  };
  std::vector<double> library_s, host_s;
  for (auto _ : state) {
    const double on_library = seconds_of(library);
    const double on_host = seconds_of(hosted);
    if (on_library < 0 || on_host < 0) {
      state.SkipWithError(sampleattn_last_error());
      break;
    }
    library_s.push_back(on_library);
    host_s.push_back(on_host);
    state.SetIterationTime(on_host);
  }
  sampleattn_context_destroy(hosted);
  sampleattn_context_destroy(library);
  if (!host_s.empty()) {
    state.counters["library_ms"] = median(library_s) * 1e3;
    state.counters["host_ms"] = median(host_s) * 1e3;
    state.counters["host_vs_library"] = median(host_s) / median(library_s);
  }
  state.counters["threads"] = host.threads();
}
BENCHMARK(BM_ForwardHostVsLibraryPool)->Arg(2048)->Arg(8192)->UseManualTime()->Unit(benchmark::kMillisecond);

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
