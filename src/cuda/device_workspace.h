// One call's host-side description for the CUDA kernels and the layout of its device
// workspace (metadata first, uploaded in one copy; then repacked inputs and the sample buffers)
// and of its pinned host staging (what stage 2 exchanges with the host), and both buffers: one
// allocation each per backend, grown as needed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/problem.h"
#include "core/status.h"
#include "cuda/kernel_params.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {

// The CUDA backend reads Q as f16 or bf16 (its tensor-core operand type), K and V each the same
// as Q or quantized (int8, fp8 e4m3: dequantized into Q's type as they load).
Status check_dtypes(const Problem& p);

// The attention kernel's dim for the call (attention_dim of launch.h).
inline int attention_dim(const Problem& p) { return attention_dim(p.head_dim, p.head_dim_v); }

// 16-byte copies need aligned rows: otherwise the tensor is repacked first.
bool needs_repack(const TensorView& t);
// K or V (values) is copied into a packed one first: packed (not paged), of the operand type, and
// not 16-byte aligned. Paged and quantized rows are read where they are (kv_load.cuh).
bool repacks_kv(const Problem& p, bool values);
// Whether the short query runs of dense sequences go to the decode kernels (kernel_params.h):
// SAMPLEATTN_CUDA_DECODE=0 turns them off (the attention kernel then runs them, for comparisons).
bool decode_enabled();

// Everything a call needs that is known on the host before any kernel runs, and the layout of
// its device workspace.
struct CallLayout {
  int block_rows = 0;
  bool bf16 = false;
  bool per_group = false;
  bool sampled = false;
  int heads_per_set = 1;
  int sets_per_seq = 0;

  std::vector<SeqDesc> seqs;
  std::vector<RowBlock> blocks;         // forward
  // Sampled rows, concatenated over the sampled sequences, then their validation rows (core/
  // validation.h), likewise: row statistics are [head][total_rows] over both.
  std::vector<int32_t> rows;
  std::vector<RowBlock> sample_blocks;  // over `rows`: the first kept_blocks sampled rows, then validation rows
  size_t kept_blocks = 0;
  std::vector<ValTile> val_tiles;       // the validation mass kernel's blocks
  std::vector<KeyTile> tiles;           // column tiles
  std::vector<int64_t> score_offset;    // per sequence
  std::vector<SelectionSet> sets;
  std::vector<int64_t> set_offset;      // per set, into stripes
  // The score variants' per-head values (ScoreModParams, log2 units): ALiBi slopes [num_q_heads]
  // then sinks [num_q_heads]; empty when the call has neither.
  std::vector<float> head_mods;
  std::vector<int> sampled_seqs;
  // Paged K/V: the block table's used entries, [sequence][table_stride] (unused ones 0), or
  // [sequence][kv head][table_head_stride] when the cache has per-head tables (core/kv_cache.h).
  std::vector<int32_t> block_table;
  int64_t table_stride = 0;
  int64_t table_head_stride = 0;
  // Decode (kernel_params.h): its groups and units, and partial rows (sum of the units' rows).
  std::vector<DecodeGroup> decode_groups;
  std::vector<DecodeUnit> decode_units;
  int64_t decode_rows = 0;
  int64_t total_rows = 0, total_scores = 0, total_columns = 0, total_items = 0;
  int64_t total_val_rows = 0;
  int64_t total_masses = 0;  // uint32 fixed-point sums: hq x total_val_rows x kValidationMassStride
  int32_t max_k_len = 0;
  size_t sort_bytes = 0;
  // The look (sample.look > 0 on a sampled call; cuda/look.h): its quantized rows' bytes, and the
  // most blocks and rows it and the dense-row pass can have.
  bool look = false;
  int32_t look_row_bytes = 0;
  int64_t look_max_blocks = 0, dense_max_rows = 0, dense_max_blocks = 0;
  int64_t look_bit_words = 0;  // the left-out bits of every set: ceil(k_len / 64) words each

  // Workspace offsets (bytes).
  size_t o_meta = 0, meta_bytes = 0;
  size_t o_seqs = 0, o_blocks = 0, o_rows = 0, o_sample_blocks = 0, o_val_tiles = 0, o_tiles = 0, o_score_offset = 0,
         o_sets = 0, o_set_offset = 0, o_head_mods = 0, o_block_table = 0, o_decode_groups = 0, o_decode_units = 0;
  size_t o_part_max = 0, o_part_sum = 0, o_part_o = 0;
  size_t o_q = 0, o_k = 0, o_v = 0;
  size_t o_row_max = 0, o_row_sum = 0, o_kept = 0, o_scores = 0, o_set_scores = 0, o_keys_in = 0, o_keys_out = 0,
         o_values_in = 0, o_values_out = 0, o_flags = 0, o_keep = 0, o_stripes = 0, o_counts = 0, o_dense = 0, o_sort = 0,
         o_buckets = 0, o_set_active = 0, o_masses = 0;
  size_t o_look_keep = 0, o_look_keys = 0, o_look_key_scales = 0, o_look_bits = 0, o_look_bit_offsets = 0,
         o_look_blocks = 0, o_look_flags = 0, o_head_dense = 0, o_dense_rows = 0, o_dense_blocks = 0, o_dense_heads = 0;
  size_t bytes = 0;

  // Pinned host staging offsets (bytes), disjoint: alpha's counts and the rankings (down), the
  // bucket ids and active flags (up), the masses (down), the decided counts and dense flags (up).
  size_t h_keep = 0, h_ranked = 0, h_buckets = 0, h_set_active = 0, h_masses = 0, h_counts = 0, h_dense = 0;
  // The look's: kLookAlpha's counts (down), the left-out bits, their offsets and the look's blocks
  // (up), the flags (down), the heads it made dense and the dense-row blocks (up).
  size_t h_look_keep = 0, h_look_bits = 0, h_look_bit_offsets = 0, h_look_blocks = 0, h_look_flags = 0,
         h_head_dense = 0, h_dense_rows = 0, h_dense_blocks = 0, h_dense_heads = 0;
  size_t host_bytes = 0;
};

Status lay_out_call(const Problem& p, CallLayout* cl);

// The device workspace: freed with the backend, reallocated when a call needs more.
class DeviceWorkspace {
 public:
  DeviceWorkspace() = default;
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
  ~DeviceWorkspace() { release(); }

  // Both need the workspace's device current.
  Status reserve(size_t bytes);
  void release();  // frees it now, ignoring errors
  template <typename T>
  T* at(size_t offset) const { return reinterpret_cast<T*>(static_cast<char*>(base_) + offset); }

 private:
  void* base_ = nullptr;
  size_t capacity_ = 0;
};

// The pinned host staging of stage 2's round trips, likewise.
class HostStaging {
 public:
  HostStaging() = default;
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;
  ~HostStaging() { release(); }

  Status reserve(size_t bytes);
  void release();
  template <typename T>
  T* at(size_t offset) const { return reinterpret_cast<T*>(static_cast<char*>(base_) + offset); }

 private:
  void* base_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace sampleattn::cuda
