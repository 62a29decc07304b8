// The CUDA backend's host workers (src/cuda/host_workers.h): plain C++, so they are tested on every
// machine, whether or not it builds the CUDA module.
#include "cuda/host_workers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace sampleattn::cuda {
namespace {

// Runs a step of n indices on `threads` threads and checks that each index ran exactly once.
void expect_each_once(HostWorkers& w, int n, int threads) {
  std::vector<std::atomic<int>> ran(static_cast<size_t>(n > 0 ? n : 1));
  w.run(n, threads, [&](int i) { ran[static_cast<size_t>(i)].fetch_add(1); });
  for (int i = 0; i < n; ++i) ASSERT_EQ(ran[static_cast<size_t>(i)].load(), 1) << "n " << n << " threads " << threads;
}

TEST(HostWorkers, EveryIndexRunsOnceWhateverTheThreads) {
  HostWorkers w(16);
  for (int n : {0, 1, 2, 3, 15, 16, 17, 100, 1000}) {
    for (int threads : {1, 2, 4, 16, 64}) expect_each_once(w, n, threads);
  }
  EXPECT_LE(w.started(), 15);
}

TEST(HostWorkers, StartsNoThreadForOneAndAtMostMostLessOne) {
  HostWorkers one(16);
  expect_each_once(one, 50, 1);
  EXPECT_EQ(one.started(), 0);
  HostWorkers few(4);
  expect_each_once(few, 50, 16);
  EXPECT_LE(few.started(), 3);
  HostWorkers small(16);
  expect_each_once(small, 3, 16);  // no more workers than indices less one
  EXPECT_LE(small.started(), 2);
}

TEST(HostWorkers, KeepsItsThreadsAcrossSteps) {
  HostWorkers w(8);
  expect_each_once(w, 64, 8);
  EXPECT_GE(w.started(), 1);
  for (int step = 0; step < 2000; ++step) expect_each_once(w, 1 + step % 40, 1 + step % 8);
  EXPECT_LE(w.started(), 7);  // started once, reused: never more than most - 1
}

TEST(HostWorkers, WorkersTakeAShare) {
  // Indices that each take a while: the caller cannot take them all before the workers wake.
  HostWorkers w(4);
  std::mutex m;
  std::set<std::thread::id> ids;
  w.run(16, 4, [&](int) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::lock_guard<std::mutex> lock(m);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_GT(ids.size(), 1u);
  EXPECT_LE(ids.size(), 4u);
}

TEST(HostWorkers, StepsFromSeveralThreadsRunOneAfterAnother) {
  HostWorkers w(6);
  std::atomic<long> total{0};
  auto caller = [&] {
    for (int step = 0; step < 300; ++step) {
      std::atomic<int> in_step{0};
      w.run(20, 6, [&](int i) {
        in_step.fetch_add(1);
        total.fetch_add(i);
      });
      EXPECT_EQ(in_step.load(), 20);
    }
  };
  std::thread a(caller), b(caller);
  caller();
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 3L * 300 * (19 * 20 / 2));
}

TEST(HostWorkers, DestroysCleanlyIdleOrUnused) {
  { HostWorkers unused(16); }
  {
    HostWorkers used(16);
    expect_each_once(used, 100, 16);
  }
  SUCCEED();
}

}  // namespace
}  // namespace sampleattn::cuda
