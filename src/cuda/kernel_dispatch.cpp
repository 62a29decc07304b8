// Which kernel runs: the head-dim dispatch of the attention and column-score kernels, and the
// choice between the Hopper (sm_90a) and the portable mma.sync kernels for head dim 128.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

#include "cuda/launch.h"

namespace sampleattn::cuda {

cudaError_t launch_attention(int head_dim, bool bf16, const AttentionArgs& args, cudaStream_t stream) {
  switch (head_dim) {
    case 64: return launch_attention_d64(bf16, args, stream);
    case 80: return launch_attention_d80(bf16, args, stream);
    case 96: return launch_attention_d96(bf16, args, stream);
    case 128: return use_sm90_kernels() ? launch_attention_sm90_d128(bf16, args, stream)
                                        : launch_attention_d128(bf16, args, stream);
    case 256: return launch_attention_d256(bf16, args, stream);
    default: return cudaErrorInvalidValue;
  }
}

bool use_sm90_kernels() {
  static const bool portable = [] {
    const char* v = std::getenv("SAMPLEATTN_CUDA_MMA_SYNC");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  int device = 0, major = 0, minor = 0;
  if (portable || cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    return false;
  }
  return major == 9 && minor == 0;
}

cudaError_t launch_columns(int head_dim, bool bf16, const ColumnArgs& args, cudaStream_t stream) {
  switch (head_dim) {
    case 64: return launch_columns_d64(bf16, args, stream);
    case 80: return launch_columns_d80(bf16, args, stream);
    case 96: return launch_columns_d96(bf16, args, stream);
    case 128: return use_sm90_kernels() ? launch_columns_sm90_d128(bf16, args, stream)
                                        : launch_columns_d128(bf16, args, stream);
    case 256: return launch_columns_d256(bf16, args, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace sampleattn::cuda
