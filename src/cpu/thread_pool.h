// A NUMA-aware worker pool (hwloc): one worker per core the process may run on (taskset and
// cgroup cpusets respected, and no more than a cgroup CPU quota allows), each bound to its core at
// start unless binding is off or the workers are fewer than the allowed cores (then they float:
// binding the first cores of the set would stack processes that do the same), grouped by NUMA
// node, with node-local scratch memory. The pool is created once per context and reused across
// calls.
//
// Host mode (ThreadPoolOptions::parallel_for set): the pool starts no thread. Each run() hands
// min(num_threads, tasks) "slots" to the host's parallel-for; slot i claims tasks from the same
// counter as a worker would and acts as worker i (its id, its scratch), so the host need not say
// which of its threads runs a slot, and a slot never runs beside itself. One NUMA node, unbound.
//
// Threading contract: run() may be called from several application threads at once; calls are
// serialized (each one uses every worker). The calling thread only waits, so exactly
// num_threads() threads compute and the pool never oversubscribes its cores. Do not call run()
// from inside a task.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "core/status.h"
#include "cpu/call_buffers.h"

namespace sampleattn::cpu {

// The most workers a pool has: more is a configuration mistake, not a machine.
inline constexpr int kMaxThreads = 4096;

// SAMPLEATTN_NUM_THREADS when it is a positive integer no larger than kMaxThreads, else 0; a set
// but rejected value leaves the reason in *rejected.
int threads_from_environment(std::string* rejected = nullptr);

// A non-owning reference to a callable (no allocation, unlike std::function).
template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor)
      : object_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

// The host's parallel-for (sampleattn_parallel_for_fn): calls task(task_context, i) once for each
// i in [0, count) and returns when all have returned.
using HostParallelFor = sampleattn_parallel_for_fn;

struct ThreadPoolOptions {
  // 0: SAMPLEATTN_NUM_THREADS if set to a positive number, else one per allowed core, capped by
  // the cgroup CPU quota (cgroup_limits.h). With parallel_for: the host's thread count, > 0.
  int num_threads = 0;
  bool bind = true;  // bind each worker to one core when they cover the allowed cores; ignored with parallel_for
  HostParallelFor parallel_for = nullptr;  // set: run on the host's threads, start none
  void* host_pool = nullptr;               // passed back to parallel_for
};

class ThreadPool {
 public:
  // Fails with a Status (never throws) when threads or topology cannot be set up.
  static Status create(const ThreadPoolOptions& options, std::unique_ptr<ThreadPool>* pool);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;
  int num_numa_nodes() const;
  // True when the workers are bound to cores.
  bool bound() const;
  // True when run() goes through the host's parallel-for.
  bool on_host_pool() const;

  // Runs body(task, worker, scratch) for each task in [0, num_tasks) across the workers and
  // returns when all are done. Tasks are claimed dynamically in increasing index order, so callers
  // put the most expensive tasks first. worker is in [0, num_threads()); scratch is that worker's
  // buffer of at least scratch_bytes, 64-byte aligned, on the worker's NUMA node, kept and reused
  // across calls (a worker keeps the largest buffer it was given).
  // scratch_limit_bytes (0 = no limit) bounds the scratch the pool holds during this run, all
  // workers together (scratch_footprint() each): buffers kept from an earlier, larger run are
  // freed and reallocated at this run's size when keeping them would pass it. Fails with
  // SAMPLEATTN_OUT_OF_MEMORY (running nothing) when num_threads() * scratch_footprint(scratch_bytes)
  // alone passes it, or when the scratch cannot be had. body must not throw (in host mode an
  // exception is caught inside the slot, so it never unwinds through the host's code, and the run
  // reports SAMPLEATTN_INTERNAL_ERROR; so does a host that skips or repeats a slot).
  Status run(int64_t num_tasks, size_t scratch_bytes, uint64_t scratch_limit_bytes,
             FunctionRef<void(int64_t task, int worker, void* scratch)> body);

  // The bytes one worker's buffer takes for a run asking scratch_bytes (rounded up to 64).
  static uint64_t scratch_footprint(size_t scratch_bytes);
  // The scratch the pool holds now, all workers together.
  uint64_t held_scratch_bytes();
  // Frees every worker buffer larger than scratch_footprint(keep_bytes) (all of them for 0); the
  // next run that needs scratch allocates it again. Waits for a run in flight.
  void release_scratch(size_t keep_bytes = 0);

  // The context's call-lifetime buffers, kept from call to call beside the workers' scratch
  // (call_buffers.h).
  CallBuffers& call_buffers() { return call_buffers_; }

 private:
  struct Impl;
  explicit ThreadPool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  CallBuffers call_buffers_;
};

}  // namespace sampleattn::cpu
