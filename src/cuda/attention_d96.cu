// Instantiations for head dim 96 (one file per head dim: they compile in parallel).
#include "cuda/attention_kernel.cuh"
#include "cuda/columns_kernel.cuh"
#include "cuda/launch.h"

namespace sampleattn::cuda {

cudaError_t launch_attention_d96(bool bf16, const AttentionArgs& args, cudaStream_t stream) {
  return bf16 ? launch_attention_typed<96, __nv_bfloat16>(args, stream) : launch_attention_typed<96, __half>(args, stream);
}

cudaError_t launch_columns_d96(bool bf16, const ColumnArgs& args, cudaStream_t stream) {
  return bf16 ? launch_columns_typed<96, __nv_bfloat16>(args, stream) : launch_columns_typed<96, __half>(args, stream);
}

}  // namespace sampleattn::cuda
