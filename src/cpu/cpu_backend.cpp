// The CPU backend: a worker pool plus the kernel table chosen at each call.
#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "core/input_scan.h"
#include "core/sparse_plan.h"
#include "core/timing.h"
#include "cpu/flash_driver.h"
#include "cpu/sampling.h"
#include "cpu/thread_pool.h"
#include "simd/dispatch.h"

namespace sampleattn::cpu {
namespace {

bool any_sampled(const Problem& problem) {
  if (problem.method != SAMPLEATTN_METHOD_SAMPLE) return false;
  for (const Sequence& s : problem.sequences) {
    if (sequence_is_sampled(problem, s)) return true;
  }
  return false;
}

// The input policy (core/input_scan.h), Q, K and V scanned in chunks of tokens on the workers.
Status check_inputs(ThreadPool& pool, const Problem& problem) {
  constexpr int64_t kChunk = 512;
  const struct {
    const TensorView& view;
    int heads;
    int64_t tokens;
  } tensors[] = {{problem.q, problem.num_q_heads, problem.total_q},
                 {problem.k, problem.num_kv_heads, problem.total_k},
                 {problem.v, problem.num_kv_heads, problem.total_k}};
  int64_t first_task[4] = {0};
  for (int t = 0; t < 3; ++t) first_task[t + 1] = first_task[t] + (tensors[t].tokens + kChunk - 1) / kChunk;
  std::vector<InputScan> scans(static_cast<size_t>(first_task[3]));
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(first_task[3], 0, 0, [&](int64_t task, int, void*) {
    int t = 0;
    while (task >= first_task[t + 1]) ++t;
    const int64_t begin = (task - first_task[t]) * kChunk;
    const int64_t end = std::min(begin + kChunk, tensors[t].tokens);
    scans[task] = scan_rows(tensors[t].view, tensors[t].heads, problem.head_dim, begin, end);
  }));
  InputScan merged[3];
  for (int t = 0; t < 3; ++t) {
    for (int64_t i = first_task[t]; i < first_task[t + 1]; ++i) merged[t].merge(scans[i]);
  }
  return input_scan_status(problem, merged[0], merged[1], merged[2]);
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
    SAMPLEATTN_RETURN_IF_ERROR(check_inputs(*pool_, problem));
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
