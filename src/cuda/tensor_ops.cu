// The repacking of tensors whose strides or alignment do not allow 16-byte copies.
#include <algorithm>
#include <cstdint>

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
