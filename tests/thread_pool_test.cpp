// Tests for the hwloc worker pool: every task runs exactly once, worker ids and scratch memory,
// the memory limit, serialization of concurrent callers, thread-count options, binding (distinct
// cores, restricted affinity) and the fallback without a topology.
#include "cpu/thread_pool.h"

#include "cpu/cgroup_limits.h"

#include <gtest/gtest.h>
#include <hwloc.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

// The huge-allocation test must see a failed allocation, not a sanitizer report. Default
// visibility: the project builds with hidden symbols, and the sanitizer runtime looks these up.
extern "C" __attribute__((visibility("default"), used)) const char* __asan_default_options() {
  return "allocator_may_return_null=1";
}
extern "C" __attribute__((visibility("default"), used)) const char* __tsan_default_options() {
  return "allocator_may_return_null=1";
}

namespace sampleattn::cpu {
namespace {

// Sets (or unsets, with nullopt) an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return CPU_COUNT(&set);
}

// Cores this thread may run on, by hwloc (what a default pool should use).
int allowed_cores() {
  hwloc_topology_t topology;
  if (hwloc_topology_init(&topology) != 0) return -1;
  int cores = -1;
  hwloc_cpuset_t binding = hwloc_bitmap_alloc();
  if (hwloc_topology_load(topology) == 0 &&
      hwloc_get_cpubind(topology, binding, HWLOC_CPUBIND_THREAD) == 0) {
    cores = 0;
    const int count = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_CORE);
    for (int i = 0; i < count; ++i) {
      hwloc_obj_t core = hwloc_get_obj_by_type(topology, HWLOC_OBJ_CORE, static_cast<unsigned>(i));
      if (hwloc_bitmap_intersects(core->cpuset, binding)) ++cores;
    }
  }
  hwloc_bitmap_free(binding);
  hwloc_topology_destroy(topology);
  return cores;
}

// Every test starts without the thread-count override.
class ThreadPoolTest : public ::testing::Test {
 protected:
  ScopedEnv no_thread_override_{"SAMPLEATTN_NUM_THREADS", std::nullopt};

  std::unique_ptr<ThreadPool> make_pool(ThreadPoolOptions options = {}) {
    std::unique_ptr<ThreadPool> pool;
    Status status = ThreadPool::create(options, &pool);
    EXPECT_TRUE(status.is_ok()) << status.message();
    EXPECT_NE(pool, nullptr);
    return pool;
  }
};

// Runs num_threads() tasks that each wait until all of them have started, so each worker takes
// exactly one task (a worker stuck in a task cannot claim another); per_worker(worker, scratch)
// then runs once on every worker. Returns false when the tasks never met (a worker is missing).
template <typename PerWorker>
bool run_once_on_every_worker(ThreadPool& pool, size_t scratch_bytes, PerWorker&& per_worker) {
  const int n = pool.num_threads();
  std::atomic<int> arrived{0};
  std::atomic<bool> met{true};
  Status status = pool.run(n, scratch_bytes, 0, [&](int64_t, int worker, void* scratch) {
    arrived.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (arrived.load() < n) {
      if (std::chrono::steady_clock::now() > deadline) {
        met = false;
        break;
      }
      std::this_thread::yield();
    }
    per_worker(worker, scratch);
  });
  EXPECT_TRUE(status.is_ok()) << status.message();
  return met.load() && status.is_ok();
}

TEST_F(ThreadPoolTest, DefaultPoolHasOneWorkerPerAllowedCoreWithinTheQuota) {
  auto pool = make_pool();
  ASSERT_NE(pool, nullptr);
  const int cores = allowed_cores();
  ASSERT_GT(cores, 0);
  const int quota_cpus = cgroup_cpu_limit();  // its rule is tested in host_pool_test.cpp
  EXPECT_EQ(pool->num_threads(), quota_cpus > 0 ? std::min(cores, quota_cpus) : cores);
  EXPECT_GE(pool->num_numa_nodes(), 1);
  EXPECT_LE(pool->num_numa_nodes(), pool->num_threads());
}

TEST_F(ThreadPoolTest, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 7}) {
    ThreadPoolOptions options;
    options.num_threads = threads;
    auto pool = make_pool(options);
    ASSERT_NE(pool, nullptr);
    ASSERT_EQ(pool->num_threads(), threads);
    const int64_t sizes[] = {0, 1, threads - 1, threads, threads + 1, 5 * threads + 3, 1000, 20011};
    for (int64_t size : sizes) {
      std::vector<std::atomic<int>> runs(static_cast<size_t>(size));
      std::atomic<int64_t> calls{0};
      std::atomic<bool> worker_in_range{true};
      Status status = pool->run(size, 0, 0, [&](int64_t task, int worker, void*) {
        calls.fetch_add(1);
        if (worker < 0 || worker >= threads) worker_in_range = false;
        if (task >= 0 && task < size) runs[static_cast<size_t>(task)].fetch_add(1);
      });
      ASSERT_TRUE(status.is_ok()) << status.message();
      EXPECT_EQ(calls.load(), size) << "threads " << threads << " size " << size;
      EXPECT_TRUE(worker_in_range.load());
      for (int64_t t = 0; t < size; ++t) {
        ASSERT_EQ(runs[static_cast<size_t>(t)].load(), 1) << "task " << t << " of " << size;
      }
    }
  }
}

TEST_F(ThreadPoolTest, TasksAreClaimedInIncreasingOrder) {
  ThreadPoolOptions options;
  options.num_threads = 1;  // one worker: claim order is execution order
  auto pool = make_pool(options);
  ASSERT_NE(pool, nullptr);
  std::vector<int64_t> order;
  ASSERT_TRUE(pool->run(100, 0, 0, [&](int64_t task, int, void*) { order.push_back(task); }).is_ok());
  ASSERT_EQ(order.size(), 100u);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
}

TEST_F(ThreadPoolTest, EveryWorkerTakesPartWithDistinctIds) {
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 4, .bind = true});
  ASSERT_NE(pool, nullptr);
  std::vector<int> seen(4, 0);
  ASSERT_TRUE(run_once_on_every_worker(*pool, 0, [&](int worker, void*) { ++seen[worker]; }));
  for (int w = 0; w < 4; ++w) EXPECT_EQ(seen[static_cast<size_t>(w)], 1) << "worker " << w;
}

TEST_F(ThreadPoolTest, NegativeTaskCountIsRejected) {
  auto pool = make_pool();
  ASSERT_NE(pool, nullptr);
  bool ran = false;
  Status status = pool->run(-1, 0, 0, [&](int64_t, int, void*) { ran = true; });
  EXPECT_EQ(status.code(), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_FALSE(ran);
}

TEST_F(ThreadPoolTest, ScratchIsAlignedSizedAndPrivate) {
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 3, .bind = true});
  ASSERT_NE(pool, nullptr);
  const int n = pool->num_threads();
  constexpr size_t kBytes = 10000;  // not a multiple of the alignment
  std::vector<uintptr_t> address(static_cast<size_t>(n), 0);
  std::atomic<bool> corrupted{false};
  ASSERT_TRUE(run_once_on_every_worker(*pool, kBytes, [&](int worker, void* scratch) {
    address[static_cast<size_t>(worker)] = reinterpret_cast<uintptr_t>(scratch);
    auto* bytes = static_cast<unsigned char*>(scratch);
    std::memset(bytes, 0x40 + worker, kBytes);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // others write meanwhile
    for (size_t i = 0; i < kBytes; ++i) {
      if (bytes[i] != 0x40 + worker) corrupted = true;
    }
  }));
  EXPECT_FALSE(corrupted.load());
  for (int a = 0; a < n; ++a) {
    ASSERT_NE(address[static_cast<size_t>(a)], 0u);
    EXPECT_EQ(address[static_cast<size_t>(a)] % 64, 0u) << "worker " << a;
    for (int b = a + 1; b < n; ++b) {
      const uintptr_t lo = std::min(address[static_cast<size_t>(a)], address[static_cast<size_t>(b)]);
      const uintptr_t hi = std::max(address[static_cast<size_t>(a)], address[static_cast<size_t>(b)]);
      EXPECT_GE(hi - lo, kBytes) << "scratch of workers " << a << " and " << b << " overlap";
    }
  }
}

TEST_F(ThreadPoolTest, ScratchIsKeptAndGrowsOnlyWhenAsked) {
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 2, .bind = true});
  ASSERT_NE(pool, nullptr);
  const int n = pool->num_threads();
  std::vector<uintptr_t> first(static_cast<size_t>(n)), second(static_cast<size_t>(n));
  ASSERT_TRUE(run_once_on_every_worker(*pool, 256, [&](int worker, void* scratch) {
    first[static_cast<size_t>(worker)] = reinterpret_cast<uintptr_t>(scratch);
    static_cast<int*>(scratch)[0] = 1000 + worker;  // must still be there next call
  }));
  // A smaller request reuses the same buffer with its contents.
  std::vector<int> kept(static_cast<size_t>(n), -1);
  ASSERT_TRUE(run_once_on_every_worker(*pool, 64, [&](int worker, void* scratch) {
    second[static_cast<size_t>(worker)] = reinterpret_cast<uintptr_t>(scratch);
    kept[static_cast<size_t>(worker)] = static_cast<int*>(scratch)[0];
  }));
  EXPECT_EQ(first, second);
  for (int w = 0; w < n; ++w) EXPECT_EQ(kept[static_cast<size_t>(w)], 1000 + w);

  // A larger request gives a buffer of at least that size, every byte writable.
  constexpr size_t kLarge = (size_t{4} << 20) + 3;
  std::atomic<bool> misaligned{false};
  ASSERT_TRUE(run_once_on_every_worker(*pool, kLarge, [&](int worker, void* scratch) {
    if (reinterpret_cast<uintptr_t>(scratch) % 64 != 0) misaligned = true;
    std::memset(scratch, worker, kLarge);
    static_cast<volatile unsigned char*>(scratch)[kLarge - 1] = 7;
  }));
  EXPECT_FALSE(misaligned.load());
}

TEST_F(ThreadPoolTest, ZeroScratchBytesWithoutPriorScratchRuns) {
  auto pool = make_pool();
  ASSERT_NE(pool, nullptr);
  std::atomic<int> count{0};
  ASSERT_TRUE(pool->run(10, 0, 1, [&](int64_t, int, void*) { count.fetch_add(1); }).is_ok());
  EXPECT_EQ(count.load(), 10);
}

TEST_F(ThreadPoolTest, LimitBytesFailsWithOutOfMemoryAndRunsNothing) {
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 3, .bind = true});
  ASSERT_NE(pool, nullptr);
  const uint64_t n = 3;
  constexpr size_t kBytes = 4096;
  std::atomic<int> count{0};
  auto body = [&](int64_t, int, void*) { count.fetch_add(1); };

  Status status = pool->run(100, kBytes, n * kBytes - 1, body);
  EXPECT_EQ(status.code(), SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_FALSE(status.message().empty());
  EXPECT_EQ(count.load(), 0);

  // n * bytes overflows 64 bits: still a clean failure.
  status = pool->run(100, std::numeric_limits<size_t>::max() / 2, 1u << 30, body);
  EXPECT_EQ(status.code(), SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_EQ(count.load(), 0);

  // Exactly at the limit is allowed.
  status = pool->run(100, kBytes, n * kBytes, body);
  EXPECT_TRUE(status.is_ok()) << status.message();
  EXPECT_EQ(count.load(), 100);
}

// Scratch kept from a larger run is reallocated at the current run's size when keeping it would
// break that run's limit, and kept otherwise.
TEST_F(ThreadPoolTest, KeptScratchShrinksUnderTheLimit) {
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 2, .bind = true});
  ASSERT_NE(pool, nullptr);
  auto touch = [](size_t bytes) {
    return [bytes](int64_t, int, void* scratch) { static_cast<volatile char*>(scratch)[bytes - 1] = 1; };
  };
  EXPECT_EQ(pool->held_scratch_bytes(), 0u);
  ASSERT_TRUE(pool->run(10, size_t{1} << 20, 0, touch(size_t{1} << 20)).is_ok());
  EXPECT_EQ(pool->held_scratch_bytes(), uint64_t{2} << 20);
  // No pressure: the larger buffers stay.
  ASSERT_TRUE(pool->run(10, 4096, 0, touch(4096)).is_ok());
  EXPECT_EQ(pool->held_scratch_bytes(), uint64_t{2} << 20);
  // Keeping them would pass the limit: reallocated at 4096 instead of failing.
  Status status = pool->run(10, 4096, 2 * 4096, touch(4096));
  EXPECT_TRUE(status.is_ok()) << status.message();
  EXPECT_EQ(pool->held_scratch_bytes(), 2u * 4096);
  // A run without scratch under a limit below what is held frees it.
  ASSERT_TRUE(pool->run(10, 0, 1, [](int64_t, int, void*) {}).is_ok());
  EXPECT_EQ(pool->held_scratch_bytes(), 0u);
  ASSERT_TRUE(pool->run(10, 1000, 0, touch(1000)).is_ok());
  EXPECT_EQ(pool->held_scratch_bytes(), 2 * ThreadPool::scratch_footprint(1000));
  pool->release_scratch(1000);
  EXPECT_EQ(pool->held_scratch_bytes(), 2 * ThreadPool::scratch_footprint(1000));
  pool->release_scratch();
  EXPECT_EQ(pool->held_scratch_bytes(), 0u);
}

TEST_F(ThreadPoolTest, ScratchPastTheHostsMemoryFailsBeforeAllocating) {
  // Each worker's share under the host's memory, the pool's sum over it: refused as a whole
  // (a host that overcommits would grant each and kill the process at the first touch).
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 2, .bind = true});
  ASSERT_NE(pool, nullptr);
  const size_t per_worker = static_cast<size_t>(memory_ceiling() / 2) + (size_t{64} << 20);
  std::atomic<int> count{0};
  Status status = pool->run(10, per_worker, 0, [&](int64_t, int, void*) { count.fetch_add(1); });
  EXPECT_EQ(status.code(), SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_NE(status.message().find("host's memory"), std::string::npos) << status.message();
  EXPECT_EQ(count.load(), 0);
}

TEST_F(ThreadPoolTest, ImpossibleScratchFailsWithOutOfMemory) {
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 2, .bind = true});
  ASSERT_NE(pool, nullptr);
  std::atomic<int> count{0};
  Status status = pool->run(10, size_t{1} << 62, 0, [&](int64_t, int, void*) { count.fetch_add(1); });
  EXPECT_EQ(status.code(), SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_EQ(count.load(), 0);
  // The pool is still usable afterwards.
  status = pool->run(10, 128, 0, [&](int64_t, int, void* scratch) {
    static_cast<volatile char*>(scratch)[127] = 1;
    count.fetch_add(1);
  });
  EXPECT_TRUE(status.is_ok()) << status.message();
  EXPECT_EQ(count.load(), 10);
}

TEST_F(ThreadPoolTest, ConcurrentCallersAreSerializedAndCorrect) {
  auto pool = make_pool(ThreadPoolOptions{.num_threads = 3, .bind = true});
  ASSERT_NE(pool, nullptr);
  constexpr int kCallers = 4;
  constexpr int kRunsPerCaller = 20;
  constexpr int64_t kTasks = 50;
  std::atomic<int> in_flight[kCallers] = {};
  std::atomic<bool> overlapped{false};
  std::vector<int64_t> sums(kCallers, 0);
  std::vector<bool> all_ok(kCallers, true);

  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int r = 0; r < kRunsPerCaller; ++r) {
        std::atomic<int64_t> sum{0};
        Status status = pool->run(kTasks, 64, 0, [&](int64_t task, int, void* scratch) {
          in_flight[c].fetch_add(1);
          for (int other = 0; other < kCallers; ++other) {
            if (other != c && in_flight[other].load() != 0) overlapped = true;
          }
          static_cast<volatile int64_t*>(scratch)[0] = task;  // scratch shared across callers
          if (task % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
          sum.fetch_add(task + 1);
          in_flight[c].fetch_sub(1);
        });
        if (!status.is_ok()) all_ok[static_cast<size_t>(c)] = false;
        sums[static_cast<size_t>(c)] += sum.load();
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_FALSE(overlapped.load()) << "tasks of two run() calls were in flight at once";
  for (int c = 0; c < kCallers; ++c) {
    EXPECT_TRUE(all_ok[static_cast<size_t>(c)]);
    EXPECT_EQ(sums[static_cast<size_t>(c)], kRunsPerCaller * kTasks * (kTasks + 1) / 2);
  }
}

TEST_F(ThreadPoolTest, NumThreadsOptionAllowsMoreThreadsThanCores) {
  const int cores = std::max(1, allowed_cores());
  for (int threads : {1, cores + 1, 2 * cores + 1}) {
    ThreadPoolOptions options;
    options.num_threads = threads;
    auto pool = make_pool(options);
    ASSERT_NE(pool, nullptr);
    EXPECT_EQ(pool->num_threads(), threads);
    std::vector<int> seen(static_cast<size_t>(threads), 0);
    ASSERT_TRUE(run_once_on_every_worker(*pool, 128, [&](int worker, void*) {
      ++seen[static_cast<size_t>(worker)];
    }));
    for (int w = 0; w < threads; ++w) EXPECT_EQ(seen[static_cast<size_t>(w)], 1);
  }
}

TEST_F(ThreadPoolTest, InvalidArgumentsAreReported) {
  std::unique_ptr<ThreadPool> pool;
  ThreadPoolOptions options;
  options.num_threads = -1;
  EXPECT_EQ(ThreadPool::create(options, &pool).code(), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_EQ(pool, nullptr);
  EXPECT_EQ(ThreadPool::create(ThreadPoolOptions{}, nullptr).code(), SAMPLEATTN_NULL_POINTER);
}

TEST_F(ThreadPoolTest, EnvironmentSetsDefaultThreadCount) {
  const int default_threads = make_pool()->num_threads();
  {
    ScopedEnv env("SAMPLEATTN_NUM_THREADS", "3");
    EXPECT_EQ(make_pool()->num_threads(), 3);
    ThreadPoolOptions options;
    options.num_threads = 2;  // an explicit option wins over the environment
    EXPECT_EQ(make_pool(options)->num_threads(), 2);
  }
  for (const char* bad : {"0", "-2", "abc", "3x", ""}) {
    ScopedEnv env("SAMPLEATTN_NUM_THREADS", bad);
    EXPECT_EQ(make_pool()->num_threads(), default_threads) << "SAMPLEATTN_NUM_THREADS=" << bad;
  }
}

TEST_F(ThreadPoolTest, UnboundPoolRuns) {
  ThreadPoolOptions options;
  options.bind = false;
  auto pool = make_pool(options);
  ASSERT_NE(pool, nullptr);
  EXPECT_FALSE(pool->bound());
  std::atomic<int64_t> sum{0};
  ASSERT_TRUE(pool->run(1000, 1024, 0, [&](int64_t task, int, void* scratch) {
    static_cast<volatile char*>(scratch)[1023] = 1;
    sum.fetch_add(task);
  }).is_ok());
  EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  // Unbound workers keep the creating thread's affinity: more than one CPU when it has several.
  if (allowed_cpus() >= 2) {
    std::vector<int> cpus(static_cast<size_t>(pool->num_threads()), 0);
    ASSERT_TRUE(run_once_on_every_worker(*pool, 0, [&](int worker, void*) {
      cpu_set_t set;
      CPU_ZERO(&set);
      sched_getaffinity(0, sizeof(set), &set);
      cpus[static_cast<size_t>(worker)] = CPU_COUNT(&set);
    }));
    for (int count : cpus) EXPECT_EQ(count, allowed_cpus());
  }
}

// Each bound worker runs on one PU of its own core, for the whole life of the pool.
TEST_F(ThreadPoolTest, BoundWorkersSitOnDistinctCores) {
  auto pool = make_pool();
  ASSERT_NE(pool, nullptr);
  if (!pool->bound()) GTEST_SKIP() << "binding is not supported here";
  const int n = pool->num_threads();

  hwloc_topology_t topology;
  ASSERT_EQ(hwloc_topology_init(&topology), 0);
  ASSERT_EQ(hwloc_topology_load(topology), 0);
  std::vector<std::set<int>> cores_of_worker(static_cast<size_t>(n));
  std::vector<int> bound_pu(static_cast<size_t>(n), -1);
  std::atomic<bool> bad_binding{false};
  for (int round = 0; round < 5; ++round) {
    ASSERT_TRUE(run_once_on_every_worker(*pool, 0, [&](int worker, void*) {
      hwloc_cpuset_t set = hwloc_bitmap_alloc();
      if (hwloc_get_cpubind(topology, set, HWLOC_CPUBIND_THREAD) != 0 ||
          hwloc_bitmap_weight(set) != 1) {
        bad_binding = true;
      }
      const int pu = hwloc_bitmap_first(set);
      const int cpu = sched_getcpu();
      if (cpu != pu) bad_binding = true;
      int& recorded = bound_pu[static_cast<size_t>(worker)];
      if (recorded != -1 && recorded != pu) bad_binding = true;
      recorded = pu;
      hwloc_obj_t pu_object = hwloc_get_pu_obj_by_os_index(topology, static_cast<unsigned>(cpu));
      hwloc_obj_t core =
          pu_object ? hwloc_get_ancestor_obj_by_type(topology, HWLOC_OBJ_CORE, pu_object) : nullptr;
      cores_of_worker[static_cast<size_t>(worker)].insert(
          core ? static_cast<int>(core->logical_index) : -1);
      hwloc_bitmap_free(set);
    }));
  }
  hwloc_topology_destroy(topology);
  EXPECT_FALSE(bad_binding.load()) << "a worker is not bound to exactly one PU";
  std::set<int> all_cores;
  for (int w = 0; w < n; ++w) {
    const auto& cores = cores_of_worker[static_cast<size_t>(w)];
    ASSERT_EQ(cores.size(), 1u) << "worker " << w << " moved between cores";
    EXPECT_NE(*cores.begin(), -1);
    all_cores.insert(*cores.begin());
  }
  EXPECT_EQ(static_cast<int>(all_cores.size()), n) << "two workers share a core";
}

// A taskset-like restriction of the creating thread limits the default pool to that CPU.
TEST_F(ThreadPoolTest, RestrictedAffinityGivesOneWorker) {
  cpu_set_t saved;
  CPU_ZERO(&saved);
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  int first_cpu = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &saved)) {
      first_cpu = cpu;
      break;
    }
  }
  ASSERT_GE(first_cpu, 0);
  // Another thread of the process keeps the full mask (hwloc's process binding is the union
  // over all threads, so the pool must look at the creating thread's own binding).
  std::atomic<bool> release_helper{false};
  std::thread helper([&] {
    while (!release_helper.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first_cpu, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);

  std::unique_ptr<ThreadPool> pool;
  Status status = ThreadPool::create(ThreadPoolOptions{}, &pool);
  ASSERT_EQ(sched_setaffinity(0, sizeof(saved), &saved), 0);  // restore before any assertion
  release_helper = true;
  helper.join();
  ASSERT_TRUE(status.is_ok()) << status.message();
  EXPECT_EQ(pool->num_threads(), 1);
  std::vector<int> cpus(12, -1);  // one slot per task: safe even when the pool is wrong
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(pool->run(4, 0, 0, [&](int64_t task, int, void*) {
                      cpus[static_cast<size_t>(round * 4 + task)] = sched_getcpu();
                    }).is_ok());
  }
  if (pool->bound()) {
    for (int cpu : cpus) EXPECT_EQ(cpu, first_cpu);
  }
}

// Without a topology (hwloc told to use no discovery component) the pool still works, unbound.
TEST_F(ThreadPoolTest, FallsBackWhenTopologyCannotLoad) {
  ScopedEnv no_discovery("HWLOC_COMPONENTS", "stop");
  auto pool = make_pool();
  ASSERT_NE(pool, nullptr);
  EXPECT_FALSE(pool->bound());
  EXPECT_EQ(pool->num_threads(), allowed_cpus());
  EXPECT_EQ(pool->num_numa_nodes(), 1);
  std::atomic<int64_t> sum{0};
  std::atomic<bool> misaligned{false};
  ASSERT_TRUE(pool->run(500, 1000, 0, [&](int64_t task, int, void* scratch) {
    if (reinterpret_cast<uintptr_t>(scratch) % 64 != 0) misaligned = true;
    std::memset(scratch, 1, 1000);
    sum.fetch_add(task);
  }).is_ok());
  EXPECT_EQ(sum.load(), 499 * 500 / 2);
  EXPECT_FALSE(misaligned.load());
}

TEST_F(ThreadPoolTest, ManyCreateRunDestroyCycles) {
  for (int i = 0; i < 50; ++i) {
    auto pool = make_pool(ThreadPoolOptions{.num_threads = 1 + i % 4, .bind = (i % 2) == 0});
    ASSERT_NE(pool, nullptr);
    if (i % 3 == 0) continue;  // destroy a pool that never ran
    std::atomic<int> count{0};
    ASSERT_TRUE(pool->run(i, 64, 0, [&](int64_t, int, void*) { count.fetch_add(1); }).is_ok());
    EXPECT_EQ(count.load(), i);
  }
}

// ---- Call buffers (cpu/call_buffers.h): kept from call to call --------------------------------

TEST(CallBuffers, AGivenBackBufferServesTheNextRequestThatFits) {
  CallBuffers buffers;
  char* first = nullptr;
  {
    CallBuffers::Lease lease = buffers.take(size_t{3} << 20);
    ASSERT_TRUE(lease);
    first = lease.get();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
    std::memset(first, 1, size_t{3} << 20);  // all of it is there
    EXPECT_EQ(buffers.held_bytes(), 0u);     // in use: not held
  }
  EXPECT_GE(buffers.held_bytes(), uint64_t{3} << 20);
  {
    CallBuffers::Lease same = buffers.take(size_t{1} << 20);  // smaller: the kept one
    EXPECT_EQ(same.get(), first);
    CallBuffers::Lease other = buffers.take(size_t{1} << 20);  // the kept one is in use: a new one
    ASSERT_TRUE(other);
    EXPECT_NE(other.get(), first);
  }
  // Both came back; the smallest that fits is chosen.
  CallBuffers::Lease small = buffers.take(1000);
  EXPECT_NE(small.get(), first);
}

TEST(CallBuffers, ALargerRequestFreesTheLargestKeptOneFirst) {
  CallBuffers buffers;
  { CallBuffers::Lease a = buffers.take(size_t{1} << 20), b = buffers.take(size_t{2} << 20); }
  const uint64_t both = buffers.held_bytes();
  EXPECT_GE(both, uint64_t{3} << 20);
  {
    CallBuffers::Lease big = buffers.take(size_t{8} << 20);
    ASSERT_TRUE(big);
    EXPECT_LT(buffers.held_bytes(), both);       // the 2 MiB one was freed, the 1 MiB one kept
    EXPECT_GE(buffers.held_bytes(), uint64_t{1} << 20);
  }
  buffers.release();
  EXPECT_EQ(buffers.held_bytes(), 0u);
}

TEST(CallBuffers, MovedLeasesGiveBackOnce) {
  CallBuffers buffers;
  CallBuffers::Lease a = buffers.take(4096);
  char* p = a.get();
  CallBuffers::Lease b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved from, empty
  EXPECT_EQ(b.get(), p);
  b = CallBuffers::Lease();
  const uint64_t held = buffers.held_bytes();
  EXPECT_GE(held, 4096u);
  { CallBuffers::Lease c = buffers.take(4096); EXPECT_EQ(c.get(), p); }
  EXPECT_EQ(buffers.held_bytes(), held);
}

TEST(CallBuffers, AnImpossibleRequestIsAnEmptyLease) {
  CallBuffers buffers;
  CallBuffers::Lease none = buffers.take(std::numeric_limits<size_t>::max() / 2);
  EXPECT_FALSE(none);
  EXPECT_EQ(buffers.held_bytes(), 0u);
}

}  // namespace
}  // namespace sampleattn::cpu
