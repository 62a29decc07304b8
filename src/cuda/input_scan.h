// The input policy (core/input_scan.h) on the device: one pass over Q, K or V that finds the
// first non-finite element and the largest row norm and |x|, reduced with atomics into a
// DeviceInputScan. The backend turns the three results into the same Status as the CPU.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sampleattn::cuda {

struct DeviceInputScan {
  unsigned long long first_bad;  // (token * heads + head) * 65536 + dim of the first NaN/Inf, or ~0
  unsigned int max_sumsq_bits;   // bits of the largest row sum of squares (non-negative floats order as ints)
  unsigned int max_abs_bits;     // bits of the largest |x|
};

inline constexpr DeviceInputScan kEmptyInputScan = {~0ull, 0u, 0u};

// dtype: 0 f32, 1 f16, 2 bf16 (sampleattn_dtype). *out must hold kEmptyInputScan.
cudaError_t launch_input_scan(const void* data, int dtype, int64_t token_stride, int64_t head_stride,
                              int64_t tokens, int heads, int dim, DeviceInputScan* out, cudaStream_t stream);

}  // namespace sampleattn::cuda
