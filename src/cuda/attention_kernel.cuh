// The tensor-core attention kernel (flash attention 2 style), templated on its dim D and the
// operand type. Included, with the column-score kernel (columns_kernel.cuh), by one
// attention_dNN.cu per head dim so that the instantiations compile in parallel.
//
// D is max(head_dim, head_dim_v): a call whose V rows are narrower or wider than its Q/K rows
// (e.g. DeepSeek's 192/128) runs the kernel of the larger dim, the narrower operand zero-filled
// in shared memory (cp.async with no source bytes) so that its padding adds exact zeros to the
// products, and only head_dim_v output columns are written.
//
// Attention: a block of 4 warps takes kBM query rows of one query head; each warp owns 16 * kMT
// rows. Keys come in tiles of kBN from the block's segments (attention_block.cuh: window band or
// dense range, then the stripe columns gathered through their index list straight into shared
// memory), each key's row addressed through the KV cache's row() and copied or dequantized by
// kv_load.cuh. K/V tiles are double-buffered with cp.async; S = Q K^T and O += P V run on mma.sync
// m16n8k16 with f32 accumulation; the online softmax runs in log2 units. On Hopper, D = 128 runs
// the wgmma kernel of attention_sm90.cu instead.
#pragma once

#include <cuda_runtime.h>

#include "cuda/attention_block.cuh"
#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"
#include "cuda/kv_load.cuh"

namespace sampleattn::cuda {

template <int D>
struct AttentionConfig {
  static constexpr int kWarps = 4;
  static constexpr int kMT = D <= 128 ? 2 : 1;  // m16 row tiles per warp
  static constexpr int kBM = kWarps * 16 * kMT;
  static constexpr int kBN = D <= 128 ? 64 : 32;
  static constexpr int kStride = D + 8;  // shared-memory row pitch (elements): ldmatrix without bank conflicts
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM + 4 * kBN) * kStride * 2;
};

template <int D, typename T>
__global__ void __launch_bounds__(128) attention_kernel(const AttentionArgs a) {
  using C = AttentionConfig<D>;
  constexpr int MT = C::kMT, BN = C::kBN, S = C::kStride;
  constexpr int NT = BN / 8;     // n8 tiles of scores per key tile
  constexpr int DT = D / 8;      // n8 tiles of the output
  constexpr int CHUNKS = D / 8;  // 16-byte chunks per row (of which Q/K have qk_chunks, V v_chunks)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + C::kBM * S;
  T* sV = sK + 2 * BN * S;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  AttentionBlock b = AttentionBlock::make(a, blockIdx.x);
  const T* Q = static_cast<const T*>(a.q);
  const int qk_chunks = a.head_dim / 8, v_chunks = a.head_dim_v / 8;

  // Queries -> shared memory.
  for (int i = tid; i < C::kBM * CHUNKS; i += 128) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool valid = r < b.blk.count && c < qk_chunks;
    const int64_t token = b.sd.q_begin + (valid ? b.local_row(r) : 0);
    dev::cp_async16(sQ + r * S + c * 8, Q + token * a.q_token_stride + b.head * a.q_head_stride + (valid ? c * 8 : 0),
                    valid);
  }
  dev::cp_async_commit();

  // The stripe run each row sees, while Q loads.
  __shared__ int32_t s_vis_lo[C::kBM], s_vis_hi[C::kBM];
  b.fill_visible(s_vis_lo, s_vis_hi, C::kBM, tid, 128);
  __syncthreads();
  b.plan_tiles<BN>(s_vis_lo, s_vis_hi);

  // This thread's rows (invalid rows repeat the last valid one).
  FragmentRows fr[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) fr[mt] = b.fragment_rows(warp * 16 * MT + mt * 16, g, s_vis_lo, s_vis_hi);

  auto load_tile = [&](int64_t tile, int stage) {
    const TileSpan ts = b.tile<BN>(tile);
    T* dk = sK + stage * BN * S;
    T* dv = sV + stage * BN * S;
    for (int i = tid; i < BN * CHUNKS; i += 128) {
      const int r = i / CHUNKS, c = i % CHUNKS;
      int64_t key;
      const bool valid = b.key_at(ts.seg1, ts.t0 + r, &key);
      const bool k_valid = valid && c < qk_chunks, v_valid = valid && c < v_chunks;
      const KvRow row = a.kv.layout.row(b.blk.seq, b.sd.k_begin, key, b.kvh);
      dev::load_k_chunk<T>(dk + r * S + c * 8, a.kv, row, k_valid ? c : 0, k_valid);
      if (b.with_pv) dev::load_v_chunk<T>(dv + r * S + c * 8, a.kv, row, v_valid ? c : 0, v_valid);
    }
  };

  float m[MT][2], l[MT][2];
  float o[MT][DT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
#pragma unroll
    for (int dn = 0; dn < DT; ++dn) o[mt][dn][0] = o[mt][dn][1] = o[mt][dn][2] = o[mt][dn][3] = 0.f;
  }

  if (b.n_tiles > 0) load_tile(0, 0);
  dev::cp_async_commit();

  for (int64_t tile = 0; tile < b.n_tiles; ++tile) {
    const int stage = static_cast<int>(tile & 1);
    if (tile + 1 < b.n_tiles) {
      load_tile(tile + 1, stage ^ 1);
      dev::cp_async_commit();
      dev::cp_async_wait<1>();
    } else {
      dev::cp_async_wait<0>();
    }
    __syncthreads();
    const T* tk = sK + stage * BN * S;
    const T* tv = sV + stage * BN * S;
    const TileSpan ts = b.tile<BN>(tile);

    // S = Q K^T.
    float s[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < NT; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t bf[NT][2];
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const T* p = tk + (np * 16 + (lane % 8) + (lane / 16) * 8) * S + kk * 16 + ((lane / 8) % 2) * 8;
        dev::ldsm_x4(bf[2 * np][0], bf[2 * np][1], bf[2 * np + 1][0], bf[2 * np + 1][1], p);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t af[4];
        const T* p = sQ + (warp * 16 * MT + mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * S + kk * 16 + (lane / 16) * 8;
        dev::ldsm_x4(af[0], af[1], af[2], af[3], p);
#pragma unroll
        for (int n = 0; n < NT; ++n) dev::mma16816<T>(s[mt][n], af, bf[n][0], bf[n][1]);
      }
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) online_softmax<NT, DT, /*kPassPerVariant=*/true>(s[mt], m[mt], l[mt], o[mt], b, ts, fr[mt], t, a.scale_log2, a.mod);

    // O += P V.
    if (b.with_pv) {
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) probabilities_a<T, NT>(s[mt], kk, pa[mt]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t b0, b1, b2, b3;
          const T* p = tv + (kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * S + dp * 16 + (lane / 16) * 8;
          dev::ldsm_x4_trans(b0, b1, b2, b3, p);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            dev::mma16816<T>(o[mt][2 * dp], pa[mt], b0, b1);
            dev::mma16816<T>(o[mt][2 * dp + 1], pa[mt], b2, b3);
          }
        }
      }
    }
    __syncthreads();  // the stage is overwritten by the load issued next iteration
  }
  dev::cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) finish_rows<DT>(a, b, o[mt], m[mt], l[mt], warp * 16 * MT + mt * 16 + g, t);
}

template <int D, typename T>
cudaError_t launch_attention_typed(const AttentionArgs& a, cudaStream_t stream) {
  return dev::launch_with_smem(attention_kernel<D, T>, attention_grid(a), 128,
                               AttentionConfig<D>::kSmemBytes, a, stream);
}

}  // namespace sampleattn::cuda
