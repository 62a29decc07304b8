#include "cuda/input_scan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace sampleattn::cuda {
namespace {

template <int DType>
__device__ __forceinline__ float load(const void* base, int64_t index, bool* finite) {
  if constexpr (DType == 0) {
    const uint32_t bits = static_cast<const uint32_t*>(base)[index];
    *finite = (bits & 0x7f800000u) != 0x7f800000u;
    return __uint_as_float(bits);
  } else {
    const uint16_t bits = static_cast<const uint16_t*>(base)[index];
    if constexpr (DType == 1) {
      *finite = (bits & 0x7c00u) != 0x7c00u;
      return __half2float(__ushort_as_half(bits));
    } else {
      *finite = (bits & 0x7f80u) != 0x7f80u;
      return __uint_as_float(static_cast<uint32_t>(bits) << 16);
    }
  }
}

// The block's largest row sum of squares and |x| into *out: one atomic pair a block (lane 0 of
// each warp holds its warp's maxima). Every thread of the block calls it. A pair per row, as
// before, put a million atomics on the same two words for 32K tokens x 32 heads: 1.6 ms of
// serialized atomics for a 268 MB read (docs/PERF.md 2026-12-06).
__device__ __forceinline__ void block_maxima(float sumsq, float max_abs, DeviceInputScan* out) {
  __shared__ float warp_max[2][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) {
    warp_max[0][warp] = sumsq;
    warp_max[1][warp] = max_abs;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; ++w) {
      sumsq = fmaxf(sumsq, warp_max[0][w]);
      max_abs = fmaxf(max_abs, warp_max[1][w]);
    }
    if (sumsq > 0.f) atomicMax(&out->max_sumsq_bits, __float_as_uint(sumsq));
    if (max_abs > 0.f) atomicMax(&out->max_abs_bits, __float_as_uint(max_abs));
  }
}

// One warp per (token, head) row, grid-stride over the rows.
template <int DType>
__global__ void input_scan_kernel(const void* data, int64_t token_stride, int64_t head_stride, int64_t rows,
                                  int heads, int dim, DeviceInputScan* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  float warp_sumsq = 0.f, warp_abs = 0.f;  // the largest over this warp's rows
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps) {
    const int64_t token = row / heads;
    const int head = static_cast<int>(row % heads);
    const int64_t base = token * token_stride + head * head_stride;
    float sumsq = 0.f, max_abs = 0.f;
    int bad_dim = dim;
    for (int c = lane; c < dim; c += 32) {
      bool finite;
      const float x = load<DType>(data, base + c, &finite);
      if (!finite && c < bad_dim) bad_dim = c;
      if (finite) {
        sumsq = fmaf(x, x, sumsq);
        max_abs = fmaxf(max_abs, fabsf(x));
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      sumsq += __shfl_xor_sync(0xffffffffu, sumsq, offset);
      max_abs = fmaxf(max_abs, __shfl_xor_sync(0xffffffffu, max_abs, offset));
      bad_dim = min(bad_dim, __shfl_xor_sync(0xffffffffu, bad_dim, offset));
    }
    if (lane == 0 && bad_dim < dim) {
      atomicMin(&out->first_bad, static_cast<unsigned long long>(row) * 65536ull + static_cast<unsigned>(bad_dim));
    }
    warp_sumsq = fmaxf(warp_sumsq, sumsq);
    warp_abs = fmaxf(warp_abs, max_abs);
  }
  block_maxima(warp_sumsq, warp_abs, out);
}

// The sequence holding global key g: the last one whose key_prefix <= g (never an empty one: the
// sequence after it would have the same prefix).
__device__ __forceinline__ int seq_of_key(const SeqDesc* seqs, int n, int64_t g) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (seqs[mid].key_prefix <= g) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// One warp per (key, head) row of K or V, grid-stride. kType: 1 int8, 2 fp8 e4m3, 3 f16, 4 bf16.
template <int kType>
__global__ void kv_scan_kernel(const KvSource kv, bool values, const SeqDesc* seqs, int num_seqs, int64_t rows,
                               int heads, int dim, DeviceInputScan* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const float* scales = values ? kv.layout.v_scale : kv.layout.k_scale;
  float warp_sumsq = 0.f, warp_abs = 0.f;  // the largest over this warp's good rows
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps) {
    const int64_t g = row / heads;
    const int head = static_cast<int>(row % heads);
    const int seq = seq_of_key(seqs, num_seqs, g);
    const SeqDesc& sd = seqs[seq];
    const KvRow at = kv.layout.row(seq, sd.k_begin, g - sd.key_prefix, head);
    const int64_t base = values ? at.v : at.k;
    const void* data = values ? kv.v : kv.k;
    (void)base;  // int8 rows are not read
    (void)data;
    float sumsq = 0.f, max_abs = 0.f;
    int bad_dim = dim;
    bool scale_bad = false;
    if constexpr (kType == 1 || kType == 2) {
      // Quantized: the dtype's bound times the row's scale; fp8's NaN codes are its only bad ones.
      constexpr float kMax = kType == 1 ? 127.f : 448.f;
      if constexpr (kType == 2) {
        const uint8_t* b = static_cast<const uint8_t*>(data) + base;
        for (int c = lane; c < dim; c += 32) {
          if ((b[c] & 0x7fu) == 0x7fu && c < bad_dim) bad_dim = c;
        }
      }
      const float scale = fabsf(scales[at.scale]);
      scale_bad = !isfinite(scale);
      sumsq = static_cast<float>(dim) * kMax * kMax * scale * scale;
      max_abs = kMax * scale;
    } else {
      for (int c = lane; c < dim; c += 32) {
        bool finite;
        const float x = kType == 3 ? load<1>(data, base + c, &finite) : load<2>(data, base + c, &finite);
        if (!finite && c < bad_dim) bad_dim = c;
        if (finite) {
          sumsq = fmaf(x, x, sumsq);
          max_abs = fmaxf(max_abs, fabsf(x));
        }
      }
      for (int offset = 16; offset > 0; offset >>= 1) {
        sumsq += __shfl_xor_sync(0xffffffffu, sumsq, offset);
        max_abs = fmaxf(max_abs, __shfl_xor_sync(0xffffffffu, max_abs, offset));
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) bad_dim = min(bad_dim, __shfl_xor_sync(0xffffffffu, bad_dim, offset));
    if (scale_bad || bad_dim < dim) {
      if (lane == 0) {
        const unsigned low = scale_bad ? 0u : static_cast<unsigned>(bad_dim) + 1u;
        atomicMin(&out->first_bad, static_cast<unsigned long long>(row) * 65536ull + low);
      }
    } else {
      warp_sumsq = fmaxf(warp_sumsq, sumsq);
      warp_abs = fmaxf(warp_abs, max_abs);
    }
  }
  block_maxima(warp_sumsq, warp_abs, out);
}

}  // namespace

cudaError_t launch_kv_scan(const KvSource& kv, bool values, int dtype, const SeqDesc* seqs, int num_seqs,
                           int64_t total_keys, int heads, int dim, DeviceInputScan* out, cudaStream_t stream) {
  const int64_t rows = total_keys * heads;
  if (rows <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t wanted = (rows + kThreads / 32 - 1) / (kThreads / 32);
  const int blocks = static_cast<int>(wanted < 4096 ? wanted : 4096);
  const KvType type = values ? kv.v_type : kv.k_type;
  if (type == KvType::kI8) {
    kv_scan_kernel<1><<<blocks, kThreads, 0, stream>>>(kv, values, seqs, num_seqs, rows, heads, dim, out);
  } else if (type == KvType::kFP8) {
    kv_scan_kernel<2><<<blocks, kThreads, 0, stream>>>(kv, values, seqs, num_seqs, rows, heads, dim, out);
  } else if (dtype == 1) {
    kv_scan_kernel<3><<<blocks, kThreads, 0, stream>>>(kv, values, seqs, num_seqs, rows, heads, dim, out);
  } else {
    kv_scan_kernel<4><<<blocks, kThreads, 0, stream>>>(kv, values, seqs, num_seqs, rows, heads, dim, out);
  }
  return cudaGetLastError();
}

cudaError_t launch_input_scan(const void* data, int dtype, int64_t token_stride, int64_t head_stride,
                              int64_t tokens, int heads, int dim, DeviceInputScan* out, cudaStream_t stream) {
  const int64_t rows = tokens * heads;
  if (rows <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t wanted = (rows + kThreads / 32 - 1) / (kThreads / 32);
  const int blocks = static_cast<int>(wanted < 4096 ? wanted : 4096);
  switch (dtype) {
    case 0: input_scan_kernel<0><<<blocks, kThreads, 0, stream>>>(data, token_stride, head_stride, rows, heads, dim, out); break;
    case 1: input_scan_kernel<1><<<blocks, kThreads, 0, stream>>>(data, token_stride, head_stride, rows, heads, dim, out); break;
    default: input_scan_kernel<2><<<blocks, kThreads, 0, stream>>>(data, token_stride, head_stride, rows, heads, dim, out); break;
  }
  return cudaGetLastError();
}

}  // namespace sampleattn::cuda
