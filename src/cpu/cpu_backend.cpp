// The CPU backend: a worker pool plus the kernel table chosen at each call.
#include <chrono>
#include <memory>

#include "core/backend.h"
#include "simd/dispatch.h"
#include "core/sparse_plan.h"
#include "core/timing.h"
#include "cpu/flash_driver.h"
#include "cpu/sampling.h"
#include "cpu/thread_pool.h"

namespace sampleattn::cpu {
namespace {

bool any_sampled(const Problem& problem) {
  if (problem.method != SAMPLEATTN_METHOD_SAMPLE) return false;
  for (const Sequence& s : problem.sequences) {
    if (sequence_is_sampled(problem, s)) return true;
  }
  return false;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::unique_ptr<ThreadPool> pool, uint64_t limit) : pool_(std::move(pool)), limit_(limit) {}

  Status plan(const Problem& problem, sampleattn_plan_info* info) override {
    const KernelTable& kernels = active_kernel_table();
    uint64_t bytes = static_cast<uint64_t>(flash_scratch_bytes(kernels, problem)) * pool_->num_threads();
    if (any_sampled(problem)) bytes += sampling_workspace_bytes(kernels, problem, pool_->num_threads(), limit_);
    if (limit_ != 0 && bytes > limit_) {
      return out_of_memory("the call needs " + std::to_string(bytes) +
                           " bytes of workspace, over the context's limit of " + std::to_string(limit_));
    }
    if (info != nullptr) info->workspace_bytes = bytes;
    return Status::ok();
  }

  Status forward(const Problem& problem, sampleattn_stats* stats) override {
    const auto t0 = std::chrono::steady_clock::now();
    const KernelTable& kernels = active_kernel_table();
    SAMPLEATTN_RETURN_IF_ERROR(plan(problem, nullptr));
    std::unique_ptr<SparsePlan> sparse;
    if (any_sampled(problem)) {
      sparse = std::make_unique<SparsePlan>();
      SAMPLEATTN_RETURN_IF_ERROR(build_sparse_plan(*pool_, limit_, kernels, problem, stats != nullptr, sparse.get()));
    }
    const auto t_attention = std::chrono::steady_clock::now();
    SAMPLEATTN_RETURN_IF_ERROR(run_flash_attention(*pool_, limit_, kernels, problem, sparse.get()));
    if (stats != nullptr) {
      fill_stats(problem, sparse.get(), stats);
      stats->time_attention_s = seconds_since(t_attention);
      stats->time_total_s = seconds_since(t0);
      stats->isa = kernels.name;
    }
    return Status::ok();
  }

  void describe(sampleattn_context_info* info) const override {
    info->backend = SAMPLEATTN_BACKEND_CPU;
    info->num_threads = pool_->num_threads();
    info->num_numa_nodes = pool_->num_numa_nodes();
    info->isa = active_kernel_table().name;
    info->device_name = "";
  }

 private:
  std::unique_ptr<ThreadPool> pool_;
  uint64_t limit_;
};

}  // namespace

Status create_backend(const BackendOptions& options, std::unique_ptr<Backend>* backend) {
  std::unique_ptr<ThreadPool> pool;
  SAMPLEATTN_RETURN_IF_ERROR(ThreadPool::create({options.num_threads, options.bind}, &pool));
  *backend = std::make_unique<CpuBackend>(std::move(pool), options.max_workspace_bytes);
  return Status::ok();
}

}  // namespace sampleattn::cpu
