// The flash family's entry points, one set per ISA, each in a namespace named for the ISA and
// defined in flash_<isa>.cpp. They are plain (non-inline) functions, so the per-ISA translation
// units share no code; simd/kernel_config.cpp assembles them into the kernel tables. The types
// and the contract are in simd/kernels.h.
#pragma once

#include "simd/kernels.h"

// The f32 path, the row operations and the score variants, which every ISA has.
#define SAMPLEATTN_FLASH_ENTRY_POINTS     \
  PackedBytesFn f32_packed_bytes;         \
  ScratchBytesFn f32_scratch_bytes;       \
  PackQFn f32_pack_q;                     \
  PackKVFn f32_pack_k, f32_pack_v;        \
  AttendFn f32_attend;                    \
  ScoresFn f32_scores;                    \
  RowStatsFn row_stats;                   \
  AccumulateColumnsFn accumulate_columns; \
  BucketMassesFn bucket_masses;           \
  StoreRowsFn store_rows;                 \
  ModifyScoresFn modify_scores;           \
  LookBytesFn look_q_bytes, look_k_bytes; \
  LookPackFn look_pack_q, look_pack_k;    \
  LookScoresFn look_scores;               \
  LookMaxFn look_row_max;

namespace sampleattn::scalar {
SAMPLEATTN_FLASH_ENTRY_POINTS
// The decode step, portable (the vector ISAs' is the decode family's, simd/decode/).
AttendRowsFn attend_rows;
ScratchBytesFn attend_rows_scratch_bytes;
}  // namespace sampleattn::scalar

// The vector ISAs' input scan (simd/flash/scan.h); the scalar table uses the portable definition.
namespace sampleattn::avx2 {
SAMPLEATTN_FLASH_ENTRY_POINTS
RowScanFn scan_row;
}  // namespace sampleattn::avx2

// Plus the bf16 path (vdpbf16ps; only put in the table when the CPU has AVX512_BF16).
namespace sampleattn::avx512 {
SAMPLEATTN_FLASH_ENTRY_POINTS
RowScanFn scan_row;
// The look's products on vpdpbusd (only when the CPU has AVX512_VNNI).
LookBytesFn look_q_bytes_vnni, look_k_bytes_vnni;
LookPackFn look_pack_q_vnni, look_pack_k_vnni;
LookScoresFn look_scores_vnni;
PackedBytesFn bf16_packed_bytes;
ScratchBytesFn bf16_scratch_bytes;
PackQFn bf16_pack_q;
PackKVFn bf16_pack_k, bf16_pack_v;
AttendFn bf16_attend;
ScoresFn bf16_scores;
}  // namespace sampleattn::avx512

// The amx table is the avx512 table with the bf16 path's products on tiles.
namespace sampleattn::amx {
ScratchBytesFn bf16_scratch_bytes;
AttendFn bf16_attend;
ScoresFn bf16_scores;
// The look's products on int8 tiles (tdpbsud), on the avx512 table's VNNI layouts.
LookScoresFn look_scores;
// Not table entries: the tile product's peak for `sampleattn bench --peak` (amx_gflops). Runs
// `steps` x 4 independent 16x16x32 tile products on this thread (CPU with the amx table only);
// returns the FLOPs done and adds a result to *sink.
int64_t tile_product_loop(int64_t steps, float* sink);
bool tiles_emulated();  // a SAMPLEATTN_AMX_EMULATE build: the loop measures the scalar model
}  // namespace sampleattn::amx

#undef SAMPLEATTN_FLASH_ENTRY_POINTS
