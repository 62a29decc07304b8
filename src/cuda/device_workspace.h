// One call's host-side description for the CUDA kernels and the layout of its device
// workspace (metadata first, uploaded in one copy; then repacked inputs and the sample buffers),
// and the workspace itself: one device allocation per backend, grown as needed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/problem.h"
#include "core/status.h"
#include "cuda/kernel_params.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {

// The CUDA backend reads Q, K and V as f16 or bf16, all three the same.
Status check_dtypes(const Problem& p);

// 16-byte copies need aligned rows: otherwise the tensor is repacked first.
bool needs_repack(const TensorView& t);

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
  std::vector<int32_t> rows;            // sampled rows, concatenated
  std::vector<RowBlock> sample_blocks;  // over `rows`
  std::vector<KeyTile> tiles;           // column tiles
  std::vector<int64_t> score_offset;    // per sequence
  std::vector<SelectionSet> sets;
  std::vector<int64_t> set_offset;      // per set, into stripes
  std::vector<int> sampled_seqs;
  int64_t total_rows = 0, total_scores = 0, total_columns = 0, total_items = 0;
  int32_t max_k_len = 0;
  size_t sort_bytes = 0;

  // Workspace offsets (bytes).
  size_t o_meta = 0, meta_bytes = 0;
  size_t o_seqs = 0, o_blocks = 0, o_rows = 0, o_sample_blocks = 0, o_tiles = 0, o_score_offset = 0, o_sets = 0,
         o_set_offset = 0;
  size_t o_q = 0, o_k = 0, o_v = 0;
  size_t o_row_max = 0, o_row_sum = 0, o_kept = 0, o_scores = 0, o_set_scores = 0, o_keys_in = 0, o_keys_out = 0,
         o_values_in = 0, o_values_out = 0, o_flags = 0, o_keep = 0, o_stripes = 0, o_counts = 0, o_dense = 0, o_sort = 0;
  size_t bytes = 0;
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

}  // namespace sampleattn::cuda
