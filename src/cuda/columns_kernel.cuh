// Stage 1, pass 2 of SampleAttention on the device: the column-score kernel (mma.sync), templated
// on the head dim and the operand type, and what every column-score kernel shares: the mapping of
// a block to its query head, key columns and sampled rows (ColumnBlock), and the warps' column-sum
// reduction. Included by the attention_dNN.cu (the instantiations) and by the Hopper kernel of
// columns_sm90.cu, so both count the same columns the same way (core/mask.h: a sampled row at p
// counts the columns j < sample_column_end(p, shift)).
#pragma once

#include <cuda_runtime.h>

#include "core/mask.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"

namespace sampleattn::cuda {

// What one block of a column-score kernel (stage 1, pass 2) works on: key columns t0 .. t0 + 127
// of one query head, and the sampled rows of its sequence that see them (rows first .. nr - 1 of
// the sequence's sampled-row list).
struct ColumnBlock {
  int head, kvh;
  KeyTile kt;
  SeqDesc sd;
  int64_t q_offset, shift;  // a row at position p counts the columns j < sample_column_end(p, shift)
  const int32_t* rows;      // the sequence's sampled rows (local query indices), ascending
  int64_t nr, t0, first;
  const float* row_max;     // the rows' statistics (log2 units), indexed like rows
  const float* row_sum;

  __device__ static ColumnBlock make(const ColumnArgs& a, int64_t block_index) {
    ColumnBlock b;
    b.head = static_cast<int>(block_index / a.num_tiles);
    b.kt = a.tiles[block_index % a.num_tiles];
    b.sd = a.seqs[b.kt.seq];
    b.kvh = b.head / a.group;
    b.q_offset = b.sd.k_len - b.sd.q_len;
    b.shift = sample_column_shift(b.sd.window, a.outside_window_only != 0);
    b.rows = a.rows + b.sd.row_begin;
    b.nr = b.sd.row_count;
    b.t0 = b.kt.t0;
    // The first sampled row that counts column t0: sample_column_end(p, shift) > t0, i.e.
    // local row >= t0 + shift - q_offset.
    b.first = dev::count_below(b.rows, b.nr, b.t0 + b.shift - b.q_offset);
    b.row_max = a.row_max + static_cast<int64_t>(b.head) * a.total_rows + b.sd.row_begin;
    b.row_sum = a.row_sum + static_cast<int64_t>(b.head) * a.total_rows + b.sd.row_begin;
    return b;
  }
};

// A warp's column sums: acc[n][e] holds this thread's sum for column 8 n + 2 t + e over its rows;
// adds them over the warp's 8 row groups (g) and stores the warp's BC sums at red_warp.
template <int BC>
__device__ __forceinline__ void store_warp_column_sums(const float (&acc)[BC / 8][2], float* red_warp, int g, int t) {
#pragma unroll
  for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float v = acc[n][e];
      v += __shfl_xor_sync(0xffffffffu, v, 4);
      v += __shfl_xor_sync(0xffffffffu, v, 8);
      v += __shfl_xor_sync(0xffffffffu, v, 16);
      if (g == 0) red_warp[n * 8 + 2 * t + e] = v;
    }
  }
}

// Stage 1, pass 2: column scores. A block owns kColumns key columns of one query head and walks
// the sampled rows that see them in a fixed order (warps over 16-row slices of 64-row chunks, then
// the warps' partial sums added in warp order), so the result is deterministic.
template <int D>
struct ColumnConfig {
  static constexpr int kColumns = 128;
  static constexpr int kRows = 64;
  static constexpr int kStride = D + 8;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kColumns + 2 * kRows) * kStride * 2 + 4 * kColumns * sizeof(float);
};

template <int D, typename T>
__global__ void __launch_bounds__(128) column_kernel(const ColumnArgs a) {
  using C = ColumnConfig<D>;
  constexpr int BC = C::kColumns, RC = C::kRows, S = C::kStride, CHUNKS = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sQ = sK + BC * S;  // [2][RC][S]
  float* red = reinterpret_cast<float*>(sQ + 2 * RC * S);  // [4][BC]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const ColumnBlock cb = ColumnBlock::make(a, blockIdx.x);
  const SeqDesc& sd = cb.sd;
  const int64_t q_offset = cb.q_offset, shift = cb.shift, nr = cb.nr, t0 = cb.t0, first = cb.first;
  const int32_t* rows = cb.rows;
  const float* row_max = cb.row_max;
  const float* row_sum = cb.row_sum;
  const int head = cb.head;
  const T* Q = static_cast<const T*>(a.q) + head * a.q_head_stride;
  const T* K = static_cast<const T*>(a.k) + sd.k_begin * a.k_token_stride + cb.kvh * a.k_head_stride;

  for (int i = tid; i < BC * CHUNKS; i += 128) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool valid = t0 + r < sd.k_len;
    dev::cp_async16(sK + r * S + c * 8, K + (valid ? t0 + r : 0) * a.k_token_stride + c * 8, valid);
  }
  auto load_rows = [&](int64_t c0, int stage) {
    for (int i = tid; i < RC * CHUNKS; i += 128) {
      const int r = i / CHUNKS, c = i % CHUNKS;
      const bool valid = c0 + r < nr;
      const int64_t token = sd.q_begin + (valid ? rows[c0 + r] : 0);
      dev::cp_async16(sQ + (stage * RC + r) * S + c * 8, Q + token * a.q_token_stride + c * 8, valid);
    }
  };
  if (first < nr) load_rows(first, 0);
  dev::cp_async_commit();

  float acc[BC / 8][2];
#pragma unroll
  for (int n = 0; n < BC / 8; ++n) acc[n][0] = acc[n][1] = 0.f;

  int stage = 0;
  for (int64_t c0 = first; c0 < nr; c0 += RC, stage ^= 1) {
    if (c0 + RC < nr) {
      load_rows(c0 + RC, stage ^ 1);
      dev::cp_async_commit();
      dev::cp_async_wait<1>();
    } else {
      dev::cp_async_wait<0>();
    }
    __syncthreads();
    // This thread's two rows of the warp's 16-row slice.
    float rmax[2], rscale[2];
    int64_t hi[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = c0 + warp * 16 + h * 8 + g;
      if (r < nr) {
        rmax[h] = row_max[r];
        const float sum = row_sum[r];
        rscale[h] = sum > 0.f ? 1.f / sum : 0.f;
        hi[h] = sample_column_end(q_offset + rows[r], shift);
      } else {
        rmax[h] = 0.f;
        rscale[h] = 0.f;
        hi[h] = 0;
      }
    }
    const T* q_slice = sQ + (stage * RC + warp * 16) * S;
#pragma unroll
    for (int half = 0; half < BC / 64; ++half) {
      float s[8][4];
#pragma unroll
      for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t af[4];
        dev::ldsm_x4(af[0], af[1], af[2], af[3],
                     q_slice + ((lane % 8) + ((lane / 8) % 2) * 8) * S + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t b0, b1, b2, b3;
          dev::ldsm_x4(b0, b1, b2, b3,
                       sK + (half * 64 + np * 16 + (lane % 8) + (lane / 16) * 8) * S + kk * 16 + ((lane / 8) % 2) * 8);
          dev::mma16816<T>(s[2 * np], af, b0, b1);
          dev::mma16816<T>(s[2 * np + 1], af, b2, b3);
        }
      }
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t col = t0 + half * 64 + n * 8 + 2 * t + e;
          const float p0 = col < hi[0] ? dev::fast_exp2(s[n][e] * a.scale_log2 - rmax[0]) * rscale[0] : 0.f;
          const float p1 = col < hi[1] ? dev::fast_exp2(s[n][2 + e] * a.scale_log2 - rmax[1]) * rscale[1] : 0.f;
          acc[half * 8 + n][e] += p0 + p1;
        }
      }
    }
    __syncthreads();
  }
  dev::cp_async_wait<0>();

  // Sum over the 8 row groups of the warp, then over the warps in order.
  store_warp_column_sums<BC>(acc, red + warp * BC, g, t);
  __syncthreads();
  float* out = a.scores + a.score_offset[cb.kt.seq] + static_cast<int64_t>(head) * sd.k_len;
  for (int c = tid; c < BC; c += 128) {
    if (t0 + c < sd.k_len) out[t0 + c] = ((red[c] + red[BC + c]) + red[2 * BC + c]) + red[3 * BC + c];
  }
}

template <int D, typename T>
cudaError_t launch_columns_typed(const ColumnArgs& a, cudaStream_t stream) {
  return dev::launch_with_smem(column_kernel<D, T>, a.num_tiles * a.num_q_heads, 128, ColumnConfig<D>::kSmemBytes,
                               a, stream);
}

}  // namespace sampleattn::cuda
