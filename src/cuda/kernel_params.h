// Plain descriptions of the work the CUDA kernels do, shared by the host code (cuda_backend.cpp,
// compiled by the C++ compiler) and the kernels (*.cu). Nothing here needs CUDA headers.
#pragma once

#include <cstdint>

#include "core/kv_cache.h"
#include "core/mask.h"
#include "core/score_mod.h"

namespace sampleattn::cuda {

// The model's score variants as the kernels read them (core/score_mod.h, log2 units): the call's
// softcap, and per query head an ALiBi slope and a sink, device arrays of num_q_heads floats
// (null: none for every head). Stage 1 and validation leave the sinks out (null there).
struct ScoreModParams {
  float softcap_log2;       // softcap * log2(e); 0 = none
  const float* alibi_log2;  // [num_q_heads] slope * log2(e), or null
  const float* sink_log2;   // [num_q_heads] sink * log2(e) (-inf = none), or null

  // Query head h's variants.
  SAMPLEATTN_HOST_DEVICE ScoreMod head(int h) const {
    ScoreMod m;
    m.softcap_log2 = softcap_log2;
    if (alibi_log2 != nullptr) m.alibi_log2 = alibi_log2[h];
    if (sink_log2 != nullptr) m.sink_log2 = sink_log2[h];
    return m;
  }
};

// How K or V rows are stored: the kernel's operand type (f16/bf16, copied as they are) or
// quantized, dequantized into the operand type in the tile loads (kv_load.cuh).
enum class KvType : int32_t { kOperand = 0, kI8 = 1, kFP8 = 2 };

// K and V as every kernel reads them: the data, and a device copy of the call's KvLayout (its
// block table uploaded to the workspace) through whose row() every K/V row is addressed.
struct KvSource {
  const void* k;
  const void* v;
  KvLayout layout;
  KvType k_type, v_type;
  // Operand-type rows of both tensors lie on 16-byte boundaries (pointer, token, head and page
  // strides): cp.async can copy them. Otherwise the loads go element by element.
  int32_t aligned;
  int32_t pad;

  SAMPLEATTN_HOST_DEVICE bool quantized() const { return k_type != KvType::kOperand || v_type != KvType::kOperand; }
};

// One sequence of the batch, as the kernels see it.
struct SeqDesc {
  int64_t q_begin;  // first query token in the concatenated batch
  int64_t q_len;
  int64_t k_begin;
  int64_t k_len;
  int64_t window;    // sparse sequences: the local window w
  int32_t sparse;    // 1: window band + stripes (docs/ALGORITHM.md); 0: dense
  int32_t set_base;  // sparse: the first stripe set of this sequence
  int64_t row_begin;  // sampled sequences: first of its rows in the concatenated sampled-row list
  int64_t row_count;  // and how many
  int64_t val_begin;  // sampled sequences: first of its validation rows in that list (after every
  int64_t val_count;  // sequence's sampled rows), and how many
  int64_t mass_offset;  // its validation masses: [q_head][val_count][kValidationMassStride] from here
  int64_t key_prefix;   // keys of the sequences before it (the input scan's row numbering)
};

// A block of query rows: `count` rows starting at `first`. Forward: local query indices
// first .. first + count - 1 of sequence `seq`; row-list modes: entries of the sampled-row list.
struct RowBlock {
  int32_t seq;
  int32_t count;
  int64_t first;
};

enum class AttentionMode : int32_t {
  kForward = 0,   // O and lse over each row's mask (dense or window + stripes)
  kRowStats = 1,  // sampled rows: max (log2 units) and sum of exp2 over every key the model shows them
  kKeptMass = 2,  // sampled rows: the share of their mass inside window + stripes
  // The look's dense rows (docs/ALGORITHM.md, step 5): O and lse over every key the model shows
  // them, as a dense head's rows, written over what the forward pass wrote for them. A block's
  // rows are entries of `rows` (ascending local query indices) of one query head, block_heads[i].
  kDenseRows = 3,
};

// Validation (core/validation.h): the work unit of the mass kernel, up to kValidationRows
// validation rows of one sequence against up to kValidationKeys of their keys (a row's keys are
// split over several blocks, whose sums add up exactly: the masses are accumulated in fixed point,
// kValidationMassOne = 1.0, core/validation_units.h; a row's masses lie kValidationMassStride
// apart, core/mask.h).
inline constexpr int kValidationRows = 64;
inline constexpr int64_t kValidationKeys = 4096;

// One block of the validation mass kernel: validation rows first .. first + count - 1 (entries
// of the row list) of sequence seq, keys [k0, k1).
struct ValTile {
  int32_t seq;
  int32_t count;
  int64_t first;
  int64_t k0, k1;
};

enum class OutType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct AttentionArgs {
  const void* q;
  int64_t q_token_stride, q_head_stride;
  KvSource kv;
  void* o;
  OutType o_type;
  int64_t o_token_stride, o_head_stride;
  float* lse;  // [total_q][num_q_heads] or null
  int32_t num_q_heads;
  int32_t group;  // query heads per kv head
  // Q and K rows hold head_dim elements, V and O rows head_dim_v; the kernel's own dim D (the
  // larger of the two) zero-pads the narrower operands in shared memory.
  int32_t head_dim, head_dim_v;
  float scale_log2;  // softmax scale * log2(e)
  int32_t causal;
  int64_t window_left;  // the model's window (kNoModelWindow: none)
  ScoreModParams mod;
  AttentionMode mode;
  const SeqDesc* seqs;
  const RowBlock* blocks;
  int64_t num_blocks;
  // Stripe sets (sparse sequences): set = seq.set_base + (per_group ? head / group : head);
  // its ascending key positions are stripes[set_offset[set] .. + set_count[set]).
  const int32_t* stripes;
  const int64_t* set_offset;
  const int32_t* set_count;
  const int32_t* set_dense;  // 1: the set runs dense (max_density)
  int32_t per_group;
  // Row-list modes.
  const int32_t* rows;     // sampled local query indices, concatenated over sampled sequences
  int64_t total_rows;      // length of `rows`
  float* row_max;          // [head][total_rows], log2 units
  float* row_sum;          // [head][total_rows]
  float* kept;             // [head][total_rows] (kKeptMass)
  // The look: sparse heads it made dense, [sequence][num_q_heads] (null: none), and kDenseRows'
  // query head per block.
  const int32_t* head_dense;
  const int32_t* block_heads;
};

// Blocks of an attention launch: one per (row block, query head), or one per row block in
// kDenseRows (each of its own head).
SAMPLEATTN_HOST_DEVICE inline int64_t attention_grid(const AttentionArgs& a) {
  return a.mode == AttentionMode::kDenseRows ? a.num_blocks : a.num_blocks * a.num_q_heads;
}


// Stage 1, column scores: block (seq, key tile) per query head.
struct KeyTile {
  int32_t seq;
  int32_t pad;
  int64_t t0;
};

struct ColumnArgs {
  const void* q;
  int64_t q_token_stride, q_head_stride;
  KvSource kv;
  int32_t num_q_heads;
  int32_t group;
  float scale_log2;
  int32_t outside_window_only;  // window_mass_counts
  int64_t window_left;          // the model's window (kNoModelWindow: none)
  ScoreModParams mod;           // softcap and ALiBi (no sinks)
  const SeqDesc* seqs;
  const KeyTile* tiles;
  int64_t num_tiles;
  const int32_t* rows;
  int64_t total_rows;
  const float* row_max;
  const float* row_sum;
  float* scores;               // per (sampled sequence, head): scores + score_offset[seq] + head * k_len
  const int64_t* score_offset;  // per sequence
};

// The validation mass kernel: per (validation row, query head), the row's probabilities (its
// exact row max and sum from the row-statistics pass) added up per bucket of its set's ranking
// (core/validation.h): [0] the window band and the kept sinks, [b] the bucket-b columns j <= p - w.
struct ValidationArgs {
  const void* q;
  int64_t q_token_stride, q_head_stride;
  KvSource kv;
  int32_t num_q_heads;
  int32_t group;
  float scale_log2;
  int32_t per_group;
  int64_t window_left;  // the model's window (kNoModelWindow: none)
  ScoreModParams mod;   // softcap and ALiBi (no sinks)
  const SeqDesc* seqs;
  const ValTile* tiles;
  int64_t num_tiles;
  const int32_t* rows;
  int64_t total_rows;
  const float* row_max;     // [head][total_rows], log2 units
  const float* row_sum;
  const uint8_t* buckets;   // per set: k_len bucket ids at set_offset[set]
  const int64_t* set_offset;
  const int32_t* set_active;  // per set: 1 when it has a bucket layout (else its heads are skipped)
  uint32_t* masses;         // fixed point (kValidationMassOne), at seq.mass_offset (zeroed first)
};

// Decode (split-KV, flash-decoding): short query runs (q_len <= kDecodeMaxQueries) of dense
// sequences over many keys. A group is one (sequence, kv head) and up to kDecodeRows of its
// stacked query rows (row r: query r / group, query head kvh * group + r % group); its keys are
// split into units, one block each, which write partial (max, sum, unnormalized output) rows;
// the merge kernel combines a group's units by log-sum-exp.
inline constexpr int64_t kDecodeMaxQueries = 16;
inline constexpr int64_t kDecodeMinKeys = 2048;  // decode only above this many keys
inline constexpr int kDecodeRows = 64;

struct DecodeGroup {
  int32_t seq;
  int32_t kvh;
  int32_t row0;   // first stacked row
  int32_t rows;   // stacked rows (<= kDecodeRows)
  int64_t first_unit;
  int64_t units;
};

struct DecodeUnit {
  int64_t group;
  int64_t k0, k1;  // its keys
  int64_t part;    // its first partial row (the group's rows follow)
};

struct DecodeArgs {
  AttentionArgs attn;  // q, kv, o, lse, heads, dims, scale, causal, model window, variants, seqs
  const DecodeGroup* groups;
  int64_t num_groups;
  const DecodeUnit* units;
  int64_t num_units;
  // Partials, per unit and row (kDecodeRows each): max (log2 units), sum, output [head_dim_v].
  float* part_max;
  float* part_sum;
  float* part_o;
};

// The look at every row on the device (docs/ALGORITHM.md, step 5), with the CPU's arithmetic
// (simd/flash/look_quantize.h, look.h): the sampled sequences' K rows quantized to int8 once per
// kv head (look_pack), then per block of kLookRows query rows of one sparse head (one stride
// apart) the rows quantized, their int8 products (mma.sync s8: the exact int32 sums), the scales, the score
// variants, and each row's largest score outside its band and the left-out stripes against its
// mask's largest (its band, the left-out stripes and sinks): a row within `bar` of it is flagged.
// The host runs the probe's blocks first, then the other blocks of the heads it flagged enough
// rows of (core/mask.h, look_whole_head).
inline constexpr int kLookRows = kLookBlockRows;  // core/mask.h, as the CPU's blocks

struct LookBlock {
  int32_t seq;
  int32_t head;
  int64_t first;  // local query index of its first row; row r is first + r * stride
  int32_t count;
  int32_t stride;
};

struct LookArgs {
  const void* q;
  int64_t q_token_stride, q_head_stride;
  KvSource kv;
  int32_t num_q_heads, num_kv_heads, group;
  int32_t head_dim;
  int32_t row_bytes;  // a quantized row: head_dim rounded up to 32, zero-padded
  float scale_log2;
  float bar;          // look * log2(e), as the CPU computes it
  int64_t window_left;
  ScoreModParams mod;  // softcap and ALiBi (no sinks)
  const SeqDesc* seqs;
  // Quantized keys: row (key_prefix + j) * num_kv_heads + kv head, of row_bytes, and its scale.
  int8_t* keys;
  float* key_scales;
  const KeyTile* tiles;  // look_pack: the sampled sequences' column tiles
  int64_t num_tiles;
  int32_t tile_keys;
  // The look: its blocks, the stripes it leaves out per set as bits (word i of a set: its keys
  // 64i .. 64i + 63, from bits_offset[set]), and the flags it writes, [token][num_q_heads]
  // (zeroed first).
  const LookBlock* blocks;
  int64_t num_blocks;
  const uint64_t* left_out_bits;
  const int64_t* bits_offset;
  int32_t per_group;
  uint8_t* flags;
};

}  // namespace sampleattn::cuda
