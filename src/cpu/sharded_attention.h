// The attention of a sharded call (context parallelism, docs/SCALING.md, step 6 of the sample
// design): each process computes the output rows of the query runs it holds, under the plan that
// stages 1 and 2 built together, after one exchange that brings it the K/V rows its masks read
// (a kv group with a dense head: every key up to the run's end; a sparse one: the window band of
// the run's queries and the stripes they see) from the processes that hold them.
#pragma once

#include <cstdint>

#include "simd/kernels.h"
#include "core/collective.h"
#include "core/problem.h"
#include "core/shard_map.h"
#include "core/sparse_plan.h"
#include "core/status.h"
#include "cpu/thread_pool.h"

namespace sampleattn::cpu {

// `global`: the batch at its global lengths (every sequence q_len == k_len, causal; no
// window_left, no ALiBi; K/V not quantized, packed) with this process's tensors: q, k, v, o (and
// lse when set) hold the tokens of map.runs[coll.rank()] at their `local` offsets, with the usual
// token/head strides (the kv layout's strides describe the local K/V). plan: the call's plan over
// `global` (plan.head(seq, q_head, num_q_heads)), the same on every process.
// Every process of `coll` calls this with the same global shapes, map and plan. A failure before
// the exchange (a bad argument, no memory) is agreed on, so no process waits for one that has
// given up: the others return an internal error that points to it.
Status sharded_attention(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels, const Problem& global,
                         const ShardMap& map, const SparsePlan& plan, Collective& coll);

}  // namespace sampleattn::cpu
