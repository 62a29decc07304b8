// Which kernel runs: the head-dim dispatch of the attention (on attention_dim), column-score and
// validation kernels (on head_dim), and the choice between the Hopper (sm_90a) and the portable
// mma.sync kernels for head dim 128 (the attention's only for head_dim = head_dim_v = 128).
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

#include "cuda/launch.h"

namespace sampleattn::cuda {
namespace {

// The Hopper kernels' producers copy K/V rows with cp.async as they are: rows of the operand type
// on 16-byte boundaries. Quantized or unaligned caches run mma.sync kernels; so do paged caches in
// the attention (its 40-register producer spills with the page lookup: scripts/check_sm90.sh),
// while the column kernel's producer reads pages too.
bool sm90_reads(const KvSource& kv) { return !kv.quantized() && kv.aligned != 0; }
bool sm90_attention_reads(const KvSource& kv) { return sm90_reads(kv) && !kv.layout.paged(); }

}  // namespace

cudaError_t launch_attention(int dim, bool bf16, const AttentionArgs& args, cudaStream_t stream) {
  // The wgmma kernel reads Q, K and V rows of 128 (attention_sm90.cu).
  if (dim == 128 && args.head_dim == 128 && args.head_dim_v == 128 && sm90_attention_reads(args.kv) &&
      use_sm90_kernels()) {
    return launch_attention_sm90_d128(bf16, args, stream);
  }
  switch (dim) {
#define SAMPLEATTN_CUDA_ATTENTION_CASE(D) \
  case D: return launch_attention_d##D(bf16, args, stream);
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_ATTENTION_CASE)
#undef SAMPLEATTN_CUDA_ATTENTION_CASE
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_decode(int dim, bool bf16, const DecodeArgs& args, cudaStream_t stream) {
  switch (dim) {
#define SAMPLEATTN_CUDA_DECODE_CASE(D) \
  case D: return launch_decode_d##D(bf16, args, stream);
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_DECODE_CASE)
#undef SAMPLEATTN_CUDA_DECODE_CASE
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
  if (head_dim == 128 && sm90_reads(args.kv) && use_sm90_kernels()) return launch_columns_sm90_d128(bf16, args, stream);
  switch (head_dim) {
#define SAMPLEATTN_CUDA_COLUMNS_CASE(D) \
  case D: return launch_columns_d##D(bf16, args, stream);
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_COLUMNS_CASE)
#undef SAMPLEATTN_CUDA_COLUMNS_CASE
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_validation(int head_dim, bool bf16, const ValidationArgs& args, cudaStream_t stream) {
  switch (head_dim) {
#define SAMPLEATTN_CUDA_VALIDATION_CASE(D) \
  case D: return launch_validation_d##D(bf16, args, stream);
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_VALIDATION_CASE)
#undef SAMPLEATTN_CUDA_VALIDATION_CASE
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace sampleattn::cuda
