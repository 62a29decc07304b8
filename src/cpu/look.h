// The look at every row (docs/ALGORITHM.md, step 5; sample.look > 0): after stage 2, every row of
// every sparse head compares its largest approximate score outside its window band and stripes
// with its mask's largest (band, stripes, sinks), first the rows of the probe's blocks, then the
// other rows of the heads the probe flagged enough rows of (core/mask.h, look_probe_block,
// look_whole_head); a row within
// `look` nats of it joins the head's dense rows, which the
// attention runs over every key they see (cpu/flash_driver.cpp). The max_density rule counts the
// look's own cost (look_cost_pairs, core/mask.h) beside the mask: a head it takes past runs dense
// unlooked, and so does one its dense rows take past (SAMPLEATTN_DECISION_DENSE_LOOK).
// The scores are the kernel table's look (simd/kernels.h, LookPath): int8 Q and K, the same
// bits on every table.
#pragma once

#include <cstdint>

#include "core/collective.h"
#include "core/problem.h"
#include "core/shard_map.h"
#include "core/sparse_plan.h"
#include "core/status.h"
#include "cpu/thread_pool.h"
#include "cpu/workspace.h"
#include "simd/kernels.h"

namespace sampleattn::cpu {

// Fills the dense_rows of the plan's sparse heads (nothing when problem.sample.look is 0). Its
// packed keys, one (sequence, kv head) at a time, count as stage-2 memory beside `during`.
Status find_dense_rows(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                       const KernelTable& kernels, const Problem& problem, SparsePlan* plan);

// The same in a sharded call (context parallelism, docs/SCALING.md), after build_sharded_plan:
// every process gathers every process's K rows (the look reads every key a row sees), looks at the
// rows it holds, and the probe's counts and the rows flagged are added over the processes, so
// that every process ends with the plan one process would build. Collective: every process of
// `coll` calls it with the same plan.
Status find_dense_rows_sharded(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels,
                               const Problem& global, const ShardMap& map, Collective& coll, SparsePlan* plan);

}  // namespace sampleattn::cpu
