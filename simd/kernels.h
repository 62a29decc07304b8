// The CPU kernel table: every loop that touches O(N^2) data goes through one of these entries, so
// the drivers in src/cpu/ (dense, sampling, sparse) are ISA-free and each ISA is written once in
// simd/. Tables are filled once per process by a descending chain avx512 -> avx2 -> scalar
// (simd/dispatch.h).
//
// Conventions shared by all entries:
// - d is the head dimension (64, 80, 96, 128 or 256); rows are tokens.
// - Scores are in log2 units: pack_q multiplies Q by `scale` and the caller passes
//   scale = softmax_scale * log2(e), so that probabilities are exp2(s - row_max).
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

namespace sampleattn {

// Source rows for a pack: row r starts at base + offset(r) elements, where
// offset(r) = offsets ? offsets[r] : r * row_stride. The gather through `offsets` is how the
// query heads of a kv group are stacked into one block and how stripe columns are packed.
struct RowSource {
  const void* base;
  DType dtype;
  int64_t row_stride;       // elements, used when offsets == nullptr
  const int64_t* offsets;   // optional per-row element offsets
};

// One online-softmax step of flash attention on a block of m query rows against n keys:
//   s = Q K^T (log2 units); new_max = max(row_max, max_j s); c = exp2(row_max - new_max);
//   row_sum = row_sum * c + sum_j exp2(s - new_max); acc = acc * c + exp2(s - new_max) V.
struct AttendTileArgs {
  const void* q;         // packed by pack_q: m rows
  int m;
  const void* k;         // packed by pack_k: n rows
  const void* v;         // packed by pack_v: n rows
  int n;
  int d;
  const int32_t* lo;     // row spans, see above
  const int32_t* hi;
  float* row_max;        // [m], starts at -inf
  float* row_sum;        // [m], starts at 0
  float* acc;            // [m x d] f32, row-major, leading dimension d
  void* scratch;         // at least scratch_bytes(m, n) bytes, 64-byte aligned
};

// One precision of the flash path (f32 products, or bf16 products with f32 accumulation).
struct FlashPath {
  int q_elem_bytes;  // 4 for the f32 path, 2 for bf16
  // Bytes of a packed buffer of `rows` rows (Q, K or V alike); a multiple of 64.
  size_t (*packed_bytes)(int rows, int d);
  // Bytes of scratch attend() needs for an m x n block; a multiple of 64.
  size_t (*scratch_bytes)(int m, int n);
  void (*pack_q)(const RowSource& src, int m, int d, float scale, void* dst);
  void (*pack_k)(const RowSource& src, int n, int d, void* dst);
  void (*pack_v)(const RowSource& src, int n, int d, void* dst);
  void (*attend)(const AttendTileArgs& args);
  // s[r * lds + j] = q_r . k_j for an m x n block (no masking), in the same units as attend.
  void (*scores)(const void* q, int m, const void* k, int n, int d, float* s, int64_t lds);
};

struct KernelTable {
  Isa isa;
  const char* name;  // "avx512", "avx2", "scalar"
  // Preferred tile sizes for this ISA: query rows per block (all heads of a kv group together)
  // and keys per tile. Drivers may use smaller blocks at the edges.
  int block_rows;
  int key_tile;

  FlashPath f32;
  FlashPath bf16;   // entries null when the CPU has no bf16 dot product
  bool has_bf16;

  // Online row statistics of an m x n block of scores (log2 units): for each row with a
  // non-empty span, new_max = max(row_max, max s over the span);
  // row_sum = row_sum * exp2(row_max - new_max) + sum over the span of exp2(s - new_max).
  void (*row_stats)(const float* s, int64_t lds, int m, int n, const int32_t* lo,
                    const int32_t* hi, float* row_max, float* row_sum);
  // col_sum[j] += sum over rows r whose span holds j of exp2(s[r][j] - row_max[r]) * row_scale[r],
  // rows taken in increasing r (a fixed order, so results do not depend on threading).
  void (*accumulate_columns)(const float* s, int64_t lds, int m, int n, const int32_t* lo,
                             const int32_t* hi, const float* row_max, const float* row_scale,
                             float* col_sum);
  // dst row r = acc row r * row_scale[r], converted to dtype; dst rows at dst + r * row_stride.
  void (*store_rows)(const float* acc, int m, int d, const float* row_scale, void* dst,
                     DType dtype, int64_t row_stride);
};

// Per-ISA tables, defined in simd/. Each returns nullptr when that ISA was not compiled in.
const KernelTable* scalar_kernel_table();
const KernelTable* avx2_kernel_table();
const KernelTable* avx512_kernel_table();

}  // namespace sampleattn
