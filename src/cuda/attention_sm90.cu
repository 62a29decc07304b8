// The Hopper (sm_90a) attention kernel for head dim 128: the same blocks, segments, masks and
// softmax as the mma.sync kernel (attention_block.cuh), with both products on wgmma.
//
// A block of 2 warpgroups (256 threads) takes 128 query rows of one query head, 64 per
// warpgroup. Q and the double-buffered K/V tiles of 128 keys sit in shared memory in the 128-byte
// swizzled layout that wgmma reads through descriptors: a [rows][128] tile is stored as two
// [rows][64] halves, each row 128 bytes, 16-byte chunk c of row r at chunk c ^ (r % 8).
//   S = Q K^T: wgmma m64n128k16, A = Q and B = K both K-major in shared memory (8 k-steps).
//   O += P V:  wgmma m64n128k16, A = P from registers (the score accumulator, rounded to T), B = V
//              N-major ("transposed": its rows are keys, contiguous along d) in shared memory.
// Tiles arrive by cp.async issued by all threads (stripe columns are gathered row by row through
// their index list, so there is no TMA box to describe them).
#include "cuda/attention_kernel.cuh"
#include "cuda/launch.h"
#include "cuda/wgmma.cuh"

namespace sampleattn::cuda {
namespace {

constexpr int kD = 128;
constexpr int kBM = 128;  // = AttentionConfig<128>::kBM: the host plans row blocks of this size
constexpr int kBN = 128;
constexpr int kThreads = 256;
constexpr uint32_t kHalfBytes(int rows) { return static_cast<uint32_t>(rows) * (kD / 2) * 2; }  // [rows][64]
constexpr uint32_t kQBytes = 2 * kHalfBytes(kBM);
constexpr uint32_t kTileBytes = 2 * kHalfBytes(kBN);  // one K or V stage
constexpr size_t kSmemBytes = kQBytes + 4 * kTileBytes + 1024;  // + alignment of the first atom

static_assert(kBM == AttentionConfig<128>::kBM, "row blocks are planned in units of the mma.sync kernel's");

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) attention_kernel_sm90(const AttentionArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int NT = kBN / 8, DT = kD / 8, CHUNKS = kD / 8;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t base = (dev::smem_addr(smem_raw) + 1023) & ~1023u;
  unsigned char* const gbase = smem_raw + (base - dev::smem_addr(smem_raw));
  const uint32_t sQ = base, sK = base + kQBytes, sV = sK + 2 * kTileBytes;

  // Byte offset of 16-byte chunk c (0..15) of row r in a swizzled [rows][128] tile.
  auto swizzled = [](int rows, int r, int c) {
    return static_cast<uint32_t>((c / 8) * rows * 128 + r * 128 + (((c % 8) ^ (r % 8)) * 16));
  };
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wg = warp / 4;
  const int g = lane / 4, t = lane % 4;
  AttentionBlock b = AttentionBlock::make(a, blockIdx.x);
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k) + b.sd.k_begin * a.k_token_stride + b.kvh * a.k_head_stride;
  const T* V = static_cast<const T*>(a.v) + b.sd.k_begin * a.v_token_stride + b.kvh * a.v_head_stride;

  for (int i = tid; i < kBM * CHUNKS; i += kThreads) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool valid = r < b.blk.count;
    const int64_t token = b.sd.q_begin + (valid ? b.local_row(r) : 0);
    dev::cp_async16(gbase + (sQ - base) + swizzled(kBM, r, c),
                    Q + token * a.q_token_stride + b.head * a.q_head_stride + c * 8, valid);
  }
  dev::cp_async_commit();

  __shared__ int32_t s_visible[kBM];
  b.fill_visible(s_visible, kBM, tid, kThreads);
  __syncthreads();
  b.plan_tiles<kBN>(s_visible);

  // This thread's rows: warp * 16 + g and + 8 (warpgroup wg holds rows 64 wg .. 64 wg + 63).
  int32_t pos[2], vis[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + h * 8 + g;
    pos[h] = static_cast<int32_t>(b.position(r));
    vis[h] = b.sparse ? s_visible[r] : 0;
  }

  auto load_tile = [&](int64_t tile, int stage) {
    const TileSpan ts = b.tile<kBN>(tile);
    unsigned char* dk = gbase + (sK - base) + stage * kTileBytes;
    unsigned char* dv = gbase + (sV - base) + stage * kTileBytes;
    for (int i = tid; i < kBN * CHUNKS; i += kThreads) {
      const int r = i / CHUNKS, c = i % CHUNKS;
      int64_t key;
      const bool valid = b.key_at(ts.seg1, ts.t0 + r, &key);
      const uint32_t off = swizzled(kBN, r, c);
      dev::cp_async16(dk + off, K + key * a.k_token_stride + c * 8, valid);
      if (b.with_pv) dev::cp_async16(dv + off, V + key * a.v_token_stride + c * 8, valid);
    }
  };

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[DT][4], s[NT][4];
#pragma unroll
  for (int n = 0; n < DT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
#pragma unroll
  for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;

  if (b.n_tiles > 0) load_tile(0, 0);
  dev::cp_async_commit();

  const uint32_t q_rows = sQ + wg * 64 * 128;
  for (int64_t tile = 0; tile < b.n_tiles; ++tile) {
    const int stage = static_cast<int>(tile & 1);
    if (tile + 1 < b.n_tiles) {
      load_tile(tile + 1, stage ^ 1);
      dev::cp_async_commit();
      dev::cp_async_wait<1>();
    } else {
      dev::cp_async_wait<0>();
    }
    dev::fence_proxy_async_smem();
    __syncthreads();
    const TileSpan ts = b.tile<kBN>(tile);
    const uint32_t k_tile = sK + stage * kTileBytes, v_tile = sV + stage * kTileBytes;

    // S = Q K^T: k-steps of 16 walk 32 bytes along a 128-byte swizzled row, then the other half.
    dev::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      const uint32_t step = (kk / 4) * kHalfBytes(kBM) + (kk % 4) * 32;
      const uint32_t kstep = (kk / 4) * kHalfBytes(kBN) + (kk % 4) * 32;
      dev::wgmma_ss<T>(s, dev::smem_desc_sw128(q_rows + step, 16, 1024), dev::smem_desc_sw128(k_tile + kstep, 16, 1024),
                       kk > 0 ? 1 : 0);
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();
    dev::fence_registers(s);

    online_softmax<NT, DT>(s, m, l, o, b, ts, pos, vis, t, a.scale_log2);

    // O += P V: key steps of 16 rows (two 8-row groups, 1024 bytes apart); the d halves are
    // kHalfBytes(kBN) apart.
    if (b.with_pv) {
      uint32_t pa[kBN / 16][4];
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) probabilities_a<T, NT>(s, kk, pa[kk]);
      dev::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        dev::wgmma_rs_tb<T>(o, pa[kk], dev::smem_desc_sw128(v_tile + kk * 16 * 128, kHalfBytes(kBN), 1024));
      }
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
      dev::fence_registers(o);
    }
    __syncthreads();  // the stage is overwritten by the load issued next iteration
  }
  dev::cp_async_wait<0>();

  finish_rows<DT>(a, b, o, m, l, warp * 16 + g, t);
#endif
}

template <typename T>
cudaError_t launch_typed(const AttentionArgs& a, cudaStream_t stream) {
  const int64_t grid = a.num_blocks * a.num_q_heads;
  if (grid == 0) return cudaSuccess;
  cudaError_t err = cudaFuncSetAttribute(attention_kernel_sm90<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes));
  if (err != cudaSuccess) return err;
  attention_kernel_sm90<T><<<static_cast<unsigned>(grid), kThreads, kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_attention_sm90_d128(bool bf16, const AttentionArgs& args, cudaStream_t stream) {
  return bf16 ? launch_typed<__nv_bfloat16>(args, stream) : launch_typed<__half>(args, stream);
}

}  // namespace sampleattn::cuda
