// SampleAttention stages 1 and 2 on the CPU (docs/ALGORITHM.md): query-guided sampling of column
// scores with the kernel table, stripe selection per head or kv group, and the kept mass (CRA)
// of the sampled rows under the chosen mask. The rules (which rows, which columns count, the
// target, the dense-head rule) are core/mask.h's and core/sparse_plan.h's, shared with CUDA.
#pragma once

#include <cstdint>
#include <vector>

#include "simd/kernels.h"
#include "core/problem.h"
#include "core/sparse_plan.h"
#include "core/status.h"
#include "cpu/thread_pool.h"

namespace sampleattn::cpu {

// Workspace of stages 1 and 2 for `threads` workers; the stage-1 score buffers shrink to fit a
// quarter of workspace_limit (0 = no limit).
size_t sampling_workspace_bytes(const KernelTable& kernels, const Problem& problem, int threads,
                                uint64_t workspace_limit);

// with_kept_mass: also measure the kept mass (CRA) of the sampled rows for the statistics (an
// extra pass over their window and stripes; skipped when nobody asked for statistics).
Status build_sparse_plan(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels,
                         const Problem& problem, bool with_kept_mass, SparsePlan* plan);

}  // namespace sampleattn::cpu
