// Stage 1, pass 2 of SampleAttention on the device: the column-score kernel (mma.sync), templated
// on the head dim and the operand type, and what every column-score kernel shares: the mapping of
// a block to its query head, key columns and sampled rows (ColumnBlock), and the warps' column-sum
// reduction. Included by the attention_dNN.cu (the instantiations) and by the Hopper kernel of
// columns_sm90.cu, so both count the same columns the same way (core/mask.h: a sampled row at p
// counts the columns sample_column_begin(p, left) <= j < sample_column_end(p, shift), its
// probabilities taken over the keys the model shows it, on the scores with the head's softcap and
// ALiBi, core/score_mod.h).
#pragma once

#include <cuda_runtime.h>

#include "core/mask.h"
#include "core/score_mod.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"
#include "cuda/kv_load.cuh"

namespace sampleattn::cuda {

// What one block of a column-score kernel (stage 1, pass 2) works on: key columns t0 .. t0 +
// columns - 1 of one query head, and the sampled rows of its sequence that see any of them (rows
// first .. last - 1 of the sequence's sampled-row list).
struct ColumnBlock {
  int head, kvh;
  KeyTile kt;
  SeqDesc sd;
  // A row at position p counts the columns sample_column_begin(p, left) <= j <
  // sample_column_end(p, shift).
  int64_t q_offset, shift, left;
  const int32_t* rows;      // the sequence's sampled rows (local query indices), ascending
  int64_t nr, t0, first, last;
  const float* row_max;     // the rows' statistics (log2 units), indexed like rows
  const float* row_sum;
  ScoreMod mod;             // the head's softcap and ALiBi
  bool modifies;

  __device__ static ColumnBlock make(const ColumnArgs& a, int64_t block_index, int columns) {
    ColumnBlock b;
    b.head = static_cast<int>(block_index / a.num_tiles);
    b.kt = a.tiles[block_index % a.num_tiles];
    b.sd = a.seqs[b.kt.seq];
    b.kvh = b.head / a.group;
    b.q_offset = b.sd.k_len - b.sd.q_len;
    b.shift = sample_column_shift(b.sd.window, a.outside_window_only != 0);
    b.left = a.window_left;
    b.rows = a.rows + b.sd.row_begin;
    b.nr = b.sd.row_count;
    b.t0 = b.kt.t0;
    // The first sampled row that counts column t0 or later: sample_column_end(p, shift) > t0, i.e.
    // local row >= t0 + shift - q_offset. With a model window, the rows past the last one whose
    // first column sample_column_begin(p, left) = p - left is below t0 + columns see none of them.
    b.first = dev::count_below(b.rows, b.nr, b.t0 + b.shift - b.q_offset);
    b.last = b.left < 0 ? b.nr : dev::count_below(b.rows, b.nr, b.t0 + columns + b.left - b.q_offset);
    if (b.last < b.first) b.last = b.first;
    b.row_max = a.row_max + static_cast<int64_t>(b.head) * a.total_rows + b.sd.row_begin;
    b.row_sum = a.row_sum + static_cast<int64_t>(b.head) * a.total_rows + b.sd.row_begin;
    b.mod = a.mod.head(b.head);
    b.modifies = b.mod.modifies_scores();
    return b;
  }

  // The columns [lo, hi) that the sampled row at position p counts.
  __device__ int64_t column_lo(int64_t p) const { return sample_column_begin(p, left); }
  __device__ int64_t column_hi(int64_t p) const { return sample_column_end(p, shift); }
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
  const ColumnBlock cb = ColumnBlock::make(a, blockIdx.x, BC);
  const SeqDesc& sd = cb.sd;
  const int64_t q_offset = cb.q_offset, nr = cb.last, t0 = cb.t0, first = cb.first;  // rows first .. nr - 1
  const float scale = cb.modifies ? 1.f : a.scale_log2;
  const int32_t* rows = cb.rows;
  const float* row_max = cb.row_max;
  const float* row_sum = cb.row_sum;
  const int head = cb.head;
  const T* Q = static_cast<const T*>(a.q) + head * a.q_head_stride;

  for (int i = tid; i < BC * CHUNKS; i += 128) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool valid = t0 + r < sd.k_len;
    const KvRow row = a.kv.layout.row(cb.kt.seq, sd.k_begin, valid ? t0 + r : 0, cb.kvh);
    dev::load_k_chunk<T>(sK + r * S + c * 8, a.kv, row, c, valid);
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
    int64_t pos[2], lo[2], hi[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = c0 + warp * 16 + h * 8 + g;
      if (r < nr) {
        rmax[h] = row_max[r];
        const float sum = row_sum[r];
        rscale[h] = sum > 0.f ? 1.f / sum : 0.f;
        pos[h] = q_offset + rows[r];
        lo[h] = cb.column_lo(pos[h]);
        hi[h] = cb.column_hi(pos[h]);
      } else {
        rmax[h] = 0.f;
        rscale[h] = 0.f;
        pos[h] = lo[h] = hi[h] = 0;
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
          float x0 = s[n][e], x1 = s[n][2 + e];
          if (cb.modifies) {  // the modified scores, in log2 units (scale 1 below)
            x0 = modified_score(cb.mod, x0 * a.scale_log2, pos[0], col);
            x1 = modified_score(cb.mod, x1 * a.scale_log2, pos[1], col);
          }
          const float p0 = col >= lo[0] && col < hi[0] ? dev::fast_exp2(fmaf(x0, scale, -rmax[0])) * rscale[0] : 0.f;
          const float p1 = col >= lo[1] && col < hi[1] ? dev::fast_exp2(fmaf(x1, scale, -rmax[1])) * rscale[1] : 0.f;
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
