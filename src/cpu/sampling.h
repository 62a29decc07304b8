// SampleAttention stages 1 and 2 on the CPU (docs/ALGORITHM.md): query-guided sampling of column
// scores with the kernel table, stripe selection per head or kv group, and the kept mass (CRA)
// of the sampled rows under the chosen mask. The rules (which rows, which columns count, the
// target, the dense-head rule) are core/mask.h's and core/sparse_plan.h's, shared with CUDA.
#pragma once

#include <cstdint>
#include <vector>

#include "simd/kernels.h"
#include "core/collective.h"
#include "core/problem.h"
#include "core/shard_map.h"
#include "core/sparse_plan.h"
#include "core/status.h"
#include "cpu/thread_pool.h"
#include "cpu/workspace.h"

namespace sampleattn::cpu {

// The memory of stages 1 and 2 for `threads` workers (the parts of cpu/workspace.h). The
// stage-1 score buffers shrink to fit a quarter of workspace_limit (0 = no limit).
struct SamplingFootprint {
  size_t scratch_per_worker = 0;  // pool scratch of stage 1 and of the kept-mass pass, one worker
  uint64_t stage1 = 0;            // sampled rows, their statistics, column scores, task list
  uint64_t stage2 = 0;            // stage 2's temporaries, all workers at once
  uint64_t stripe_lists = 0;      // the most the chosen stripe lists can take (every key a stripe)
};
SamplingFootprint sampling_footprint(const KernelTable& kernels, const Problem& problem, int threads,
                                     uint64_t workspace_limit);

// The bytes a plan holds: its per-head records and stripe lists.
uint64_t sparse_plan_bytes(const SparsePlan& plan);

// with_kept_mass: also measure the kept mass (CRA) of the sampled rows for the statistics (an
// extra pass over their window and stripes; skipped when nobody asked for statistics).
// `during` is what the call holds meanwhile (the pool's scratch, sampling_footprint's parts, the
// plan at its largest): checked against workspace_limit before anything is allocated, and the
// pool's scratch is bounded by what the limit leaves beside the other parts.
Status build_sparse_plan(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                         const KernelTable& kernels, const Problem& problem, bool with_kept_mass,
                         SparsePlan* plan);

// Stages 1 and 2 of a sharded call (context parallelism, docs/SCALING.md): the plan that one
// process would build over the whole batch, built by the processes of `coll` together, each
// scoring the sampled rows (gathered from their holders) against its keys of the balanced map
// (stage1_keys, core/shard_map.h; their K rows gathered from their holders); no column score
// leaves its process (stage 2 is core/sharded_selection.h). `global`: the batch at its
// global lengths (q_len == k_len, causal) with this process's tensors (its tokens at their
// map.runs[rank] offsets; K/V packed, not quantized). Every process gets the same plan. Against
// one process, the row sums of stage 1 are added in another order, so a probability can differ in
// its last bit, which can move a column that ties with another within rounding at a cut.
Status build_sharded_plan(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels,
                          const Problem& global, const ShardMap& map, Collective& coll, bool with_kept_mass,
                          SparsePlan* plan);

}  // namespace sampleattn::cpu
