// The tiled online-softmax attention driver shared by the dense and the sparse method: it walks
// query blocks (the query heads of one kv group stacked, so every K/V tile is packed once per
// group) over "key segments" and hands each tile to the kernel table. A segment is either a run
// of the sequence's own keys (packed tile by tile: the dense causal range, or a sparse head's
// window band) or pre-packed stripe columns; each row sees a span of a segment, so causal
// diagonals, window edges and stripe visibility are all the same mechanism and no mask is
// scanned.
#pragma once

#include <cstdint>
#include <functional>

#include "simd/kernels.h"
#include "core/problem.h"
#include "core/sparse_plan.h"
#include "core/status.h"
#include "cpu/thread_pool.h"
#include "cpu/workspace.h"

namespace sampleattn::cpu {

// Computes O (and lse) for every (sequence, query head) of `problem`. Heads the plan marks dense
// (or all, when plan is null) attend over their full causal range; the others over window +
// stripes. Uses the bf16 path when problem.precision asks for it (or AUTO picks it: select_path)
// and the table has one.
// `during` is what the call holds beside the stripe buffers (cpu/workspace.h); the stripe
// buffers are added to it and the total checked against workspace_limit before they are
// allocated.
// Short query chunks (core/mask.h, kShortQueryRows) read K/V through the decode kernel, which
// checks each value it reads and measures the largest |value| of f32 / bf16 K and V. When a value
// is not finite, or kv_bounds_ok (when given) says no to those magnitudes, *kv_unchecked is set
// and no output is written: the caller's full input scan then decides (and names the value).
using KvBoundsCheck = std::function<bool(float k_max_abs, float v_max_abs)>;
Status run_flash_attention(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                           const KernelTable& kernels, const Problem& problem, const SparsePlan* plan,
                           const KvBoundsCheck* kv_bounds_ok, bool* kv_unchecked);

// Scratch bytes one worker needs for run_flash_attention with these kernels (the attention's or
// the stripe packing's, whichever is larger).
size_t flash_scratch_bytes(const KernelTable& kernels, const Problem& problem);

// The attention's task list, split tasks' partial results and per-head stripe records, bytes, on
// `threads` workers (the key splits of short query chunks depend on them).
uint64_t flash_bookkeeping_bytes(const KernelTable& kernels, const Problem& problem, int threads);

// Whether a sequence's query chunks run the decode kernel (attend_rows, which reads K/V straight from
// the cache and checks each value): a short chunk (kShortQueryRows, core/mask.h) whose kv group
// stacks at most kDecodeRows rows, over a cache without per-head block tables. Larger stacks run
// the packed kernels, whose panel packing pays off once a key serves that many rows.
inline constexpr int64_t kDecodeRows = 16;
bool decode_streams(const Problem& problem, const Sequence& seq);

// The flash path (f32 or bf16) a problem will run on.
const FlashPath& select_path(const KernelTable& kernels, const Problem& problem);

}  // namespace sampleattn::cpu
