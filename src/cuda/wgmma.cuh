// Hopper (sm_90a) warpgroup MMA: wgmma.mma_async m64n128k16 with f32 accumulators, the shared-
// memory matrix descriptors for 128-byte-swizzled tiles, and the fences around them. Only for
// code compiled for sm_90a (callers guard with __CUDA_ARCH_FEAT_SM90_ALL).
//
// Accumulator d[16][4]: warp w of the warpgroup holds rows 16 w + g and 16 w + g + 8 (g = lane / 4),
// d[n][0..1] at columns 8 n + 2 t + {0, 1} of the first, d[n][2..3] of the second (t = lane % 4):
// the m16n8 layout of mma.sync, repeated over n.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sampleattn::cuda::dev {

// A shared-memory matrix descriptor for a 128-byte-swizzled tile (8-row atoms of 128-byte rows,
// 16-byte chunk c of row r stored at chunk c ^ (r % 8); atoms 1024-byte aligned). sbo: bytes
// between 8-row groups along the strided dimension; lbo: for N-major (transposed) operands, bytes
// between 64-element column blocks (ignored for K-major).
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t smem_address, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((smem_address & 0x3FFFF) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32) | (uint64_t{1} << 62);
}

// Byte offset of 16-byte chunk c (0..15) of row r in a [rows][128] tile of 2-byte elements stored
// as two 128-byte-swizzled [rows][64] halves (the layout smem_desc_sw128 describes).
__device__ __forceinline__ uint32_t sw128_offset(int rows, int r, int c) {
  return static_cast<uint32_t>((c / 8) * rows * 128 + r * 128 + (((c % 8) ^ (r % 8)) * 16));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Generic-proxy writes to shared memory (cp.async, st.shared) made visible to wgmma's reads.
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// mbarriers (shared memory, 8 bytes each) for producer/consumer pipelines, and named barriers.
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives on the barrier when all of this thread's earlier cp.async copies have landed (the
// arrival counts toward the expected count set at init).
__device__ __forceinline__ void mbarrier_arrive_cp_async(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Returns once the phase of parity `parity` has completed (a fresh barrier has completed parity 1).
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}
// Warpgroup register budgets (all warps of a warpgroup execute these).
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Keeps the compiler from moving accumulator accesses across a wgmma wait.
__device__ __forceinline__ void fence_registers(float (&d)[16][4]) {
#pragma unroll
  for (int n = 0; n < 16; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[n][e])::"memory");
  }
}

// d (+)= A B, A (m64 x k16) and B (n128 x k16) K-major in shared memory; scale_d = 0 overwrites d.
template <typename T>
__device__ __forceinline__ void wgmma_ss(float (&d)[16][4], uint64_t desc_a, uint64_t desc_b, int scale_d);

// d += A B, A (m64 x k16) in registers (the mma.sync A-fragment layout per warp), B (k16 x n128)
// N-major ("transposed") in shared memory.
template <typename T>
__device__ __forceinline__ void wgmma_rs_tb(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc_b);

// The 64 accumulator operands of an m64n128 f32 wgmma: "{%0, ..., %63}" and d[16][4] as "+f".
#define SAMPLEATTN_WGMMA_D_REGS \
  "{" \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63" \
  "}"
#define SAMPLEATTN_WGMMA_D_OPERANDS(d) \
  "+f"((d)[0][0]), "+f"((d)[0][1]), "+f"((d)[0][2]), "+f"((d)[0][3]), \
  "+f"((d)[1][0]), "+f"((d)[1][1]), "+f"((d)[1][2]), "+f"((d)[1][3]), \
  "+f"((d)[2][0]), "+f"((d)[2][1]), "+f"((d)[2][2]), "+f"((d)[2][3]), \
  "+f"((d)[3][0]), "+f"((d)[3][1]), "+f"((d)[3][2]), "+f"((d)[3][3]), \
  "+f"((d)[4][0]), "+f"((d)[4][1]), "+f"((d)[4][2]), "+f"((d)[4][3]), \
  "+f"((d)[5][0]), "+f"((d)[5][1]), "+f"((d)[5][2]), "+f"((d)[5][3]), \
  "+f"((d)[6][0]), "+f"((d)[6][1]), "+f"((d)[6][2]), "+f"((d)[6][3]), \
  "+f"((d)[7][0]), "+f"((d)[7][1]), "+f"((d)[7][2]), "+f"((d)[7][3]), \
  "+f"((d)[8][0]), "+f"((d)[8][1]), "+f"((d)[8][2]), "+f"((d)[8][3]), \
  "+f"((d)[9][0]), "+f"((d)[9][1]), "+f"((d)[9][2]), "+f"((d)[9][3]), \
  "+f"((d)[10][0]), "+f"((d)[10][1]), "+f"((d)[10][2]), "+f"((d)[10][3]), \
  "+f"((d)[11][0]), "+f"((d)[11][1]), "+f"((d)[11][2]), "+f"((d)[11][3]), \
  "+f"((d)[12][0]), "+f"((d)[12][1]), "+f"((d)[12][2]), "+f"((d)[12][3]), \
  "+f"((d)[13][0]), "+f"((d)[13][1]), "+f"((d)[13][2]), "+f"((d)[13][3]), \
  "+f"((d)[14][0]), "+f"((d)[14][1]), "+f"((d)[14][2]), "+f"((d)[14][3]), \
  "+f"((d)[15][0]), "+f"((d)[15][1]), "+f"((d)[15][2]), "+f"((d)[15][3])

#define SAMPLEATTN_WGMMA_SS(TYPE, PTX)                                                              \
  template <>                                                                                       \
  __device__ __forceinline__ void wgmma_ss<TYPE>(float (&d)[16][4], uint64_t desc_a, uint64_t desc_b, \
                                                 int scale_d) {                                     \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                       \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX "." PTX " " SAMPLEATTN_WGMMA_D_REGS \
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                                 \
                 : SAMPLEATTN_WGMMA_D_OPERANDS(d)                                                   \
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d));                                         \
  }
#define SAMPLEATTN_WGMMA_RS_TB(TYPE, PTX)                                                           \
  template <>                                                                                       \
  __device__ __forceinline__ void wgmma_rs_tb<TYPE>(float (&d)[16][4], const uint32_t (&a)[4],       \
                                                    uint64_t desc_b) {                              \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                       \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX "." PTX " " SAMPLEATTN_WGMMA_D_REGS \
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                   \
                 : SAMPLEATTN_WGMMA_D_OPERANDS(d)                                                   \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));                \
  }
SAMPLEATTN_WGMMA_SS(__nv_bfloat16, "bf16")
SAMPLEATTN_WGMMA_SS(__half, "f16")
SAMPLEATTN_WGMMA_RS_TB(__nv_bfloat16, "bf16")
SAMPLEATTN_WGMMA_RS_TB(__half, "f16")
#undef SAMPLEATTN_WGMMA_SS
#undef SAMPLEATTN_WGMMA_RS_TB
#undef SAMPLEATTN_WGMMA_D_OPERANDS
#undef SAMPLEATTN_WGMMA_D_REGS

}  // namespace sampleattn::cuda::dev
