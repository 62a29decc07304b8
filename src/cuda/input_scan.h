// The input policy (core/input_scan.h) on the device: one pass over Q, K or V that finds the
// first non-finite element and the largest row norm and |x|, reduced with atomics into a
// DeviceInputScan. The backend turns the three results into the same Status as the CPU.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernel_params.h"

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

// K (values = false) or V of every sequence, each key read through kv.layout.row() (packed or
// paged), as core/input_scan.cpp's scan_kv_rows: rows numbered (key_prefix[seq] + j) * heads +
// head; first_bad's low 16 bits are 0 when the row's scale is not finite, else 1 + the first bad
// dim. dtype: 1 f16, 2 bf16 (the data measured), or KvType's quantized types (the dtype's bound
// times |scale|; fp8 codes 0x7f/0xff are NaN). seqs: device SeqDescs (k_begin, k_len, key_prefix).
cudaError_t launch_kv_scan(const KvSource& kv, bool values, int dtype, const SeqDesc* seqs, int num_seqs,
                           int64_t total_keys, int heads, int dim, DeviceInputScan* out, cudaStream_t stream);

}  // namespace sampleattn::cuda
