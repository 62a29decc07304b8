// The CPU backend: a worker pool plus the kernel table chosen at each call.
#include <algorithm>
#include <chrono>
#include <limits>
#include <cmath>
#include <memory>
#include <mutex>
#include <vector>

#include "core/backend.h"
#include "core/input_scan.h"
#include "core/mask.h"
#include "core/sparse_plan.h"
#include "core/timing.h"
#include "cpu/flash_driver.h"
#include "cpu/look.h"
#include "cpu/sampling.h"
#include "cpu/sharded_attention.h"
#include "cpu/thread_pool.h"
#include "cpu/workspace.h"
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

// Tokens per input-scan task.
constexpr int64_t kScanChunk = 512;

// The input policy (core/input_scan.h): Q scanned in chunks of tokens, K and V in chunks of each
// sequence's keys (wherever the cache keeps them), on the workers.
struct ScanChunk {
  int tensor;  // 0 q, 1 k, 2 v
  int seq;     // k and v
  int64_t begin, end;
};

// Scan tasks of a call: Q in chunks of tokens; for each of K and V, each sequence's keys in chunks.
int64_t scan_chunk_count(const Problem& problem) {
  int64_t count = (problem.total_q + kScanChunk - 1) / kScanChunk;
  for (const Sequence& s : problem.sequences) count += 2 * ((s.k_len + kScanChunk - 1) / kScanChunk);
  return count;
}

// Whether the attention itself checks every K and V value of the call's sequences that have
// queries, before any output is written: every such sequence runs the decode kernel
// (decode_streams, cpu/flash_driver.h), which checks what it reads, reads every key when its first
// row sees key 0, measures the largest |value| of f32 and bf16 K/V (whose dtypes do not bound them
// as f16, int8 and fp8 do), and leaves the output to the merge after the check (kv_bounds). One
// prefill chunk in the batch writes its rows as it goes, so then everything is scanned first.
// Decode steps so read the cache once.
bool attention_checks_kv(const Problem& problem) {
  bool any = false;
  for (const Sequence& seq : problem.sequences) {
    if (seq.q_len == 0) continue;
    const bool every_key = !problem.causal || model_lo(seq.q_offset(), problem.window_left) == 0;
    if (!decode_streams(problem, seq) || !every_key) return false;
    any = true;
  }
  return any;
}

// The input policy's verdict with the K/V values the scan left to the attention counted by the
// largest magnitudes the decode kernels saw: a row of d values no larger than m has a norm of at
// most sqrt(d) * m, taken 2^-10 above that so that it also covers the scan's rounded sum of
// squares. A pass here means the full scan would pass; a fail only sends the call to it.
bool kv_bounds_ok(const Problem& problem, const InputScan scanned[3], float k_max_abs, float v_max_abs) {
  const auto unbounded = [](DType t) { return t == DType::kF32 || t == DType::kBF16; };
  const auto widen = [](InputScan s, DType t, int dim, float max_abs) {
    if (t == DType::kF32 || t == DType::kBF16) {
      const double norm = std::sqrt(static_cast<double>(dim)) * static_cast<double>(max_abs) * (1.0 + 0x1p-10);
      s.max_row_norm = std::max(s.max_row_norm, static_cast<float>(std::min<double>(norm, HUGE_VAL)));
      s.max_abs = std::max(s.max_abs, max_abs);
    }
    return s;
  };
  if (!unbounded(problem.k.dtype) && !unbounded(problem.v.dtype)) return true;
  if (!(k_max_abs <= std::numeric_limits<float>::max()) || !(v_max_abs <= std::numeric_limits<float>::max())) return false;
  return input_scan_status(problem, scanned[0], widen(scanned[1], problem.k.dtype, problem.head_dim, k_max_abs),
                           widen(scanned[2], problem.v.dtype, problem.head_dim_v, v_max_abs))
      .is_ok();
}

// full: read every K/V value, even those the attention would check (to name a bad one).
// scanned (optional): the merged scans of Q, K and V.
Status check_inputs(ThreadPool& pool, uint64_t pool_limit, const KernelTable& kernels, const Problem& problem,
                    bool full = false, InputScan* scanned = nullptr) {
  std::vector<ScanChunk> chunks;
  chunks.reserve(static_cast<size_t>(scan_chunk_count(problem)));  // counted by the workspace
  for (int64_t t = 0; t < problem.total_q; t += kScanChunk) chunks.push_back({0, 0, t, std::min(t + kScanChunk, problem.total_q)});
  for (int tensor = 1; tensor <= 2; ++tensor) {
    for (size_t s = 0; s < problem.sequences.size(); ++s) {
      const int64_t keys = problem.sequences[s].k_len;
      for (int64_t j = 0; j < keys; j += kScanChunk) {
        chunks.push_back({tensor, static_cast<int>(s), j, std::min(j + kScanChunk, keys)});
      }
    }
  }
  std::vector<InputScan> scans(chunks.size());
  const bool checked = !full && attention_checks_kv(problem);
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(chunks.size()), 0, pool_limit, [&](int64_t task, int, void*) {
    const ScanChunk& c = chunks[static_cast<size_t>(task)];
    if (c.tensor == 0) {
      scans[task] = scan_rows(problem.q, problem.num_q_heads, problem.head_dim, c.begin, c.end, kernels.scan_row);
      return;
    }
    // Keys of a sequence without queries are read by nobody else: scanned as always.
    const bool read = !checked || problem.sequences[c.seq].q_len == 0;
    scans[task] = scan_kv_rows(problem, c.tensor == 2, c.seq, c.begin, c.end, read, kernels.scan_row);
  }));
  InputScan merged[3];
  for (size_t i = 0; i < chunks.size(); ++i) merged[chunks[i].tensor].merge(scans[i]);
  if (scanned != nullptr) std::copy(merged, merged + 3, scanned);
  return input_scan_status(problem, merged[0], merged[1], merged[2]);
}

// What a call holds (cpu/workspace.h) at each moment that can be known before stage 2: while
// the inputs are scanned, during stages 1 and 2, and during the attention without its stripe
// buffers (known after stage 2; run_flash_attention adds them). The pool keeps each worker's
// buffer between runs and grows it to the largest size asked, so in every phase its part is the
// call's largest per-worker scratch on every worker.
struct CallWorkspace {
  size_t per_worker_scratch = 0;
  bool sampled = false;
  WorkspaceParts inputs, sampling, attention;

  const WorkspaceParts& largest() const {
    const WorkspaceParts* most = &inputs;
    if (sampled && sampling.total() > most->total()) most = &sampling;
    if (attention.total() > most->total()) most = &attention;
    return *most;
  }
  void set_pool_scratch(uint64_t bytes) {
    inputs.pool_scratch = sampling.pool_scratch = attention.pool_scratch = bytes;
  }
};

CallWorkspace call_workspace(const KernelTable& kernels, const Problem& problem, int threads, uint64_t limit) {
  CallWorkspace w;
  w.sampled = any_sampled(problem);
  w.per_worker_scratch = flash_scratch_bytes(kernels, problem);
  SamplingFootprint sampling;
  // A sample-method call has a plan even when no sequence is sampled: its heads' decisions.
  const uint64_t plan_records = problem.method == SAMPLEATTN_METHOD_SAMPLE
                                    ? problem.sequences.size() * static_cast<uint64_t>(problem.num_q_heads) * sizeof(HeadPlan)
                                    : 0;
  if (w.sampled) {
    sampling = sampling_footprint(kernels, problem, threads, limit);
    w.per_worker_scratch = std::max(w.per_worker_scratch, sampling.scratch_per_worker);
  }
  w.set_pool_scratch(ThreadPool::scratch_footprint(w.per_worker_scratch) * static_cast<uint64_t>(threads));
  w.inputs.input_scan = static_cast<uint64_t>(scan_chunk_count(problem)) * (sizeof(InputScan) + sizeof(ScanChunk));
  w.sampling.sampling = sampling.stage1;
  w.sampling.selection = sampling.stage2;
  w.sampling.sparse_plan = plan_records + sampling.stripe_lists;
  w.attention.sparse_plan = plan_records + sampling.stripe_lists;  // forward() puts in the real size
  w.attention.attention = flash_bookkeeping_bytes(kernels, problem, threads);
  return w;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::unique_ptr<ThreadPool> pool, uint64_t limit) : pool_(std::move(pool)), limit_(limit) {}

  Status plan(const Problem& problem, sampleattn_plan_info* info) override {
    const CallWorkspace w = call_workspace(active_kernel_table(), problem, pool_->num_threads(), limit_);
    SAMPLEATTN_RETURN_IF_ERROR(check_workspace(w.largest(), limit_, "before the stripe buffers"));
    if (info != nullptr) info->workspace_bytes = w.largest().total();
    return Status::ok();
  }

  Status forward(const Problem& problem, sampleattn_stats* stats) override {
    // Whole calls run one after another, so what the context holds is one call's workspace.
    std::lock_guard<std::mutex> call_lock(call_mutex_);
    const auto t0 = std::chrono::steady_clock::now();
    const KernelTable& kernels = active_kernel_table();
    CallWorkspace w = call_workspace(kernels, problem, pool_->num_threads(), limit_);
    SAMPLEATTN_RETURN_IF_ERROR(check_workspace(w.largest(), limit_, "before the stripe buffers"));
    if (limit_ != 0) {
      // Scratch kept from an earlier, larger call: keep it while it fits beside this call's
      // other parts, else give back what this call does not need.
      const uint64_t held = pool_->held_scratch_bytes();
      if (held > w.inputs.pool_scratch) {
        const uint64_t others = w.largest().besides_pool();
        if (WorkspaceParts::add(held, others) > limit_) {
          pool_->release_scratch(w.per_worker_scratch);
        } else {
          w.set_pool_scratch(held);
        }
      }
    }
    // Call buffers kept from earlier calls (call_buffers.h): kept while they fit beside this
    // call's workspace under the limit (they serve its parts when large enough), else freed.
    if (limit_ != 0 && WorkspaceParts::add(pool_->call_buffers().held_bytes(), w.largest().total()) > limit_) {
      pool_->call_buffers().release();
    }
    InputScan scanned[3];
    SAMPLEATTN_RETURN_IF_ERROR(check_inputs(*pool_, w.inputs.pool_limit(limit_), kernels, problem, false, scanned));
    std::unique_ptr<SparsePlan> sparse;
    if (w.sampled) {
      sparse = std::make_unique<SparsePlan>();
      SAMPLEATTN_RETURN_IF_ERROR(
          build_sparse_plan(*pool_, limit_, w.sampling, kernels, problem, stats != nullptr, sparse.get()));
      SAMPLEATTN_RETURN_IF_ERROR(find_dense_rows(*pool_, limit_, w.attention, kernels, problem, sparse.get()));
      w.attention.sparse_plan = sparse_plan_bytes(*sparse);
    } else if (problem.method == SAMPLEATTN_METHOD_SAMPLE) {
      // Every sequence short or within its model window: all dense, each head saying why
      // (DENSE_SHORT, DENSE_WINDOW) rather than DENSE_METHOD.
      sparse = std::make_unique<SparsePlan>();
      init_dense_plan(problem, sparse.get());
      w.attention.sparse_plan = sparse_plan_bytes(*sparse);
    }
    const auto t_attention = std::chrono::steady_clock::now();
    // K/V left to the decode kernels: their largest magnitudes complete the verdict before the
    // merge writes the output; otherwise (or on a non-finite value) the full scan decides.
    const KvBoundsCheck bounds = [&](float k_max_abs, float v_max_abs) {
      return kv_bounds_ok(problem, scanned, k_max_abs, v_max_abs);
    };
    const KvBoundsCheck* check = attention_checks_kv(problem) ? &bounds : nullptr;
    bool kv_unchecked = false;
    SAMPLEATTN_RETURN_IF_ERROR(
        run_flash_attention(*pool_, limit_, w.attention, kernels, problem, sparse.get(), check, &kv_unchecked));
    if (kv_unchecked) {
      // A value the scan skipped is not finite, or the magnitudes the attention saw were too
      // large to pass on their bound: the full scan fails the call naming what it finds ...
      SAMPLEATTN_RETURN_IF_ERROR(check_inputs(*pool_, w.inputs.pool_limit(limit_), kernels, problem, true));
      // ... or passes it (the bound from the largest magnitude was too loose): attend again, with
      // nothing left to the attention's check.
      SAMPLEATTN_RETURN_IF_ERROR(
          run_flash_attention(*pool_, limit_, w.attention, kernels, problem, sparse.get(), nullptr, &kv_unchecked));
      if (kv_unchecked) {
        return internal_error("the attention read a non-finite K/V value that the input scan did not find");
      }
    }
    if (stats != nullptr) {
      fill_stats(problem, sparse.get(), stats);
      stats->time_attention_s = seconds_since(t_attention);
      stats->time_total_s = seconds_since(t0);
      stats->isa = kernels.name;
      stats->precision = select_path(kernels, problem).q_elem_bytes == 2 ? precision_name(Precision::kBF16)
                                                                         : precision_name(Precision::kF32);
    }
    return Status::ok();
  }

  Status forward_sharded(const Problem& problem, const ShardMap& map, Collective& coll,
                         sampleattn_stats* stats) override {
    std::lock_guard<std::mutex> call_lock(call_mutex_);
    const auto t0 = std::chrono::steady_clock::now();
    const KernelTable& kernels = active_kernel_table();
    // The input policy over this process's tokens: its runs as sequences of one packed batch.
    Problem local = problem;
    local.sequences.clear();
    local.total_q = local.total_k = 0;
    for (const ShardRun& run : map.runs[static_cast<size_t>(coll.rank())]) {
      const int64_t len = run.end - run.begin;
      local.sequences.push_back({run.local, len, run.local, len});
      local.total_q = local.total_k = std::max(local.total_q, run.local + len);
    }
    if (limit_ != 0) pool_->call_buffers().release();  // a sharded call's parts are counted as it goes
    Status checked = check_inputs(*pool_, limit_, kernels, local);
    int64_t failed = checked.is_ok() ? 0 : 1;
    SAMPLEATTN_RETURN_IF_ERROR(coll.sum(&failed, 1));
    if (!checked.is_ok()) return checked;
    if (failed > 0) return internal_error("another process of the sharded call failed its input checks");
    SparsePlan plan;
    SAMPLEATTN_RETURN_IF_ERROR(build_sharded_plan(*pool_, limit_, kernels, problem, map, coll, stats != nullptr, &plan));
    if (problem.method == SAMPLEATTN_METHOD_SAMPLE) {
      SAMPLEATTN_RETURN_IF_ERROR(find_dense_rows_sharded(*pool_, limit_, kernels, problem, map, coll, &plan));
    }
    const auto t_attention = std::chrono::steady_clock::now();
    SAMPLEATTN_RETURN_IF_ERROR(sharded_attention(*pool_, limit_, kernels, problem, map, plan, coll));
    if (stats != nullptr) {
      fill_stats(problem, &plan, stats);
      stats->time_attention_s = seconds_since(t_attention);
      stats->time_total_s = seconds_since(t0);
      stats->isa = kernels.name;
      stats->precision = select_path(kernels, problem).q_elem_bytes == 2 ? precision_name(Precision::kBF16)
                                                                         : precision_name(Precision::kF32);
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
  std::mutex call_mutex_;
};

}  // namespace

Status create_backend(const BackendOptions& options, std::unique_ptr<Backend>* backend) {
  std::unique_ptr<ThreadPool> pool;
  ThreadPoolOptions pool_options;
  pool_options.num_threads = options.num_threads;
  pool_options.bind = options.bind;
  pool_options.parallel_for = options.parallel_for;
  pool_options.host_pool = options.host_pool;
  SAMPLEATTN_RETURN_IF_ERROR(ThreadPool::create(pool_options, &pool));
  *backend = std::make_unique<CpuBackend>(std::move(pool), options.max_workspace_bytes);
  return Status::ok();
}

}  // namespace sampleattn::cpu
