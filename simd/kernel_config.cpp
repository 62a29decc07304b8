// The CPU kernel tables, assembled in one place from the entry points that the per-ISA
// translation units export (model: XNNPACK src/configs/*-config.c). This file is compiled with
// the baseline flags: it only takes addresses, so building a table never runs an ISA's code.
#include "simd/cpu_features.h"
#include "simd/decode/entry_points.h"
#include "simd/flash/entry_points.h"
#include "simd/kernels.h"

namespace sampleattn {
namespace {

FlashPath& slot(KernelTable& table, Precision precision) { return table.paths[static_cast<int>(precision)]; }

// One specialization per ISA of the list. The primary template stops the build when the list
// names an ISA that has no table here yet.
template <Isa I>
KernelTable build_table() {
  static_assert(static_cast<int>(I) < 0, "an ISA of SAMPLEATTN_ISAS has no build_table<>() specialization");
  return {};
}

template <>
KernelTable build_table<Isa::kScalar>() {
  KernelTable t{};
  t.isa = Isa::kScalar;
  t.name = isa_name(t.isa);
  t.block_rows = 64;
  t.key_tile = 64;
  slot(t, Precision::kF32) = {4, scalar::f32_packed_bytes, scalar::f32_scratch_bytes, scalar::f32_pack_q,
                              scalar::f32_pack_k, scalar::f32_pack_v, scalar::f32_attend, scalar::f32_scores};
  t.row_stats = scalar::row_stats;
  t.accumulate_columns = scalar::accumulate_columns;
  t.bucket_masses = scalar::bucket_masses;
  t.store_rows = scalar::store_rows;
  t.modify_scores = scalar::modify_scores;
  t.attend_rows = scalar::attend_rows;
  t.attend_rows_scratch_bytes = scalar::attend_rows_scratch_bytes;
  t.look = {scalar::look_q_bytes, scalar::look_k_bytes, scalar::look_pack_q, scalar::look_pack_k, scalar::look_scores,
            scalar::look_row_max};
  t.scan_row = scan_row_portable;
  return t;
}

template <>
KernelTable build_table<Isa::kAvx2>() {
  KernelTable t{};
  t.isa = Isa::kAvx2;
  t.name = isa_name(t.isa);
  t.block_rows = 256;
  t.key_tile = 256;
  slot(t, Precision::kF32) = {4, avx2::f32_packed_bytes, avx2::f32_scratch_bytes, avx2::f32_pack_q,
                              avx2::f32_pack_k, avx2::f32_pack_v, avx2::f32_attend, avx2::f32_scores};
  t.row_stats = avx2::row_stats;
  t.accumulate_columns = avx2::accumulate_columns;
  t.bucket_masses = avx2::bucket_masses;
  t.store_rows = avx2::store_rows;
  t.modify_scores = avx2::modify_scores;
  t.attend_rows = avx2::attend_rows;
  t.attend_rows_scratch_bytes = avx2::attend_rows_scratch_bytes;
  t.look = {avx2::look_q_bytes, avx2::look_k_bytes, avx2::look_pack_q, avx2::look_pack_k, avx2::look_scores,
            avx2::look_row_max};
  t.scan_row = avx2::scan_row;
  return t;
}

template <>
KernelTable build_table<Isa::kAvx512>() {
  KernelTable t{};
  t.isa = Isa::kAvx512;
  t.name = isa_name(t.isa);
  // 1024 query rows per task: each task packs its K/V tiles, so more rows per task read and pack
  // K/V fewer times (docs/KERNELS.md, Tile sizes; 7-10% on dense and sample at 16K).
  t.block_rows = 1024;
  t.key_tile = 256;
  slot(t, Precision::kF32) = {4, avx512::f32_packed_bytes, avx512::f32_scratch_bytes, avx512::f32_pack_q,
                              avx512::f32_pack_k, avx512::f32_pack_v, avx512::f32_attend, avx512::f32_scores};
  if (cpu_features().avx512_bf16) {
    t.bf16_preferred = cpu_features().amd;
    slot(t, Precision::kBF16) = {2, avx512::bf16_packed_bytes, avx512::bf16_scratch_bytes, avx512::bf16_pack_q,
                                 avx512::bf16_pack_k, avx512::bf16_pack_v, avx512::bf16_attend,
                                 avx512::bf16_scores, /*defer_scale=*/true};
  }
  t.row_stats = avx512::row_stats;
  t.accumulate_columns = avx512::accumulate_columns;
  t.bucket_masses = avx512::bucket_masses;
  t.store_rows = avx512::store_rows;
  t.modify_scores = avx512::modify_scores;
  if (cpu_features().avx512_vnni) {
    t.attend_rows = avx512::attend_rows_vnni;
    t.attend_rows_scratch_bytes = avx512::attend_rows_vnni_scratch_bytes;
    t.attend_rows_int8_products = true;
    t.look = {avx512::look_q_bytes_vnni, avx512::look_k_bytes_vnni, avx512::look_pack_q_vnni,
              avx512::look_pack_k_vnni,  avx512::look_scores_vnni,  avx512::look_row_max};
  } else {
    t.look = {avx512::look_q_bytes, avx512::look_k_bytes, avx512::look_pack_q, avx512::look_pack_k,
              avx512::look_scores,  avx512::look_row_max};
    t.attend_rows = avx512::attend_rows;
    t.attend_rows_scratch_bytes = avx512::attend_rows_scratch_bytes;
  }
  t.scan_row = avx512::scan_row;
  return t;
}

template <>
KernelTable build_table<Isa::kAmx>() {
  KernelTable t = build_table<Isa::kAvx512>();
  t.isa = Isa::kAmx;
  t.name = isa_name(t.isa);
  t.bf16_preferred = true;
  // 512 keys a tile: the tile kernel's per-row costs (maximum, correction, row sum) spread over
  // twice the scores (2-core Xeon, dense 8K bf16: +9-11% over 256; 1024: -4%; block_rows 2048: -4%).
  t.key_tile = 512;
  slot(t, Precision::kBF16) = {2, avx512::bf16_packed_bytes, amx::bf16_scratch_bytes, avx512::bf16_pack_q,
                               avx512::bf16_pack_k, avx512::bf16_pack_v, amx::bf16_attend, amx::bf16_scores,
                               /*defer_scale=*/true, /*rescore=*/true};
  // The look on the VNNI layouts (every AMX CPU has AVX512_VNNI; an emulating one may not, and
  // keeps the avx512 table's look), its products on the int8 tiles.
  if (cpu_features().avx512_vnni) t.look.scores = amx::look_scores;
  return t;
}

}  // namespace

const FlashPath* KernelTable::path(Precision precision) const {
  const FlashPath& p = paths[static_cast<int>(precision)];
  return p.attend != nullptr ? &p : nullptr;
}

const char* precision_name(Precision precision) {
  switch (precision) {
#define SAMPLEATTN_PRECISION_NAME(name, Enum) \
  case Precision::Enum: return #name;
    SAMPLEATTN_FOR_EACH_PRECISION(SAMPLEATTN_PRECISION_NAME)
#undef SAMPLEATTN_PRECISION_NAME
  }
  return "unknown";
}

// Each table is built on first use and lives for the process.
const KernelTable* compiled_kernel_table(Isa isa) {
  switch (isa) {
#define SAMPLEATTN_TABLE_CASE(name, Enum)                        \
  case Isa::Enum: {                                              \
    static const KernelTable table = build_table<Isa::Enum>();   \
    return &table;                                               \
  }
    SAMPLEATTN_FOR_EACH_ISA(SAMPLEATTN_TABLE_CASE)
#undef SAMPLEATTN_TABLE_CASE
  }
  return nullptr;
}

}  // namespace sampleattn
