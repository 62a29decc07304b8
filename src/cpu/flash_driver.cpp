#include "cpu/flash_driver.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#include "core/mask.h"
#include "core/score_mod.h"
#include "cpu/call_buffers.h"
#include "cpu/kv_rows.h"
#include "cpu/scratch_carver.h"
#include "cpu/workspace.h"

namespace sampleattn::cpu {
namespace {

// One task: query tokens [q0, q0 + rows) of sequence `seq`, all query heads of kv head `kv_head`,
// against the keys [key_lo, key_hi) of what they see. A short query chunk (a decode step, at most
// kShortQueryRows queries) runs the decode kernel (attend_rows: K/V read straight from the cache,
// checked as read) and leaves its rows' running max, sum and accumulator in partial slot
// `partial`; over many keys it is split into `splits` key ranges (flash-decoding). A second pass
// merges each chunk's slots by their log-sum-exp and writes the output, unless a K/V value read
// was not finite: then nothing is written and the call fails.
struct Task {
  int seq;
  int kv_head;
  int64_t q0;
  int rows;
  double cost;
  int splits = 1;
  int64_t key_lo = 0;
  int64_t key_hi = std::numeric_limits<int64_t>::max();
  int64_t partial = -1;  // a short chunk's slot (its first split's slot plus the split's index); -1: none
  int kv_heads = 1;      // kv heads kv_head .. kv_head + kv_heads - 1 (a short chunk's task takes all)
};

// Keys a short chunk's task takes for all its kv heads before moving on: the cache holds a token's
// kv heads side by side ([token, kv head, dim]), so walking every head over one block of tokens
// streams the cache in order, where walking one head over all tokens would read a row every few
// kilobytes (a page per row or two, and the TLB misses that come with it). A decode call
// (attend_rows) has a cost per row and head besides its keys (the softmax's row maxima and sums,
// the accumulators' rescaling, the scores' transposition, the weights' int16 conversion), which
// 128 keys cover better than 64 (kernels_bench attend_rows/avx512, m:4, 8 kv heads, rows in L2,
// Zen 5, 2026-12-07: f16 15.4 against 19.6-20.4 ns a key and kv head, integer int8 10.8-11.1
// against 12.4-13.0); 128 f16 keys of 8 kv heads (d = 128) are 512 KB of K and V, which stay in
// L2 from the score pass to the value pass. Every dtype takes the same blocks: they set the order
// of the online softmax, and an int8 or fp8 cache under the f32 products gives the bits of the
// f32 call on its dequantized values (docs/ACCURACY.md).
constexpr int64_t kDecodeBlock = 128;

// Whether a call lets attend_rows multiply int8 K/V in integers (AttendRowsArgs::int8_products):
// unless it asked for the f32 products.
bool int8_products(const Problem& p) { return p.precision != SAMPLEATTN_PRECISION_F32; }

// A run of key positions [begin, end).
struct KeyRange {
  int64_t begin;
  int64_t end;
};

// The splits of a short query chunk: enough tasks for every worker to claim about four, but no
// split shorter than kMinSplitKeys keys (a split's fixed cost is a few tiles of packing).
constexpr int kTasksPerWorker = 4;
constexpr int64_t kMinSplitKeys = 2048;

int rows_per_head(const KernelTable& k, const Problem& p) {
  return std::max(1, k.block_rows / p.group);
}

// A run of one sparse head's dense rows (HeadPlan::dense_rows [begin, end)): each over every key
// it sees, written over what the head's sparse pass wrote for it.
struct RowsTask {
  int seq;
  int head;
  int64_t begin, end;
  double cost;
};

// Stripe columns packed once per (sequence, stripe set) before the attention runs.
struct PackedStripes {
  int64_t count = 0;
  size_t k_tile_bytes = 0;  // packed_bytes(key_tile, d)
  size_t v_tile_bytes = 0;  // packed_bytes(key_tile, dv)
  char* k = nullptr;        // tiles of key_tile packed K rows
  char* v = nullptr;        // tiles of key_tile packed V rows
};

// Packing one stripe set: its index in the plan, its sequence and kv head.
struct StripeJob {
  size_t index;
  int seq;
  int kv_head;
};

// Per-worker scratch, carved from the pool's buffer.
struct Scratch {
  int64_t* q_offsets;
  int64_t* positions;
  int32_t* row_pos;       // positions as the kernels read them (ScoreModArgs)
  float* slopes;          // each row's ALiBi slope, log2 units
  int32_t* key_pos;       // a contiguous tile's key positions
  int64_t* stripe_begin;  // each row's visible run of the stripe list
  int64_t* stripe_end;
  int32_t* lo;
  int32_t* hi;
  float* row_max;
  float* row_sum;
  float* row_scale;
  float* acc;
  void* q_packed;
  void* k_packed;
  void* v_packed;
  void* attend_scratch;
  float* decode_scratch;  // attend_rows' scores
  KvRows kv_rows;         // a K/V tile's rows
  KvRows kv_next;         // a decode task's next key block (its K rows requested ahead, attend_decode)
};

// The one definition of a flash worker's scratch: sizes with a null base. d is the head dim of Q
// and K, dv that of V and the output.
Scratch carve(ScratchCarver c, const KernelTable& kernels, const FlashPath& path, int max_rows, int d, int dv,
              size_t* bytes = nullptr) {
  const int key_tile = kernels.key_tile;
  Scratch s;
  s.q_offsets = c.take<int64_t>(max_rows);
  s.positions = c.take<int64_t>(max_rows);
  s.row_pos = c.take<int32_t>(max_rows);
  s.slopes = c.take<float>(max_rows);
  s.key_pos = c.take<int32_t>(key_tile);
  s.stripe_begin = c.take<int64_t>(max_rows);
  s.stripe_end = c.take<int64_t>(max_rows);
  s.lo = c.take<int32_t>(max_rows);
  s.hi = c.take<int32_t>(max_rows);
  s.row_max = c.take<float>(max_rows);
  s.row_sum = c.take<float>(max_rows);
  s.row_scale = c.take<float>(max_rows);
  s.acc = c.take<float>(static_cast<size_t>(max_rows) * dv);
  // Short chunks pack Q with the f32 path (attend_rows' operands), whatever path the call runs.
  s.q_packed = c.take_bytes(std::max(path.packed_bytes(max_rows, d),
                                     kernels.path(Precision::kF32)->packed_bytes(max_rows, d)));
  s.k_packed = c.take_bytes(path.packed_bytes(key_tile, d));
  s.v_packed = c.take_bytes(path.packed_bytes(key_tile, dv));
  s.attend_scratch = c.take_bytes(path.scratch_bytes(max_rows, key_tile));
  const int decode_keys = static_cast<int>(kDecodeBlock);
  s.decode_scratch = static_cast<float*>(c.take_bytes(kernels.attend_rows_scratch_bytes(max_rows, std::max(key_tile, decode_keys))));
  s.kv_rows = KvRows::carve(c, std::max(key_tile, decode_keys));
  s.kv_next = KvRows::carve(c, decode_keys);
  if (bytes != nullptr) *bytes = c.used();
  return s;
}

// A finished row's output scale and lse (natural log) from its running max and sum (log2 units)
// and its head's sink: o = acc / denominator, the denominator being the row's sum plus the sink's
// exp2(sink - row_max) (sum_with_sink of core/score_mod.h). A row that saw no key has o = 0 and
// lse = -inf, sink or not.
struct RowNormalization {
  float scale;
  float lse;
};

RowNormalization normalize_row(const ScoreMod& mod, float row_max, float row_sum) {
  if (!(row_sum > 0)) return {0.f, -std::numeric_limits<float>::infinity()};
  const float denominator = sum_with_sink(mod, row_max, row_sum);
  if (std::isfinite(denominator)) {
    return {1.f / denominator,
            static_cast<float>(lse_from_log2<double>(row_max, std::log2(static_cast<double>(denominator))))};
  }
  // The sink outweighs every key by more than f32 spans (sink - row_max > 128): the keys' share,
  // below 2^-128 of the denominator, rounds to an output of 0, and the lse is the sink's plus
  // log2(1 + the keys' share), taken from the sink.
  const double keys_share = static_cast<double>(row_sum) * std::exp2(static_cast<double>(row_max) - mod.sink_log2);
  return {0.f, static_cast<float>(lse_from_log2<double>(mod.sink_log2, std::log1p(keys_share) / kLn2))};
}

class FlashRunner {
 public:
  FlashRunner(const KernelTable& kernels, const Problem& problem, const SparsePlan* plan, int threads)
      : kernels_(kernels), path_(select_path(kernels, problem)), p_(problem), plan_(plan),
        bq_(rows_per_head(kernels, problem)) {
    // A short sequence is never sampled (core/mask.h, sequence_runs_sampled), so its plan is
    // dense. A sharded call's run (cpu/sharded_attention.h) is a short piece of a sequence that
    // may be sampled: its chunks run the ordinary tasks, which follow the plan.
    short_.assign(p_.sequences.size(), 0);
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const int64_t q_len = p_.sequences[s].q_len;
      bool dense = true;
      for (int h = 0; h < p_.num_q_heads && dense; ++h) dense = head_dense(static_cast<int>(s), h);
      short_[s] = q_len > 0 && q_len <= kShortQueryRows && dense;
    }
    // Short query chunks are split over their keys when the call has too few tasks for the
    // workers.
    int64_t chunks = 0;
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      chunks += (p_.sequences[s].q_len + bq_ - 1) / bq_ * (short_chunks(s) ? 1 : p_.num_kv_heads);
    }
    const int64_t wanted = static_cast<int64_t>(kTasksPerWorker) * threads;
    splits_.assign(p_.sequences.size(), 1);
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const Sequence& seq = p_.sequences[s];
      if (!short_chunks(s) || chunks >= wanted) continue;
      const KeyRange keys = chunk_keys(seq, 0, static_cast<int>(seq.q_len));
      const int64_t by_keys = (keys.end - keys.begin) / kMinSplitKeys;
      splits_[s] = static_cast<int>(std::clamp<int64_t>((wanted + chunks - 1) / chunks, 1, std::max<int64_t>(by_keys, 1)));
    }
  }

  size_t scratch_bytes() const {
    size_t bytes = 0;
    carve(ScratchCarver(), kernels_, path_, max_task_rows(), p_.head_dim, p_.head_dim_v, &bytes);
    return bytes;
  }

  // The stripe packing's scratch: one tile's K and V rows.
  size_t pack_scratch_bytes() const {
    ScratchCarver c;
    KvRows::carve(c, kernels_.key_tile);
    return c.used();
  }

  // The task list, the split tasks' partial results and the per-head stripe records (with their
  // packing jobs) of a call.
  uint64_t bookkeeping_bytes() const {
    uint64_t tasks = 0, partial_floats = 0;
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const bool short_seq = short_chunks(s);
      const uint64_t chunks = static_cast<uint64_t>((p_.sequences[s].q_len + bq_ - 1) / bq_) * (short_seq ? 1 : p_.num_kv_heads);
      tasks += chunks * splits_[s];
      if (short_seq) partial_floats += chunks * splits_[s] * partial_floats_per_task();
    }
    const uint64_t heads = static_cast<uint64_t>(p_.sequences.size()) * static_cast<uint64_t>(p_.num_q_heads);
    return tasks * sizeof(Task) + partial_floats * sizeof(float) + heads * (sizeof(PackedStripes) + sizeof(StripeJob));
  }

  // The most query rows a task stacks: a kv group's heads times bq_ rows, or a short chunk's every
  // head times its (at most kShortQueryRows) rows.
  int max_task_rows() const {
    return std::max(bq_ * p_.group, p_.num_q_heads * static_cast<int>(std::min<int64_t>(bq_, kShortQueryRows)));
  }
  // A short chunk task's partial result: each of its rows' max, sum and accumulator.
  size_t partial_floats_per_task() const { return static_cast<size_t>(max_task_rows()) * (p_.head_dim_v + 2); }

  bool head_dense(int seq, int q_head) const {
    return plan_ == nullptr || plan_->head(seq, q_head, p_.num_q_heads).dense;
  }

  // Stripe sets: one per (sequence, query head) or, when the heads of a group share stripes,
  // one per (sequence, kv group). Index: seq * num_q_heads + first head of the set.
  bool group_shares_stripes() const {
    return p_.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP || p_.group == 1;
  }

  // `held` is what the call holds beside the stripe buffers (pool_scratch: the most the pool may
  // hold now, this call's largest per-worker scratch on every worker); checked with the buffers
  // before they are allocated. When only the pool's scratch kept from stage 1 breaks the limit,
  // it is given back and the attention's smaller scratch allocated instead.
  Status pack_stripes(ThreadPool& pool, uint64_t limit, WorkspaceParts* held) {
    if (plan_ == nullptr) return Status::ok();
    const int hq = p_.num_q_heads;
    const size_t k_tile_bytes = path_.packed_bytes(kernels_.key_tile, p_.head_dim);
    const size_t v_tile_bytes = path_.packed_bytes(kernels_.key_tile, p_.head_dim_v);
    stripes_.assign(plan_->heads.size(), PackedStripes{});
    std::vector<StripeJob> jobs;
    jobs.reserve(plan_->heads.size());  // counted by flash_bookkeeping_bytes
    size_t total = 0;
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      for (int h = 0; h < hq; ++h) {
        const HeadPlan& hp = plan_->head(static_cast<int>(s), h, hq);
        if (hp.dense || hp.stripes.empty()) continue;
        if (group_shares_stripes() && h % p_.group != 0) continue;
        const size_t idx = s * hq + h;
        PackedStripes& ps = stripes_[idx];
        ps.count = static_cast<int64_t>(hp.stripes.size());
        ps.k_tile_bytes = k_tile_bytes;
        ps.v_tile_bytes = v_tile_bytes;
        const size_t tiles = static_cast<size_t>((ps.count + kernels_.key_tile - 1) / kernels_.key_tile);
        total += tiles * (k_tile_bytes + v_tile_bytes);
        jobs.push_back({idx, static_cast<int>(s), h / p_.group});
      }
    }
    if (jobs.empty()) return Status::ok();
    held->stripe_buffers = total;
    const size_t attention_scratch = std::max(scratch_bytes(), pack_scratch_bytes());
    if (limit != 0 && held->total() > limit) {
      WorkspaceParts least = *held;
      least.pool_scratch = ThreadPool::scratch_footprint(attention_scratch) * static_cast<uint64_t>(pool.num_threads());
      SAMPLEATTN_RETURN_IF_ERROR(check_workspace(least, limit, "with the stripe buffers"));
      pool.release_scratch(attention_scratch);
      *held = least;
    }
    stripe_memory_ = pool.call_buffers().take(total);
    if (!stripe_memory_) return out_of_memory("cannot allocate " + std::to_string(total) + " bytes of stripe buffers");
    char* at = stripe_memory_.get();
    for (const StripeJob& j : jobs) {
      PackedStripes& ps = stripes_[j.index];
      const size_t tiles = static_cast<size_t>((ps.count + kernels_.key_tile - 1) / kernels_.key_tile);
      ps.k = at;
      ps.v = at + tiles * ps.k_tile_bytes;
      at += tiles * (ps.k_tile_bytes + ps.v_tile_bytes);
    }
    const int key_tile = kernels_.key_tile;
    return pool.run(static_cast<int64_t>(jobs.size()), pack_scratch_bytes(), held->pool_limit(limit),
                    [&](int64_t t, int, void* scratch) {
      const StripeJob& j = jobs[static_cast<size_t>(t)];
      const PackedStripes& ps = stripes_[j.index];
      const std::vector<int32_t>& cols = plan_->heads[j.index].stripes;
      ScratchCarver carver(scratch);
      const KvRows rows = KvRows::carve(carver, key_tile);
      for (int64_t t0 = 0, tile = 0; t0 < ps.count; t0 += key_tile, ++tile) {
        const int n = static_cast<int>(std::min<int64_t>(key_tile, ps.count - t0));
        rows.fill(p_, j.seq, j.kv_head, n, [&](int r) { return static_cast<int64_t>(cols[t0 + r]); });
        path_.pack_k(rows.k(p_), n, p_.head_dim, ps.k + tile * ps.k_tile_bytes);
        path_.pack_v(rows.v(p_), n, p_.head_dim_v, ps.v + tile * ps.v_tile_bytes);
      }
    });
  }

  std::vector<Task> make_tasks() {
    std::vector<Task> tasks;
    size_t count = 0;
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const bool short_seq = short_chunks(s);
      count += static_cast<size_t>((p_.sequences[s].q_len + bq_ - 1) / bq_) * (short_seq ? 1 : p_.num_kv_heads) * splits_[s];
    }
    tasks.reserve(count);  // counted by bookkeeping_bytes
    int64_t slots = 0;
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const Sequence& seq = p_.sequences[s];
      const int splits = splits_[s];
      // A short chunk's task takes every kv head (kDecodeBlock): one "kv head" loop turn.
      const int kv_loop = short_chunks(s) ? 1 : p_.num_kv_heads;
      for (int g = 0; g < kv_loop; ++g) {
        for (int64_t q0 = 0; q0 < seq.q_len; q0 += bq_) {
          const int rows = static_cast<int>(std::min<int64_t>(bq_, seq.q_len - q0));
          if (!short_chunks(s)) {
            tasks.push_back({static_cast<int>(s), g, q0, rows, task_cost(seq, static_cast<int>(s), g, q0, rows)});
            continue;
          }
          const double cost = task_cost(seq, static_cast<int>(s), 0, q0, rows, p_.num_kv_heads) / splits;
          // Key ranges of whole tiles, as equal as the tiles allow.
          const KeyRange keys = chunk_keys(seq, q0, rows);
          const int64_t tiles = (keys.end - keys.begin + kernels_.key_tile - 1) / kernels_.key_tile;
          for (int i = 0; i < splits; ++i) {
            const int64_t lo = keys.begin + tiles * i / splits * kernels_.key_tile;
            const int64_t hi = i + 1 == splits ? keys.end : keys.begin + tiles * (i + 1) / splits * kernels_.key_tile;
            tasks.push_back({static_cast<int>(s), 0, q0, rows, cost, splits, lo, hi, slots + i, p_.num_kv_heads});
          }
          merges_.push_back(tasks.size() - splits);
          slots += splits;
        }
      }
    }
    partials_.assign(static_cast<size_t>(slots) * partial_floats_per_task(), 0.f);
    // Within each (sequence, kv head), most expensive first: dynamic claiming then balances the
    // causal rows (longest-processing-time), and the workers stay on one kv head at a time so
    // that its K/V rows are read from the shared cache rather than from memory by every worker.
    std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) {
      if (a.seq != b.seq) return a.seq < b.seq;
      if (a.kv_head != b.kv_head) return a.kv_head < b.kv_head;
      return a.cost > b.cost;
    });
    return tasks;
  }

  // The dense rows of every sparse head, in runs of at most bq_ * group rows (ascending, so a run's
  // rows see similar key ranges), longest first.
  std::vector<RowsTask> make_row_tasks() const {
    std::vector<RowsTask> tasks;
    if (plan_ == nullptr) return tasks;
    const int hq = p_.num_q_heads;
    const int64_t run = std::max(1, bq_ * p_.group);
    for (size_t s = 0; s < p_.sequences.size(); ++s) {
      const Sequence& seq = p_.sequences[s];
      for (int h = 0; h < hq; ++h) {
        const HeadPlan& hp = plan_->head(static_cast<int>(s), h, hq);
        if (hp.dense) continue;
        const int64_t n = static_cast<int64_t>(hp.dense_rows.size());
        for (int64_t b = 0; b < n; b += run) {
          const int64_t e = std::min(n, b + run);
          const int64_t last = seq.q_offset() + hp.dense_rows[static_cast<size_t>(e - 1)];
          tasks.push_back({static_cast<int>(s), h, b, e, static_cast<double>(e - b) * static_cast<double>(last + 1)});
        }
      }
    }
    std::stable_sort(tasks.begin(), tasks.end(), [](const RowsTask& a, const RowsTask& b) { return a.cost > b.cost; });
    return tasks;
  }

  // A run of dense rows of one head: gathered from the sequence's queries, attended over the keys
  // model_lo .. p of each (the dense span), and written to their own output rows and lse.
  void run_rows_task(const RowsTask& t, void* scratch_base) {
    const int d = p_.head_dim, dv = p_.head_dim_v;
    const Scratch s = carve(ScratchCarver(scratch_base), kernels_, path_, max_task_rows(), d, dv);
    const Sequence& seq = p_.sequences[t.seq];
    const HeadPlan& hp = plan_->head(t.seq, t.head, p_.num_q_heads);
    const int m = static_cast<int>(t.end - t.begin);
    const float slope = p_.score_mod(t.head).alibi_log2;
    for (int r = 0; r < m; ++r) {
      const int64_t i = hp.dense_rows[static_cast<size_t>(t.begin + r)];
      s.q_offsets[r] = (seq.q_begin + i) * p_.q.token_stride + t.head * p_.q.head_stride;
      s.positions[r] = seq.q_offset() + i;
      s.row_pos[r] = static_cast<int32_t>(s.positions[r]);
      s.slopes[r] = slope;
    }
    path_.pack_q({p_.q.data, p_.q.dtype, 0, s.q_offsets}, m, d, pack_q_scale(path_, scale_log2(p_.scale)), s.q_packed);
    std::fill(s.row_max, s.row_max + m, -std::numeric_limits<float>::infinity());
    std::fill(s.row_sum, s.row_sum + m, 0.f);
    std::fill(s.acc, s.acc + static_cast<size_t>(m) * dv, 0.f);
    attend_contiguous(s, t.seq, t.head / p_.group, 0, m, [&](int r, int64_t* lo, int64_t* hi) {
      *lo = own_keys_lo(false, s.positions[r], seq.k_len, p_.window_left);
      *hi = own_keys_hi(false, p_.causal, s.positions[r], seq.k_len);
    });
    const ScoreMod mod = p_.score_mod(t.head);
    const int esize = dtype_size(p_.o.dtype);
    for (int r = 0; r < m; ++r) {
      const int64_t token = seq.q_begin + hp.dense_rows[static_cast<size_t>(t.begin + r)];
      const RowNormalization norm = normalize_row(mod, s.row_max[r], s.row_sum[r]);
      s.row_scale[r] = norm.scale;
      if (p_.lse != nullptr) p_.lse[token * p_.num_q_heads + t.head] = norm.lse;
      char* dst = static_cast<char*>(p_.o.data) + (token * p_.o.token_stride + t.head * p_.o.head_stride) * esize;
      kernels_.store_rows(s.acc + static_cast<size_t>(r) * dv, 1, dv, s.row_scale + r, dst, p_.o.dtype,
                          p_.o.token_stride);
    }
  }

  // Writes the task's output rows, or (a split task) its partial slot: tasks write disjoint rows and
  // slots, so they run concurrently.
  void run_task(const Task& t, void* scratch_base) {
    const int g = p_.group, d = p_.head_dim, dv = p_.head_dim_v;
    const Scratch s = carve(ScratchCarver(scratch_base), kernels_, path_, max_task_rows(), d, dv);
    const Sequence& seq = p_.sequences[t.seq];
    const int heads = g * t.kv_heads;
    const int m = heads * t.rows;
    const int first_head = t.kv_head * g;
    for (int h = 0; h < heads; ++h) {
      const int head = first_head + h;
      const float slope = p_.score_mod(head).alibi_log2;
      for (int i = 0; i < t.rows; ++i) {
        const int r = h * t.rows + i;
        const int64_t token = seq.q_begin + t.q0 + i;
        s.q_offsets[r] = token * p_.q.token_stride + head * p_.q.head_stride;
        s.positions[r] = seq.q_offset() + t.q0 + i;
        s.row_pos[r] = static_cast<int32_t>(s.positions[r]);
        s.slopes[r] = slope;
      }
    }
    const bool decode = t.partial >= 0 && decode_streams(p_, seq);
    const FlashPath& q_path = decode ? *kernels_.path(Precision::kF32) : path_;
    q_path.pack_q({p_.q.data, p_.q.dtype, 0, s.q_offsets}, m, d, pack_q_scale(q_path, scale_log2(p_.scale)),
                  s.q_packed);
    std::fill(s.row_max, s.row_max + m, -std::numeric_limits<float>::infinity());
    std::fill(s.row_sum, s.row_sum + m, 0.f);
    std::fill(s.acc, s.acc + static_cast<size_t>(m) * dv, 0.f);
    if (t.partial >= 0) {
      if (decode) {
        attend_decode(s, t);
      } else {
        // Every kv head over one block of keys, then the next block (kDecodeBlock); all heads dense.
        const int group_rows = g * t.rows;
        for (int64_t b0 = t.key_lo; b0 < t.key_hi; b0 += kDecodeBlock) {
          const int64_t b1 = std::min(t.key_hi, b0 + kDecodeBlock);
          for (int kv = 0; kv < t.kv_heads; ++kv) {
            attend_contiguous(s, t.seq, t.kv_head + kv, kv * group_rows, group_rows, [&](int r, int64_t* lo, int64_t* hi) {
              *lo = std::max(b0, own_keys_lo(false, s.positions[r], seq.k_len, p_.window_left));
              *hi = std::min(b1, own_keys_hi(false, p_.causal, s.positions[r], seq.k_len));
            });
          }
        }
      }
      float* slot = partials_.data() + static_cast<size_t>(t.partial) * partial_floats_per_task();
      std::copy(s.row_max, s.row_max + m, slot);
      std::copy(s.row_sum, s.row_sum + m, slot + m);
      std::copy(s.acc, s.acc + static_cast<size_t>(m) * dv, slot + 2 * m);
      return;
    }

    // The group's heads in runs of equal kind (a sampled head may run dense under max_density):
    // each run's rows are stacked, so a K/V tile is packed once for all of them.
    for (int h0 = 0; h0 < g;) {
      const bool dense = head_dense(t.seq, first_head + h0);
      int h1 = h0 + 1;
      while (h1 < g && head_dense(t.seq, first_head + h1) == dense) ++h1;
      const int r0 = h0 * t.rows, rows = (h1 - h0) * t.rows;
      // Segment 0, the sequence's own keys (core/mask.h): keys model_lo .. p of each dense row
      // (all keys when not causal), the window band of each sparse one.
      const int64_t w = dense ? seq.k_len : plan_->head(t.seq, first_head + h0, p_.num_q_heads).window;
      attend_contiguous(s, t.seq, t.kv_head, r0, rows, [&](int r, int64_t* lo, int64_t* hi) {
        *lo = own_keys_lo(!dense, s.positions[r], w, p_.window_left);
        *hi = own_keys_hi(!dense, p_.causal, s.positions[r], seq.k_len);
      });
      if (!dense) {
        // Segment 1, the stripes.
        if (group_shares_stripes()) {
          attend_stripes(s, t.seq * p_.num_q_heads + first_head, r0, rows);  // the set is all-or-none dense
        } else {
          for (int h = h0; h < h1; ++h) attend_stripes(s, t.seq * p_.num_q_heads + first_head + h, h * t.rows, t.rows);
        }
      }
      h0 = h1;
    }

    finish(t, s.row_max, s.row_sum, s.acc, s.row_scale);
  }

  // A decode task (decode_streams): every kv head's rows over one block of kDecodeBlock keys in
  // one attend_rows call, which reads the cache in memory order (simd/decode/decode.h); then the
  // next block.
  void attend_decode(const Scratch& s, const Task& t) {
    const Sequence& seq = p_.sequences[t.seq];
    const int m = p_.group * t.rows, rows = m * t.kv_heads;
    const KvLayout& kv = p_.kv;
    const ScoreModArgs mod = score_mod_args(s, 0, s.key_pos);
    float k_max = 0.f, v_max = 0.f;
    bool called = false;  // attend_rows ran on these rows and this scratch
    // This block's rows and the next one's (requested by this block's call, AttendRowsArgs::next_k).
    KvRows rows_now = s.kv_rows, rows_next = s.kv_next;
    int64_t filled = -1;  // the block whose rows rows_now holds
    for (int64_t b0 = t.key_lo; b0 < t.key_hi; b0 += kDecodeBlock) {
      const int64_t b1 = std::min(t.key_hi, b0 + kDecodeBlock);
      const int n = static_cast<int>(b1 - b0);
      bool full = true, any = false;
      for (int r = 0; r < rows; ++r) {
        const int64_t lo = own_keys_lo(false, s.positions[r], seq.k_len, p_.window_left);
        const int64_t hi = own_keys_hi(false, p_.causal, s.positions[r], seq.k_len);
        s.lo[r] = static_cast<int32_t>(std::clamp<int64_t>(lo - b0, 0, n));
        s.hi[r] = static_cast<int32_t>(std::clamp<int64_t>(hi - b0, 0, n));
        full = full && s.lo[r] == 0 && s.hi[r] == n;
        any = any || s.lo[r] < s.hi[r];
      }
      if (!any) continue;
      if (filled != b0) rows_now.fill_run(p_, t.seq, t.kv_head, b0, n);
      const int next_n = static_cast<int>(std::min(t.key_hi, b1 + kDecodeBlock) - b1);
      if (next_n > 0) rows_next.fill_run(p_, t.seq, t.kv_head, b1, next_n);
      if (mod.alibi != nullptr) {
        for (int c = 0; c < n; ++c) s.key_pos[c] = static_cast<int32_t>(b0 + c);
      }
      const bool finite = kernels_.attend_rows(
          {.q = static_cast<const float*>(s.q_packed), .m = m, .k = rows_now.k(p_), .v = rows_now.v(p_), .n = n,
           .d = p_.head_dim, .dv = p_.head_dim_v, .lo = full ? nullptr : s.lo, .hi = full ? nullptr : s.hi,
           .row_max = s.row_max, .row_sum = s.row_sum, .acc = s.acc, .scratch = s.decode_scratch, .mod = mod,
           .heads = t.kv_heads, .k_head_step = kv.k_head_stride, .v_head_step = kv.v_head_stride,
           .scale_head_step = kv.scale_head_stride, .k_max_abs = &k_max,
           .v_max_abs = &v_max, .int8_products = int8_products(p_), .same_q = called,
           .next_k = rows_next.k(p_), .next_n = next_n});
      called = true;
      std::swap(rows_now, rows_next);
      filled = next_n > 0 ? b1 : -1;
      if (!finite) kv_nonfinite_.store(true, std::memory_order_relaxed);
    }
    raise(k_max_bits_, k_max);
    raise(v_max_bits_, v_max);
  }

  // Whether a decode kernel read a K or V value that is not finite.
  bool kv_nonfinite() const { return kv_nonfinite_.load(std::memory_order_relaxed); }
  // The largest |value| of the f32 / bf16 K and V rows the decode kernels read (0 when none).
  float k_max_abs() const { return bits_float(k_max_bits_.load(std::memory_order_relaxed)); }
  float v_max_abs() const { return bits_float(v_max_bits_.load(std::memory_order_relaxed)); }

  // The short chunks (their results in partial slots): the index of each one's first task.
  const std::vector<size_t>& merges() const { return merges_; }

  // Bytes of scratch merge() needs.
  size_t merge_scratch_bytes() const { return sizeof(float) * static_cast<size_t>(max_task_rows()) * (p_.head_dim_v + 3); }

  // Merges the partial results of the split tasks tasks[first .. first + splits) by their
  // log-sum-exp (max of the maxima; sums and accumulators rescaled to it) and finishes the rows.
  void merge(const std::vector<Task>& tasks, size_t first, void* scratch) const {
    const Task& t = tasks[first];
    const int m = p_.group * t.kv_heads * t.rows, dv = p_.head_dim_v;
    float* row_max = static_cast<float*>(scratch);
    float* row_sum = row_max + m;
    float* row_scale = row_sum + m;
    float* acc = row_scale + m;
    std::fill(row_max, row_max + m, -std::numeric_limits<float>::infinity());
    for (int i = 0; i < t.splits; ++i) {
      const float* slot = partials_.data() + static_cast<size_t>(tasks[first + i].partial) * partial_floats_per_task();
      for (int r = 0; r < m; ++r) row_max[r] = std::max(row_max[r], slot[r]);
    }
    std::fill(row_sum, row_sum + m, 0.f);
    std::fill(acc, acc + static_cast<size_t>(m) * dv, 0.f);
    for (int i = 0; i < t.splits; ++i) {  // in split order: the result does not depend on threading
      const float* slot = partials_.data() + static_cast<size_t>(tasks[first + i].partial) * partial_floats_per_task();
      for (int r = 0; r < m; ++r) {
        if (!(slot[m + r] > 0)) continue;  // the split held none of this row's keys
        const float c = std::exp2(slot[r] - row_max[r]);
        row_sum[r] += slot[m + r] * c;
        const float* a = slot + 2 * m + static_cast<size_t>(r) * dv;
        float* out = acc + static_cast<size_t>(r) * dv;
        for (int x = 0; x < dv; ++x) out[x] += a[x] * c;
      }
    }
    finish(t, row_max, row_sum, acc, row_scale);
  }

 private:
  // Whether a sequence's query chunks are short: decode tasks (every head dense, core/mask.h).
  bool short_chunks(size_t s) const { return short_[s] != 0; }

  // The keys rows [q0, q0 + rows) of a dense chunk see at most (core/mask.h: model_lo to the
  // causal end of the last row; all keys when not causal).
  KeyRange chunk_keys(const Sequence& seq, int64_t q0, int rows) const {
    if (!p_.causal) return {0, seq.k_len};
    const int64_t first = seq.q_offset() + q0;
    return {model_lo(first, p_.window_left), causal_end(first + rows - 1)};
  }

  // Normalizes and stores a task's rows from their max, sum and accumulator (the sink joins the
  // denominator); lse in natural log. row_scale: m floats of scratch.
  void finish(const Task& t, const float* row_max, const float* row_sum, const float* acc, float* row_scale) const {
    const int g = p_.group, dv = p_.head_dim_v;
    const Sequence& seq = p_.sequences[t.seq];
    const int esize = dtype_size(p_.o.dtype);
    const int64_t token0 = seq.q_begin + t.q0;
    for (int h = 0; h < g * t.kv_heads; ++h) {
      const int head = t.kv_head * g + h;
      const ScoreMod mod = p_.score_mod(head);
      for (int i = 0; i < t.rows; ++i) {
        const int r = h * t.rows + i;
        const RowNormalization norm = normalize_row(mod, row_max[r], row_sum[r]);
        row_scale[r] = norm.scale;
        if (p_.lse != nullptr) p_.lse[(token0 + i) * p_.num_q_heads + head] = norm.lse;
      }
      char* dst = static_cast<char*>(p_.o.data) + (token0 * p_.o.token_stride + head * p_.o.head_stride) * esize;
      kernels_.store_rows(acc + static_cast<size_t>(h) * t.rows * dv, t.rows, dv, row_scale + h * t.rows, dst,
                          p_.o.dtype, p_.o.token_stride);
    }
  }

  // The keys a task's rows attend to, times its rows: the longest tasks are claimed first.
  double task_cost(const Sequence& seq, int s, int kv_head, int64_t q0, int rows, int kv_heads = 1) const {
    const int64_t mid_pos = seq.q_offset() + q0 + rows / 2;
    const double mid = static_cast<double>(seq.q_offset() + q0) + rows / 2.0;
    double keys = 0;
    for (int head = kv_head * p_.group; head < (kv_head + kv_heads) * p_.group; ++head) {
      if (head_dense(s, head)) {
        const double model_keys = p_.window_left >= 0 ? static_cast<double>(p_.window_left + 1) : mid + 1;
        keys += p_.causal ? std::min(mid + 1, model_keys) : static_cast<double>(seq.k_len);
      } else {
        const HeadPlan& hp = plan_->head(s, head, p_.num_q_heads);
        const StripeRun run = visible_stripes(hp, mid_pos, p_.window_left);
        keys += std::min(static_cast<double>(hp.window), mid + 1) + static_cast<double>(run.end - run.begin);
      }
    }
    return keys * rows;
  }

  // The score variants of rows [r0, r0 + m) against keys at key_pos (core/score_mod.h).
  ScoreModArgs score_mod_args(const Scratch& s, int r0, const int32_t* key_pos) const {
    ScoreModArgs mod;
    mod.softcap = p_.score_mod(0).softcap_log2;  // one cap for every head
    if (!p_.alibi_slopes.empty()) {
      mod.alibi = s.slopes + r0;
      mod.row_pos = s.row_pos + r0;
      mod.key_pos = key_pos;
    }
    return mod;
  }

  // Rows [r0, r0 + m) attend over the keys of the sequence itself; row r sees [lo, hi) given by
  // span(r, &lo, &hi) in key positions. Key tiles outside every row's span are neither packed
  // nor attended, so a model window costs its band, not the causal triangle.
  template <typename Span>
  void attend_contiguous(const Scratch& s, int seq_index, int kv_head, int r0, int m, Span span) {
    const Sequence& seq = p_.sequences[seq_index];
    int64_t first = std::numeric_limits<int64_t>::max(), last = 0;
    for (int r = r0; r < r0 + m; ++r) {
      int64_t lo, hi;
      span(r, &lo, &hi);
      if (lo < hi) {
        first = std::min(first, lo);
        last = std::max(last, hi);
      }
    }
    if (first >= last) return;
    const int key_tile = kernels_.key_tile, d = p_.head_dim, dv = p_.head_dim_v;
    const char* q = static_cast<const char*>(s.q_packed) + static_cast<size_t>(r0) * d * path_.q_elem_bytes;
    const ScoreModArgs mod = score_mod_args(s, r0, s.key_pos);
    // Tiles aligned to multiples of key_tile so that dense tiles below the diagonal are full.
    for (int64_t t0 = first / key_tile * key_tile; t0 < last; t0 += key_tile) {
      const int n = static_cast<int>(std::min<int64_t>(key_tile, seq.k_len - t0));
      bool full = true, any = false;
      for (int r = r0; r < r0 + m; ++r) {
        int64_t lo, hi;
        span(r, &lo, &hi);
        const int32_t a = static_cast<int32_t>(std::clamp<int64_t>(lo - t0, 0, n));
        const int32_t b = static_cast<int32_t>(std::clamp<int64_t>(hi - t0, 0, n));
        s.lo[r - r0] = a;
        s.hi[r - r0] = b;
        full = full && a == 0 && b == n;
        any = any || a < b;
      }
      if (!any) continue;
      s.kv_rows.fill_run(p_, seq_index, kv_head, t0, n);
      if (mod.alibi != nullptr) {
        for (int c = 0; c < n; ++c) s.key_pos[c] = static_cast<int32_t>(t0 + c);
      }
      path_.pack_k(s.kv_rows.k(p_), n, d, s.k_packed);
      path_.pack_v(s.kv_rows.v(p_), n, dv, s.v_packed);
      path_.attend({.q = q, .m = m, .k = s.k_packed, .v = s.v_packed, .n = n, .d = d, .dv = dv,
                    .lo = full ? nullptr : s.lo, .hi = full ? nullptr : s.hi, .row_max = s.row_max + r0,
                    .row_sum = s.row_sum + r0, .acc = s.acc + static_cast<size_t>(r0) * dv,
                    .scratch = s.attend_scratch, .mod = mod, .qk_scale = qk_scale(path_, scale_log2(p_.scale))});
    }
  }

  // Rows [r0, r0 + m) attend over the pre-packed stripes of set `index`; row r sees the run
  // [begin, end) of the ascending stripe list (visible_stripes: within the model's window and
  // up to its stripe limit), and only the tiles that hold some row's run are attended.
  void attend_stripes(const Scratch& s, size_t index, int r0, int m) const {
    const PackedStripes& ps = stripes_[index];
    if (ps.count == 0) return;
    const HeadPlan& hp = plan_->heads[index];
    const int key_tile = kernels_.key_tile, d = p_.head_dim, dv = p_.head_dim_v;
    int64_t first = ps.count, last = 0;
    for (int r = 0; r < m; ++r) {
      const StripeRun run = visible_stripes(hp, s.positions[r0 + r], p_.window_left);
      s.stripe_begin[r] = run.begin;
      s.stripe_end[r] = run.end;
      if (run.begin < run.end) {
        first = std::min(first, run.begin);
        last = std::max(last, run.end);
      }
    }
    if (first >= last) return;
    const char* q = static_cast<const char*>(s.q_packed) + static_cast<size_t>(r0) * d * path_.q_elem_bytes;
    for (int64_t tile = first / key_tile, t0 = tile * key_tile; t0 < last; ++tile, t0 += key_tile) {
      const int n = static_cast<int>(std::min<int64_t>(key_tile, ps.count - t0));
      bool full = true, any = false;
      for (int r = 0; r < m; ++r) {
        const int32_t a = static_cast<int32_t>(std::clamp<int64_t>(s.stripe_begin[r] - t0, 0, n));
        const int32_t b = static_cast<int32_t>(std::clamp<int64_t>(s.stripe_end[r] - t0, 0, n));
        s.lo[r] = a;
        s.hi[r] = b;
        full = full && a == 0 && b == n;
        any = any || a < b;
      }
      if (!any) continue;
      path_.attend({.q = q, .m = m, .k = ps.k + tile * ps.k_tile_bytes, .v = ps.v + tile * ps.v_tile_bytes, .n = n,
                    .d = d, .dv = dv, .lo = full ? nullptr : s.lo, .hi = full ? nullptr : s.hi,
                    .row_max = s.row_max + r0, .row_sum = s.row_sum + r0,
                    .acc = s.acc + static_cast<size_t>(r0) * dv, .scratch = s.attend_scratch,
                    .mod = score_mod_args(s, r0, hp.stripes.data() + t0),
                    .qk_scale = qk_scale(path_, scale_log2(p_.scale))});
    }
  }

  const KernelTable& kernels_;
  const FlashPath& path_;
  const Problem& p_;
  const SparsePlan* plan_;
  int bq_;
  std::vector<char> short_;       // per sequence: its chunks are short (short_chunks)
  std::vector<int> splits_;        // per sequence: key splits of each query chunk (1 = none)
  std::vector<size_t> merges_;     // per split chunk: its first task
  std::vector<float> partials_;    // the short chunks' partial results (partial_floats_per_task each)
  std::atomic<bool> kv_nonfinite_{false};
  // Non-negative floats order as their bits do; a NaN (bits above +inf) wins, and its call fails.
  std::atomic<uint32_t> k_max_bits_{0}, v_max_bits_{0};
  static uint32_t float_bits(float x) {
    uint32_t b;
    std::memcpy(&b, &x, sizeof b);
    return b;
  }
  static float bits_float(uint32_t b) {
    float x;
    std::memcpy(&x, &b, sizeof x);
    return x;
  }
  static void raise(std::atomic<uint32_t>& bits, float x) {
    const uint32_t b = float_bits(x);
    uint32_t seen = bits.load(std::memory_order_relaxed);
    while (b > seen && !bits.compare_exchange_weak(seen, b, std::memory_order_relaxed)) {
    }
  }
  std::vector<PackedStripes> stripes_;
  CallBuffers::Lease stripe_memory_;
};

}  // namespace

bool decode_streams(const Problem& problem, const Sequence& seq) {
  // The decode kernel reads a token's kv heads at its row plus the head strides, which per-head
  // block tables (core/kv_cache.h) do not keep: their short chunks take the packed kernels.
  return seq.q_len > 0 && seq.q_len <= kShortQueryRows && problem.group * seq.q_len <= kDecodeRows &&
         problem.kv.table_head_stride == 0;
}

const FlashPath& select_path(const KernelTable& kernels, const Problem& problem) {
  const FlashPath* bf16 = kernels.path(Precision::kBF16);
  if (bf16 == nullptr) return *kernels.path(Precision::kF32);
  if (problem.precision == SAMPLEATTN_PRECISION_BF16) return *bf16;
  const auto is_bf16 = [](const TensorView& x) { return x.dtype == DType::kBF16; };
  if (problem.precision == SAMPLEATTN_PRECISION_AUTO && kernels.bf16_preferred && is_bf16(problem.q) &&
      is_bf16(problem.k) && is_bf16(problem.v)) {
    return *bf16;
  }
  return *kernels.path(Precision::kF32);
}

size_t flash_scratch_bytes(const KernelTable& kernels, const Problem& problem) {
  const FlashRunner runner(kernels, problem, nullptr, 1);
  return std::max({runner.scratch_bytes(), runner.pack_scratch_bytes(), runner.merge_scratch_bytes()});
}

uint64_t flash_bookkeeping_bytes(const KernelTable& kernels, const Problem& problem, int threads) {
  return FlashRunner(kernels, problem, nullptr, threads).bookkeeping_bytes();
}

Status run_flash_attention(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                           const KernelTable& kernels, const Problem& problem, const SparsePlan* plan,
                           const KvBoundsCheck* kv_bounds_ok, bool* kv_unchecked) {
  *kv_unchecked = false;
  WorkspaceParts held = during;
  SAMPLEATTN_RETURN_IF_ERROR(check_workspace(held, workspace_limit, "for the attention"));
  FlashRunner runner(kernels, problem, plan, pool.num_threads());
  SAMPLEATTN_RETURN_IF_ERROR(runner.pack_stripes(pool, workspace_limit, &held));
  const std::vector<Task> tasks = runner.make_tasks();
  SAMPLEATTN_RETURN_IF_ERROR(
      pool.run(static_cast<int64_t>(tasks.size()), runner.scratch_bytes(), held.pool_limit(workspace_limit),
               [&](int64_t t, int, void* scratch) { runner.run_task(tasks[static_cast<size_t>(t)], scratch); }));
  // Sparse heads' dense rows, over what their sparse pass wrote (sampled sequences only: never a
  // short chunk's, whose output the merge below writes).
  const std::vector<RowsTask> row_tasks = runner.make_row_tasks();
  if (!row_tasks.empty()) {
    SAMPLEATTN_RETURN_IF_ERROR(pool.run(
        static_cast<int64_t>(row_tasks.size()), runner.scratch_bytes(), held.pool_limit(workspace_limit),
        [&](int64_t t, int, void* scratch) { runner.run_rows_task(row_tasks[static_cast<size_t>(t)], scratch); }));
  }
  const std::vector<size_t>& merges = runner.merges();
  if (runner.kv_nonfinite() || (kv_bounds_ok != nullptr && !(*kv_bounds_ok)(runner.k_max_abs(), runner.v_max_abs()))) {
    *kv_unchecked = true;  // the caller's full scan decides; nothing was written
    return Status::ok();
  }
  if (merges.empty()) return Status::ok();
  return pool.run(static_cast<int64_t>(merges.size()), runner.merge_scratch_bytes(), held.pool_limit(workspace_limit),
                  [&](int64_t i, int, void* scratch) { runner.merge(tasks, merges[static_cast<size_t>(i)], scratch); });
}

}  // namespace sampleattn::cpu
