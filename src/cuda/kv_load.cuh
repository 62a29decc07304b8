// K and V rows into shared memory, wherever the cache keeps them and however it stores them: the
// one place where a kernel turns a key into bytes. Every kernel that reads K or V (attention,
// column scores, validation masses, decode) addresses a key through KvSource::layout.row()
// (core/kv_cache.h, the CPU's rule) and copies its 16-byte chunks through load_kv_chunk:
//   operand-type rows (f16/bf16), 16-byte aligned: cp.async (asynchronous, as before);
//   operand-type rows not so aligned (a paged cache with odd strides): element loads;
//   int8 / fp8 e4m3 rows: 8 bytes loaded, dequantized (value x the row's f32 scale) and rounded
//   to the operand type, stored with one 16-byte shared-memory store. These loads are
//   synchronous; the kernels' double buffering still overlaps them with other blocks' math.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"

namespace sampleattn::cuda::dev {

__device__ __forceinline__ float fp8_e4m3_to_float(uint8_t b) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), __NV_E4M3);
  return __half2float(__half(h));
}

// Eight stored values (int8 or fp8 codes) times `scale`, as 8 T in one 16-byte store.
template <typename T>
__device__ __forceinline__ void store_dequantized(T* dst, KvType type, const uint8_t* src, float scale) {
  uint8_t b[8];
  if ((reinterpret_cast<uintptr_t>(src) & 7u) == 0) {
    const uint2 w = *reinterpret_cast<const uint2*>(src);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      b[i] = static_cast<uint8_t>(w.x >> (8 * i));
      b[4 + i] = static_cast<uint8_t>(w.y >> (8 * i));
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) b[i] = src[i];
  }
  float f[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    f[i] = (type == KvType::kI8 ? static_cast<float>(static_cast<int8_t>(b[i])) : fp8_e4m3_to_float(b[i])) * scale;
  }
  uint4 out;
  out.x = pack2<T>(f[0], f[1]);
  out.y = pack2<T>(f[2], f[3]);
  out.z = pack2<T>(f[4], f[5]);
  out.w = pack2<T>(f[6], f[7]);
  *reinterpret_cast<uint4*>(dst) = out;
}

// Chunk c (elements 8c .. 8c + 7) of the row at element offset `offset` of `base` into dst (16
// bytes of shared memory); zeros when !valid. scales/scale_at: the tensor's scales and the row's
// (quantized types only).
template <typename T>
__device__ __forceinline__ void load_kv_chunk(T* dst, const void* base, KvType type, bool aligned, int64_t offset,
                                              const float* scales, int64_t scale_at, int c, bool valid) {
  if (type == KvType::kOperand) {
    const T* src = static_cast<const T*>(base) + offset + c * 8;
    if (aligned) {
      cp_async16(dst, valid ? src : base, valid);
    } else {
      uint16_t v[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = valid ? reinterpret_cast<const uint16_t*>(src)[i] : uint16_t{0};
      uint4 out;
      out.x = v[0] | (uint32_t{v[1]} << 16);
      out.y = v[2] | (uint32_t{v[3]} << 16);
      out.z = v[4] | (uint32_t{v[5]} << 16);
      out.w = v[6] | (uint32_t{v[7]} << 16);
      *reinterpret_cast<uint4*>(dst) = out;
    }
    return;
  }
  if (!valid) {
    *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  store_dequantized<T>(dst, type, static_cast<const uint8_t*>(base) + offset + c * 8, scales[scale_at]);
}

// Chunk c of key row `row` (KvSource::layout.row) of K, or of V, into dst.
template <typename T>
__device__ __forceinline__ void load_k_chunk(T* dst, const KvSource& kv, const KvRow& row, int c, bool valid) {
  load_kv_chunk<T>(dst, kv.k, kv.k_type, kv.aligned != 0, row.k, kv.layout.k_scale, row.scale, c, valid);
}
template <typename T>
__device__ __forceinline__ void load_v_chunk(T* dst, const KvSource& kv, const KvRow& row, int c, bool valid) {
  load_kv_chunk<T>(dst, kv.v, kv.v_type, kv.aligned != 0, row.v, kv.layout.v_scale, row.scale, c, valid);
}

}  // namespace sampleattn::cuda::dev
