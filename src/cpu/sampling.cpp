#include "cpu/sampling.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/mask.h"
#include "core/score_mod.h"
#include "core/timing.h"
#include "core/validation.h"
#include "cpu/flash_driver.h"
#include "cpu/score_fixed_point.h"
#include "cpu/kv_rows.h"
#include "cpu/scratch_carver.h"
#include "cpu/stripe_selection.h"
#include "cpu/workspace.h"

namespace sampleattn::cpu {
namespace {

// Score buffers of the fused stage-1 pass: a chunk's rows x all the keys they see, kept between
// the row statistics and the column sums. The chunk shrinks with the key count to stay near this,
// and under a context's workspace limit the buffers of all workers take at most a quarter of it.
constexpr int64_t kScoreBufferBytes = int64_t{16} << 20;

int64_t score_budget(uint64_t workspace_limit, int threads) {
  if (workspace_limit == 0) return kScoreBufferBytes;
  return std::min<int64_t>(kScoreBufferBytes, static_cast<int64_t>(workspace_limit / (4 * static_cast<uint64_t>(threads))));
}

// One stage-1 task: rows [c0, c0 + n) of sampled sequence ss, kv group g.
struct RowTask { size_t ss; int g; int64_t c0; int n; double cost; };

// Floats per validation row and head: the most ValidationLayout::row_masses() can be (bounds:
// 0, the grid points and alpha's count).
constexpr int kMassStride = kValidationGrid + 2;

// Stage 2's state of one selection set, kept until validation has decided.
struct SelectionSet {
  std::vector<int32_t> ranked;  // the non-sink columns in rank order
  ValidationLayout layout;
};

// Stage-1 state of one sampled sequence.
struct SampledSequence {
  int seq = 0;
  int64_t window = 0;
  std::vector<int64_t> rows;        // sampled local query indices, ascending
  std::vector<float> row_max;       // [q_head][row], log2 units
  std::vector<float> row_sum;       // [q_head][row]
  std::vector<int64_t> col_score;   // [q_head][k_len], fixed point (kScoreBits)
  std::vector<float> kept;          // [q_head][row], kept mass under the chosen mask
  std::vector<int64_t> val_rows;    // validation rows (local indices, ascending, none sampled)
  std::vector<float> val_masses;    // [q_head][val row][kMassStride] (core/validation.h)
  std::vector<SelectionSet> sets;   // per selection set
};

// Per-worker scratch for the sampling passes.
struct Scratch {
  int64_t* q_offsets;
  KvRows kv_rows;         // a K tile's rows
  int64_t* positions;
  int32_t* row_pos;       // positions as the kernels read them (ScoreModArgs)
  float* slopes;          // each row's ALiBi slope, log2 units
  int32_t* key_pos;       // a contiguous tile's key positions
  int64_t* stripe_begin;  // each row's visible run of its stripe list
  int64_t* stripe_end;
  int32_t* lo;
  int32_t* hi;
  float* row_max;
  float* row_sum;
  float* row_scale;
  float* scores;      // [key tile][row][key_tile] for all the tiles a chunk sees
  float* columns;     // one head's column sums of a chunk, f32
  void* q_packed;
  void* k_packed;
};

// The one definition of a sampling worker's scratch: sizes with a null base. `keys` is the most
// keys a sampled sequence has, rounded up to whole tiles.
Scratch carve(ScratchCarver c, const FlashPath& path, int rows, int key_tile, int64_t keys, int d,
              size_t* bytes = nullptr) {
  Scratch s;
  s.q_offsets = c.take<int64_t>(rows);
  s.kv_rows = KvRows::carve(c, key_tile);
  s.positions = c.take<int64_t>(rows);
  s.row_pos = c.take<int32_t>(rows);
  s.slopes = c.take<float>(rows);
  s.key_pos = c.take<int32_t>(key_tile);
  s.stripe_begin = c.take<int64_t>(rows);
  s.stripe_end = c.take<int64_t>(rows);
  s.lo = c.take<int32_t>(rows);
  s.hi = c.take<int32_t>(rows);
  s.row_max = c.take<float>(rows);
  s.row_sum = c.take<float>(rows);
  s.row_scale = c.take<float>(rows);
  s.scores = c.take<float>(static_cast<size_t>(rows) * keys);
  s.columns = c.take<float>(static_cast<size_t>(keys));
  s.q_packed = c.take_bytes(path.packed_bytes(rows, d));
  s.k_packed = c.take_bytes(path.packed_bytes(key_tile, d));
  if (bytes != nullptr) *bytes = c.used();
  return s;
}

// The most keys of a sampled sequence, in whole key tiles.
int64_t sampled_keys(const KernelTable& kernels, const Problem& problem) {
  int64_t keys = 0;
  for (const Sequence& seq : problem.sequences) {
    if (sequence_is_sampled(problem, seq)) keys = std::max(keys, seq.k_len);
  }
  return (keys + kernels.key_tile - 1) / kernels.key_tile * kernels.key_tile;
}

// Sampled rows per chunk and query head: a full query block, fewer when the chunk's scores
// would pass the budget, but at least 32 stacked rows (K packing per chunk must stay small
// beside the products).
int sample_chunk(const KernelTable& kernels, const Problem& problem, int64_t keys, int64_t budget) {
  const int group = problem.group;
  const int64_t most = std::max(1, kernels.block_rows / group);
  const int64_t least = std::max(1, 32 / group);
  const int64_t by_budget = keys > 0 ? budget / (int64_t{4} * keys * group) : most;
  return static_cast<int>(std::clamp(by_budget, std::min(least, most), most));
}

// The path of stage 1's scores (and the validation rows'). Its scores choose the mask, so they get
// full precision: the f32 path, except for bf16 Q and K when the attention runs bf16 products
// (precision AUTO on AMX, or BF16): bf16 products of bf16 values are exact and accumulate in f32,
// so those scores are the f32 path's up to the order of the sum, at the tiles' speed.
const FlashPath& sampling_path(const KernelTable& kernels, const Problem& problem) {
  const FlashPath& attention = select_path(kernels, problem);
  const bool exact = problem.q.dtype == DType::kBF16 && problem.k.dtype == DType::kBF16;
  return attention.q_elem_bytes == 2 && exact ? attention : *kernels.path(Precision::kF32);
}

class Sampler {
 public:
  Sampler(const KernelTable& kernels, const Problem& problem, int64_t score_budget)
      : k_(kernels), path_(sampling_path(kernels, problem)), p_(problem), keys_(sampled_keys(kernels, problem)),
        chunk_(sample_chunk(kernels, problem, keys_, score_budget)),
        softcap_log2_(problem.score_mod(0).softcap_log2),
        modifies_scores_(softcap_log2_ > 0.f || !problem.alibi_slopes.empty()) {}

  size_t scratch_bytes() const {
    size_t bytes = 0;
    carve(ScratchCarver(), path_, chunk_ * p_.group, k_.key_tile, keys_, p_.head_dim, &bytes);
    return bytes;
  }
  Scratch scratch(void* base) const {
    return carve(ScratchCarver(base), path_, chunk_ * p_.group, k_.key_tile, keys_, p_.head_dim);
  }
  int chunk() const { return chunk_; }

  // Packs the sampled rows [c0, c0 + n) of kv group g (all its query heads, head-major) into
  // s.q_packed and fills s.positions. Returns the number of stacked rows.
  int pack_rows(const Scratch& s, const SampledSequence& ss, const std::vector<int64_t>& rows, int g, int64_t c0,
                int n) const {
    const Sequence& seq = p_.sequences[ss.seq];
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      const float slope = p_.score_mod(head).alibi_log2;
      for (int i = 0; i < n; ++i) {
        const int64_t local = rows[c0 + i];
        s.q_offsets[h * n + i] = (seq.q_begin + local) * p_.q.token_stride + head * p_.q.head_stride;
        s.positions[h * n + i] = seq.q_offset() + local;
        s.row_pos[h * n + i] = static_cast<int32_t>(seq.q_offset() + local);
        s.slopes[h * n + i] = slope;
      }
    }
    const int m = n * p_.group;
    path_.pack_q({p_.q.data, p_.q.dtype, 0, s.q_offsets}, m, p_.head_dim, pack_q_scale(path_, scale_log2(p_.scale)),
                 s.q_packed);
    return m;
  }

  // Packs keys [t0, t0 + n) of sequence `seq`, kv head g.
  void pack_keys(const Scratch& s, int seq, int g, int64_t t0, int n) const {
    s.kv_rows.fill_run(p_, seq, g, t0, n);
    path_.pack_k(s.kv_rows.k(p_), n, p_.head_dim, s.k_packed);
  }

  // Row spans of stacked rows [0, m) for key tile [t0, t0 + n), given key-position bounds.
  template <typename Bounds>
  bool spans(const Scratch& s, int m, int64_t t0, int n, Bounds bounds) const {
    bool any = false;
    for (int r = 0; r < m; ++r) {
      int64_t lo, hi;
      bounds(s.positions[r], &lo, &hi);
      s.lo[r] = static_cast<int32_t>(std::clamp<int64_t>(lo - t0, 0, n));
      s.hi[r] = static_cast<int32_t>(std::clamp<int64_t>(hi - t0, 0, n));
      any = any || s.lo[r] < s.hi[r];
    }
    return any;
  }

  // The model's score variants (softcap, ALiBi) on an m x nk block of scores of stacked rows
  // [r0, r0 + m) against keys at key_pos, exactly as the attention applies them (core/score_mod.h).
  void modify(const Scratch& s, float* scores, int r0, int m, int nk, const int32_t* key_pos) const {
    if (!modifies_scores_) return;
    ScoreModArgs mod;
    mod.softcap = softcap_log2_;
    if (!p_.alibi_slopes.empty()) {
      mod.alibi = s.slopes + r0;
      mod.row_pos = s.row_pos + r0;
      mod.key_pos = key_pos;
    }
    k_.modify_scores(scores, k_.key_tile, m, nk, mod);
  }
  // The same for a contiguous key tile [t0, t0 + nk).
  void modify_tile(const Scratch& s, float* scores, int m, int64_t t0, int nk) const {
    if (!modifies_scores_) return;
    for (int c = 0; c < nk; ++c) s.key_pos[c] = static_cast<int32_t>(t0 + c);
    modify(s, scores, 0, m, nk, s.key_pos);
  }

  // The keys [begin, end) that stage 1 reads for the m packed rows of n rows per head (positions
  // ascending within a head), begin rounded down to a whole key tile.
  struct KeyRange {
    int64_t begin, end;
  };
  KeyRange row_keys(const Scratch& s, int n) const {
    const int tile = k_.key_tile;
    return {model_lo(s.positions[0], p_.window_left) / tile * tile, causal_end(s.positions[n - 1])};
  }

  // Stage 1 for sampled rows [c0, c0 + n) of kv group g (all its query heads): the scores of
  // every key the rows see are computed once and kept; the exact row max and sum of exp2 come
  // from them, then each row's probabilities are added per column (rows in order, in f32) and
  // the chunk's column sums go into the sequence's fixed-point totals.
  // The (modified) scores of the m packed rows against every key the model shows them, keys
  // model_lo .. p (key tiles of s.scores at their index from key 0, kept; a tile no row sees is
  // skipped), and their exact row max and sum of exp2.
  void full_rows(const Scratch& s, int seq_index, int g, int m, int n) const {
    const Sequence& seq = p_.sequences[seq_index];
    const int tile = k_.key_tile;
    const size_t tile_floats = static_cast<size_t>(m) * tile;
    std::fill(s.row_max, s.row_max + m, -std::numeric_limits<float>::infinity());
    std::fill(s.row_sum, s.row_sum + m, 0.f);
    const KeyRange keys = row_keys(s, n);
    const int64_t left = p_.window_left;
    for (int64_t t0 = keys.begin; t0 < keys.end; t0 += tile) {
      const int nk = static_cast<int>(std::min<int64_t>(tile, seq.k_len - t0));
      if (!spans(s, m, t0, nk, [left](int64_t p, int64_t* lo, int64_t* hi) {
            *lo = model_lo(p, left);
            *hi = causal_end(p);
          })) {
        continue;
      }
      float* scores = s.scores + (t0 / tile) * tile_floats;
      pack_keys(s, seq_index, g, t0, nk);
      path_.scores(s.q_packed, m, s.k_packed, nk, p_.head_dim, scores, tile, qk_scale(path_, scale_log2(p_.scale)));
      modify_tile(s, scores, m, t0, nk);
      k_.row_stats(scores, tile, m, nk, s.lo, s.hi, s.row_max, s.row_sum);
    }
  }

  void sample_rows(SampledSequence& ss, int g, int64_t c0, int n, void* scratch) const {
    const Scratch s = this->scratch(scratch);
    const Sequence& seq = p_.sequences[ss.seq];
    const int m = pack_rows(s, ss, ss.rows, g, c0, n);
    const int tile = k_.key_tile;
    const size_t tile_floats = static_cast<size_t>(m) * tile;
    full_rows(s, ss.seq, g, m, n);
    const KeyRange keys = row_keys(s, n);
    const int64_t nr = static_cast<int64_t>(ss.rows.size());
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      for (int i = 0; i < n; ++i) {
        ss.row_max[head * nr + c0 + i] = s.row_max[h * n + i];
        ss.row_sum[head * nr + c0 + i] = s.row_sum[h * n + i];
      }
    }
    for (int r = 0; r < m; ++r) s.row_scale[r] = s.row_sum[r] > 0 ? 1.f / s.row_sum[r] : 0.f;

    // Column sums, one query head at a time: row p adds its probabilities to the columns
    // sample_column_begin(p, left) <= j < sample_column_end(p, shift), a part of the keys
    // full_rows read for it (so a tile it skipped holds no column of any row).
    const int64_t shift = sample_column_shift(ss.window, p_.sample.window_mass_counts == 1);
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      const int r0 = h * n;
      std::fill(s.columns + keys.begin, s.columns + std::min<int64_t>(seq.k_len, (keys.end + tile - 1) / tile * tile),
                0.f);
      for (int64_t t0 = keys.begin; t0 < keys.end; t0 += tile) {
        const int nk = static_cast<int>(std::min<int64_t>(tile, seq.k_len - t0));
        bool any = false;
        for (int i = 0; i < n; ++i) {
          const int64_t p = s.positions[r0 + i];
          const int64_t lo = sample_column_begin(p, p_.window_left), hi = sample_column_end(p, shift);
          s.lo[r0 + i] = static_cast<int32_t>(std::clamp<int64_t>(lo - t0, 0, nk));
          s.hi[r0 + i] = static_cast<int32_t>(std::clamp<int64_t>(hi - t0, 0, nk));
          any = any || s.lo[r0 + i] < s.hi[r0 + i];
        }
        if (!any) continue;
        k_.accumulate_columns(s.scores + (t0 / tile) * tile_floats + static_cast<size_t>(r0) * tile, tile, n, nk,
                              s.lo + r0, s.hi + r0, s.row_max + r0, s.row_scale + r0, s.columns + t0);
      }
      int64_t* total = ss.col_score.data() + static_cast<size_t>(head) * seq.k_len;
      for (int64_t j = keys.begin; j < keys.end; ++j) {
        const int64_t v = column_sum_to_fixed(s.columns[j], n);
        if (v != 0) std::atomic_ref<int64_t>(total[j]).fetch_add(v, std::memory_order_relaxed);
      }
    }
  }

  // Validation rows [c0, c0 + n) of group g: each row's exact probabilities, added up per bucket
  // of its head's set layout (core/validation.h): [0] the window band and the kept sinks, [b] the
  // bucket-b columns the row sees as stripes (stripe_first(p, left) <= j <= p - w). Over the keys
  // the model shows the row, without its sink: a share of the row's key mass. A set over the
  // cost budget has no buckets and is skipped.
  void validate_rows(SampledSequence& ss, int g, int64_t c0, int n, void* scratch) const {
    const Scratch s = this->scratch(scratch);
    const Sequence& seq = p_.sequences[ss.seq];
    const int m = pack_rows(s, ss, ss.val_rows, g, c0, n);
    const int tile = k_.key_tile;
    const size_t tile_floats = static_cast<size_t>(m) * tile;
    full_rows(s, ss.seq, g, m, n);
    const int64_t nv = static_cast<int64_t>(ss.val_rows.size());
    const bool per_group = p_.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP;
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      const ValidationLayout& layout = ss.sets[per_group ? g : head].layout;
      if (layout.bucket.empty()) continue;
      const uint8_t* bucket = layout.bucket.data();
      for (int i = 0; i < n; ++i) {
        const int r = h * n + i;
        const int64_t p = s.positions[r];
        const int64_t stripe_end = stripe_limit(p, ss.window) + 1;  // columns [0, stripe_end) are stripe candidates
        float* out = ss.val_masses.data() + (static_cast<size_t>(head) * nv + c0 + i) * kMassStride;
        std::fill(out, out + kMassStride, 0.f);
        if (!(s.row_sum[r] > 0)) continue;
        const float scale = 1.f / s.row_sum[r];
        const int64_t first = model_lo(p, p_.window_left);  // the row's keys: first .. p
        for (int64_t t0 = first / tile * tile; t0 < causal_end(p); t0 += tile) {
          const int nk = static_cast<int>(std::min<int64_t>(tile, seq.k_len - t0));
          const int32_t lo = static_cast<int32_t>(std::max<int64_t>(first - t0, 0));
          const int32_t hi = static_cast<int32_t>(std::min<int64_t>(nk, causal_end(p) - t0));
          std::fill(s.columns, s.columns + nk, 0.f);
          k_.accumulate_columns(s.scores + (t0 / tile) * tile_floats + static_cast<size_t>(r) * tile, tile, 1, nk, &lo,
                                &hi, s.row_max + r, &scale, s.columns);
          const int split = static_cast<int>(std::clamp<int64_t>(stripe_end - t0, lo, hi));
          for (int j = lo; j < split; ++j) {
            const uint8_t b = bucket[t0 + j];
            if (b != kBucketUnused) out[b] += s.columns[j];
          }
          for (int j = split; j < hi; ++j) out[0] += s.columns[j];  // the window band
        }
      }
    }
  }

  // The kept mass of sampled rows [c0, c0 + n) of group g under the chosen mask.
  void kept_mass(SampledSequence& ss, const SparsePlan& plan, int g, int64_t c0, int n, void* scratch) const {
    const Scratch s = this->scratch(scratch);
    const Sequence& seq = p_.sequences[ss.seq];
    const int m = pack_rows(s, ss, ss.rows, g, c0, n);
    const int64_t nr = static_cast<int64_t>(ss.rows.size());
    const int64_t w = ss.window;
    // Start from the global max with a zero sum: row_stats then adds exp2(s - max) of the span.
    auto reset = [&]() {
      for (int h = 0; h < p_.group; ++h) {
        for (int i = 0; i < n; ++i) {
          s.row_max[h * n + i] = ss.row_max[(g * p_.group + h) * nr + c0 + i];
          s.row_sum[h * n + i] = 0.f;
        }
      }
    };
    auto harvest = [&]() {
      for (int h = 0; h < p_.group; ++h) {
        const int head = g * p_.group + h;
        for (int i = 0; i < n; ++i) {
          const int64_t at = head * nr + c0 + i;
          const float total = ss.row_sum[at];
          if (total > 0) {
            ss.kept[at] += s.row_sum[h * n + i] * std::exp2(s.row_max[h * n + i] - ss.row_max[at]) / total;
          }
        }
      }
    };
    // Window keys.
    reset();
    const int64_t first = window_lo(s.positions[0], w);
    const int64_t last = window_hi(s.positions[n - 1]);
    for (int64_t t0 = first; t0 < last; t0 += k_.key_tile) {
      const int nk = static_cast<int>(std::min<int64_t>(k_.key_tile, seq.k_len - t0));
      if (!spans(s, m, t0, nk, [&](int64_t p, int64_t* lo, int64_t* hi) { *lo = window_lo(p, w); *hi = window_hi(p); })) continue;
      pack_keys(s, ss.seq, g, t0, nk);
      path_.scores(s.q_packed, m, s.k_packed, nk, p_.head_dim, s.scores, k_.key_tile,
                   qk_scale(path_, scale_log2(p_.scale)));
      modify_tile(s, s.scores, m, t0, nk);
      k_.row_stats(s.scores, k_.key_tile, m, nk, s.lo, s.hi, s.row_max, s.row_sum);
    }
    harvest();
    // Stripe keys, per query head (each head may have its own set): row p sees the run
    // [begin, end) of its head's stripe list (visible_stripes), packed here tile by tile.
    reset();
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      const HeadPlan& hp = plan.head(ss.seq, head, p_.num_q_heads);
      const int row0 = h * n;
      int64_t run_first = static_cast<int64_t>(hp.stripes.size()), run_last = 0;
      for (int i = 0; i < n; ++i) {
        const StripeRun run = visible_stripes(hp, s.positions[row0 + i], p_.window_left);
        s.stripe_begin[i] = run.begin;
        s.stripe_end[i] = run.end;
        if (run.begin < run.end) {
          run_first = std::min(run_first, run.begin);
          run_last = std::max(run_last, run.end);
        }
      }
      for (int64_t t0 = run_first; t0 < run_last; t0 += k_.key_tile) {
        const int nk = static_cast<int>(std::min<int64_t>(k_.key_tile, run_last - t0));
        s.kv_rows.fill(p_, ss.seq, g, nk, [&](int j) { return static_cast<int64_t>(hp.stripes[t0 + j]); });
        path_.pack_k(s.kv_rows.k(p_), nk, p_.head_dim, s.k_packed);
        const char* q = static_cast<const char*>(s.q_packed) + static_cast<size_t>(row0) * p_.head_dim * path_.q_elem_bytes;
        path_.scores(q, n, s.k_packed, nk, p_.head_dim, s.scores, k_.key_tile, qk_scale(path_, scale_log2(p_.scale)));
        modify(s, s.scores, row0, n, nk, hp.stripes.data() + t0);
        for (int i = 0; i < n; ++i) {
          s.lo[row0 + i] = static_cast<int32_t>(std::clamp<int64_t>(s.stripe_begin[i] - t0, 0, nk));
          s.hi[row0 + i] = static_cast<int32_t>(std::clamp<int64_t>(s.stripe_end[i] - t0, 0, nk));
        }
        k_.row_stats(s.scores, k_.key_tile, n, nk, s.lo + row0, s.hi + row0, s.row_max + row0, s.row_sum + row0);
      }
    }
    harvest();
  }

 private:
  const KernelTable& k_;
  const FlashPath& path_;
  const Problem& p_;
  int64_t keys_;
  int chunk_;
  float softcap_log2_;     // the model's softcap in log2 units, 0 = none
  bool modifies_scores_;   // softcap or ALiBi: stage 1 modifies its scores as the attention does
};

}  // namespace

SamplingFootprint sampling_footprint(const KernelTable& kernels, const Problem& problem, int threads,
                                     uint64_t workspace_limit) {
  const Sampler sampler(kernels, problem, score_budget(workspace_limit, threads));
  const uint64_t hq = static_cast<uint64_t>(problem.num_q_heads);
  SamplingFootprint f;
  f.scratch_per_worker = sampler.scratch_bytes();
  const uint64_t sets_per_seq = static_cast<uint64_t>(
      problem.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP ? problem.num_kv_heads : problem.num_q_heads);
  uint64_t sequences = 0, row_tasks = 0, most_keys = 0, set_bytes = 0;
  for (const Sequence& seq : problem.sequences) {
    if (!sequence_is_sampled(problem, seq)) continue;
    const std::vector<int64_t> sampled = sampled_rows(problem.sample, seq.q_len);
    const uint64_t rows = sampled.size();
    const uint64_t val_rows = validation_rows(problem.sample, seq.q_len, sampled).size();
    const uint64_t keys = static_cast<uint64_t>(seq.k_len);
    const uint64_t chunk = static_cast<uint64_t>(sampler.chunk());
    ++sequences;
    row_tasks += static_cast<uint64_t>(problem.num_kv_heads) * ((rows + chunk - 1) / chunk + (val_rows + chunk - 1) / chunk);
    most_keys = std::max(most_keys, keys);
    // rows; row_max, row_sum, kept; col_score; validation rows and masses (build_sparse_plan's
    // SampledSequence)
    f.stage1 += sizeof(int64_t) * (rows + val_rows) + hq * (3 * sizeof(float) * rows + sizeof(int64_t) * keys) +
                hq * val_rows * kMassStride * sizeof(float);
    // Each set's ranking (int32 a key) and bucket ids (a byte a key), held from stage 2 to the
    // decision.
    set_bytes += sets_per_seq * (sizeof(SelectionSet) + (sizeof(int32_t) + sizeof(uint8_t)) * keys);
    f.stripe_lists += hq * sizeof(int32_t) * keys;
  }
  f.stage1 += sequences * sizeof(SampledSequence) + row_tasks * sizeof(RowTask);
  // Stage 2: the sets' rankings and layouts, and one task's temporaries per worker (the set's
  // summed scores, f32 a key) and a decision's stripe list (int32 a key).
  const uint64_t sets = sequences * sets_per_seq;
  f.stage2 = set_bytes + (std::min<uint64_t>(sets, static_cast<uint64_t>(threads)) * sizeof(float) +
                          sizeof(int32_t)) * most_keys;
  return f;
}

uint64_t sparse_plan_bytes(const SparsePlan& plan) {
  uint64_t bytes = plan.heads.capacity() * sizeof(HeadPlan);
  for (const HeadPlan& hp : plan.heads) bytes += hp.stripes.capacity() * sizeof(int32_t);
  return bytes;
}

Status build_sparse_plan(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                         const KernelTable& kernels, const Problem& problem, bool with_kept_mass,
                         SparsePlan* plan) {
  SAMPLEATTN_RETURN_IF_ERROR(check_workspace(during, workspace_limit, "during stages 1 and 2"));
  const uint64_t pool_limit = during.pool_limit(workspace_limit);
  const int hq = problem.num_q_heads;
  const int groups = problem.num_kv_heads;
  init_dense_plan(problem, plan);
  std::vector<SampledSequence> sampled;
  sampled.reserve(static_cast<size_t>(std::count_if(problem.sequences.begin(), problem.sequences.end(),
      [&](const Sequence& seq) { return sequence_is_sampled(problem, seq); })));
  for (size_t s = 0; s < problem.sequences.size(); ++s) {
    const Sequence& seq = problem.sequences[s];
    if (!sequence_is_sampled(problem, seq)) continue;
    SampledSequence ss;
    ss.seq = static_cast<int>(s);
    ss.window = window_size(problem, seq);
    ss.rows = sampled_rows(problem.sample, seq.q_len);
    ss.rows.shrink_to_fit();  // sampling_footprint counts it at its size
    const size_t nr = ss.rows.size();
    ss.row_max.assign(hq * nr, -std::numeric_limits<float>::infinity());
    ss.row_sum.assign(hq * nr, 0.f);
    ss.kept.assign(hq * nr, 0.f);
    ss.col_score.assign(static_cast<size_t>(hq) * seq.k_len, 0);
    ss.val_rows = validation_rows(problem.sample, seq.q_len, ss.rows);
    ss.val_masses.assign(static_cast<size_t>(hq) * ss.val_rows.size() * kMassStride, 0.f);
    ss.sets.resize(static_cast<size_t>(problem.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP ? groups : hq));
    sampled.push_back(std::move(ss));
  }
  if (sampled.empty()) return Status::ok();

  Sampler sampler(kernels, problem, score_budget(workspace_limit, pool.num_threads()));
  const size_t scratch = sampler.scratch_bytes();
  const int chunk = sampler.chunk();
  const auto t_sampling = std::chrono::steady_clock::now();

  // Stage 1 tasks: (sampled sequence, group, row chunk), longest rows first.
  std::vector<RowTask> row_tasks;
  size_t num_row_tasks = 0;
  for (const SampledSequence& ss : sampled) num_row_tasks += groups * ((ss.rows.size() + chunk - 1) / chunk);
  row_tasks.reserve(num_row_tasks);
  for (size_t i = 0; i < sampled.size(); ++i) {
    const SampledSequence& ss = sampled[i];
    const int64_t nr = static_cast<int64_t>(ss.rows.size());
    for (int g = 0; g < groups; ++g) {
      for (int64_t c0 = 0; c0 < nr; c0 += chunk) {
        const int n = static_cast<int>(std::min<int64_t>(chunk, nr - c0));
        row_tasks.push_back({i, g, c0, n, static_cast<double>(ss.rows[c0 + n - 1]) * n});
      }
    }
  }
  std::stable_sort(row_tasks.begin(), row_tasks.end(), [](const RowTask& a, const RowTask& b) { return a.cost > b.cost; });
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(row_tasks.size()), scratch, pool_limit,
                                      [&](int64_t t, int, void* buf) {
    const RowTask& task = row_tasks[static_cast<size_t>(t)];
    sampler.sample_rows(sampled[task.ss], task.g, task.c0, task.n, buf);
  }));
  plan->time_sampling_s = seconds_since(t_sampling);

  // Stage 2: one selection per (sequence, query head) or per (sequence, kv group): the ranking,
  // alpha's count and the validation layout.
  const auto t_selection = std::chrono::steady_clock::now();
  const bool per_group = problem.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP;
  const int sets_per_seq = per_group ? groups : hq;
  const int heads_per_set = per_group ? problem.group : 1;
  std::atomic<bool> out_of_memory_in_task{false};
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(sampled.size()) * sets_per_seq,
                                      0, pool_limit, [&](int64_t t, int, void*) {
   try {
    SampledSequence& ss = sampled[static_cast<size_t>(t / sets_per_seq)];
    const int set = static_cast<int>(t % sets_per_seq);
    const Sequence& seq = problem.sequences[ss.seq];
    const int first_head = set * heads_per_set;
    // The set's column scores: its heads' fixed-point totals (added exactly), as f32.
    const int64_t* fixed = ss.col_score.data() + static_cast<size_t>(first_head) * seq.k_len;
    std::vector<float> summed(static_cast<size_t>(seq.k_len));
    for (int64_t j = 0; j < seq.k_len; ++j) {
      int64_t v = fixed[j];
      for (int h = 1; h < heads_per_set; ++h) v = add_fixed(v, fixed[static_cast<size_t>(h) * seq.k_len + j]);
      summed[j] = fixed_to_score(v);
    }
    const float* scores = summed.data();
    const double total = static_cast<double>(ss.rows.size()) * heads_per_set;
    const bool window_mass_counts = problem.sample.window_mass_counts == 1;
    const double outside = window_mass_counts ? std::accumulate(scores, scores + seq.k_len, 0.0) : 0.0;
    SelectionRule rule;
    rule.target = selection_target(problem.sample.alpha, total, window_mass_counts, outside);
    rule.sink_tokens = problem.sample.sink_tokens;
    rule.min_stripes = problem.sample.min_stripes;
    rule.max_stripes = problem.sample.max_stripes;
    Selection selection = rank_and_select(scores, seq.k_len, rule);
    SelectionSet& out = ss.sets[static_cast<size_t>(set)];
    out.layout = plan_validation(problem, seq, ss.window, selection.ranked.data(),
                                 static_cast<int64_t>(selection.ranked.size()), selection.count, !ss.val_rows.empty());
    out.ranked = std::move(selection.ranked);
   } catch (const std::bad_alloc&) {
    out_of_memory_in_task = true;  // exceptions must not leave a pool task
   }
  }));
  if (out_of_memory_in_task) return out_of_memory("out of memory while selecting stripes");

  // Validation rows: their exact attention, added up per bucket of their set's ranking.
  std::vector<RowTask> val_tasks;
  for (size_t i = 0; i < sampled.size(); ++i) {
    const int64_t nv = static_cast<int64_t>(sampled[i].val_rows.size());
    for (int g = 0; g < groups; ++g) {
      for (int64_t c0 = 0; c0 < nv; c0 += chunk) {
        const int n = static_cast<int>(std::min<int64_t>(chunk, nv - c0));
        val_tasks.push_back({i, g, c0, n, static_cast<double>(sampled[i].val_rows[c0 + n - 1]) * n});
      }
    }
  }
  std::stable_sort(val_tasks.begin(), val_tasks.end(), [](const RowTask& a, const RowTask& b) { return a.cost > b.cost; });
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(val_tasks.size()), scratch, pool_limit,
                                      [&](int64_t t, int, void* buf) {
    const RowTask& task = val_tasks[static_cast<size_t>(t)];
    sampler.validate_rows(sampled[task.ss], task.g, task.c0, task.n, buf);
  }));

  // The decision per set (core/validation.h): alpha's stripes, more of the ranking, or dense.
  std::vector<HeadValidation> per_head(static_cast<size_t>(heads_per_set));
  for (SampledSequence& ss : sampled) {
    const int64_t nv = static_cast<int64_t>(ss.val_rows.size());
    for (int set = 0; set < sets_per_seq; ++set) {
      const SelectionSet& ssel = ss.sets[static_cast<size_t>(set)];
      const int first_head = set * heads_per_set;
      const ValidationDecision d =
          decide_validation(ssel.layout, ss.val_masses.data() + static_cast<size_t>(first_head) * nv * kMassStride,
                            kMassStride, heads_per_set, nv,
                            ValidationBar{problem.sample.min_kept, problem.sample.max_lost}, per_head.data());
      std::vector<int32_t> stripes;
      if (!d.dense()) stripes = decided_stripes(ssel.layout, ssel.ranked.data(), d.ranked);
      for (int h = 0; h < heads_per_set; ++h) {
        HeadPlan& hp = plan->heads[static_cast<size_t>(ss.seq) * hq + first_head + h];
        hp.decision = d.decision;
        hp.alpha_stripes = ssel.layout.sinks + ssel.layout.alpha_ranked;
        if (d.dense()) continue;  // stays dense, kept mass 1
        hp.dense = false;
        hp.window = ss.window;
        hp.stripes = stripes;
        hp.val_min = per_head[h].min;
        hp.val_p1 = per_head[h].p1;
        hp.val_p5 = per_head[h].p5;
        hp.val_mean = per_head[h].mean;
        hp.val_lost_rms = per_head[h].rms_lost;
      }
    }
    // Stage 2's state is done with: give it back before the attention.
    std::vector<SelectionSet>().swap(ss.sets);
    std::vector<float>().swap(ss.val_masses);
  }
  plan->time_selection_s = seconds_since(t_selection);

  // Kept mass (CRA) of the sampled rows under the chosen mask, for the statistics.
  if (!with_kept_mass) return Status::ok();
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(row_tasks.size()), scratch, pool_limit,
                                      [&](int64_t t, int, void* buf) {
    const RowTask& task = row_tasks[static_cast<size_t>(t)];
    sampler.kept_mass(sampled[task.ss], *plan, task.g, task.c0, task.n, buf);
  }));
  for (const SampledSequence& ss : sampled) {
    const size_t nr = ss.rows.size();
    for (int h = 0; h < hq; ++h) {
      HeadPlan& hp = plan->heads[static_cast<size_t>(ss.seq) * hq + h];
      if (hp.dense) continue;  // ran dense (max_density): everything kept
      set_kept_mass(&hp, ss.kept.data() + h * nr, static_cast<int64_t>(nr));
    }
  }
  return Status::ok();
}

}  // namespace sampleattn::cpu
