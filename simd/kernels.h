// The CPU kernel table: every loop that touches O(N^2) data goes through one of these entries, so
// the drivers in src/cpu/ (dense, sampling, sparse) are ISA-free and each ISA is written once in
// simd/. Tables are chosen once per process by a chain that walks the ISA list
// (cmake/KernelLists.cmake) down from the best ISA the CPU runs to scalar (simd/dispatch.h).
//
// Conventions shared by all entries:
// - d is the head dimension of Q and K, dv that of V and the output (head_dim_v; often d), each
//   one of the head-dim list (kSupportedHeadDims: multiples of 16); rows are tokens.
// - Scores are in log2 units: scale = softmax_scale * log2(e), so that probabilities are
//   exp2(s - row_max). The f32 path's pack_q multiplies Q by it. The bf16 path defers it
//   (FlashPath::defer_scale): its pack_q gets 1, so bf16 inputs reach the products exactly (no
//   rounding of q * scale to bf16), and attend / scores multiply Q.K by it in f32 (qk_scale), as
//   flash-attention does. pack_q_scale() and qk_scale() say which factor goes where.
// - A "row span" (lo[r], hi[r]) says which key columns [lo, hi) of a tile row r may see; columns
//   outside it are masked (probability 0). lo == nullptr means lo = 0 for every row, and
//   hi == nullptr means hi = n. A row with lo >= hi sees nothing in this tile and must be left
//   unchanged (its row_max, row_sum and accumulator untouched).
// - Packed K and V buffers are opaque to the drivers; their byte size comes from packed_bytes().
//   Packed Q is row-major without padding: row r starts at byte r * d * q_elem_bytes, so the
//   driver can hand attend() any run of rows of a packed block.
// - No entry allocates, throws, prints or reads out of bounds of what its arguments describe.
#pragma once

#include <cstddef>
#include <cstdint>

#include "simd/cpu_features.h"
#include "core/dtype.h"
#include "core/row_scan.h"

namespace sampleattn {

// Source rows for a pack: row r starts at base + offset(r) elements, where
// offset(r) = offsets ? offsets[r] : r * row_stride. The gather through `offsets` is how the
// query heads of a kv group are stacked into one block, how stripe columns are packed and how
// K/V rows are read from their pages. Quantized rows (int8, fp8 e4m3) stand for scale_at(src, r)
// times their stored values: the pack dequantizes them. The scales are read where the cache keeps
// them when scale_offsets is set (row r's at scales[scale_offsets[r]]), else scales[r].
struct RowSource {
  const void* base;
  DType dtype;
  int64_t row_stride;                // elements, used when offsets == nullptr
  const int64_t* offsets = nullptr;  // optional per-row element offsets
  const float* scales = nullptr;     // scales; required for int8 / fp8, ignored otherwise
  const int64_t* scale_offsets = nullptr;  // optional per-row indices into scales
};

// Row r's scale (int8 / fp8 rows).
inline float scale_at(const RowSource& src, int64_t r) {
  return src.scales[src.scale_offsets != nullptr ? src.scale_offsets[r] : r];
}

// The model's score variants on a block (core/score_mod.h), in log2 units, applied to each score
// of the block before the softmax: s = softcap * tanh(s / softcap) when softcap > 0, then
// s -= alibi[r] * |row_pos[r] - key_pos[c]| when alibi is set. Default: none (plain attention).
struct ScoreModArgs {
  float softcap = 0.f;             // softcap * log2(e); 0 = none
  const float* alibi = nullptr;    // [m] per-row slope * log2(e) (rows of a kv group may differ), or nullptr
  const int32_t* row_pos = nullptr;  // [m] query positions within the sequence (read only with alibi)
  const int32_t* key_pos = nullptr;  // [n] key positions within the sequence (read only with alibi)

  bool any() const { return softcap > 0.f || alibi != nullptr; }
};

// One online-softmax step of flash attention on a block of m query rows against n keys:
//   s = mod(Q K^T) (log2 units); new_max = max(row_max, max_j s); c = exp2(row_max - new_max);
//   row_sum = row_sum * c + sum_j exp2(s - new_max); acc = acc * c + exp2(s - new_max) V.
struct AttendTileArgs {
  const void* q;         // packed by pack_q: m rows of d
  int m;
  const void* k;         // packed by pack_k: n rows of d
  const void* v;         // packed by pack_v: n rows of dv
  int n;
  int d;
  int dv;                // columns of V and of acc
  const int32_t* lo;     // row spans, see above
  const int32_t* hi;
  float* row_max;        // [m], starts at -inf
  float* row_sum;        // [m], starts at 0
  float* acc;            // [m x dv] f32, row-major, leading dimension dv
  void* scratch;         // at least scratch_bytes(m, n) bytes, 64-byte aligned
  ScoreModArgs mod;      // the score variants (none by default)
  float qk_scale = 1.0f;  // f32 factor on Q.K, before the variants (see defer_scale above)
};

// The decode step (attend_rows): the online-softmax step of AttendTileArgs for the query rows of
// `heads` kv heads (m rows each, packed by the f32 path's pack_q, head h's rows after head h-1's)
// against n keys whose K and V rows are read straight from their source rows (any K/V dtype,
// quantized ones dequantized with their row scales), without packing: for short query chunks,
// where each key serves a few rows. Key j of kv head h is row j of the sources moved by h head
// steps (elements; its scale by h scale steps): a cache keeps a token's kv heads side by side, so
// the kernel reads every head of a few keys before the next keys, in memory order. The row arrays
// (lo, hi, row_max, row_sum, acc and mod's per-row ones) hold heads * m rows.
struct AttendRowsArgs {
  const float* q;  // heads * m rows of d (pack_q of the f32 path)
  int m;           // query rows per kv head
  RowSource k;     // n rows of d (kv head 0)
  RowSource v;     // n rows of dv (kv head 0)
  int n;
  int d;
  int dv;
  const int32_t* lo;  // row spans, as for attend
  const int32_t* hi;
  float* row_max;
  float* row_sum;
  float* acc;      // [heads * m x dv]
  float* scratch;  // attend_rows_scratch_bytes(heads * m, n) bytes, 64-byte aligned
  ScoreModArgs mod;
  int heads = 1;
  int64_t k_head_step = 0;      // elements from a key's K row of head h to that of head h + 1
  int64_t v_head_step = 0;      // the same for V
  // k.scales / v.scales indices from head h to head h + 1 (scale_at's). K and V rows share their
  // scale indices (k.scale_offsets and v.scale_offsets are alike): a cache keeps a token's K and V
  // scales at one index of two arrays.
  int64_t scale_head_step = 0;
  // When set, raised to the largest |value| of the f32 or bf16 K (V) rows the step read (other
  // dtypes are bounded by their type and leave them alone): the input policy's bounds for K/V the
  // scan left to the attention (docs/SECURITY.md).
  float* k_max_abs = nullptr;
  float* v_max_abs = nullptr;
  // Int8 K/V may be multiplied in integers where the table can (KernelTable::attend_rows_int8_products):
  // the caller accepts products other than f32 (precision AUTO or BF16).
  bool int8_products = false;
  // q, m, heads and d are those of the previous call on this scratch (the next key block of the
  // same rows): the kernel may reuse what it derived from Q there (its int16 rows).
  bool same_q = false;
  // The next call's K rows (kv head 0, the same head steps) and keys, when the caller knows them:
  // the value pass requests them into L2 as it goes, so that the memory keeps reading while the
  // core multiplies rows it already holds. next_n = 0: none.
  RowSource next_k{};
  int next_n = 0;
};

// Head h's rows of `src` under an AttendRowsArgs' head steps.
inline RowSource head_rows(const RowSource& src, int h, int64_t head_step, int64_t scale_head_step) {
  RowSource r = src;
  r.base = static_cast<const char*>(src.base) + h * head_step * dtype_size(src.dtype);
  if (src.scales != nullptr) r.scales = src.scales + h * scale_head_step;
  return r;
}

// Entry point types; the per-ISA translation units declare their entry points with them
// (simd/flash/entry_points.h) and simd/kernel_config.cpp puts them in the tables.
// Bytes of a packed buffer of `rows` rows (Q, K or V alike); a multiple of 64.
using PackedBytesFn = size_t(int rows, int d);
// Bytes of scratch attend() needs for an m x n block; a multiple of 64.
using ScratchBytesFn = size_t(int m, int n);
using PackQFn = void(const RowSource& src, int m, int d, float scale, void* dst);
using PackKVFn = void(const RowSource& src, int n, int d, void* dst);
using AttendFn = void(const AttendTileArgs& args);
// s[r * lds + j] = qk_scale * (q_r . k_j) for an m x n block (no masking), in f32: the scores
// attend computes with the same qk_scale.
using ScoresFn = void(const void* q, int m, const void* k, int n, int d, float* s, int64_t lds, float qk_scale);
// Runs an AttendRowsArgs step. Returns false when a K or V value it read is not finite in its
// dtype (NaN or Inf; fp8 e4m3's NaN codes; int8 always is), after finishing the step anyway.
// Every K and V value of the n keys is read (whatever the row spans), so the checks and the
// largest magnitudes cover them all.
using AttendRowsFn = bool(const AttendRowsArgs& args);
// Applies the score variants of `mod` (m rows, n keys) to an m x n block of such scores in place,
// exactly as attend does before its softmax (the same function of each score, so that stage 1's
// sampled scores are the ones the attention uses).
using ModifyScoresFn = void(float* s, int64_t lds, int m, int n, const ScoreModArgs& mod);
// Online row statistics of an m x n block of scores (log2 units): for each row with a
// non-empty span, new_max = max(row_max, max s over the span);
// row_sum = row_sum * exp2(row_max - new_max) + sum over the span of exp2(s - new_max).
using RowStatsFn = void(const float* s, int64_t lds, int m, int n, const int32_t* lo, const int32_t* hi,
                        float* row_max, float* row_sum);
// col_sum[j] += sum over rows r whose span holds j of exp2(s[r][j] - row_max[r]) * row_scale[r],
// rows taken in increasing r (a fixed order, so results do not depend on threading).
using AccumulateColumnsFn = void(const float* s, int64_t lds, int m, int n, const int32_t* lo,
                                 const int32_t* hi, const float* row_max, const float* row_scale,
                                 float* col_sum);
// Validation (core/validation.h): one row's probabilities p_j = exp2(s[j] - row_max) * scale over
// its keys [lo, hi) of a key tile (lo <= split <= hi), each rounded to the nearest
// 1 / kValidationMassOne (core/mask.h) and added as integers: those of the columns [split, hi)
// (the window band) to masses[0], each column j in [lo, split) to masses[bucket[j]] unless
// bucket[j] is kBucketUnused (255). Integer sums: the same whatever order a table adds them in.
using BucketMassesFn = void(const float* s, int lo, int split, int hi, float row_max, float scale,
                            const uint8_t* bucket, uint32_t* masses);
// dst row r = acc row r * row_scale[r] (d columns: dv for an attention output), converted to
// dtype; dst rows at dst + r * row_stride.
using StoreRowsFn = void(const float* acc, int m, int d, const float* row_scale, void* dst, DType dtype,
                         int64_t row_stride);

// The look (docs/ALGORITHM.md, step 5): approximate scores from rows quantized to int8, to find
// the rows of a sparse head whose far keys the window and stripes miss. Every table quantizes
// alike (simd/flash/look_quantize.h: integers in [-127, 127] and a scale per row) and multiplies
// exactly (integer products, or f32 products of the integers, exact while |q.k| < 2^24, which
// 127 * 127 * 1040 is not above), so every table, and the CUDA backend, gets the same bits:
//   s[r * lds + j] = (float(qi_r . ki_j) * k_scales[j]) * q_scales[r].
// Bytes of a look-packed buffer of `rows` Q rows or K rows (K rows: keys packed from a multiple
// of 256 sit at look_k_bytes(that multiple, d) in a buffer of the whole run).
using LookBytesFn = size_t(int rows, int d);
// Quantizes `rows` rows of src (dequantized as the attention reads them) into dst, and each row's
// scale times `scale` into scales[r] (K rows: 0 for the padding keys up to the layout's panel).
using LookPackFn = void(const RowSource& src, int rows, int d, float scale, void* dst, float* scales);
using LookScoresFn = void(const void* q, const float* q_scales, int m, const void* k, const float* k_scales, int n,
                          int d, float* s, int64_t lds);
// For each of m rows: outer[r] = max(outer[r], max of s over [lo[r], mid[r])) and inner[r] =
// max(inner[r], max over [mid[r], hi[r])), the bounds clipped to [0, n).
using LookMaxFn = void(const float* s, int64_t lds, int m, int n, const int32_t* lo, const int32_t* mid,
                       const int32_t* hi, float* outer, float* inner);
struct LookPath {
  LookBytesFn* q_bytes;
  LookBytesFn* k_bytes;
  LookPackFn* pack_q;
  LookPackFn* pack_k;
  LookScoresFn* scores;
  LookMaxFn* row_max;
};

// The precisions of the flash path: X(name, Enumerator), the index of KernelTable::paths.
#define SAMPLEATTN_FOR_EACH_PRECISION(X) \
  X(f32, kF32)   /* f32 products */      \
  X(bf16, kBF16) /* bf16 products with f32 accumulation */

enum class Precision : int {
#define SAMPLEATTN_PRECISION_ENUMERATOR(name, Enum) Enum,
  SAMPLEATTN_FOR_EACH_PRECISION(SAMPLEATTN_PRECISION_ENUMERATOR)
#undef SAMPLEATTN_PRECISION_ENUMERATOR
};
inline constexpr Precision kAllPrecisions[] = {
#define SAMPLEATTN_PRECISION_ELEMENT(name, Enum) Precision::Enum,
    SAMPLEATTN_FOR_EACH_PRECISION(SAMPLEATTN_PRECISION_ELEMENT)
#undef SAMPLEATTN_PRECISION_ELEMENT
};
inline constexpr int kNumPrecisions = static_cast<int>(sizeof(kAllPrecisions) / sizeof(kAllPrecisions[0]));
const char* precision_name(Precision precision);  // "f32", "bf16"

// One precision of the flash path.
struct FlashPath {
  int q_elem_bytes;  // 4 for the f32 path, 2 for bf16
  PackedBytesFn* packed_bytes;
  ScratchBytesFn* scratch_bytes;
  PackQFn* pack_q;
  PackKVFn* pack_k;
  PackKVFn* pack_v;
  AttendFn* attend;
  ScoresFn* scores;
  bool defer_scale = false;  // pack_q leaves Q unscaled; attend and scores apply the scale (bf16 path)
  // Stage 1 (cpu/sampling.cpp), its keys packed once, computes a chunk's scores a second time
  // for the column sums instead of keeping them: where `scores` is so fast (AMX tiles) that
  // writing and reading back a chunk's scores, and the small chunks a score budget allows, cost
  // more than the products (2-core Xeon, bf16: stage 1 0.77-0.81 -> 0.66 s). Not on the FMA
  // paths (2-core Zen 3, f32, 16K: stage 1 0.18-0.24 s kept, 0.29-0.45 s computed twice).
  bool rescore = false;
};

// The factor pack_q gets, and the one attend / scores get as qk_scale, for a call whose scores
// are in log2 units with `scale` (softmax_scale * log2(e)).
inline float pack_q_scale(const FlashPath& path, float scale) { return path.defer_scale ? 1.0f : scale; }
inline float qk_scale(const FlashPath& path, float scale) { return path.defer_scale ? scale : 1.0f; }

struct KernelTable {
  Isa isa;
  const char* name;  // isa_name(isa)
  // Preferred tile sizes for this ISA: query rows per block (all heads of a kv group together)
  // and keys per tile. Drivers may use smaller blocks at the edges.
  int block_rows;
  int key_tile;

  // Precision AUTO runs bf16 inputs on the bf16 path: this table's bf16 products are its fastest
  // (AMX tiles; vdpbf16ps on AMD, where it runs at the f32 FMA's rate).
  bool bf16_preferred;

  // Indexed by Precision; a path the table lacks (e.g. bf16 without a bf16 dot product) has null
  // entries. Read them through path().
  FlashPath paths[kNumPrecisions];
  // The path of this precision, or nullptr when the table has none.
  const FlashPath* path(Precision precision) const;

  AttendRowsFn* attend_rows;
  ScratchBytesFn* attend_rows_scratch_bytes;
  // attend_rows multiplies int8 K and V in integers when AttendRowsArgs::int8_products asks (Q and
  // P rounded to int16 per row; AVX512_VNNI, simd/decode/decode.h): its results are then within the
  // bound given there of the f32 products on the dequantized values, not their bits. Other dtypes
  // and kernels are unaffected.
  bool attend_rows_int8_products = false;
  RowScanFn* scan_row;  // the input policy's row scan (core/row_scan.h): the portable one's bits
  RowStatsFn* row_stats;
  AccumulateColumnsFn* accumulate_columns;
  BucketMassesFn* bucket_masses;
  StoreRowsFn* store_rows;
  ModifyScoresFn* modify_scores;
  LookPath look;  // vpdpbusd where the CPU has AVX512_VNNI, else f32 products of the integers
};

// The table of `isa`, assembled in simd/kernel_config.cpp from the per-ISA entry points. Use
// kernel_table_for() (simd/dispatch.h), which first checks that this CPU runs the ISA.
const KernelTable* compiled_kernel_table(Isa isa);

}  // namespace sampleattn
