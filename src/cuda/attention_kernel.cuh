// The tensor-core attention kernel (flash attention 2 style) and the stage-1 column-score kernel,
// templated on the head dim and the operand type. Included by one attention_dNN.cu per head dim
// so that the instantiations compile in parallel.
//
// Attention: a block of 4 warps takes kBM query rows of one query head; each warp owns 16 * kMT
// rows. Keys come in tiles of kBN from "segments": segment 0 is the sequence's own keys (the
// dense range, or a sparse head's window band), segment 1 the stripe columns of a sparse head,
// gathered through their index list straight into shared memory. Every row sees one contiguous
// span [lo, hi) of each segment (causal diagonal, window edges and stripe visibility j <= p - w
// are all such spans), so a tile needs a mask only where it crosses a span edge. K/V tiles are
// double-buffered with cp.async; S = Q K^T and O += P V run on mma.sync m16n8k16 with f32
// accumulation; the online softmax runs in log2 units.
#pragma once

#include <cuda_runtime.h>

#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"

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
  constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + C::kBM * S;
  T* sV = sK + 2 * BN * S;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  // Grid order: kv head, then row block (most expensive first), then the group's query heads.
  // Blocks resident together then read one kv head's K/V (and one stripe set) from L2 instead
  // of each streaming its own head's from memory.
  const int64_t per_kv_head = a.num_blocks * a.group;
  const int64_t in_kv_head = blockIdx.x % per_kv_head;
  const int head = static_cast<int>(blockIdx.x / per_kv_head) * a.group + static_cast<int>(in_kv_head % a.group);
  const RowBlock blk = a.blocks[in_kv_head / a.group];
  const SeqDesc sd = a.seqs[blk.seq];
  const int kvh = head / a.group;
  const bool list_mode = a.mode != AttentionMode::kForward;
  const bool with_pv = a.mode == AttentionMode::kForward;
  // Sparse: the sequence is sampled and this head's set did not fall back to dense.
  const int set = sd.set_base + (a.per_group ? head / a.group : head);
  const bool sparse = sd.sparse != 0 && a.mode != AttentionMode::kRowStats && a.set_dense[set] == 0;
  const int64_t q_offset = sd.k_len - sd.q_len;
  const int64_t w = sd.window;

  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k) + sd.k_begin * a.k_token_stride + kvh * a.k_head_stride;
  const T* V = static_cast<const T*>(a.v) + sd.k_begin * a.v_token_stride + kvh * a.v_head_stride;

  auto local_row = [&](int r) -> int64_t {
    r = r < blk.count ? r : blk.count - 1;
    return list_mode ? static_cast<int64_t>(a.rows[blk.first + r]) : blk.first + r;
  };

  // Stripe set of this head.
  const int32_t* stripes = nullptr;
  int64_t n_stripes = 0;
  if (sparse) {
    stripes = a.stripes + a.set_offset[set];
    n_stripes = a.set_count[set];
  }

  // Queries -> shared memory.
  for (int i = tid; i < C::kBM * CHUNKS; i += 128) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool valid = r < blk.count;
    const int64_t token = sd.q_begin + (valid ? local_row(r) : 0);
    dev::cp_async16(sQ + r * S + c * 8, Q + token * a.q_token_stride + head * a.q_head_stride + c * 8, valid);
  }
  dev::cp_async_commit();

  // Stripes visible to each row (segment 1): one binary search per thread, while Q loads.
  __shared__ int32_t s_visible[C::kBM];
  if (sparse) {
    for (int r = tid; r < C::kBM; r += 128) {
      s_visible[r] = static_cast<int32_t>(dev::count_at_most(stripes, n_stripes, q_offset + local_row(r) - w));
    }
  }
  __syncthreads();

  // Positions of this thread's rows (invalid rows repeat the last valid one) and their spans.
  // Positions and key counts fit 32 bits (checked on the host).
  int32_t pos[MT][2];
  int32_t vis[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = warp * 16 * MT + mt * 16 + h * 8 + g;
      pos[mt][h] = static_cast<int32_t>(q_offset + local_row(r));
      vis[mt][h] = sparse ? s_visible[r] : 0;
    }
  }
  const int64_t p_first = q_offset + local_row(0), p_last = q_offset + local_row(blk.count - 1);

  // Segment 0 spans: lo(p), hi(p), both non-decreasing in p.
  auto seg0_lo = [&](int64_t p) -> int64_t { return sparse ? (p - w + 1 > 0 ? p - w + 1 : 0) : 0; };
  auto seg0_hi = [&](int64_t p) -> int64_t { return (sparse || a.causal) ? p + 1 : sd.k_len; };
  const int64_t s0_start = seg0_lo(p_first) / BN * BN;
  const int64_t s0_end = seg0_hi(p_last);
  const int64_t s0_tiles = s0_end > s0_start ? (s0_end - s0_start + BN - 1) / BN : 0;
  const int64_t s0_lo_max = seg0_lo(p_last), s0_hi_min = seg0_hi(p_first);
  int64_t s1_tiles = 0, s1_hi_min = 0;
  if (sparse) {
    s1_hi_min = s_visible[0];
    s1_tiles = (s_visible[blk.count - 1] + BN - 1) / BN;
  }
  const int64_t n_tiles = s0_tiles + s1_tiles;

  auto load_tile = [&](int64_t tile, int stage) {
    const bool seg1 = tile >= s0_tiles;
    const int64_t t0 = seg1 ? (tile - s0_tiles) * BN : s0_start + tile * BN;
    T* dk = sK + stage * BN * S;
    T* dv = sV + stage * BN * S;
    for (int i = tid; i < BN * CHUNKS; i += 128) {
      const int r = i / CHUNKS, c = i % CHUNKS;
      const int64_t ord = t0 + r;
      bool valid;
      int64_t key;
      if (seg1) {
        valid = ord < n_stripes;
        key = valid ? stripes[ord] : 0;
      } else {
        valid = ord < sd.k_len;
        key = valid ? ord : 0;
      }
      dev::cp_async16(dk + r * S + c * 8, K + key * a.k_token_stride + c * 8, valid);
      if (with_pv) dev::cp_async16(dv + r * S + c * 8, V + key * a.v_token_stride + c * 8, valid);
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

  if (n_tiles > 0) load_tile(0, 0);
  dev::cp_async_commit();

  for (int64_t tile = 0; tile < n_tiles; ++tile) {
    const int stage = static_cast<int>(tile & 1);
    if (tile + 1 < n_tiles) {
      load_tile(tile + 1, stage ^ 1);
      dev::cp_async_commit();
      dev::cp_async_wait<1>();
    } else {
      dev::cp_async_wait<0>();
    }
    __syncthreads();
    const T* tk = sK + stage * BN * S;
    const T* tv = sV + stage * BN * S;
    const bool seg1 = tile >= s0_tiles;
    const int64_t t0 = seg1 ? (tile - s0_tiles) * BN : s0_start + tile * BN;
    const bool full = seg1 ? (t0 + BN <= s1_hi_min) : (t0 >= s0_lo_max && t0 + BN <= s0_hi_min);

    // S = Q K^T.
    float s[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < NT; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t b[NT][2];
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const T* p = tk + (np * 16 + (lane % 8) + (lane / 16) * 8) * S + kk * 16 + ((lane / 8) % 2) * 8;
        dev::ldsm_x4(b[2 * np][0], b[2 * np][1], b[2 * np + 1][0], b[2 * np + 1][1], p);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t af[4];
        const T* p = sQ + (warp * 16 * MT + mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * S + kk * 16 + (lane / 16) * 8;
        dev::ldsm_x4(af[0], af[1], af[2], af[3], p);
#pragma unroll
        for (int n = 0; n < NT; ++n) dev::mma16816<T>(s[mt][n], af, b[n][0], b[n][1]);
      }
    }

    // Mask, online softmax (log2 units).
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int32_t lo = 0, hi = 0;
        if (!full) {
          if (seg1) {
            hi = vis[mt][h];
          } else {
            lo = static_cast<int32_t>(seg0_lo(pos[mt][h]));
            hi = static_cast<int32_t>(seg0_hi(pos[mt][h]));
          }
        }
        // Max over the raw scores (the scale is positive), in two chains (e) to halve the
        // dependent-latency chain; the scale then folds into each exponent's FFMA.
        float mx2[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float v = s[mt][n][2 * h + e];
            if (!full) {
              const int32_t col = static_cast<int32_t>(t0) + n * 8 + 2 * t + e;
              if (col < lo || col >= hi) v = -INFINITY;
            }
            s[mt][n][2 * h + e] = v;
            mx2[e] = fmaxf(mx2[e], v);
          }
        }
        float mx = fmaxf(mx2[0], mx2[1]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[mt][h], mx * a.scale_log2);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = dev::fast_exp2(m[mt][h] - m_use);
        m[mt][h] = m_new;
        float sum2[2] = {0.f, 0.f};
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = dev::fast_exp2(fmaf(s[mt][n][2 * h + e], a.scale_log2, -m_use));
            s[mt][n][2 * h + e] = p;
            sum2[e] += p;
          }
        }
        const float sum = sum2[0] + sum2[1];
        l[mt][h] = l[mt][h] * alpha + sum;
        // Rescale only when the running max moved (alpha == 1 leaves O as it is, bit for bit):
        // past the first tiles of a long row it rarely does.
        if (with_pv && alpha != 1.f) {
#pragma unroll
          for (int dn = 0; dn < DT; ++dn) {
            o[mt][dn][2 * h] *= alpha;
            o[mt][dn][2 * h + 1] *= alpha;
          }
        }
      }
    }

    // O += P V.
    if (with_pv) {
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          pa[mt][0] = dev::pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = dev::pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = dev::pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = dev::pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
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

  // Epilogue.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[mt][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int r = warp * 16 * MT + mt * 16 + h * 8 + g;
      if (r >= blk.count) continue;
      const float mx = m[mt][h];
      if (a.mode == AttentionMode::kForward) {
        const int64_t token = sd.q_begin + blk.first + r;
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        const int64_t base = token * a.o_token_stride + head * a.o_head_stride;
#pragma unroll
        for (int dn = 0; dn < DT; ++dn) {
          dev::store_out(a.o, a.o_type, base + dn * 8 + 2 * t, o[mt][dn][2 * h] * inv);
          dev::store_out(a.o, a.o_type, base + dn * 8 + 2 * t + 1, o[mt][dn][2 * h + 1] * inv);
        }
        if (a.lse != nullptr && t == 0) {
          a.lse[token * a.num_q_heads + head] = sum > 0.f ? (mx + log2f(sum)) * 0.69314718055994531f : -INFINITY;
        }
      } else if (t == 0) {
        const int64_t at = static_cast<int64_t>(head) * a.total_rows + blk.first + r;
        if (a.mode == AttentionMode::kRowStats) {
          a.row_max[at] = mx;
          a.row_sum[at] = sum;
        } else {
          const float full_sum = a.row_sum[at];
          a.kept[at] = (sum > 0.f && full_sum > 0.f) ? sum * exp2f(mx - a.row_max[at]) / full_sum : 0.f;
        }
      }
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
  const int head = static_cast<int>(blockIdx.x / a.num_tiles);
  const KeyTile kt = a.tiles[blockIdx.x % a.num_tiles];
  const SeqDesc sd = a.seqs[kt.seq];
  const int kvh = head / a.group;
  const int64_t q_offset = sd.k_len - sd.q_len;
  const int64_t shift = a.outside_window_only ? sd.window : 0;  // row at p sees columns j <= p - shift
  const int32_t* rows = a.rows + sd.row_begin;
  const int64_t nr = sd.row_count;
  const int64_t t0 = kt.t0;
  const T* Q = static_cast<const T*>(a.q) + head * a.q_head_stride;
  const T* K = static_cast<const T*>(a.k) + sd.k_begin * a.k_token_stride + kvh * a.k_head_stride;
  const float* row_max = a.row_max + static_cast<int64_t>(head) * a.total_rows + sd.row_begin;
  const float* row_sum = a.row_sum + static_cast<int64_t>(head) * a.total_rows + sd.row_begin;

  // The first sampled row that sees column t0: p - shift >= t0.
  const int64_t first = dev::count_below(rows, nr, t0 + shift - q_offset);

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
        hi[h] = q_offset + rows[r] - shift + 1;
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
#pragma unroll
  for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float v = acc[n][e];
      v += __shfl_xor_sync(0xffffffffu, v, 4);
      v += __shfl_xor_sync(0xffffffffu, v, 8);
      v += __shfl_xor_sync(0xffffffffu, v, 16);
      if (g == 0) red[warp * BC + n * 8 + 2 * t + e] = v;
    }
  }
  __syncthreads();
  float* out = a.scores + a.score_offset[kt.seq] + static_cast<int64_t>(head) * sd.k_len;
  for (int c = tid; c < BC; c += 128) {
    if (t0 + c < sd.k_len) out[t0 + c] = ((red[c] + red[BC + c]) + red[2 * BC + c]) + red[3 * BC + c];
  }
}

template <int D, typename T>
cudaError_t launch_attention_typed(const AttentionArgs& a, cudaStream_t stream) {
  using C = AttentionConfig<D>;
  const int64_t grid = a.num_blocks * a.num_q_heads;
  if (grid == 0) return cudaSuccess;
  cudaError_t err = cudaFuncSetAttribute(attention_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(C::kSmemBytes));
  if (err != cudaSuccess) return err;
  attention_kernel<D, T><<<static_cast<unsigned>(grid), 128, C::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

template <int D, typename T>
cudaError_t launch_columns_typed(const ColumnArgs& a, cudaStream_t stream) {
  using C = ColumnConfig<D>;
  const int64_t grid = a.num_tiles * a.num_q_heads;
  if (grid == 0) return cudaSuccess;
  cudaError_t err = cudaFuncSetAttribute(column_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(C::kSmemBytes));
  if (err != cudaSuccess) return err;
  column_kernel<D, T><<<static_cast<unsigned>(grid), 128, C::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace sampleattn::cuda
