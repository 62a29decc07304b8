// A few host threads that stay up between calls, for the CUDA backend's host-side steps that run
// per selection set while the device waits (cuda/validation.h: the validation layouts and
// decisions). Starting threads for each step cost more than the step on the lent H100's host
// (16 threads spawned and joined: about 0.5 ms, against 40-60 us of work a set; docs/PERF.md
// 2026-12-06, "the GPU's selection"), so the backend keeps its workers and wakes them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sampleattn::cuda {

class HostWorkers {
 public:
  // Up to `most` threads run a step: the caller and most - 1 workers, started at the first step
  // that asks for more than one.
  explicit HostWorkers(int most) : most_(most < 1 ? 1 : most) {}
  ~HostWorkers();
  HostWorkers(const HostWorkers&) = delete;
  HostWorkers& operator=(const HostWorkers&) = delete;

  // Runs f(0 .. n - 1), each once, on the calling thread and up to threads - 1 workers (at most
  // most - 1), and returns when all have returned. f must not throw. When a worker cannot be
  // started, the ones that did (or the caller alone) take its share. One step at a time: calls
  // from several threads run one after another.
  void run(int n, int threads, const std::function<void(int)>& f);

  // Workers started so far (for tests).
  int started() const;

 private:
  void start(int wanted);
  void loop(uint64_t seen);
  void work(const std::function<void(int)>& f, int n);

  const int most_;
  std::mutex run_mutex_;   // one step at a time
  mutable std::mutex m_;   // the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  int n_ = 0;
  int next_ = 0;           // the next index to take (under m_)
  int joining_ = 0;        // workers asked to join this step
  int active_ = 0;         // workers still in this step
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace sampleattn::cuda
