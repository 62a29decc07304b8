// A backend runs validated problems. The context holds one, chosen by the backend table in
// api/c_api.cpp: the CPU backend always exists; the CUDA backend lives in a module
// (core/backend_module.h) that api/backend_modules.cpp loads when it is installed, and it exists
// when a device is found.
#pragma once

#include <memory>
#include <string>

#include "core/collective.h"
#include "core/problem.h"
#include "core/shard_map.h"
#include "core/status.h"
#include "sampleattn/sampleattn.h"

namespace sampleattn {

struct BackendOptions {
  int num_threads = 0;
  bool bind = true;
  int cuda_device = 0;
  uint64_t max_workspace_bytes = 0;
  // The host's parallel-for (sampleattn_context_options.parallel_for): the CPU backend runs on
  // it and starts no thread; the CUDA backend ignores it (its host side is one thread).
  sampleattn_parallel_for_fn parallel_for = nullptr;
  void* host_pool = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Validates the call and reports its workspace: the bytes known before it runs. CPU: the most
  // the call holds at once (cpu/workspace.h: the pool's scratch, stages 1 and 2's buffers, the
  // plan, task lists); the packed stripe K/V buffers depend on the stripes chosen, so forward()
  // adds them to what it holds then and checks that total. CUDA: the whole device workspace (it
  // gathers stripes without a copy).
  virtual Status plan(const Problem& problem, sampleattn_plan_info* info) = 0;
  virtual Status forward(const Problem& problem, sampleattn_stats* stats) = 0;
  // One process's part of a sharded SampleAttention call (context parallelism, docs/SCALING.md):
  // `problem` is the batch at its global lengths with this process's tensors, `map` who holds
  // which positions, `coll` the processes. Only the CPU backend has one.
  virtual Status forward_sharded(const Problem& problem, const ShardMap& map, Collective& coll,
                                 sampleattn_stats* stats) {
    (void)problem, (void)map, (void)coll, (void)stats;
    return unsupported_backend("sharded calls run on CPU contexts");
  }
  virtual void describe(sampleattn_context_info* info) const = 0;
};

namespace cpu {
Status create_backend(const BackendOptions& options, std::unique_ptr<Backend>* backend);
}
namespace cuda {
// Fails with SAMPLEATTN_UNSUPPORTED_BACKEND (and a reason) when the CUDA module is not installed
// or no device is usable. In libsampleattn this loads the module (api/backend_modules.cpp); in
// the module it is the backend itself (cuda/cuda_backend.cpp).
Status create_backend(const BackendOptions& options, std::unique_ptr<Backend>* backend);
// libsampleattn only: the file the CUDA module was loaded from, or "" when none was.
const char* module_path();
}

}  // namespace sampleattn
