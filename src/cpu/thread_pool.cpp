// The NUMA-aware worker pool behind every parallel CPU call (see thread_pool.h).
//
// Oversubscription contract: the pool owns one worker per allowed core and the calling thread
// only waits, so while run() is in flight exactly num_threads() threads compute. Nothing the pool
// runs may start threads of its own: the library never calls a multithreaded BLAS, never opens an
// OpenMP parallel region and never calls run() from inside a task. Code that needs BLAS inside a
// task must call it single-threaded (openblas_set_num_threads(1) / OPENBLAS_NUM_THREADS=1, or a
// sequential BLAS build), or OpenBLAS and OpenMP pin their own threads onto the cores the workers
// are bound to and every core runs two or more compute threads.
//
// Topology: one hwloc topology per pool, loaded with RESTRICT_TO_CPUBINDING so taskset and cgroup
// cpusets are respected. hwloc 2.9 silently ignores that flag unless IS_THISSYSTEM is set too, and
// it reads the binding of the whole process (the union over all its threads), so the allowed set
// is further intersected with the creating thread's own binding: a worker that did not bind
// would inherit exactly that mask from the creating thread anyway.
//
// When the topology cannot be loaded the pool still works: one worker per CPU in the creating
// thread's affinity mask, unbound, one NUMA node, scratch from posix_memalign.
//
// Host mode (a parallel-for of the host's): no topology, no worker thread, one NUMA node, scratch
// from posix_memalign placed by first touch inside the slot. Where the host runs a slot is its
// business; a NUMA grouping of ours would be a guess.
#include "cpu/thread_pool.h"

#include "cpu/cgroup_limits.h"

#include <hwloc.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace sampleattn::cpu {

int threads_from_environment(std::string* rejected) {
  const char* text = std::getenv("SAMPLEATTN_NUM_THREADS");
  if (text == nullptr || *text == '\0') return 0;
  errno = 0;
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value <= 0 || value > kMaxThreads) {
    if (rejected != nullptr) *rejected = "not an integer in [1, " + std::to_string(kMaxThreads) + "]";
    return 0;
  }
  return static_cast<int>(value);
}

namespace {

// Scratch buffers start on a page boundary (so two workers never share a page, and first touch
// places whole pages) and their size is a multiple of the cache line.
constexpr size_t kScratchAlignment = 64;
constexpr size_t kPageBytes = 4096;
// Workers spin this long for the next run before sleeping (bounded by time because a pause
// costs 10 to 150 cycles depending on the CPU). The caller does not spin: every core has a bound
// worker, so a spinning caller takes a core away from one (measured: 50 us of caller spin made
// an empty run 3x slower on 4 and 16 cores).
constexpr std::chrono::microseconds kWorkerSpin{50};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() is true or the time is up; returns done()'s last answer.
template <typename Done>
bool spin_until(std::chrono::microseconds limit, Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    for (int i = 0; i < 16; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

// Number of CPUs the calling thread may run on, without hwloc.
int allowed_cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  unsigned hardware = std::thread::hardware_concurrency();
  return hardware > 0 ? static_cast<int>(std::min<unsigned>(hardware, kMaxThreads)) : 1;
}

struct BitmapDeleter {
  void operator()(hwloc_bitmap_s* bitmap) const { hwloc_bitmap_free(bitmap); }
};
using Bitmap = std::unique_ptr<hwloc_bitmap_s, BitmapDeleter>;

Bitmap make_bitmap() {
  Bitmap bitmap(hwloc_bitmap_alloc());
  if (!bitmap) throw std::bad_alloc();
  return bitmap;
}
Bitmap copy_bitmap(hwloc_const_bitmap_t source) {
  Bitmap bitmap(hwloc_bitmap_dup(source));
  if (!bitmap) throw std::bad_alloc();
  return bitmap;
}

// A place a worker may be bound to: the allowed PUs of one core and the NUMA node it belongs to.
struct CorePlace {
  Bitmap cpuset;
  Bitmap nodeset;  // null when the core lies in no NUMA node's cpuset
  int numa_index = 0;
};

}  // namespace

struct ThreadPool::Impl {
  using Body = FunctionRef<void(int64_t task, int worker, void* scratch)>;

  struct Scratch {
    void* data = nullptr;
    size_t bytes = 0;       // usable size, a multiple of kScratchAlignment
    bool from_hwloc = false;  // freed with hwloc_free, else with free
    bool needs_first_touch = false;
  };

  struct Worker {
    Bitmap cpuset;   // one PU; null when the pool does not bind
    Bitmap nodeset;  // for hwloc_alloc_membind; null without a topology
    int numa_index = 0;
    bool bind_failed = false;  // written by the worker before it reports started
    Scratch scratch;
  };

  hwloc_topology_t topology = nullptr;
  HostParallelFor parallel_for = nullptr;  // set: host mode, threads stays empty
  void* host_pool = nullptr;
  bool bind = false;
  bool workers_bound = false;
  int num_numa_nodes = 1;
  std::vector<Worker> workers;
  std::vector<std::thread> threads;

  // run() callers queue here; the job fields below belong to the holder.
  std::mutex run_mutex;
  const Body* job_body = nullptr;
  int64_t job_num_tasks = 0;
  std::atomic<int64_t> next_task{0};
  std::atomic<int> workers_busy{0};
  // Host mode: which slots of the run in flight have started (see HostRun::slot).
  std::unique_ptr<std::atomic<bool>[]> slot_taken;

  // Sleeping and waking. generation and stopping change only under state_mutex (so a worker
  // that checks them under the mutex cannot miss a wake-up) but are atomic so spinning workers
  // may read them without it.
  std::mutex state_mutex;
  std::condition_variable wake_cv;  // workers wait for a new generation or stop
  std::condition_variable done_cv;  // the caller waits for workers_busy == 0 or for startup
  std::atomic<uint64_t> generation{0};
  std::atomic<bool> stopping{false};
  int workers_started = 0;  // under state_mutex

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      stopping.store(true, std::memory_order_relaxed);
    }
    wake_cv.notify_all();
    for (std::thread& thread : threads) {
      if (thread.joinable()) thread.join();
    }
    for (Worker& worker : workers) free_scratch(worker.scratch);
    workers.clear();  // the bitmaps go before the topology
    if (topology != nullptr) hwloc_topology_destroy(topology);
  }

  void free_scratch(Scratch& scratch) {
    if (scratch.data != nullptr) {
      if (scratch.from_hwloc) {
        hwloc_free(topology, scratch.data, scratch.bytes);
      } else {
        std::free(scratch.data);
      }
    }
    scratch = Scratch{};
  }

  // Node-local memory when hwloc can bind it; plain page-aligned memory otherwise (containers
  // often refuse mbind, and hwloc without a real system returns malloc'ed memory).
  bool allocate_scratch(Worker& worker, size_t bytes) {
    Scratch fresh;
    fresh.bytes = bytes;
    fresh.needs_first_touch = true;
    if (topology != nullptr && worker.nodeset) {
      void* data = hwloc_alloc_membind(topology, bytes, worker.nodeset.get(), HWLOC_MEMBIND_BIND,
                                       HWLOC_MEMBIND_BYNODESET);
      if (data != nullptr && reinterpret_cast<uintptr_t>(data) % kScratchAlignment == 0) {
        fresh.data = data;
        fresh.from_hwloc = true;
      } else if (data != nullptr) {
        hwloc_free(topology, data, bytes);
      }
    }
    if (fresh.data == nullptr) {
      void* data = nullptr;
      if (posix_memalign(&data, kPageBytes, bytes) != 0) return false;
      fresh.data = data;
    }
    worker.scratch = fresh;
    return true;
  }

  // Loads the topology and picks the cores; leaves topology null (and the caller falls back)
  // when hwloc cannot describe this machine.
  std::vector<CorePlace> discover_cores() {
    std::vector<CorePlace> places;
    if (hwloc_topology_init(&topology) != 0) {
      topology = nullptr;
      return places;
    }
    if (hwloc_topology_set_flags(topology, HWLOC_TOPOLOGY_FLAG_RESTRICT_TO_CPUBINDING |
                                               HWLOC_TOPOLOGY_FLAG_IS_THISSYSTEM) != 0 ||
        hwloc_topology_load(topology) != 0) {
      hwloc_topology_destroy(topology);
      topology = nullptr;
      return places;
    }

    Bitmap allowed = copy_bitmap(hwloc_topology_get_allowed_cpuset(topology));
    Bitmap thread_binding = make_bitmap();
    if (hwloc_get_cpubind(topology, thread_binding.get(), HWLOC_CPUBIND_THREAD) == 0 &&
        hwloc_bitmap_intersects(allowed.get(), thread_binding.get())) {
      hwloc_bitmap_and(allowed.get(), allowed.get(), thread_binding.get());
    }

    const int num_nodes = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_NUMANODE);
    auto add_places_of_type = [&](hwloc_obj_type_t type) {
      const int count = hwloc_get_nbobjs_by_type(topology, type);
      for (int i = 0; i < count; ++i) {
        hwloc_obj_t object = hwloc_get_obj_by_type(topology, type, static_cast<unsigned>(i));
        if (object == nullptr || object->cpuset == nullptr) continue;
        CorePlace place;
        place.cpuset = copy_bitmap(object->cpuset);
        hwloc_bitmap_and(place.cpuset.get(), place.cpuset.get(), allowed.get());
        if (hwloc_bitmap_iszero(place.cpuset.get())) continue;
        place.numa_index = num_nodes;  // "no node" sorts last
        for (int node_index = 0; node_index < num_nodes; ++node_index) {
          hwloc_obj_t node = hwloc_get_obj_by_type(topology, HWLOC_OBJ_NUMANODE,
                                                   static_cast<unsigned>(node_index));
          if (node != nullptr && node->cpuset != nullptr && node->nodeset != nullptr &&
              hwloc_bitmap_intersects(node->cpuset, place.cpuset.get())) {
            place.numa_index = node_index;
            place.nodeset = copy_bitmap(node->nodeset);
            break;
          }
        }
        places.push_back(std::move(place));
      }
    };
    add_places_of_type(HWLOC_OBJ_CORE);
    if (places.empty()) add_places_of_type(HWLOC_OBJ_PU);  // platforms that report no cores
    // Workers of one NUMA node are contiguous; within a node keep hwloc's logical core order.
    std::stable_sort(places.begin(), places.end(), [](const CorePlace& a, const CorePlace& b) {
      return a.numa_index < b.numa_index;
    });
    if (places.empty()) {
      hwloc_topology_destroy(topology);
      topology = nullptr;
    }
    return places;
  }

  // The host's slots: one per worker, each acting as that worker.
  void plan_host_slots(int host_threads) {
    workers.resize(static_cast<size_t>(host_threads));
    num_numa_nodes = 1;
  }

  // Sets up the workers (not yet started) for num_threads requested threads (0 = default).
  void plan_workers(int requested_threads, bool want_bind) {
    std::vector<CorePlace> places = discover_cores();
    int num_threads = requested_threads;
    if (num_threads == 0) num_threads = threads_from_environment();
    if (num_threads == 0) {
      num_threads = places.empty() ? allowed_cpu_count() : static_cast<int>(places.size());
      // A quota below the cores would throttle every worker in turn (cgroup_limits.h).
      const int quota_cpus = cgroup_cpu_limit();
      if (quota_cpus > 0) num_threads = std::min(num_threads, quota_cpus);
    }
    // Bound only when the workers cover every allowed core: a pool of fewer workers would bind
    // the first cores of the set, and so would another process doing the same (two MPI ranks of
    // one thread each that mpirun did not bind: both on core 0, each call twice as long; two
    // quota-limited containers sharing a cpuset), so it leaves placement to the OS instead.
    bind = want_bind && topology != nullptr && num_threads >= static_cast<int>(places.size());
    workers.resize(static_cast<size_t>(num_threads));
    if (places.empty()) {
      num_numa_nodes = 1;
      return;
    }
    const size_t num_places = places.size();
    for (size_t i = 0; i < workers.size(); ++i) {
      const CorePlace& place = places[i % num_places];
      Worker& worker = workers[i];
      worker.numa_index = place.numa_index;
      // An unbound worker may run on any node, so its scratch is placed by first touch instead.
      if (bind && place.nodeset) worker.nodeset = copy_bitmap(place.nodeset.get());
      if (bind) {
        // The first pass takes each core's first PU (a singlified copy of the core's cpuset);
        // further passes, when there are more workers than cores, take the core's next hardware
        // thread when it has one.
        worker.cpuset = copy_bitmap(place.cpuset.get());
        const int round = static_cast<int>(i / num_places);
        const int num_pus = hwloc_bitmap_weight(place.cpuset.get());
        if (round == 0 || num_pus <= 1) {
          hwloc_bitmap_singlify(worker.cpuset.get());
        } else {
          int pu = hwloc_bitmap_first(place.cpuset.get());
          for (int skip = round % num_pus; skip > 0; --skip) {
            pu = hwloc_bitmap_next(place.cpuset.get(), pu);
          }
          hwloc_bitmap_only(worker.cpuset.get(), static_cast<unsigned>(pu));
        }
      }
    }
    // Wrapped-around workers join their core's node group.
    std::stable_sort(workers.begin(), workers.end(), [](const Worker& a, const Worker& b) {
      return a.numa_index < b.numa_index;
    });
    num_numa_nodes = 0;
    for (size_t i = 0; i < workers.size(); ++i) {
      if (i == 0 || workers[i].numa_index != workers[i - 1].numa_index) ++num_numa_nodes;
    }
  }

  // Starts the workers and waits until each has bound itself. Throws std::system_error or
  // std::bad_alloc; the destructor then stops the ones already started.
  void start_workers() {
    threads.reserve(workers.size());
    for (size_t i = 0; i < workers.size(); ++i) {
      threads.emplace_back([this, i] { worker_main(static_cast<int>(i)); });
    }
    std::unique_lock<std::mutex> lock(state_mutex);
    done_cv.wait(lock, [&] { return workers_started == static_cast<int>(workers.size()); });
    workers_bound = bind;
    for (const Worker& worker : workers) {
      if (worker.bind_failed) workers_bound = false;
    }
  }

  void worker_main(int id) {
    Worker& self = workers[static_cast<size_t>(id)];
    if (bind && self.cpuset) {
      self.bind_failed = hwloc_set_cpubind(topology, self.cpuset.get(), HWLOC_CPUBIND_THREAD) != 0;
    }
    uint64_t seen_generation = 0;
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      ++workers_started;
      seen_generation = generation.load(std::memory_order_relaxed);
    }
    done_cv.notify_all();

    for (;;) {
      if (!wait_for_work(seen_generation)) return;
      seen_generation = generation.load(std::memory_order_acquire);

      Scratch& scratch = self.scratch;
      if (scratch.needs_first_touch) {
        // Fault the pages in from the worker's own core: with membind they land on the bound
        // node regardless, without it first touch puts them on this worker's node.
        std::memset(scratch.data, 0, scratch.bytes);
        scratch.needs_first_touch = false;
      }
      const Body& body = *job_body;
      const int64_t num_tasks = job_num_tasks;
      for (;;) {
        const int64_t task = next_task.fetch_add(1, std::memory_order_relaxed);
        if (task >= num_tasks) break;
        body(task, id, scratch.data);
      }
      if (workers_busy.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        // Lock so the notify cannot fall between the caller's check and its wait.
        std::lock_guard<std::mutex> lock(state_mutex);
        done_cv.notify_all();
      }
    }
  }

  // Returns true when a generation newer than seen has been published, false on stop.
  bool wait_for_work(uint64_t seen) {
    if (spin_until(kWorkerSpin, [&] {
          return stopping.load(std::memory_order_relaxed) ||
                 generation.load(std::memory_order_acquire) != seen;
        })) {
      return !stopping.load(std::memory_order_relaxed);
    }
    std::unique_lock<std::mutex> lock(state_mutex);
    wake_cv.wait(lock, [&] {
      return stopping.load(std::memory_order_relaxed) ||
             generation.load(std::memory_order_relaxed) != seen;
    });
    return !stopping.load(std::memory_order_relaxed);
  }

  uint64_t held_scratch_bytes() const {
    uint64_t held = 0;
    for (const Worker& worker : workers) held += worker.scratch.bytes;
    return held;
  }

  void release_scratch(uint64_t keep_bytes) {
    for (Worker& worker : workers) {
      if (worker.scratch.bytes > keep_bytes) free_scratch(worker.scratch);
    }
  }

  Status prepare_scratch(size_t scratch_bytes, uint64_t limit_bytes) {
    const size_t num_threads = workers.size();
    if (scratch_bytes > std::numeric_limits<size_t>::max() - kPageBytes) {
      return out_of_memory("thread pool scratch of " + std::to_string(scratch_bytes) +
                           " bytes per worker cannot be allocated");
    }
    const size_t rounded = static_cast<size_t>(scratch_footprint(scratch_bytes));
    uint64_t total = 0;
    const bool overflows =
        __builtin_mul_overflow(static_cast<uint64_t>(rounded), static_cast<uint64_t>(num_threads), &total);
    // Past the host's memory the workers' first touch would meet the OOM killer on a host that
    // overcommits (cgroup_limits.h); refused here instead.
    if (scratch_bytes != 0 && (overflows || !fits_memory_ceiling(total))) {
      return out_of_memory("thread pool scratch of " + std::to_string(rounded) + " bytes for each of " +
                           std::to_string(num_threads) + " workers is more than the host's memory (" +
                           std::to_string(memory_ceiling()) + " bytes of RAM and swap, or the cgroup's limit)");
    }
    if (limit_bytes != 0) {
      if (overflows || total > limit_bytes) {
        return out_of_memory("thread pool scratch of " + std::to_string(rounded) +
                             " bytes for each of " + std::to_string(num_threads) +
                             " workers exceeds the memory limit of " +
                             std::to_string(limit_bytes) + " bytes");
      }
      // What the workers would hold after growing; buffers kept from a larger run go first.
      uint64_t after = 0;
      for (const Worker& worker : workers) after += std::max<uint64_t>(worker.scratch.bytes, rounded);
      if (after > limit_bytes) release_scratch(rounded);
    }
    if (scratch_bytes == 0) return Status::ok();
    for (Worker& worker : workers) {
      if (worker.scratch.bytes >= scratch_bytes) continue;
      free_scratch(worker.scratch);  // contents are not kept, so free first: lower peak
      if (!allocate_scratch(worker, rounded)) {
        return out_of_memory("could not allocate " + std::to_string(rounded) +
                             " bytes of thread pool scratch for each of " +
                             std::to_string(num_threads) + " workers");
      }
    }
    return Status::ok();
  }

  struct HostRun;
  Status run_on_host(int64_t num_tasks, const Body& body);

  Status run(int64_t num_tasks, size_t scratch_bytes, uint64_t limit_bytes, const Body& body) {
    if (num_tasks < 0) {
      return invalid_argument("thread pool run with a negative task count (" +
                              std::to_string(num_tasks) + ")");
    }
    // Workers each claim one index past the end; keep that from overflowing.
    if (num_tasks > std::numeric_limits<int64_t>::max() - kMaxThreads) {
      return invalid_argument("thread pool run with too many tasks (" +
                              std::to_string(num_tasks) + ")");
    }
    if (num_tasks == 0) return Status::ok();

    std::lock_guard<std::mutex> run_lock(run_mutex);
    SAMPLEATTN_RETURN_IF_ERROR(prepare_scratch(scratch_bytes, limit_bytes));

    if (parallel_for != nullptr) return run_on_host(num_tasks, body);

    // Published to the workers by the release store of the new generation.
    job_body = &body;
    job_num_tasks = num_tasks;
    next_task.store(0, std::memory_order_relaxed);
    workers_busy.store(static_cast<int>(workers.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      generation.store(generation.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    wake_cv.notify_all();

    if (workers_busy.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(state_mutex);
      done_cv.wait(lock, [&] { return workers_busy.load(std::memory_order_acquire) == 0; });
    }
    job_body = nullptr;
    return Status::ok();
  }
};

// One run in host mode: what each slot needs, on the stack of run(), which outlives every slot
// because the host's parallel-for returns only after the last one has.
struct ThreadPool::Impl::HostRun {
  enum Failure : int { kNone, kIndexOutOfRange, kIndexRepeated, kException };

  Impl* pool;
  const Body* body;
  int64_t num_tasks;
  int64_t num_slots;
  std::atomic<int64_t> next_task{0};
  std::atomic<int64_t> slots_done{0};
  std::atomic<int> failure{kNone};

  void fail(Failure reason) {
    int expected = kNone;
    failure.compare_exchange_strong(expected, reason, std::memory_order_relaxed);
  }

  // The host's task: slot `index` works as worker `index` until the tasks run out. noexcept and
  // catching everything: no exception may unwind through the host's frames.
  static void slot(void* context, int64_t index) noexcept {
    HostRun& run = *static_cast<HostRun*>(context);
    if (index < 0 || index >= run.num_slots) {
      run.fail(kIndexOutOfRange);
      return;
    }
    // Two calls of one slot would share a worker's scratch.
    if (run.pool->slot_taken[static_cast<size_t>(index)].exchange(true, std::memory_order_relaxed)) {
      run.fail(kIndexRepeated);
      return;
    }
    const int worker = static_cast<int>(index);
    Scratch& scratch = run.pool->workers[static_cast<size_t>(index)].scratch;
    try {
      if (scratch.needs_first_touch) {
        std::memset(scratch.data, 0, scratch.bytes);
        scratch.needs_first_touch = false;
      }
      for (;;) {
        const int64_t task = run.next_task.fetch_add(1, std::memory_order_relaxed);
        if (task >= run.num_tasks) break;
        (*run.body)(task, worker, scratch.data);
      }
    } catch (...) {
      run.fail(kException);
    }
    run.slots_done.fetch_add(1, std::memory_order_acq_rel);
  }
};

Status ThreadPool::Impl::run_on_host(int64_t num_tasks, const Body& body) {
  const int64_t num_slots = std::min<int64_t>(num_tasks, static_cast<int64_t>(workers.size()));
  HostRun job{this, &body, num_tasks, num_slots};
  for (int64_t i = 0; i < num_slots; ++i) slot_taken[static_cast<size_t>(i)].store(false, std::memory_order_relaxed);
  try {
    parallel_for(host_pool, &HostRun::slot, &job, num_slots);
  } catch (...) {
    // A C++ host's own failure; the library's callers expect a status, never an exception.
    return internal_error("the host's parallel_for threw an exception");
  }
  const int64_t done = job.slots_done.load(std::memory_order_acquire);
  switch (job.failure.load(std::memory_order_relaxed)) {
    case HostRun::kNone: break;
    case HostRun::kIndexOutOfRange:
      return internal_error("the host's parallel_for called the task with an index outside [0, " +
                            std::to_string(num_slots) + ")");
    case HostRun::kIndexRepeated:
      return internal_error("the host's parallel_for called the task twice with one index");
    default:
      return internal_error("unexpected exception in a task run by the host's parallel_for");
  }
  if (done != num_slots) {
    return internal_error("the host's parallel_for returned after " + std::to_string(done) + " of its " +
                          std::to_string(num_slots) + " task calls had run (each index must run once)");
  }
  return Status::ok();
}

ThreadPool::ThreadPool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ThreadPool::~ThreadPool() = default;

Status ThreadPool::create(const ThreadPoolOptions& options, std::unique_ptr<ThreadPool>* pool) {
  if (pool == nullptr) return null_pointer("thread pool output pointer is null");
  pool->reset();
  if (options.num_threads < 0 || options.num_threads > kMaxThreads) {
    return invalid_argument("thread pool num_threads must be in [0, " +
                            std::to_string(kMaxThreads) + "], got " +
                            std::to_string(options.num_threads));
  }
  if (options.parallel_for != nullptr && options.num_threads == 0) {
    return invalid_argument("num_threads must be the host's thread count (> 0) when parallel_for is set");
  }
  try {
    auto impl = std::make_unique<Impl>();
    if (options.parallel_for != nullptr) {
      impl->parallel_for = options.parallel_for;
      impl->host_pool = options.host_pool;
      impl->plan_host_slots(options.num_threads);
      impl->slot_taken = std::make_unique<std::atomic<bool>[]>(static_cast<size_t>(options.num_threads));
    } else {
      impl->plan_workers(options.num_threads, options.bind);
      impl->start_workers();
    }
    pool->reset(new ThreadPool(std::move(impl)));
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return out_of_memory("out of memory while creating the thread pool");
  } catch (const std::system_error& error) {
    return out_of_memory(std::string("could not start the thread pool's workers: ") +
                         error.what());
  } catch (...) {
    return internal_error("unexpected exception while creating the thread pool");
  }
}

int ThreadPool::num_threads() const { return static_cast<int>(impl_->workers.size()); }
int ThreadPool::num_numa_nodes() const { return impl_->num_numa_nodes; }
bool ThreadPool::bound() const { return impl_->workers_bound; }
bool ThreadPool::on_host_pool() const { return impl_->parallel_for != nullptr; }

Status ThreadPool::run(int64_t num_tasks, size_t scratch_bytes, uint64_t scratch_limit_bytes,
                       FunctionRef<void(int64_t task, int worker, void* scratch)> body) {
  return impl_->run(num_tasks, scratch_bytes, scratch_limit_bytes, body);
}

uint64_t ThreadPool::scratch_footprint(size_t scratch_bytes) {
  return (static_cast<uint64_t>(scratch_bytes) + kScratchAlignment - 1) / kScratchAlignment *
         kScratchAlignment;
}

uint64_t ThreadPool::held_scratch_bytes() {
  std::lock_guard<std::mutex> run_lock(impl_->run_mutex);
  return impl_->held_scratch_bytes();
}

void ThreadPool::release_scratch(size_t keep_bytes) {
  std::lock_guard<std::mutex> run_lock(impl_->run_mutex);
  impl_->release_scratch(scratch_footprint(keep_bytes));
}

}  // namespace sampleattn::cpu
