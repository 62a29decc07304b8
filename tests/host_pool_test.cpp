// Running on the host's threads (sampleattn_context_options.parallel_for). Host pools written here: a job queue, a spinning pool (workers
// busy-wait on a generation counter, as ggml's do) and a serial one on the calling thread. Calls
// through them must give the library pool's bits, start no thread of the library's own, and keep
// to the contract (count <= num_threads, every index once).
#include <dirent.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu/thread_pool.h"
#include "sampleattn/sampleattn.h"
#include "test_util.h"

namespace sampleattn::testing {
namespace {

int count_process_threads() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

// The process's thread count once threads that were just joined have left /proc (a joined
// thread's entry can outlive pthread_join by a moment).
int settled_thread_count() {
  int last = count_process_threads();
  for (int stable = 0, round = 0; stable < 3 && round < 200; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const int now = count_process_threads();
    stable = now == last ? stable + 1 : 0;
    last = now;
  }
  return last;
}

// A host pool: run(task, context, count) calls task(context, i) for each i and returns when all
// have returned.
class HostPool {
 public:
  virtual ~HostPool() = default;
  virtual int threads() const = 0;
  virtual void run(sampleattn_task_fn task, void* context, int64_t count) = 0;
};

// Runs everything on the calling thread.
class SerialPool final : public HostPool {
 public:
  int threads() const override { return 1; }
  void run(sampleattn_task_fn task, void* context, int64_t count) override {
    for (int64_t i = 0; i < count; ++i) task(context, i);
  }
};

// Workers take jobs from a queue under a mutex; the caller waits for the last one.
class QueuePool final : public HostPool {
 public:
  explicit QueuePool(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~QueuePool() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }
  int threads() const override { return static_cast<int>(workers_.size()); }
  void run(sampleattn_task_fn task, void* context, int64_t count) override {
    std::unique_lock<std::mutex> lock(mutex_);
    for (int64_t i = 0; i < count; ++i) jobs_.push_back([=] { task(context, i); });
    pending_ += count;
    wake_.notify_all();
    done_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
      if (--pending_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::deque<std::function<void()>> jobs_;
  int64_t pending_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// threads - 1 workers that spin on a generation counter, and the caller as the last worker;
// indices are claimed from an atomic counter. Every worker takes part in every generation and
// reports when it leaves it, so the next run cannot start under a worker still reading this one's
// fields (ggml's barrier does the same). Workers yield while they spin: the suite also runs on two
// cores under ThreadSanitizer.
class SpinningPool final : public HostPool {
 public:
  explicit SpinningPool(int threads) : threads_(threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~SpinningPool() override {
    stopping_.store(true, std::memory_order_release);
    for (std::thread& worker : workers_) worker.join();
  }
  int threads() const override { return threads_; }
  void run(sampleattn_task_fn task, void* context, int64_t count) override {
    task_ = task;
    context_ = context;
    count_ = count;
    next_.store(0, std::memory_order_relaxed);
    departed_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    claim_all();
    while (departed_.load(std::memory_order_acquire) != threads_ - 1) std::this_thread::yield();
  }

 private:
  void claim_all() {
    for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < count_;) task_(context_, i);
  }
  void work() {
    uint64_t seen = 0;
    for (;;) {
      uint64_t now;
      while ((now = generation_.load(std::memory_order_acquire)) == seen) {
        if (stopping_.load(std::memory_order_acquire)) return;
        std::this_thread::yield();
      }
      seen = now;
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
  std::vector<std::thread> workers_;
};

// What the library did through parallel_for, checked by the tests afterwards.
struct Recorder {
  HostPool* pool = nullptr;
  int num_threads = 0;  // as told to the library
  std::atomic<int64_t> calls{0}, largest_count{0}, bad_counts{0}, bad_indices{0};
  std::atomic<int> threads_seen_in_task{-1};
};

struct CountedCall {
  sampleattn_task_fn task;
  void* context;
  Recorder* recorder;
  std::unique_ptr<std::atomic<int>[]> hits;
};

void counted_task(void* context, int64_t index) {
  CountedCall& call = *static_cast<CountedCall*>(context);
  call.hits[static_cast<size_t>(index)].fetch_add(1, std::memory_order_relaxed);
  if (index == 0) call.recorder->threads_seen_in_task.store(count_process_threads());
  call.task(call.context, index);
}

void recording_parallel_for(void* host_pool, sampleattn_task_fn task, void* task_context, int64_t count) {
  Recorder& recorder = *static_cast<Recorder*>(host_pool);
  recorder.calls.fetch_add(1);
  if (count <= 0 || count > recorder.num_threads) recorder.bad_counts.fetch_add(1);
  if (count > recorder.largest_count.load()) recorder.largest_count.store(count);
  if (count <= 0) return;
  CountedCall call{task, task_context, &recorder, std::make_unique<std::atomic<int>[]>(static_cast<size_t>(count))};
  recorder.pool->run(&counted_task, &call, count);
  for (int64_t i = 0; i < count; ++i) {
    if (call.hits[static_cast<size_t>(i)].load() != 1) recorder.bad_indices.fetch_add(1);
  }
}

sampleattn_context* host_context(Recorder* recorder) {
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.backend = SAMPLEATTN_BACKEND_CPU;
  o.num_threads = recorder->num_threads;
  o.parallel_for = &recording_parallel_for;
  o.host_pool = recorder;
  sampleattn_context* ctx = nullptr;
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  return ctx;
}

// 2048 keys, 4 query heads over 2 kv heads, d = 64, f32; dense or SampleAttention.
struct Call {
  Case c;
  sampleattn_method method;
  Call(sampleattn_method m, uint64_t seed) : method(m) {
    c.d = 64;
    c.hq = 4;
    c.hkv = 2;
    c.add_sequence(2048, 2048);
    c.materialize(seed, 1.5f);
    if (method == SAMPLEATTN_METHOD_SAMPLE) plant(c, {0, 1, 700, 1500}, 4.f);
  }
  // The output and lse bytes of one call on ctx.
  std::vector<uint8_t> run(sampleattn_context* ctx, sampleattn_stats* stats = nullptr) {
    c.o.poison();
    c.lse.assign(c.lse.size(), std::nanf(""));
    sampleattn::Params p = c.params();
    if (method == SAMPLEATTN_METHOD_SAMPLE) small_sample_params(p);
    EXPECT_EQ(sampleattn_forward(ctx, &p, stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    std::vector<uint8_t> bits = c.o.bytes;
    const auto* lse = reinterpret_cast<const uint8_t*>(c.lse.data());
    bits.insert(bits.end(), lse, lse + c.lse.size() * sizeof(float));
    return bits;
  }
};

class HostPoolCalls : public ::testing::TestWithParam<sampleattn_method> {};

TEST_P(HostPoolCalls, SameBitsAsTheLibraryPoolAndNoThreadOfItsOwn) {
  Call call(GetParam(), 42);
  constexpr int kThreads = 3;
  const int threads_before_own = settled_thread_count();
  sampleattn_context* own = cpu_context(kThreads);
  ASSERT_NE(own, nullptr);
  // The count sees a pool's threads: the library's own pool starts its workers (under
  // ThreadSanitizer the first thread started also starts the sanitizer's own).
  EXPECT_GE(count_process_threads(), threads_before_own + kThreads);
  sampleattn_stats stats;
  sampleattn_stats_init(&stats);
  const std::vector<uint8_t> expected = call.run(own, &stats);
  sampleattn_context_destroy(own);
  if (GetParam() == SAMPLEATTN_METHOD_SAMPLE) {
    ASSERT_LT(stats.num_dense_heads, stats.num_heads_total) << "nothing was sampled";
  }

  for (const char* kind : {"queue", "spinning", "serial"}) {
    SCOPED_TRACE(kind);
    std::unique_ptr<HostPool> pool;
    if (std::string(kind) == "queue") pool = std::make_unique<QueuePool>(kThreads);
    if (std::string(kind) == "spinning") pool = std::make_unique<SpinningPool>(kThreads);
    if (std::string(kind) == "serial") pool = std::make_unique<SerialPool>();
    Recorder recorder;
    recorder.pool = pool.get();
    recorder.num_threads = kThreads;  // the serial host says 3 too: slots may run one by one

    const int threads_before = settled_thread_count();
    ASSERT_GT(threads_before, 0);
    sampleattn_context* ctx = host_context(&recorder);
    ASSERT_NE(ctx, nullptr);
    EXPECT_LE(count_process_threads(), threads_before) << "context creation started threads";

    sampleattn_context_info info;
    sampleattn_context_info_init(&info);
    ASSERT_EQ(sampleattn_context_get_info(ctx, &info), SAMPLEATTN_SUCCESS);
    EXPECT_EQ(info.num_threads, kThreads);
    EXPECT_EQ(info.num_numa_nodes, 1);
    EXPECT_EQ(info.binding, SAMPLEATTN_BIND_NONE);
    EXPECT_NE(std::string(info.backends).find("host pool"), std::string::npos) << info.backends;

    for (int repeat = 0; repeat < 2; ++repeat) {
      EXPECT_EQ(call.run(ctx), expected) << "call " << repeat;
    }
    EXPECT_GT(recorder.calls.load(), 0);
    EXPECT_EQ(recorder.largest_count.load(), kThreads);
    EXPECT_EQ(recorder.bad_counts.load(), 0);
    EXPECT_EQ(recorder.bad_indices.load(), 0);
    EXPECT_GT(recorder.threads_seen_in_task.load(), 0);
    EXPECT_LE(recorder.threads_seen_in_task.load(), threads_before) << "threads during a call";
    sampleattn_context_destroy(ctx);
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, HostPoolCalls,
                         ::testing::Values(SAMPLEATTN_METHOD_DENSE, SAMPLEATTN_METHOD_SAMPLE),
                         [](const auto& param_info) {
                           return std::string(param_info.param == SAMPLEATTN_METHOD_DENSE ? "Dense" : "Sample");
                         });

// The output does not depend on how many slots the host has (tasks are the same, each computes
// its own part).
TEST(HostPoolCallsThreads, SameBitsForAnyHostThreadCount) {
  Call call(SAMPLEATTN_METHOD_SAMPLE, 7);
  std::vector<std::vector<uint8_t>> results;
  for (int threads : {1, 2, 5}) {
    QueuePool pool(threads);
    Recorder recorder;
    recorder.pool = &pool;
    recorder.num_threads = threads;
    sampleattn_context* ctx = host_context(&recorder);
    ASSERT_NE(ctx, nullptr);
    results.push_back(call.run(ctx));
    sampleattn_context_destroy(ctx);
    EXPECT_EQ(recorder.bad_counts.load(), 0);
    EXPECT_EQ(recorder.bad_indices.load(), 0);
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

TEST(HostPoolOptions, ZeroThreadsWithParallelForIsRejected) {
  SerialPool pool;
  Recorder recorder;
  recorder.pool = &pool;
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.backend = SAMPLEATTN_BACKEND_CPU;
  o.num_threads = 0;
  o.parallel_for = &recording_parallel_for;
  o.host_pool = &recorder;
  sampleattn_context* ctx = nullptr;
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_EQ(ctx, nullptr);
  EXPECT_NE(std::string(sampleattn_last_error()).find("parallel_for"), std::string::npos)
      << sampleattn_last_error();
}

TEST(HostPoolOptions, DefaultsLeaveParallelForUnset) {
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  EXPECT_EQ(o.parallel_for, nullptr);
  EXPECT_EQ(o.host_pool, nullptr);
}

// The pool itself, in host mode: what a misbehaving task or host turns into.
using cpu::ThreadPool;
using cpu::ThreadPoolOptions;

struct ScriptedHost {
  enum Mode { kEach, kSkipLast, kRepeatFirst, kOutOfRange } mode = kEach;
};

void scripted_parallel_for(void* host_pool, sampleattn_task_fn task, void* task_context, int64_t count) {
  const ScriptedHost& host = *static_cast<ScriptedHost*>(host_pool);
  switch (host.mode) {
    case ScriptedHost::kEach:
      for (int64_t i = 0; i < count; ++i) task(task_context, i);
      break;
    case ScriptedHost::kSkipLast:
      for (int64_t i = 0; i + 1 < count; ++i) task(task_context, i);
      break;
    case ScriptedHost::kRepeatFirst:
      for (int64_t i = 0; i < count; ++i) task(task_context, i);
      task(task_context, 0);
      break;
    case ScriptedHost::kOutOfRange:
      task(task_context, count);
      for (int64_t i = 0; i < count; ++i) task(task_context, i);
      break;
  }
}

std::unique_ptr<ThreadPool> scripted_pool(ScriptedHost* host, int threads) {
  ThreadPoolOptions options;
  options.num_threads = threads;
  options.parallel_for = &scripted_parallel_for;
  options.host_pool = host;
  std::unique_ptr<ThreadPool> pool;
  Status status = ThreadPool::create(options, &pool);
  EXPECT_TRUE(status.is_ok()) << status.message();
  return pool;
}

TEST(HostPoolMode, SlotsActAsWorkersWithTheirOwnScratch) {
  ScriptedHost host;
  auto pool = scripted_pool(&host, 4);
  ASSERT_NE(pool, nullptr);
  EXPECT_TRUE(pool->on_host_pool());
  EXPECT_FALSE(pool->bound());
  EXPECT_EQ(pool->num_numa_nodes(), 1);
  std::vector<int> runs(100, 0);
  std::vector<void*> scratch_of(4, nullptr);
  Status status = pool->run(100, 256, 0, [&](int64_t task, int worker, void* scratch) {
    ++runs[static_cast<size_t>(task)];
    ASSERT_GE(worker, 0);
    ASSERT_LT(worker, 4);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(scratch) % 64, 0u);
    if (scratch_of[static_cast<size_t>(worker)] == nullptr) scratch_of[static_cast<size_t>(worker)] = scratch;
    EXPECT_EQ(scratch_of[static_cast<size_t>(worker)], scratch);
  });
  ASSERT_TRUE(status.is_ok()) << status.message();
  for (int r : runs) EXPECT_EQ(r, 1);
  // A serial host runs slot 0 first, which takes every task.
  EXPECT_NE(scratch_of[0], nullptr);
  EXPECT_EQ(pool->held_scratch_bytes(), 4u * 256u);
}

TEST(HostPoolMode, FewerTasksThanThreadsAskForFewerSlots) {
  int64_t asked = -1;
  ThreadPoolOptions options;
  options.num_threads = 8;
  options.host_pool = &asked;
  options.parallel_for = [](void* host_pool, sampleattn_task_fn task, void* context, int64_t count) {
    *static_cast<int64_t*>(host_pool) = count;
    for (int64_t i = 0; i < count; ++i) task(context, i);
  };
  std::unique_ptr<ThreadPool> pool;
  ASSERT_TRUE(ThreadPool::create(options, &pool).is_ok());
  ASSERT_TRUE(pool->run(3, 0, 0, [](int64_t, int, void*) {}).is_ok());
  EXPECT_EQ(asked, 3);
  asked = -1;
  ASSERT_TRUE(pool->run(0, 0, 0, [](int64_t, int, void*) {}).is_ok());
  EXPECT_EQ(asked, -1) << "an empty run calls no parallel_for";
}

TEST(HostPoolMode, ZeroThreadsIsRejected) {
  ScriptedHost host;
  ThreadPoolOptions options;
  options.parallel_for = &scripted_parallel_for;
  options.host_pool = &host;
  std::unique_ptr<ThreadPool> pool;
  Status status = ThreadPool::create(options, &pool);
  EXPECT_EQ(status.code(), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_EQ(pool, nullptr);
}

TEST(HostPoolMode, ExceptionStaysInsideTheSlot) {
  ScriptedHost host;
  auto pool = scripted_pool(&host, 2);
  ASSERT_NE(pool, nullptr);
  Status status = pool->run(10, 0, 0, [](int64_t task, int, void*) {
    if (task == 3) throw std::runtime_error("task 3");
  });
  EXPECT_EQ(status.code(), SAMPLEATTN_INTERNAL_ERROR);
  EXPECT_NE(status.message().find("exception"), std::string::npos) << status.message();
  // The pool stays usable.
  EXPECT_TRUE(pool->run(10, 0, 0, [](int64_t, int, void*) {}).is_ok());
}

TEST(HostPoolMode, HostBreakingTheContractIsReported) {
  for (auto mode : {ScriptedHost::kSkipLast, ScriptedHost::kRepeatFirst, ScriptedHost::kOutOfRange}) {
    ScriptedHost host;
    host.mode = mode;
    auto pool = scripted_pool(&host, 3);
    ASSERT_NE(pool, nullptr);
    Status status = pool->run(10, 0, 0, [](int64_t, int, void*) {});
    EXPECT_EQ(status.code(), SAMPLEATTN_INTERNAL_ERROR) << "mode " << mode;
    EXPECT_NE(status.message().find("parallel_for"), std::string::npos) << status.message();
  }
}

}  // namespace
}  // namespace sampleattn::testing
