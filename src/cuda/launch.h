// Host-side entry points of the CUDA kernels (defined in the .cu files). Each returns the CUDA
// error of its launch; the caller maps it to a Status.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/kernel_params.h"
#include "kernel_lists.h"

namespace sampleattn::cuda {

// The attention kernel's dim: Q/K rows of head_dim and V/O rows of head_dim_v elements run the
// kernel of the larger (attention_kernel.cuh), the narrower zero-padded.
inline int attention_dim(int head_dim, int head_dim_v) { return head_dim > head_dim_v ? head_dim : head_dim_v; }

// dim (attention: attention_dim; columns and validation: head_dim): one of the head-dim list
// (SAMPLEATTN_FOR_EACH_HEAD_DIM); bf16 selects the operand type (else f16). Anything else returns
// cudaErrorInvalidValue.
cudaError_t launch_attention(int dim, bool bf16, const AttentionArgs& args, cudaStream_t stream);
cudaError_t launch_columns(int head_dim, bool bf16, const ColumnArgs& args, cudaStream_t stream);
// The validation mass kernel (validation_kernel.cuh; mma.sync on every device).
cudaError_t launch_validation(int head_dim, bool bf16, const ValidationArgs& args, cudaStream_t stream);

// Decode (decode_kernel.cuh, on attention_dim): the split-KV partials of every unit, then the
// merge of each group's partials into O and lse (decode_merge.cu).
cudaError_t launch_decode(int dim, bool bf16, const DecodeArgs& args, cudaStream_t stream);
cudaError_t launch_decode_merge(const DecodeArgs& args, cudaStream_t stream);

// One of each per head dim, defined in the generated attention_d<D>.cu (attention_head_dim.cu.in).
#define SAMPLEATTN_CUDA_DECLARE_HEAD_DIM(D)                                                          \
  cudaError_t launch_attention_d##D(bool bf16, const AttentionArgs& args, cudaStream_t stream);     \
  cudaError_t launch_decode_d##D(bool bf16, const DecodeArgs& args, cudaStream_t stream);           \
  cudaError_t launch_columns_d##D(bool bf16, const ColumnArgs& args, cudaStream_t stream);         \
  cudaError_t launch_validation_d##D(bool bf16, const ValidationArgs& args, cudaStream_t stream);
SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_DECLARE_HEAD_DIM)
#undef SAMPLEATTN_CUDA_DECLARE_HEAD_DIM

// Hopper (sm_90a): the wgmma attention (attention_sm90.cu, head_dim = head_dim_v = 128) and
// column-score (columns_sm90.cu, head dim 128) kernels.
cudaError_t launch_attention_sm90_d128(bool bf16, const AttentionArgs& args, cudaStream_t stream);
cudaError_t launch_columns_sm90_d128(bool bf16, const ColumnArgs& args, cudaStream_t stream);
// Whether the current device runs the sm_90a kernels: compute capability 9.0, unless the
// environment sets SAMPLEATTN_CUDA_MMA_SYNC=1 (the portable kernels, for comparisons).
bool use_sm90_kernels();

// Rows of the query block of the attention kernel for this attention dim (the unit of RowBlock).
int attention_block_rows(int dim);
// Key columns per block of the column kernel (the same for every head dim).
int column_tile();

// Stage 2 on the device (selection.cu). One "set" is one stripe selection: a query head, or a kv
// group whose heads' scores are added in head order.
struct SelectionSet {
  int64_t score_base;  // column scores of the set's first head (the others follow, k_len apart)
  int64_t offset;      // into set_scores / flags / stripes: k_len entries
  int64_t key_begin;   // into the sort arrays: k_len - sinks entries
  int32_t heads;       // heads in the set
  int32_t k_len;
  int32_t sinks;       // min(sink_tokens, k_len)
  double total;        // sampled rows x heads: the total mass
};

struct SelectionArgs {
  const float* scores;
  const SelectionSet* sets;  // device
  int32_t num_sets;
  int32_t max_k_len;
  int64_t total_columns;  // sum of k_len over the sets
  int64_t total_items;    // sum of k_len - sinks over the sets
  float alpha;
  int32_t window_mass_counts;
  int64_t min_stripes;
  int64_t max_stripes;
  // Workspace.
  float* set_scores;     // total_columns
  uint64_t* keys_in;     // total_items
  uint64_t* keys_out;
  int32_t* values_in;
  uint8_t* flags;        // total_columns
  void* sort_temp;
  size_t sort_temp_bytes;
  // Results.
  int32_t* values_out;   // total_items: set s's ranking (its non-sink columns, best first) at key_begin
  int32_t* keep;         // [num_sets][2]: sinks kept, ranked columns kept (alpha's; then the decided)
  int32_t* look_keep;    // [num_sets]: the ranked columns kLookAlpha keeps (sample.look > 0), or null
  int32_t* stripes;      // total_columns: set s at sets[s].offset, ascending
};

// Scratch bytes of the radix sort for this many items and sets.
size_t selection_sort_bytes(int64_t items, int num_sets);
// The ranking and alpha's count of every set (values_out, keep).
cudaError_t launch_ranking(const SelectionArgs& args, cudaStream_t stream);
// The stripe lists of the counts in `keep` (the sinks and a prefix of the ranking), ascending.
cudaError_t launch_stripes(const SelectionArgs& args, cudaStream_t stream);

// The look (look.cu): the sampled sequences' keys quantized, then the flags of its blocks' rows.
cudaError_t launch_look(bool bf16, const LookArgs& args, cudaStream_t stream);

// Copies a [tokens][heads][d] tensor of 2-byte elements with arbitrary strides into a packed one.
cudaError_t launch_repack(const void* src, int64_t token_stride, int64_t head_stride, int64_t tokens, int heads,
                          int d, void* dst, cudaStream_t stream);

}  // namespace sampleattn::cuda
