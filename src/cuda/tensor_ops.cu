// Head-dim dispatch of the attention kernels and the repacking of tensors whose strides or
// alignment do not allow 16-byte copies.
#include <cstdlib>
#include <cstring>

#include "cuda/attention_kernel.cuh"
#include "cuda/launch.h"

namespace sampleattn::cuda {
namespace {

__global__ void repack_kernel(const uint16_t* src, int64_t token_stride, int64_t head_stride, int64_t total,
                              int heads, int d, uint16_t* dst) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t x = i % d, h = (i / d) % heads, token = i / (static_cast<int64_t>(d) * heads);
    dst[i] = src[token * token_stride + h * head_stride + x];
  }
}

}  // namespace

cudaError_t launch_attention(int head_dim, bool bf16, const AttentionArgs& args, cudaStream_t stream) {
  if (head_dim == 128 && use_sm90_kernels()) return launch_attention_sm90_d128(bf16, args, stream);
  switch (head_dim) {
#define SAMPLEATTN_CUDA_ATTENTION_CASE(D) \
  case D: return launch_attention_d##D(bf16, args, stream);
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_ATTENTION_CASE)
#undef SAMPLEATTN_CUDA_ATTENTION_CASE
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
  if (head_dim == 128 && use_sm90_kernels()) return launch_columns_sm90_d128(bf16, args, stream);
  switch (head_dim) {
#define SAMPLEATTN_CUDA_COLUMNS_CASE(D) \
  case D: return launch_columns_d##D(bf16, args, stream);
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_COLUMNS_CASE)
#undef SAMPLEATTN_CUDA_COLUMNS_CASE
    default: return cudaErrorInvalidValue;
  }
}

int attention_block_rows(int head_dim) {
  return head_dim <= 128 ? AttentionConfig<128>::kBM : AttentionConfig<256>::kBM;
}

int column_tile(int head_dim) { return ColumnConfig<128>::kColumns; }

cudaError_t launch_repack(const void* src, int64_t token_stride, int64_t head_stride, int64_t tokens, int heads,
                          int d, void* dst, cudaStream_t stream) {
  const int64_t total = tokens * heads * d;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, 65536);
  repack_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(static_cast<const uint16_t*>(src), token_stride,
                                                                   head_stride, total, heads, d,
                                                                   static_cast<uint16_t*>(dst));
  return cudaGetLastError();
}

}  // namespace sampleattn::cuda
