#include "cpu/sampling.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>

#include "core/mask.h"
#include "core/score_mod.h"
#include "core/sharded_selection.h"
#include "core/timing.h"
#include "core/validation.h"
#include "cpu/call_buffers.h"
#include "cpu/flash_driver.h"
#include "cpu/score_fixed_point.h"
#include "cpu/kv_rows.h"
#include "cpu/scratch_carver.h"
#include "cpu/stripe_selection.h"
#include "cpu/workspace.h"

namespace sampleattn::cpu {
namespace {

// Score buffers of the fused stage-1 pass when a chunk keeps its scores (all but the rescoring
// paths, FlashPath::rescore): a chunk's rows x all the keys they see, kept between the row
// statistics and the column sums. The chunk shrinks with the key count to stay near this, and
// under a context's workspace limit the buffers of all workers take at most a quarter of it.
constexpr int64_t kScoreBufferBytes = int64_t{16} << 20;

int64_t score_budget(uint64_t workspace_limit, int threads) {
  if (workspace_limit == 0) return kScoreBufferBytes;
  return std::min<int64_t>(kScoreBufferBytes, static_cast<int64_t>(workspace_limit / (4 * static_cast<uint64_t>(threads))));
}

// One stage-1 task: rows [c0, c0 + n) of sampled sequence ss, kv group g.
struct RowTask { size_t ss; int g; int64_t c0; int n; double cost; };

// Stage 2's state of one selection set, kept until validation has decided.
struct SelectionSet {
  std::vector<int32_t> ranked;  // the non-sink columns in rank order
  ValidationLayout layout;
  int64_t look_ranked = 0;      // the ranked stripes kLookAlpha keeps (sample.look > 0)
};

// Keys [begin, end) of a sequence.
struct KeySpan {
  int64_t begin, end;
};

// Stage-1 state of one sampled sequence.
struct SampledSequence {
  int seq = 0;
  int64_t window = 0;
  // The keys this process scores: all of them, or in a sharded call the runs it holds (ascending,
  // disjoint); the scores, sums and masses below are then this process's part.
  std::vector<KeySpan> own;
  std::vector<int64_t> rows;        // sampled local query indices, ascending
  std::vector<int64_t> q_tokens;    // [row]: its token in the Q tensor the sampler reads
  std::vector<float> row_max;       // [q_head][row], log2 units
  std::vector<float> row_sum;       // [q_head][row]
  std::vector<int64_t> col_score;   // [q_head][k_len], fixed point (kScoreBits)
  std::vector<float> kept;          // [q_head][row], kept mass under the chosen mask
  std::vector<int64_t> val_rows;    // validation rows (local indices, ascending, none sampled)
  std::vector<int64_t> val_q_tokens;
  std::vector<float> val_max, val_sum;  // [q_head][val row]: their statistics (sharded calls: over all)
  std::vector<uint32_t> val_masses;  // [q_head][val row][kValidationMassStride], fixed point (validation_units.h)
  std::vector<SelectionSet> sets;   // per selection set
  // The key tiles this process reads, each at a slot of packed_k and of a chunk's kept scores:
  // [key tile] -> slot, -1 for a tile without a key of `own`; empty: every tile, at its index
  // (one process).
  std::vector<int32_t> tile_slot;
  int64_t slots = 0;  // tiles with a slot
  // Its keys packed once for every chunk of rows (pack_keys_once), [kv group][slot]; null: each
  // chunk packs the tiles it reads.
  char* packed_k = nullptr;

  // The slot of the key tile that starts at t0.
  int64_t slot(int64_t t0, int key_tile) const {
    return tile_slot.empty() ? t0 / key_tile : tile_slot[static_cast<size_t>(t0 / key_tile)];
  }
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
  float* scores;      // [key tile][row][key_tile] for all the tiles a chunk sees, or one tile
  float* columns;     // one head's column sums of a chunk, f32
  void* q_packed;
  void* k_packed;
};

// The one definition of a sampling worker's scratch: sizes with a null base. `keys` is the most
// keys a sampled sequence has, rounded up to whole tiles; `score_keys` the keys whose scores a
// chunk keeps (all of them, or one tile when they are computed again: Sampler).
Scratch carve(ScratchCarver c, const FlashPath& path, int rows, int key_tile, int64_t keys, int64_t score_keys, int d,
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
  s.scores = c.take<float>(static_cast<size_t>(rows) * score_keys);
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

// The fewest rows a head that a chunk of sampled rows holds: 32 stacked rows (sample_chunk).
int sample_chunk_least(const Problem& problem) { return std::max(1, 32 / problem.group); }

// Sampled rows per chunk and query head: a full query block, fewer when the chunk's scores
// would pass the budget, but at least 32 stacked rows (K packing per chunk must stay small
// beside the products).
int sample_chunk(const KernelTable& kernels, const Problem& problem, int64_t keys, int64_t budget) {
  const int group = problem.group;
  const int64_t most = std::max(1, kernels.block_rows / group);
  const int64_t least = sample_chunk_least(problem);
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

// Bytes of every sampled sequence's keys packed once, all kv groups (the sampling path's packed K,
// whole key tiles).
uint64_t packed_key_bytes(const KernelTable& kernels, const Problem& problem) {
  const uint64_t tile_bytes = sampling_path(kernels, problem).packed_bytes(kernels.key_tile, problem.head_dim);
  uint64_t bytes = 0;
  for (const Sequence& seq : problem.sequences) {
    if (!sequence_is_sampled(problem, seq)) continue;
    const uint64_t tiles = static_cast<uint64_t>((seq.k_len + kernels.key_tile - 1) / kernels.key_tile);
    bytes += tiles * tile_bytes * static_cast<uint64_t>(problem.num_kv_heads);
  }
  return bytes;
}

// Whether stage 1 packs every sampled sequence's keys once, before its row chunks and validation
// rows, instead of once per chunk (2-core Xeon, 32K tokens, 32/8 heads, bf16 on AMX, with the
// scores computed again: stage 1 0.77-0.81 -> 0.66 s, stage 2 with the validation rows 0.28 ->
// 0.25 s; 2-core Zen 3, f32, scores kept: no change measured): when the packed keys
// (K in the sampling path's precision, up to 4x an int8 cache's bytes) take at most a quarter
// of the workspace limit, or at most 1 GiB without a limit.
constexpr uint64_t kPackedKeysUnlimitedBytes = uint64_t{1} << 30;
bool packed_keys_fit(uint64_t bytes, uint64_t workspace_limit) {
  return workspace_limit == 0 ? bytes <= kPackedKeysUnlimitedBytes : bytes <= workspace_limit / 4;
}
bool packs_keys_once(const KernelTable& kernels, const Problem& problem, uint64_t workspace_limit) {
  return packed_keys_fit(packed_key_bytes(kernels, problem), workspace_limit);
}

class Sampler {
 public:
  // recompute (keys packed once, on a FlashPath::rescore path): a chunk keeps no scores: it
  // computes each key tile's scores again for the column sums (and the validation masses) after
  // the row statistics, which costs a second pass of QK products on packed keys instead of
  // writing and reading back every score of the chunk (16 MB of them, past the caches); its
  // chunks are then whole query blocks, as the score budget no longer bounds them.
  // Else a chunk keeps the scores of kept_keys keys (whole tiles; 0: the most keys of a sampled
  // sequence), the slots of the tiles it reads (SampledSequence::slot), within the budget.
  Sampler(const KernelTable& kernels, const Problem& problem, int64_t score_budget, bool recompute = false,
          int64_t kept_keys = 0)
      : k_(kernels), path_(sampling_path(kernels, problem)), p_(problem), keys_(sampled_keys(kernels, problem)),
        kept_keys_(kept_keys > 0 ? kept_keys : keys_),
        recompute_(recompute),
        chunk_(sample_chunk(kernels, problem, kept_keys_, recompute ? std::numeric_limits<int64_t>::max() : score_budget)),
        k_tile_bytes_(path_.packed_bytes(kernels.key_tile, problem.head_dim)),
        softcap_log2_(problem.score_mod(0).softcap_log2),
        modifies_scores_(softcap_log2_ > 0.f || !problem.alibi_slopes.empty()) {}

  size_t scratch_bytes() const {
    size_t bytes = 0;
    carve(ScratchCarver(), path_, chunk_ * p_.group, k_.key_tile, keys_, score_keys(), p_.head_dim, &bytes);
    return bytes;
  }
  Scratch scratch(void* base) const {
    return carve(ScratchCarver(base), path_, chunk_ * p_.group, k_.key_tile, keys_, score_keys(), p_.head_dim);
  }
  int chunk() const { return chunk_; }
  int64_t score_keys() const { return recompute_ ? k_.key_tile : kept_keys_; }

  // The scores of the n rows of query head h (stacked rows h * n ..) over key tile [t0, t0 + nk)
  // as full_rows left them (kept), or computed again into the scratch (recompute_) for its rows
  // [a, b) (the ones that read the tile; the others are left as they were); row i at
  // + i * key_tile.
  const float* head_tile_scores(const Scratch& s, const SampledSequence& ss, int g, int h, int n, int64_t t0,
                                int nk, int a, int b) const {
    const int tile = k_.key_tile;
    if (!recompute_) {
      return s.scores + static_cast<size_t>(ss.slot(t0, tile)) * (static_cast<size_t>(n) * p_.group * tile) +
             static_cast<size_t>(h) * n * tile;
    }
    const char* q =
        static_cast<const char*>(s.q_packed) + (static_cast<size_t>(h) * n + a) * p_.head_dim * path_.q_elem_bytes;
    float* rows = s.scores + static_cast<size_t>(a) * tile;
    path_.scores(q, b - a, key_tile(s, ss, g, t0, nk), nk, p_.head_dim, rows, tile,
                 qk_scale(path_, scale_log2(p_.scale)));
    modify_tile(s, rows, b - a, t0, nk, h * n + a);
    return s.scores;
  }
  // The run [*a, *b) of rows i in [0, n) for which reads(i) holds, from the first to the last
  // (positions ascend within a head, so the rows that read a key tile are a run).
  template <typename Reads>
  static bool row_run(int n, Reads reads, int* a, int* b) {
    *a = 0;
    *b = n;
    while (*a < *b && !reads(*a)) ++*a;
    while (*b > *a && !reads(*b - 1)) --*b;
    return *a < *b;
  }

  // score_rows' packing of its rows into a scratch: again, for add_columns or add_masses on
  // another scratch when the scores are computed again (recompute_).
  int pack_chunk_rows(const SampledSequence& ss, bool validation, int g, int64_t c0, int n, void* scratch) const {
    return pack_rows(this->scratch(scratch), ss, validation ? ss.val_rows : ss.rows,
                     validation ? ss.val_q_tokens : ss.q_tokens, g, c0, n);
  }

  // Packs the sampled rows [c0, c0 + n) of kv group g (all its query heads, head-major) into
  // s.q_packed and fills s.positions. Returns the number of stacked rows.
  int pack_rows(const Scratch& s, const SampledSequence& ss, const std::vector<int64_t>& rows,
                const std::vector<int64_t>& tokens, int g, int64_t c0, int n) const {
    const Sequence& seq = p_.sequences[ss.seq];
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      const float slope = p_.score_mod(head).alibi_log2;
      for (int i = 0; i < n; ++i) {
        const int64_t local = rows[c0 + i];
        s.q_offsets[h * n + i] = tokens[c0 + i] * p_.q.token_stride + head * p_.q.head_stride;
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

  // Packs keys [t0, t0 + n) of sequence `seq`, kv head g, into dst.
  void pack_keys(const Scratch& s, int seq, int g, int64_t t0, int n, void* dst) const {
    s.kv_rows.fill_run(p_, seq, g, t0, n);
    path_.pack_k(s.kv_rows.k(p_), n, p_.head_dim, dst);
  }

  // Keys [t0, t0 + n) of kv head g packed: the sequence's packed keys when the call has them and
  // these are one of their tiles, else packed now into s.k_packed.
  const void* key_tile(const Scratch& s, const SampledSequence& ss, int g, int64_t t0, int n) const {
    const int64_t k_len = p_.sequences[ss.seq].k_len;
    if (ss.packed_k != nullptr && t0 % k_.key_tile == 0 && n == std::min<int64_t>(k_.key_tile, k_len - t0)) {
      const int64_t slot = ss.slot(t0, k_.key_tile);
      if (slot >= 0) return ss.packed_k + static_cast<size_t>(g * ss.slots + slot) * k_tile_bytes_;
    }
    pack_keys(s, ss.seq, g, t0, n, s.k_packed);
    return s.k_packed;
  }

  // Bytes of one packed key tile; pack_keys_once's buffer holds ss.slots of them per kv group.
  size_t key_tile_bytes() const { return k_tile_bytes_; }

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
  // The same for a contiguous key tile [t0, t0 + nk), on stacked rows [r0, r0 + m).
  void modify_tile(const Scratch& s, float* scores, int m, int64_t t0, int nk, int r0 = 0) const {
    if (!modifies_scores_) return;
    for (int c = 0; c < nk; ++c) s.key_pos[c] = static_cast<int32_t>(t0 + c);
    modify(s, scores, r0, m, nk, s.key_pos);
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

  // The (modified) scores of the m packed rows against every key of ss.own the model shows them,
  // keys model_lo .. p (key tiles of s.scores at their index from key 0, kept; a tile no row
  // sees is skipped), and their exact row max and sum of exp2 over those keys.
  void full_rows(const Scratch& s, const SampledSequence& ss, int g, int m, int n) const {
    const Sequence& seq = p_.sequences[ss.seq];
    const int tile = k_.key_tile;
    const size_t tile_floats = static_cast<size_t>(m) * tile;
    std::fill(s.row_max, s.row_max + m, -std::numeric_limits<float>::infinity());
    std::fill(s.row_sum, s.row_sum + m, 0.f);
    const KeyRange keys = row_keys(s, n);
    const int64_t left = p_.window_left;
    for (const KeySpan& own : ss.own) {
      // Two spans may share a tile: its scores are computed again, the same values.
      const int64_t end = std::min(keys.end, own.end);
      for (int64_t t0 = std::max(keys.begin, own.begin / tile * tile); t0 < end; t0 += tile) {
        const int nk = static_cast<int>(std::min<int64_t>(tile, seq.k_len - t0));
        if (!spans(s, m, t0, nk, [left, own](int64_t p, int64_t* lo, int64_t* hi) {
              *lo = std::max(model_lo(p, left), own.begin);
              *hi = std::min(causal_end(p), own.end);
            })) {
          continue;
        }
        float* scores = recompute_ ? s.scores : s.scores + static_cast<size_t>(ss.slot(t0, tile)) * tile_floats;
        const void* keys_packed = key_tile(s, ss, g, t0, nk);
        // Each head's rows that see the tile (a run: positions ascend within a head), not the
        // others: a chunk of rows far apart (validation rows, two sampled blocks) would compute
        // the scores of its early rows against every later tile. The rows left out keep what the
        // scratch held; every reader skips rows with an empty span.
        for (int h = 0; h < p_.group; ++h) {
          int a, b;
          if (!row_run(n, [&](int i) { return s.lo[h * n + i] < s.hi[h * n + i]; }, &a, &b)) continue;
          a += h * n;
          b += h * n;
          float* rows = scores + static_cast<size_t>(a) * tile;
          path_.scores(static_cast<const char*>(s.q_packed) + static_cast<size_t>(a) * p_.head_dim * path_.q_elem_bytes,
                       b - a, keys_packed, nk, p_.head_dim, rows, tile, qk_scale(path_, scale_log2(p_.scale)));
          modify_tile(s, rows, b - a, t0, nk, a);
        }
        k_.row_stats(scores, tile, m, nk, s.lo, s.hi, s.row_max, s.row_sum);
      }
    }
  }

  // Copies the row statistics of packed rows (n per head of group g) between the scratch and
  // the sequence's [q_head][row] arrays (nr rows a head), either way.
  void save_stats(const Scratch& s, float* max, float* sum, int64_t nr, int g, int64_t c0, int n) const {
    for (int h = 0; h < p_.group; ++h) {
      const int64_t at = (g * p_.group + h) * nr + c0;
      std::copy(s.row_max + h * n, s.row_max + (h + 1) * n, max + at);
      std::copy(s.row_sum + h * n, s.row_sum + (h + 1) * n, sum + at);
    }
  }
  void load_stats(const Scratch& s, const float* max, const float* sum, int64_t nr, int g, int64_t c0, int n) const {
    for (int h = 0; h < p_.group; ++h) {
      const int64_t at = (g * p_.group + h) * nr + c0;
      std::copy(max + at, max + at + n, s.row_max + h * n);
      std::copy(sum + at, sum + at + n, s.row_sum + h * n);
    }
  }

  // The scores (kept in the scratch) of sampled (or validation) rows [c0, c0 + n) of group g over
  // ss.own's keys, and their statistics, into row_max/row_sum (val_max/val_sum).
  void score_rows(SampledSequence& ss, bool validation, int g, int64_t c0, int n, void* scratch) const {
    const Scratch s = this->scratch(scratch);
    const auto& rows = validation ? ss.val_rows : ss.rows;
    const int m = pack_chunk_rows(ss, validation, g, c0, n, scratch);
    full_rows(s, ss, g, m, n);
    save_stats(s, validation ? ss.val_max.data() : ss.row_max.data(), validation ? ss.val_sum.data() : ss.row_sum.data(),
               static_cast<int64_t>(rows.size()), g, c0, n);
  }

  // Stage 1 for sampled rows [c0, c0 + n) of kv group g (all its query heads): the scores of
  // every key the rows see are computed once and kept; the exact row max and sum of exp2 come
  // from them (or, with global_stats, from ss: a sharded call's statistics over every process's
  // keys), then each row's probabilities are added per column (rows in order, in f32) and the
  // chunk's column sums go into the sequence's fixed-point totals.
  void sample_rows(SampledSequence& ss, int g, int64_t c0, int n, void* scratch, bool global_stats) const {
    score_rows(ss, false, g, c0, n, scratch);
    add_columns(ss, g, c0, n, scratch, global_stats);
  }

  // sample_rows' second half, on the scratch partial_stats left (its scores and statistics; with
  // global_stats, ss.row_max/row_sum: a sharded call's, over every process's keys).
  void add_columns(SampledSequence& ss, int g, int64_t c0, int n, void* scratch, bool global_stats) const {
    const Scratch s = this->scratch(scratch);
    const Sequence& seq = p_.sequences[ss.seq];
    const int m = n * p_.group;
    const int tile = k_.key_tile;
    const KeyRange keys = row_keys(s, n);
    const int64_t nr = static_cast<int64_t>(ss.rows.size());
    if (global_stats) load_stats(s, ss.row_max.data(), ss.row_sum.data(), nr, g, c0, n);
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
      for (const KeySpan& own : ss.own) {
        const int64_t end = std::min(keys.end, own.end);
        for (int64_t t0 = std::max(keys.begin, own.begin / tile * tile); t0 < end; t0 += tile) {
          const int nk = static_cast<int>(std::min<int64_t>(tile, seq.k_len - t0));
          for (int i = 0; i < n; ++i) {
            const int64_t p = s.positions[r0 + i];
            const int64_t lo = std::max(sample_column_begin(p, p_.window_left), own.begin);
            const int64_t hi = std::min(sample_column_end(p, shift), own.end);
            s.lo[r0 + i] = static_cast<int32_t>(std::clamp<int64_t>(lo - t0, 0, nk));
            s.hi[r0 + i] = static_cast<int32_t>(std::clamp<int64_t>(hi - t0, 0, nk));
          }
          int a, b;
          if (!row_run(n, [&](int i) { return s.lo[r0 + i] < s.hi[r0 + i]; }, &a, &b)) continue;
          k_.accumulate_columns(head_tile_scores(s, ss, g, h, n, t0, nk, a, b), tile, n, nk, s.lo + r0, s.hi + r0,
                                s.row_max + r0, s.row_scale + r0, s.columns + t0);
        }
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
  // cost budget has no buckets and is skipped. global_stats: as sample_rows'.
  void validate_rows(SampledSequence& ss, int g, int64_t c0, int n, void* scratch, bool global_stats) const {
    score_rows(ss, true, g, c0, n, scratch);
    add_masses(ss, g, c0, n, scratch, global_stats);
  }

  // validate_rows' second half, on the scratch score_rows(validation) left (its scores and
  // statistics; with global_stats, ss.val_max/val_sum: a sharded call's, over every process).
  void add_masses(SampledSequence& ss, int g, int64_t c0, int n, void* scratch, bool global_stats) const {
    const Scratch s = this->scratch(scratch);
    const Sequence& seq = p_.sequences[ss.seq];
    const int tile = k_.key_tile;
    const int64_t nv = static_cast<int64_t>(ss.val_rows.size());
    if (global_stats) load_stats(s, ss.val_max.data(), ss.val_sum.data(), nv, g, c0, n);
    const bool per_group = p_.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP;
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      const ValidationLayout& layout = ss.sets[per_group ? g : head].layout;
      if (layout.bucket.empty()) continue;
      const uint8_t* bucket = layout.bucket.data();
      const auto out = [&](int i) { return ss.val_masses.data() + (static_cast<size_t>(head) * nv + c0 + i) * kValidationMassStride; };
      for (int i = 0; i < n; ++i) std::fill(out(i), out(i) + kValidationMassStride, 0u);
      // Key tile by key tile (each tile's scores read, or computed, once for the head's rows),
      // each row adding its part in tile order.
      for (const KeySpan& own : ss.own) {
        const auto keys_of = [&](int i, int64_t* first, int64_t* end) {  // the row's keys: first .. p
          const int64_t p = s.positions[h * n + i];
          *first = std::max(model_lo(p, p_.window_left), own.begin);
          *end = std::min(causal_end(p), own.end);
        };
        int64_t begin = std::numeric_limits<int64_t>::max(), last = 0;
        for (int i = 0; i < n; ++i) {
          int64_t first, end;
          keys_of(i, &first, &end);
          if (first < end && s.row_sum[h * n + i] > 0) {
            begin = std::min(begin, first / tile * tile);
            last = std::max(last, end);
          }
        }
        for (int64_t t0 = begin; t0 < last; t0 += tile) {
          const int nk = static_cast<int>(std::min<int64_t>(tile, seq.k_len - t0));
          // Whether row i reads the tile, and its keys first .. end.
          const auto reads = [&](int i, int64_t* first, int64_t* end) {
            keys_of(i, first, end);
            return s.row_sum[h * n + i] > 0 && *first < *end && t0 >= *first / tile * tile && t0 < *end;
          };
          int first_row, end_row;
          if (!row_run(n, [&](int i) { int64_t f, e; return reads(i, &f, &e); }, &first_row, &end_row)) continue;
          const float* scores = head_tile_scores(s, ss, g, h, n, t0, nk, first_row, end_row);
          for (int i = first_row; i < end_row; ++i) {
            int64_t first, end;
            if (!reads(i, &first, &end)) continue;
            const int r = h * n + i;
            const int64_t stripe_end = stripe_limit(s.positions[r], ss.window) + 1;  // columns [0, stripe_end) are stripe candidates
            const int lo = static_cast<int>(std::max<int64_t>(first - t0, 0));
            const int hi = static_cast<int>(std::min<int64_t>(nk, end - t0));
            const int split = static_cast<int>(std::clamp<int64_t>(stripe_end - t0, lo, hi));
            k_.bucket_masses(scores + static_cast<size_t>(i) * tile, lo, split, hi, s.row_max[r], 1.f / s.row_sum[r],
                             bucket + t0, out(i));
          }
        }
      }
    }
  }

  // The kept mass of sampled rows [c0, c0 + n) of group g under the chosen mask (over ss.own's
  // keys: a sharded call adds the processes' parts).
  void kept_mass(SampledSequence& ss, const SparsePlan& plan, int g, int64_t c0, int n, void* scratch) const {
    const Scratch s = this->scratch(scratch);
    const Sequence& seq = p_.sequences[ss.seq];
    const int m = pack_rows(s, ss, ss.rows, ss.q_tokens, g, c0, n);
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
    for (const KeySpan& own : ss.own) {
      const int64_t first = std::max(window_lo(s.positions[0], w), own.begin);
      const int64_t last = std::min(window_hi(s.positions[n - 1]), own.end);
      for (int64_t t0 = first; t0 < last; t0 += k_.key_tile) {
        const int nk = static_cast<int>(std::min<int64_t>(k_.key_tile, seq.k_len - t0));
        if (!spans(s, m, t0, nk, [&](int64_t p, int64_t* lo, int64_t* hi) {
              *lo = std::max(window_lo(p, w), own.begin);
              *hi = std::min(window_hi(p), own.end);
            })) {
          continue;
        }
        path_.scores(s.q_packed, m, key_tile(s, ss, g, t0, nk), nk, p_.head_dim, s.scores, k_.key_tile,
                     qk_scale(path_, scale_log2(p_.scale)));
        modify_tile(s, s.scores, m, t0, nk);
        k_.row_stats(s.scores, k_.key_tile, m, nk, s.lo, s.hi, s.row_max, s.row_sum);
      }
    }
    harvest();
    // Stripe keys, per query head (each head may have its own set): row p sees the run
    // [begin, end) of its head's stripe list (visible_stripes), packed here tile by tile; of
    // them, the stripes within each of ss.own's spans.
    reset();
    for (int h = 0; h < p_.group; ++h) {
      const int head = g * p_.group + h;
      const HeadPlan& hp = plan.head(ss.seq, head, p_.num_q_heads);
      const int row0 = h * n;
      for (int i = 0; i < n; ++i) {
        const StripeRun run = visible_stripes(hp, s.positions[row0 + i], p_.window_left);
        s.stripe_begin[i] = run.begin;
        s.stripe_end[i] = run.end;
      }
      for (const KeySpan& own : ss.own) {
        const int64_t own_first = std::lower_bound(hp.stripes.begin(), hp.stripes.end(), own.begin) - hp.stripes.begin();
        const int64_t own_last = std::lower_bound(hp.stripes.begin(), hp.stripes.end(), own.end) - hp.stripes.begin();
        int64_t run_first = own_last, run_last = own_first;
        for (int i = 0; i < n; ++i) {
          const int64_t b = std::max(s.stripe_begin[i], own_first), e = std::min(s.stripe_end[i], own_last);
          if (b < e) {
            run_first = std::min(run_first, b);
            run_last = std::max(run_last, e);
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
            const int64_t b = std::max(s.stripe_begin[i], own_first), e = std::min(s.stripe_end[i], own_last);
            s.lo[row0 + i] = static_cast<int32_t>(std::clamp<int64_t>(b - t0, 0, nk));
            s.hi[row0 + i] = static_cast<int32_t>(std::clamp<int64_t>(e - t0, 0, nk));
          }
          k_.row_stats(s.scores, k_.key_tile, n, nk, s.lo + row0, s.hi + row0, s.row_max + row0, s.row_sum + row0);
        }
      }
    }
    harvest();
  }

 private:
  const KernelTable& k_;
  const FlashPath& path_;
  const Problem& p_;
  int64_t keys_;           // the most keys of a sampled sequence (whole tiles): a chunk's column sums
  int64_t kept_keys_;      // the keys whose scores a chunk keeps (whole tiles)
  bool recompute_;         // scores computed again per tile instead of kept (a rescoring path)
  int chunk_;
  size_t k_tile_bytes_;    // one packed key tile
  float softcap_log2_;     // the model's softcap in log2 units, 0 = none
  bool modifies_scores_;   // softcap or ALiBi: stage 1 modifies its scores as the attention does
};

// Bytes of the sampled sequences' key tiles that have a slot, packed, all kv groups.
uint64_t slot_key_bytes(const std::vector<SampledSequence>& sampled, int groups, size_t tile_bytes) {
  uint64_t bytes = 0;
  for (const SampledSequence& ss : sampled) bytes += static_cast<uint64_t>(ss.slots) * groups * tile_bytes;
  return bytes;
}

// Packs every sampled sequence's key tiles that have a slot (ss.slots of them: all, in one
// process), each kv group, once into *buffer, for every chunk of rows and the validation rows, and
// points ss.packed_k at them.
Status pack_keys_once(ThreadPool& pool, uint64_t pool_limit, const Sampler& sampler, const Problem& problem,
                      int key_tile, std::vector<SampledSequence>& sampled, CallBuffers::Lease* buffer) {
  const int groups = problem.num_kv_heads;
  *buffer = pool.call_buffers().take(std::max<uint64_t>(slot_key_bytes(sampled, groups, sampler.key_tile_bytes()), 64));
  if (!*buffer) return out_of_memory("cannot allocate the sampled sequences' packed keys");
  std::vector<int64_t> first_task;  // per sampled sequence: its first task, one per (group, slot)
  std::vector<std::vector<int64_t>> slot_t0(sampled.size());  // per sampled sequence: each slot's tile start
  int64_t tasks = 0;
  char* at = buffer->get();
  try {
    for (size_t i = 0; i < sampled.size(); ++i) {
      SampledSequence& ss = sampled[i];
      const int64_t tiles = (problem.sequences[ss.seq].k_len + key_tile - 1) / key_tile;
      for (int64_t t = 0; t < tiles; ++t) {
        if (ss.slot(t * key_tile, key_tile) >= 0) slot_t0[i].push_back(t * key_tile);
      }
      ss.packed_k = at;
      at += static_cast<size_t>(ss.slots) * groups * sampler.key_tile_bytes();
      first_task.push_back(tasks);
      tasks += ss.slots * groups;
    }
  } catch (const std::bad_alloc&) {
    return out_of_memory("out of memory for the packed keys' task list");
  }
  return pool.run(tasks, sampler.scratch_bytes(), pool_limit, [&](int64_t t, int, void* buf) {
    const size_t i = static_cast<size_t>(std::upper_bound(first_task.begin(), first_task.end(), t) - first_task.begin() - 1);
    SampledSequence& ss = sampled[i];
    const int64_t local = t - first_task[i];  // g * slots + slot
    const int g = static_cast<int>(local / ss.slots);
    const int64_t t0 = slot_t0[i][static_cast<size_t>(local % ss.slots)];
    const int nk = static_cast<int>(std::min<int64_t>(key_tile, problem.sequences[ss.seq].k_len - t0));
    sampler.pack_keys(sampler.scratch(buf), ss.seq, g, t0, nk, ss.packed_k + static_cast<size_t>(local) * sampler.key_tile_bytes());
  });
}

}  // namespace

SamplingFootprint sampling_footprint(const KernelTable& kernels, const Problem& problem, int threads,
                                     uint64_t workspace_limit) {
  const bool keys_once = packs_keys_once(kernels, problem, workspace_limit);
  const Sampler sampler(kernels, problem, score_budget(workspace_limit, threads),
                        keys_once && sampling_path(kernels, problem).rescore);
  const uint64_t hq = static_cast<uint64_t>(problem.num_q_heads);
  SamplingFootprint f;
  f.scratch_per_worker = sampler.scratch_bytes();
  if (keys_once) f.stage1 += packed_key_bytes(kernels, problem);
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
    // rows and their Q tokens; row_max, row_sum, kept; col_score; validation rows, their tokens,
    // statistics and masses (build_sparse_plan's SampledSequence)
    f.stage1 += 2 * sizeof(int64_t) * (rows + val_rows) + hq * (3 * sizeof(float) * rows + sizeof(int64_t) * keys) +
                hq * val_rows * (kValidationMassStride * sizeof(uint32_t) + 2 * sizeof(float));
    // Each set's ranking (int32 a key) and bucket ids (a byte a key), held from stage 2 to the
    // decision.
    set_bytes += sets_per_seq * (sizeof(SelectionSet) + (sizeof(int32_t) + sizeof(uint8_t)) * keys);
    f.stripe_lists += hq * sizeof(int32_t) * keys;
  }
  // row_tasks cuts rows further while a step has fewer tasks than threads; each cut adds at most
  // one chunk a (sequence, kv group), which the step had before, so at most `threads` more a step.
  if (sequences > 0) row_tasks += 2 * static_cast<uint64_t>(std::max(threads, 0));
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
  for (const HeadPlan& hp : plan.heads) {
    bytes += (hp.stripes.capacity() + hp.dense_rows.capacity() + hp.look_stripes.capacity()) * sizeof(int32_t);
  }
  return bytes;
}

namespace {

// The stage-1 state of every sampled sequence of a call (no scores yet): rows, validation rows
// and their Q tokens (as the call's Q tensor holds them), every key owned.
std::vector<SampledSequence> sampled_sequences(const Problem& problem) {
  const int hq = problem.num_q_heads;
  const int groups = problem.num_kv_heads;
  std::vector<SampledSequence> sampled;
  sampled.reserve(static_cast<size_t>(std::count_if(problem.sequences.begin(), problem.sequences.end(),
      [&](const Sequence& seq) { return sequence_is_sampled(problem, seq); })));
  for (size_t s = 0; s < problem.sequences.size(); ++s) {
    const Sequence& seq = problem.sequences[s];
    if (!sequence_is_sampled(problem, seq)) continue;
    SampledSequence ss;
    ss.seq = static_cast<int>(s);
    ss.window = window_size(problem, seq);
    ss.own = {{0, seq.k_len}};
    ss.rows = sampled_rows(problem.sample, seq.q_len);
    ss.rows.shrink_to_fit();  // sampling_footprint counts it at its size
    const size_t nr = ss.rows.size();
    ss.q_tokens.resize(nr);
    for (size_t i = 0; i < nr; ++i) ss.q_tokens[i] = seq.q_begin + ss.rows[i];
    ss.row_max.assign(hq * nr, -std::numeric_limits<float>::infinity());
    ss.row_sum.assign(hq * nr, 0.f);
    ss.kept.assign(hq * nr, 0.f);
    ss.col_score.assign(static_cast<size_t>(hq) * seq.k_len, 0);
    ss.val_rows = validation_rows(problem.sample, seq.q_len, ss.rows);
    ss.val_q_tokens.resize(ss.val_rows.size());
    for (size_t i = 0; i < ss.val_rows.size(); ++i) ss.val_q_tokens[i] = seq.q_begin + ss.val_rows[i];
    ss.val_masses.assign(static_cast<size_t>(hq) * ss.val_rows.size() * kValidationMassStride, 0u);
    ss.val_max.assign(static_cast<size_t>(hq) * ss.val_rows.size(), -std::numeric_limits<float>::infinity());
    ss.val_sum.assign(static_cast<size_t>(hq) * ss.val_rows.size(), 0.f);
    ss.sets.resize(static_cast<size_t>(problem.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP ? groups : hq));
    sampled.push_back(std::move(ss));
  }
  return sampled;
}

// Tasks over (sampled sequence, group, chunk of rows), longest rows first: the sampled rows or
// the validation rows. Chunks of `chunk` rows (the last shorter); with `threads` > 0, when that
// gives fewer tasks than threads, each sequence's rows are cut into more and even chunks, of at
// least `least` rows, until every thread has one: a 2K-token chunk of a prefill samples 2 blocks
// of 64 rows a head, one chunk a kv group on the amx table (256 rows a head), so its 8 kv groups
// kept 8 of 16 threads in stage 1 and in validation. A row's results do not depend on its chunk
// (the same products; column sums and masses are added exactly), so the mask does not either.
std::vector<RowTask> row_tasks(const std::vector<SampledSequence>& sampled, bool validation, int groups, int chunk,
                               int least = 1, int threads = 0) {
  auto rows_of = [&](const SampledSequence& ss) {
    return static_cast<int64_t>((validation ? ss.val_rows : ss.rows).size());
  };
  // The most chunks nr rows make (each of at least `least` rows), and their chunks when each
  // sequence's rows are to be cut into at least `split`.
  auto most = [&](int64_t nr) { return std::max<int64_t>(1, nr / std::max(1, least)); };
  auto pieces = [&](int64_t nr, int64_t split) {
    const int64_t fewest = (nr + chunk - 1) / chunk;
    return std::max(fewest, std::min(split, most(nr)));
  };
  int64_t split = 1;
  size_t count = 0;
  for (;;) {
    count = 0;
    bool more = false;
    for (const SampledSequence& ss : sampled) {
      const int64_t nr = rows_of(ss);
      if (nr == 0) continue;
      count += static_cast<size_t>(groups * pieces(nr, split));
      more = more || pieces(nr, split) < most(nr);
    }
    if (threads <= 0 || count >= static_cast<size_t>(threads) || !more) break;
    ++split;
  }
  std::vector<RowTask> tasks;
  tasks.reserve(count);
  for (size_t i = 0; i < sampled.size(); ++i) {
    const std::vector<int64_t>& rows = validation ? sampled[i].val_rows : sampled[i].rows;
    const int64_t nr = static_cast<int64_t>(rows.size());
    if (nr == 0) continue;
    const int64_t size = split == 1 ? chunk : (nr + pieces(nr, split) - 1) / pieces(nr, split);
    for (int g = 0; g < groups; ++g) {
      for (int64_t c0 = 0; c0 < nr; c0 += size) {
        const int n = static_cast<int>(std::min<int64_t>(size, nr - c0));
        tasks.push_back({i, g, c0, n, static_cast<double>(rows[c0 + n - 1]) * n});
      }
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const RowTask& a, const RowTask& b) { return a.cost > b.cost; });
  return tasks;
}

// A set's column scores: its heads' fixed-point totals (added exactly), as f32, at `columns`.
template <typename Columns>
void set_scores(const SampledSequence& ss, int64_t k_len, int first_head, int heads, Columns columns, float* out) {
  const int64_t* fixed = ss.col_score.data() + static_cast<size_t>(first_head) * k_len;
  int64_t i = 0;
  columns([&](int64_t j) {
    int64_t v = fixed[j];
    for (int h = 1; h < heads; ++h) v = add_fixed(v, fixed[static_cast<size_t>(h) * k_len + j]);
    out[i++] = fixed_to_score(v);
  });
}

// A set's decision into the plan of its heads (stripes: the sparse mask's list).
void apply_decision(const Problem& problem, const SampledSequence& ss, const ValidationLayout& layout, int first_head,
                    int heads, const ValidationDecision& d, const HeadValidation* per_head,
                    const std::vector<int32_t>& stripes, const std::vector<int32_t>* look_stripes,
                    SparsePlan* plan) {
  for (int h = 0; h < heads; ++h) {
    HeadPlan& hp = plan->heads[static_cast<size_t>(ss.seq) * problem.num_q_heads + first_head + h];
    hp.decision = d.decision;
    hp.alpha_stripes = layout.sinks + layout.alpha_ranked;
    if (d.dense()) continue;  // stays dense, kept mass 1
    hp.dense = false;
    hp.window = ss.window;
    hp.stripes = stripes;
    if (look_stripes != nullptr) {
      hp.look_stripes = *look_stripes;
      hp.has_look_stripes = true;
    }
    hp.val_min = per_head[h].min;
    hp.val_p1 = per_head[h].p1;
    hp.val_p5 = per_head[h].p5;
    hp.val_mean = per_head[h].mean;
    hp.val_lost_rms = per_head[h].rms_lost;
  }
}

void harvest_kept_mass(const Problem& problem, const std::vector<SampledSequence>& sampled, SparsePlan* plan) {
  const int hq = problem.num_q_heads;
  for (const SampledSequence& ss : sampled) {
    const size_t nr = ss.rows.size();
    for (int h = 0; h < hq; ++h) {
      HeadPlan& hp = plan->heads[static_cast<size_t>(ss.seq) * hq + h];
      if (hp.dense) continue;  // ran dense (max_density): everything kept
      set_kept_mass(&hp, ss.kept.data() + h * nr, static_cast<int64_t>(nr));
    }
  }
}

}  // namespace

Status build_sparse_plan(ThreadPool& pool, uint64_t workspace_limit, const WorkspaceParts& during,
                         const KernelTable& kernels, const Problem& problem, bool with_kept_mass,
                         SparsePlan* plan) {
  SAMPLEATTN_RETURN_IF_ERROR(check_workspace(during, workspace_limit, "during stages 1 and 2"));
  const uint64_t pool_limit = during.pool_limit(workspace_limit);
  const int hq = problem.num_q_heads;
  const int groups = problem.num_kv_heads;
  init_dense_plan(problem, plan);
  std::vector<SampledSequence> sampled = sampled_sequences(problem);
  if (sampled.empty()) return Status::ok();

  const bool keys_once = packs_keys_once(kernels, problem, workspace_limit);
  Sampler sampler(kernels, problem, score_budget(workspace_limit, pool.num_threads()),
                  keys_once && sampling_path(kernels, problem).rescore);
  const size_t scratch = sampler.scratch_bytes();
  const int chunk = sampler.chunk();
  const auto t_sampling = std::chrono::steady_clock::now();

  // The sampled sequences' keys, packed once for stage 1's chunks and the validation rows.
  CallBuffers::Lease packed_keys;
  if (keys_once) {
    for (SampledSequence& ss : sampled) ss.slots = (problem.sequences[ss.seq].k_len + kernels.key_tile - 1) / kernels.key_tile;
    SAMPLEATTN_RETURN_IF_ERROR(pack_keys_once(pool, pool_limit, sampler, problem, kernels.key_tile, sampled, &packed_keys));
  }

  // Stage 1 tasks: (sampled sequence, group, row chunk), longest rows first.
  const int least = sample_chunk_least(problem);
  const std::vector<RowTask> tasks = row_tasks(sampled, false, groups, chunk, least, pool.num_threads());
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(tasks.size()), scratch, pool_limit,
                                      [&](int64_t t, int, void* buf) {
    const RowTask& task = tasks[static_cast<size_t>(t)];
    sampler.sample_rows(sampled[task.ss], task.g, task.c0, task.n, buf, false);
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
    std::vector<float> summed(static_cast<size_t>(seq.k_len));
    set_scores(ss, seq.k_len, set * heads_per_set, heads_per_set,
               [&](auto&& at) { for (int64_t j = 0; j < seq.k_len; ++j) at(j); }, summed.data());
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
    if (problem.sample.look > 0.f) {
      SelectionRule reference = rule;
      reference.target = selection_target(kLookAlpha, total, window_mass_counts, outside);
      out.look_ranked = count_ranked(scores, selection.ranked, seq.k_len, reference).ranked;
    }
    out.layout = plan_validation(problem, seq, ss.window, selection.ranked.data(),
                                 static_cast<int64_t>(selection.ranked.size()), selection.count, !ss.val_rows.empty());
    out.ranked = std::move(selection.ranked);
   } catch (const std::bad_alloc&) {
    out_of_memory_in_task = true;  // exceptions must not leave a pool task
   }
  }));
  if (out_of_memory_in_task) return out_of_memory("out of memory while selecting stripes");

  // Validation rows: their exact attention, added up per bucket of their set's ranking.
  const std::vector<RowTask> val_tasks = row_tasks(sampled, true, groups, chunk, least, pool.num_threads());
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(val_tasks.size()), scratch, pool_limit,
                                      [&](int64_t t, int, void* buf) {
    const RowTask& task = val_tasks[static_cast<size_t>(t)];
    sampler.validate_rows(sampled[task.ss], task.g, task.c0, task.n, buf, false);
  }));

  // The decision per set (core/validation.h): alpha's stripes, more of the ranking, or dense.
  std::vector<HeadValidation> per_head(static_cast<size_t>(heads_per_set));
  for (SampledSequence& ss : sampled) {
    const int64_t nv = static_cast<int64_t>(ss.val_rows.size());
    for (int set = 0; set < sets_per_seq; ++set) {
      const SelectionSet& ssel = ss.sets[static_cast<size_t>(set)];
      const int first_head = set * heads_per_set;
      const ValidationDecision d =
          decide_validation(ssel.layout, ss.val_masses.data() + static_cast<size_t>(first_head) * nv * kValidationMassStride,
                            kValidationMassStride, heads_per_set, nv,
                            ValidationBar{problem.sample.min_kept, problem.sample.max_lost}, per_head.data());
      std::vector<int32_t> stripes, look_stripes;
      if (!d.dense()) stripes = decided_stripes(ssel.layout, ssel.ranked.data(), d.ranked);
      // The look leaves out a prefix that alpha plays no part in (kLookAlpha's, or the
      // validation's passing one when longer): the stripes, or fewer, or more of the ranking.
      const int64_t left_out = std::max(d.passing, ssel.look_ranked);
      const bool own = !d.dense() && problem.sample.look > 0.f && left_out != d.ranked;
      if (own) look_stripes = decided_stripes(ssel.layout, ssel.ranked.data(), left_out);
      apply_decision(problem, ss, ssel.layout, first_head, heads_per_set, d, per_head.data(), stripes,
                     own ? &look_stripes : nullptr, plan);
    }
    // Stage 2's state is done with: give it back before the attention.
    std::vector<SelectionSet>().swap(ss.sets);
    std::vector<uint32_t>().swap(ss.val_masses);
  }
  plan->time_selection_s = seconds_since(t_selection);

  // Kept mass (CRA) of the sampled rows under the chosen mask, for the statistics.
  if (!with_kept_mass) return Status::ok();
  SAMPLEATTN_RETURN_IF_ERROR(pool.run(static_cast<int64_t>(tasks.size()), scratch, pool_limit,
                                      [&](int64_t t, int, void* buf) {
    const RowTask& task = tasks[static_cast<size_t>(t)];
    sampler.kept_mass(sampled[task.ss], *plan, task.g, task.c0, task.n, buf);
  }));
  harvest_kept_mass(problem, sampled, plan);
  return Status::ok();
}

namespace {

// Where each position of each sequence lives: sorted runs of every process.
class Holders {
 public:
  Holders(const ShardMap& map, size_t sequences) : runs_(sequences) {
    for (int r = 0; r < map.processes(); ++r) {
      for (const ShardRun& run : map.runs[static_cast<size_t>(r)]) {
        if (run.end > run.begin) runs_[static_cast<size_t>(run.seq)].push_back({run, r});
      }
    }
    for (auto& list : runs_) {
      std::sort(list.begin(), list.end(), [](const Held& a, const Held& b) { return a.run.begin < b.run.begin; });
    }
  }
  struct Where {
    int process;
    int64_t token;
  };
  // The holder of position p of sequence seq (the shard map covers every position).
  Where at(int seq, int64_t p) const {
    const auto& list = runs_[static_cast<size_t>(seq)];
    auto it = std::upper_bound(list.begin(), list.end(), p, [](int64_t v, const Held& h) { return v < h.run.begin; });
    const Held& h = *(it - 1);
    return {h.process, h.run.local + (p - h.run.begin)};
  }

 private:
  struct Held {
    ShardRun run;
    int process;
  };
  std::vector<std::vector<Held>> runs_;
};

// A vector of floats summed over the processes (through double) or maxed.
Status sum_floats(Collective& coll, std::vector<float>* v) {
  std::vector<double> d(v->begin(), v->end());
  SAMPLEATTN_RETURN_IF_ERROR(coll.sum(d.data(), static_cast<int64_t>(d.size())));
  std::copy(d.begin(), d.end(), v->begin());
  return Status::ok();
}

// Fixed-point masses (core/validation_units.h) summed over the processes: exact, in any order.
Status sum_units(Collective& coll, std::vector<uint32_t>* v) {
  std::vector<int64_t> wide(v->begin(), v->end());
  SAMPLEATTN_RETURN_IF_ERROR(coll.sum(wide.data(), static_cast<int64_t>(wide.size())));
  std::transform(wide.begin(), wide.end(), v->begin(), [](int64_t x) { return static_cast<uint32_t>(x); });
  return Status::ok();
}

// Row statistics over every process's keys from each process's part: the max of the maxima, and
// the parts' sums of exp2 rescaled to it and added (in double).
// `failed` (optional): this process's verdict on the step before, maxed with the others' in the
// same reduction (one collective a wave instead of two); true on return when any process failed.
Status reduce_row_stats(Collective& coll, std::vector<float*> max, std::vector<float*> sum, std::vector<size_t> n,
                        bool* failed = nullptr) {
  size_t total = 0;
  for (size_t i = 0; i < n.size(); ++i) total += n[i];
  std::vector<float> m(total + 1);
  std::vector<double> s(total);
  for (size_t i = 0, at = 0; i < n.size(); at += n[i], ++i) std::copy(max[i], max[i] + n[i], m.begin() + at);
  m[total] = failed != nullptr && *failed ? 1.f : 0.f;
  std::vector<float> local = m;
  SAMPLEATTN_RETURN_IF_ERROR(coll.max(m.data(), static_cast<int64_t>(total + 1)));
  if (failed != nullptr) {
    *failed = m[total] > 0.f;
    if (*failed) return Status::ok();
  }
  for (size_t i = 0, at = 0; i < n.size(); at += n[i], ++i) {
    for (size_t k = 0; k < n[i]; ++k) {
      const float part = sum[i][k];
      s[at + k] = part > 0 ? static_cast<double>(part) * std::exp2(static_cast<double>(local[at + k]) - m[at + k]) : 0.0;
    }
  }
  SAMPLEATTN_RETURN_IF_ERROR(coll.sum(s.data(), static_cast<int64_t>(total)));
  for (size_t i = 0, at = 0; i < n.size(); at += n[i], ++i) {
    for (size_t k = 0; k < n[i]; ++k) {
      max[i][k] = m[at + k];
      sum[i][k] = static_cast<float>(s[at + k]);
    }
  }
  return Status::ok();
}

}  // namespace

Status build_sharded_plan(ThreadPool& pool, uint64_t workspace_limit, const KernelTable& kernels,
                          const Problem& global, const ShardMap& map, Collective& coll, bool with_kept_mass,
                          SparsePlan* plan) {
  const int me = coll.rank();
  const int processes = coll.size();
  const int hq = global.num_q_heads;
  const int groups = global.num_kv_heads;
  const size_t num_seqs = global.sequences.size();
  init_dense_plan(global, plan);
  std::vector<SampledSequence> sampled;
  Problem stage1 = global;
  std::vector<char> gathered_q, gathered_k, send_k;
  std::vector<int32_t> table;
  int64_t kept_keys = 0, most_slot_tiles = 0;
  // Stage 1 scores each process's keys of the balanced map (core/shard_map.h), their K rows sent
  // by their holders (its own copied): every kv head of a key in one row. A process whose
  // stage-1 keys are all its own (every process of a zigzag split) reads them in place.
  StageKeys stage_keys;
  std::optional<Holders> holders;  // where each position's Q and K rows are (the shard map)
  std::vector<int64_t> k_send(static_cast<size_t>(processes), 0), k_recv(static_cast<size_t>(processes), 0);
  bool in_place = false;
  Status local = Status::ok();
  try {
    std::vector<int64_t> lengths;
    for (const Sequence& s : global.sequences) lengths.push_back(s.k_len);
    stage_keys = stage1_keys(map, lengths);
    const std::vector<int>& mine = stage_keys.holder[static_cast<size_t>(me)];
    in_place = std::all_of(mine.begin(), mine.end(), [me](int holder) { return holder == me; });
    const size_t k_elem = dtype_size(global.k.dtype);
    const size_t k_row = static_cast<size_t>(groups) * global.head_dim * k_elem;
    for (int r = 0; r < processes; ++r) {
      const std::vector<ShardRun>& runs = stage_keys.map.runs[static_cast<size_t>(r)];
      for (size_t i = 0; i < runs.size(); ++i) {
        const int holder = stage_keys.holder[static_cast<size_t>(r)][i];
        if (in_place && r == me) continue;
        const int64_t bytes = (runs[i].end - runs[i].begin) * static_cast<int64_t>(k_row);
        if (holder == me) k_send[static_cast<size_t>(r)] += bytes;
        if (r == me) k_recv[static_cast<size_t>(holder)] += bytes;
      }
    }
    // Input-sized, as the gathered query rows below: not counted against the workspace limit
    // (docs/SECURITY.md).
    send_k.resize(static_cast<size_t>(std::accumulate(k_send.begin(), k_send.end(), int64_t{0})));
    gathered_k.resize(static_cast<size_t>(std::accumulate(k_recv.begin(), k_recv.end(), int64_t{0})));
    holders.emplace(map, num_seqs);
    char* out = send_k.data();
    for (int r = 0; r < processes; ++r) {
      const std::vector<ShardRun>& runs = stage_keys.map.runs[static_cast<size_t>(r)];
      for (size_t i = 0; i < runs.size(); ++i) {
        if (stage_keys.holder[static_cast<size_t>(r)][i] != me || (in_place && r == me)) continue;
        const int64_t first = holders->at(runs[i].seq, runs[i].begin).token;  // the run lies in one of ours
        for (int64_t t = first; t < first + (runs[i].end - runs[i].begin); ++t) {
          for (int h = 0; h < groups; ++h) {
            std::memcpy(out, global.k.row(0, 0) + (t * global.kv.k_token_stride + h * global.kv.k_head_stride) * k_elem,
                        static_cast<size_t>(global.head_dim) * k_elem);
            out += static_cast<size_t>(global.head_dim) * k_elem;
          }
        }
      }
    }
  } catch (const std::bad_alloc&) {
    local = out_of_memory("out of memory while gathering stage 1's keys of a sharded call");
  }
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, local));
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, coll.all_to_all(send_k.data(), k_send.data(), gathered_k.data(),
                                                         k_recv.data(), Collective::Payload::kKvRows)));
  std::vector<char>().swap(send_k);
  const ShardMap& keys = stage_keys.map;
  try {
    sampled = sampled_sequences(global);
    // This process's keys: its runs, merged where they touch.
    std::vector<std::vector<KeySpan>> own(num_seqs);
    for (const ShardRun& run : keys.runs[static_cast<size_t>(me)]) {
      if (run.end > run.begin) own[static_cast<size_t>(run.seq)].push_back({run.begin, run.end});
    }
    for (auto& spans : own) {
      std::sort(spans.begin(), spans.end(), [](const KeySpan& a, const KeySpan& b) { return a.begin < b.begin; });
      std::vector<KeySpan> merged;
      for (const KeySpan& s : spans) {
        if (!merged.empty() && merged.back().end == s.begin) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
      }
      spans = std::move(merged);
    }
    for (SampledSequence& ss : sampled) ss.own = own[static_cast<size_t>(ss.seq)];

    // The key tiles that hold this process's keys, each at a slot of the packed keys and of a
    // chunk's kept scores; a chunk keeps the scores of the most such tiles of any process, so that
    // every process has the same chunks (and so the same waves).
    const int tile = kernels.key_tile;
    std::vector<int64_t> slot_tiles(static_cast<size_t>(processes), 0);  // per process, all sequences
    for (SampledSequence& ss : sampled) {
      const int64_t tiles = (global.sequences[ss.seq].k_len + tile - 1) / tile;
      for (int r = 0; r < processes; ++r) {
        std::vector<int32_t> slot(static_cast<size_t>(tiles), -1);
        for (const ShardRun& run : keys.runs[static_cast<size_t>(r)]) {
          if (run.seq != ss.seq || run.end <= run.begin) continue;
          for (int64_t t = run.begin / tile; t <= (run.end - 1) / tile; ++t) slot[static_cast<size_t>(t)] = 0;
        }
        int32_t count = 0;
        for (int32_t& v : slot) v = v < 0 ? -1 : count++;
        kept_keys = std::max<int64_t>(kept_keys, int64_t{count} * tile);
        slot_tiles[static_cast<size_t>(r)] += count;
        if (r == me) {
          ss.tile_slot = std::move(slot);
          ss.slots = count;
        }
      }
    }
    most_slot_tiles = *std::max_element(slot_tiles.begin(), slot_tiles.end());

    // Stage 1 reads this process's keys through a position -> row table (a page of one token; no
    // values): rows of its own tensors in place, else of the gathered K rows. And the sampled
    // and validation rows of every process, gathered.
    int64_t most_keys = 0;
    for (const Sequence& s : global.sequences) most_keys = std::max(most_keys, s.k_len);
    table.assign(num_seqs * static_cast<size_t>(most_keys), 0);
    const ShardMap& rows_of = in_place ? map : keys;
    int64_t local_tokens = 0;
    for (const ShardRun& run : rows_of.runs[static_cast<size_t>(me)]) {
      local_tokens = std::max(local_tokens, run.local + (run.end - run.begin));
      for (int64_t p = run.begin; p < run.end; ++p) {
        table[static_cast<size_t>(run.seq) * most_keys + p] = static_cast<int32_t>(run.local + (p - run.begin));
      }
    }
    stage1.v.data = nullptr;
    KvLayout& kv = stage1.kv;
    kv.block_table = table.data();
    kv.table_stride = most_keys;
    kv.page_size = 1;
    kv.num_pages = static_cast<int32_t>(local_tokens);
    kv.k_page_stride = global.kv.k_token_stride;
    if (!in_place) {
      stage1.k.data = gathered_k.data();
      kv.k_page_stride = static_cast<int64_t>(groups) * global.head_dim;
      kv.k_head_stride = global.head_dim;
    }
    kv.v_page_stride = kv.v_head_stride = 0;

    // A row goes to the processes that score a key at or before it (the keys it sees): every
    // process whose stage-1 keys start at or before the row. Each receives its rows in
    // the order below (sequence; sampled, then validation rows), from each sender in rank order,
    // after a zero row that stands for the rows it does not need (their keys are all after them,
    // so stage 1 packs them and reads none of their scores).
    std::vector<int64_t> first_key(static_cast<size_t>(processes) * num_seqs, std::numeric_limits<int64_t>::max());
    for (int r = 0; r < processes; ++r) {
      for (const ShardRun& run : keys.runs[static_cast<size_t>(r)]) {
        if (run.end <= run.begin) continue;
        int64_t& first = first_key[static_cast<size_t>(r) * num_seqs + run.seq];
        first = std::min(first, run.begin);
      }
    }
    auto needs = [&](int r, int seq, int64_t p) { return first_key[static_cast<size_t>(r) * num_seqs + seq] <= p; };
    const size_t elem = dtype_size(global.q.dtype);
    const size_t row_bytes = static_cast<size_t>(hq) * global.head_dim * elem;
    auto each_row = [&](auto&& visit) {
      for (SampledSequence& ss : sampled) {
        const int64_t offset = global.sequences[ss.seq].q_offset();
        for (size_t i = 0; i < ss.rows.size(); ++i) visit(ss, offset + ss.rows[i], &ss.q_tokens[i]);
        for (size_t i = 0; i < ss.val_rows.size(); ++i) visit(ss, offset + ss.val_rows[i], &ss.val_q_tokens[i]);
      }
    };
    std::vector<int64_t> send_rows(static_cast<size_t>(processes), 0), recv_rows(static_cast<size_t>(processes), 0);
    each_row([&](SampledSequence& ss, int64_t p, int64_t*) {
      const int holder = holders->at(ss.seq, p).process;
      if (needs(me, ss.seq, p)) ++recv_rows[holder];
      if (holder != me) return;
      for (int r = 0; r < processes; ++r) send_rows[r] += needs(r, ss.seq, p) ? 1 : 0;
    });
    std::vector<int64_t> send_bytes(static_cast<size_t>(processes)), recv_bytes(static_cast<size_t>(processes));
    std::vector<int64_t> send_at(static_cast<size_t>(processes), 0), recv_at(static_cast<size_t>(processes), 1);
    for (int r = 0; r < processes; ++r) {
      send_bytes[r] = send_rows[r] * static_cast<int64_t>(row_bytes);
      recv_bytes[r] = recv_rows[r] * static_cast<int64_t>(row_bytes);
      if (r > 0) {
        send_at[r] = send_at[r - 1] + send_rows[r - 1];
        recv_at[r] = recv_at[r - 1] + recv_rows[r - 1];
      }
    }
    std::vector<char> send(static_cast<size_t>(send_at.back() + send_rows.back()) * row_bytes);
    std::vector<int64_t> send_next = send_at, recv_next = recv_at;
    each_row([&](SampledSequence& ss, int64_t p, int64_t* token) {
      const Holders::Where w = holders->at(ss.seq, p);
      *token = needs(me, ss.seq, p) ? recv_next[w.process]++ : 0;
      if (w.process != me) return;
      for (int r = 0; r < processes; ++r) {
        if (!needs(r, ss.seq, p)) continue;
        char* out = send.data() + static_cast<size_t>(send_next[r]++) * row_bytes;
        for (int h = 0; h < hq; ++h) {
          std::memcpy(out + static_cast<size_t>(h) * global.head_dim * elem, global.q.row(w.token, h),
                      global.head_dim * elem);
        }
      }
    });
    gathered_q.assign(static_cast<size_t>(recv_at.back() + recv_rows.back()) * row_bytes, 0);
    local = coll.all_to_all(send.data(), send_bytes.data(), gathered_q.data() + row_bytes, recv_bytes.data(),
                            Collective::Payload::kQueryRows);
    stage1.q = {gathered_q.data(), global.q.dtype, static_cast<int64_t>(hq) * global.head_dim, global.head_dim};
  } catch (const std::bad_alloc&) {
    local = out_of_memory("out of memory while gathering the sampled rows of a sharded call");
  }
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, local));
  if (sampled.empty()) return Status::ok();

  // One process's rules (packs_keys_once, FlashPath::rescore) on the most key tiles any process
  // holds, so that all choose alike (the chunks, and so the task lists, follow from them): when
  // they fit, every process packs its key tiles once, and on a rescoring path its chunks keep no
  // scores.
  const FlashPath& path = sampling_path(kernels, stage1);
  const uint64_t most_packed = static_cast<uint64_t>(most_slot_tiles) * static_cast<uint64_t>(groups) *
                               path.packed_bytes(kernels.key_tile, global.head_dim);
  const bool keys_once = packed_keys_fit(most_packed, workspace_limit);
  const bool recompute = keys_once && path.rescore;
  Sampler sampler(kernels, stage1, score_budget(workspace_limit, pool.num_threads()), recompute, kept_keys);
  const size_t scratch = sampler.scratch_bytes();
  const int chunk = sampler.chunk();
  const uint64_t pool_limit = workspace_limit;
  const auto t_sampling = std::chrono::steady_clock::now();
  CallBuffers::Lease packed_keys;
  if (keys_once) {
    SAMPLEATTN_RETURN_IF_ERROR(
        agree(coll, pack_keys_once(pool, pool_limit, sampler, stage1, kernels.key_tile, sampled, &packed_keys)));
  }

  // Stage 1: the chunks' scores over this process's keys and their row statistics; the statistics
  // reduced over the processes; then the probabilities into this process's column sums (the
  // validation rows, after stage 2: into their bucket masses). Every process runs the same tasks
  // (the task lists depend on the global shapes only).
  // - Scores computed again (recompute): as in one process, two passes of QK products on the
  //   packed keys, the statistics of every chunk, then (after one reduction) the column sums
  //   (each worker packs its chunk's rows again).
  // - Else in waves of chunks, the scores kept in the wave's buffers while the wave's statistics
  //   are reduced: the scores are computed once; what waves cost is a wait a wave for the slowest
  //   process.
  const std::vector<RowTask> tasks = row_tasks(sampled, false, groups, chunk);
  const std::vector<RowTask> val_tasks = row_tasks(sampled, true, groups, chunk);
  // A wave of up to 4 chunks a worker (within 256 MiB of buffers): the dynamic schedule of the
  // pool evens out chunks of unlike cost, and the waits for the slowest process come 4x fewer.
  // Scores computed again: one wave of every task, each worker with one buffer.
  const int64_t threads = pool.num_threads();
  const int64_t wave = recompute ? std::max<int64_t>(1, static_cast<int64_t>(std::max(tasks.size(), val_tasks.size())))
                                 : threads * std::clamp<int64_t>(static_cast<int64_t>((uint64_t{256} << 20) /
                                                     (static_cast<uint64_t>(threads) * std::max<size_t>(scratch, 1))),
                                                     1, 4);
  CallBuffers::Lease slots;
  local = Status::ok();
  if (!recompute) {
    slots = pool.call_buffers().take(static_cast<size_t>(wave) * scratch);
    if (!slots) {
      local = out_of_memory("out of memory for stage 1's wave buffers (" + std::to_string(wave) + " x " +
                            std::to_string(scratch) + " bytes)");
    }
  }
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, local));
  auto slot = [&](int64_t i) { return slots.get() + static_cast<size_t>(i) * scratch; };
  const auto run_waves = [&](const std::vector<RowTask>& list, bool validation) -> Status {
    // Each wave takes every nwaves-th task of the longest-first list: rows from all over the
    // sequences, so that every process has its share of each wave's work (a wave of the latest
    // rows alone would load the processes that hold the latest keys) and each wave's first tasks
    // are its longest.
    std::vector<RowTask> waved;
    Status status = Status::ok();
    try {
      waved.reserve(list.size());
      const size_t nwaves = (list.size() + static_cast<size_t>(wave) - 1) / static_cast<size_t>(wave);
      for (size_t k = 0; k < nwaves; ++k) {
        for (size_t i = k; i < list.size(); i += nwaves) waved.push_back(list[i]);
      }
    } catch (const std::bad_alloc&) {
      status = out_of_memory("out of memory for stage 1's task list");
    }
    SAMPLEATTN_RETURN_IF_ERROR(agree(coll, status));
    for (size_t w0 = 0; w0 < waved.size(); w0 += static_cast<size_t>(wave)) {
      const int64_t n = std::min<int64_t>(wave, static_cast<int64_t>(waved.size() - w0));
      // The verdict on this wave's scores and the last wave's results travels with the maxima.
      const size_t worker_scratch = recompute ? scratch : 0;
      const Status scored = pool.run(n, worker_scratch, pool_limit, [&](int64_t t, int, void* buf) {
        const RowTask& task = waved[w0 + static_cast<size_t>(t)];
        sampler.score_rows(sampled[task.ss], validation, task.g, task.c0, task.n, recompute ? buf : slot(t));
      });
      if (status.is_ok()) status = scored;
      bool failed = !status.is_ok();
      std::vector<float*> max, sum;
      std::vector<size_t> len;
      for (int64_t t = 0; t < n; ++t) {
        const RowTask& task = waved[w0 + static_cast<size_t>(t)];
        SampledSequence& ss = sampled[task.ss];
        const size_t nr = (validation ? ss.val_rows : ss.rows).size();
        for (int h = 0; h < global.group; ++h) {
          const size_t at = static_cast<size_t>(task.g * global.group + h) * nr + static_cast<size_t>(task.c0);
          max.push_back((validation ? ss.val_max : ss.row_max).data() + at);
          sum.push_back((validation ? ss.val_sum : ss.row_sum).data() + at);
          len.push_back(static_cast<size_t>(task.n));
        }
      }
      SAMPLEATTN_RETURN_IF_ERROR(reduce_row_stats(coll, max, sum, len, &failed));
      if (failed) {
        if (!status.is_ok()) return status;
        return internal_error("another process of the sharded call failed in stage 1");
      }
      status = pool.run(n, worker_scratch, pool_limit, [&](int64_t t, int, void* buf) {
        const RowTask& task = waved[w0 + static_cast<size_t>(t)];
        void* at = recompute ? buf : slot(t);
        if (recompute) sampler.pack_chunk_rows(sampled[task.ss], validation, task.g, task.c0, task.n, at);
        if (validation) {
          sampler.add_masses(sampled[task.ss], task.g, task.c0, task.n, at, true);
        } else {
          sampler.add_columns(sampled[task.ss], task.g, task.c0, task.n, at, true);
        }
      });
    }
    return agree(coll, status);
  };
  SAMPLEATTN_RETURN_IF_ERROR(run_waves(tasks, false));
  plan->time_sampling_s = seconds_since(t_sampling);

  // Stage 2 over the processes' columns (core/sharded_selection.h), then the validation rows'
  // masses per bucket, added over the processes, and the same decision on every process.
  const auto t_selection = std::chrono::steady_clock::now();
  const bool per_group = global.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP;
  const int sets_per_seq = per_group ? groups : hq;
  const int heads_per_set = per_group ? global.group : 1;
  const SumOverProcesses sum = [&coll](std::vector<int64_t>* v) { return coll.sum(v->data(), static_cast<int64_t>(v->size())); };
  std::vector<std::unique_ptr<ShardedSelection>> selections;
  local = Status::ok();
  try {
    for (SampledSequence& ss : sampled) {
      const Sequence& seq = global.sequences[ss.seq];
      const int64_t sinks = sink_count(global.sample.sink_tokens, seq.k_len);
      std::vector<LocalSet> sets(static_cast<size_t>(sets_per_seq));
      std::vector<int32_t> columns;
      for (const KeySpan& span : ss.own) {
        for (int64_t j = span.begin; j < span.end; ++j) columns.push_back(static_cast<int32_t>(j));
      }
      std::vector<float> scores(columns.size());
      for (int set = 0; set < sets_per_seq; ++set) {
        set_scores(ss, seq.k_len, set * heads_per_set, heads_per_set,
                   [&](auto&& at) { for (int32_t j : columns) at(j); }, scores.data());
        LocalSet& in = sets[static_cast<size_t>(set)];
        in.total = static_cast<double>(ss.rows.size()) * heads_per_set;
        for (size_t c = 0; c < columns.size(); ++c) {
          // In 2^-30 units of the f32 score, as the one-process sums of the f32 scores.
          const int64_t fixed = std::llrint(std::ldexp(static_cast<double>(scores[c]), 30));
          in.outside_score += fixed;
          if (columns[c] < sinks) {
            in.sink_score += fixed;
          } else {
            in.columns.push_back(columns[c]);
            in.scores.push_back(scores[c]);
          }
        }
      }
      selections.push_back(std::make_unique<ShardedSelection>(stage1, seq, ss.window, std::move(sets)));
    }
  } catch (const std::bad_alloc&) {
    local = out_of_memory("out of memory while ranking the columns of a sharded call");
  }
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, local));
  std::vector<std::vector<ShardedSet>> chosen(sampled.size());
  for (size_t i = 0; i < sampled.size(); ++i) {
    SampledSequence& ss = sampled[i];
    SAMPLEATTN_RETURN_IF_ERROR(selections[i]->select(!ss.val_rows.empty(), sum, &chosen[i]));
    // The layouts with a bucket per column of the sequence, as validate_rows reads them.
    const Sequence& seq = global.sequences[ss.seq];
    for (int set = 0; set < sets_per_seq; ++set) {
      ShardedSet& c = chosen[i][static_cast<size_t>(set)];
      ValidationLayout& layout = ss.sets[static_cast<size_t>(set)].layout;
      layout = c.layout;
      if (c.layout.bucket.empty()) continue;
      layout.bucket.assign(static_cast<size_t>(seq.k_len), kBucketUnused);
      for (int64_t j = 0; j < c.layout.sinks; ++j) layout.bucket[j] = kBucketKept;
      size_t at = 0;
      for (const KeySpan& span : ss.own) {
        for (int64_t j = std::max(span.begin, sink_count(global.sample.sink_tokens, seq.k_len)); j < span.end; ++j) {
          layout.bucket[j] = c.layout.bucket[at++];
        }
      }
    }
  }
  SAMPLEATTN_RETURN_IF_ERROR(run_waves(val_tasks, true));
  slots = CallBuffers::Lease();  // given back
  for (SampledSequence& ss : sampled) SAMPLEATTN_RETURN_IF_ERROR(sum_units(coll, &ss.val_masses));

  std::vector<HeadValidation> per_head(static_cast<size_t>(heads_per_set));
  for (size_t i = 0; i < sampled.size(); ++i) {
    SampledSequence& ss = sampled[i];
    const int64_t nv = static_cast<int64_t>(ss.val_rows.size());
    std::vector<ValidationDecision> decisions;
    std::vector<std::vector<HeadValidation>> validations;
    std::vector<int64_t> decided;
    for (int set = 0; set < sets_per_seq; ++set) {
      const ValidationLayout& layout = ss.sets[static_cast<size_t>(set)].layout;
      const int first_head = set * heads_per_set;
      decisions.push_back(
          decide_validation(layout, ss.val_masses.data() + static_cast<size_t>(first_head) * nv * kValidationMassStride,
                            kValidationMassStride, heads_per_set, nv,
                            ValidationBar{global.sample.min_kept, global.sample.max_lost}, per_head.data()));
      validations.push_back(per_head);
      decided.push_back(decisions.back().dense() ? 0 : decisions.back().ranked);
    }
    // Each process's columns among the first counts[set] ranked, gathered: every set's list with
    // its sinks, ascending.
    const auto gather_stripes = [&](const std::vector<int64_t>& ranked,
                                    std::vector<std::vector<int32_t>>* stripes) -> Status {
      std::vector<std::vector<int32_t>> mine;
      SAMPLEATTN_RETURN_IF_ERROR(selections[i]->decided_stripes(ranked, sum, &mine));
      std::vector<int64_t> counts(static_cast<size_t>(processes) * sets_per_seq, 0);
      for (int set = 0; set < sets_per_seq; ++set) counts[static_cast<size_t>(me) * sets_per_seq + set] = static_cast<int64_t>(mine[set].size());
      SAMPLEATTN_RETURN_IF_ERROR(coll.sum(counts.data(), static_cast<int64_t>(counts.size())));
      std::vector<int64_t> bytes(static_cast<size_t>(processes), 0);
      int64_t all = 0;
      for (int r = 0; r < processes; ++r) {
        for (int set = 0; set < sets_per_seq; ++set) bytes[r] += counts[static_cast<size_t>(r) * sets_per_seq + set];
        all += bytes[r];
        bytes[r] *= static_cast<int64_t>(sizeof(int32_t));
      }
      std::vector<int32_t> send, recv(static_cast<size_t>(all));
      for (const auto& list : mine) send.insert(send.end(), list.begin(), list.end());
      SAMPLEATTN_RETURN_IF_ERROR(coll.all_gather(send.data(), recv.data(), bytes.data()));
      stripes->assign(static_cast<size_t>(sets_per_seq), {});
      for (int set = 0; set < sets_per_seq; ++set) {
        for (int64_t j = 0; j < ss.sets[static_cast<size_t>(set)].layout.sinks; ++j) (*stripes)[set].push_back(static_cast<int32_t>(j));
      }
      for (int r = 0, at = 0; r < processes; ++r) {
        for (int set = 0; set < sets_per_seq; ++set) {
          const int64_t c = counts[static_cast<size_t>(r) * sets_per_seq + set];
          (*stripes)[set].insert((*stripes)[set].end(), recv.begin() + at, recv.begin() + at + c);
          at += static_cast<int>(c);
        }
      }
      for (auto& list : *stripes) std::sort(list.begin(), list.end());
      return Status::ok();
    };
    std::vector<std::vector<int32_t>> stripes, look_stripes;
    SAMPLEATTN_RETURN_IF_ERROR(gather_stripes(decided, &stripes));
    // The look leaves out a prefix that alpha plays no part in, as in one process (build_plan).
    std::vector<char> own(static_cast<size_t>(sets_per_seq), 0);
    if (global.sample.look > 0.f) {
      std::vector<int64_t> left_out(static_cast<size_t>(sets_per_seq), 0);
      for (int set = 0; set < sets_per_seq; ++set) {
        const ValidationDecision& d = decisions[set];
        left_out[set] = std::max(d.passing, chosen[i][static_cast<size_t>(set)].look_ranked);
        own[set] = !d.dense() && left_out[set] != d.ranked;
        if (!own[set]) left_out[set] = 0;
      }
      SAMPLEATTN_RETURN_IF_ERROR(gather_stripes(left_out, &look_stripes));
    }
    for (int set = 0; set < sets_per_seq; ++set) {
      apply_decision(global, ss, ss.sets[static_cast<size_t>(set)].layout, set * heads_per_set, heads_per_set,
                     decisions[set], validations[set].data(), stripes[set], own[set] ? &look_stripes[set] : nullptr,
                     plan);
    }
    std::vector<SelectionSet>().swap(ss.sets);
    std::vector<uint32_t>().swap(ss.val_masses);
  }
  plan->time_selection_s = seconds_since(t_selection);

  if (!with_kept_mass) return Status::ok();
  local = pool.run(static_cast<int64_t>(tasks.size()), scratch, pool_limit, [&](int64_t t, int, void* buf) {
    const RowTask& task = tasks[static_cast<size_t>(t)];
    sampler.kept_mass(sampled[task.ss], *plan, task.g, task.c0, task.n, buf);
  });
  SAMPLEATTN_RETURN_IF_ERROR(agree(coll, local));
  for (SampledSequence& ss : sampled) SAMPLEATTN_RETURN_IF_ERROR(sum_floats(coll, &ss.kept));
  harvest_kept_mass(global, sampled, plan);
  return Status::ok();
}

}  // namespace sampleattn::cpu
