// Validation on the device (core/validation.h, docs/ALGORITHM.md "Validation"): the mass kernel,
// templated on the head dim and the operand type; one instantiation per head dim in the
// attention_dNN.cu files (attention_head_dim.cu.in).
//
// A block takes up to 64 validation rows of one query head and one chunk of their keys (ValTile:
// at most kValidationKeys, so that the long rows of a sequence's end spread over many blocks), with
// 8 warps: warp w takes rows 16 (w % 4) .. + 16 and the columns 32 (w / 4) .. + 32 of each key tile.
// (A block's 85 KB of shared memory lets two blocks share an SM: at 4 warps a block, 8 warps an SM
// left the kernel latency-bound; 8 warps a block double that for the same memory, docs/PERF.md.)
// K tiles of 64 keys are double-buffered with cp.async, S = Q K^T runs on
// mma.sync m16n8k16, and each probability p = 2^(s - max) / sum (s the score with the head's
// softcap and ALiBi, core/score_mod.h; the row's exact statistics from the row-statistics pass,
// over the keys the model shows it, model_lo .. p) goes to its row's bucket: [0] for the window
// band (j > p - w) and the kept sinks, the column's bucket id for j <= p - w, nothing for a column
// past the set's cost cap.
// Buckets are per row and arbitrary per column, so the sums are shared-memory atomics; to stay
// deterministic whatever their order, they add fixed-point integers (kValidationMassOne = 1, a
// rounding of at most 2^-32 per probability), and the blocks of one row's key chunks add theirs
// to the row's global sums the same way.
#pragma once

#include <cuda_runtime.h>

#include "core/mask.h"
#include "core/score_mod.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"
#include "cuda/kv_load.cuh"

namespace sampleattn::cuda {

template <int D>
struct ValidationConfig {
  static constexpr int kRows = kValidationRows;
  static constexpr int kBN = 64;
  static constexpr int kStride = D + 8;  // shared-memory row pitch (elements): ldmatrix without bank conflicts
  static constexpr size_t kSmemBytes = static_cast<size_t>(kRows + 2 * kBN) * kStride * 2 +
                                       static_cast<size_t>(kRows) * kValidationMassStride * sizeof(uint32_t) + 2 * kBN;
  static constexpr int kThreads = 256;  // 8 warps: 4 row groups of 16 x 2 column halves
  static_assert(kRows == 4 * 16, "4 row groups of 16 rows");
  static_assert(kValidationKeys % kBN == 0, "key chunks are whole tiles");
};

template <int D, typename T>
__global__ void __launch_bounds__(ValidationConfig<D>::kThreads, 2) validation_kernel(const ValidationArgs a) {
  using C = ValidationConfig<D>;
  constexpr int RM = C::kRows, BN = C::kBN, S = C::kStride, CHUNKS = D / 8, MS = kValidationMassStride;
  constexpr int NTH = C::kThreads, NW = BN / 16;  // NW: 8-column blocks of a warp's half tile
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + RM * S;                                            // [2][BN][S]
  uint32_t* acc = reinterpret_cast<uint32_t*>(sK + 2 * BN * S);  // [RM][MS], fixed point
  uint8_t* sB = reinterpret_cast<uint8_t*>(acc + RM * MS);       // [2][BN]: the tiles' bucket ids

  const int tid = threadIdx.x, lane = tid % 32;
  const int warp = (tid / 32) % 4, half = tid / 128;  // the row group; the half of each key tile
  const int g = lane / 4, t = lane % 4;
  // Grid order: kv head, tile, then the group's query heads (blocks resident together read one
  // kv head's keys from L2).
  const int64_t block = blockIdx.x;
  const int64_t per_kv_head = a.num_tiles * a.group;
  const int64_t in_kv_head = block % per_kv_head;
  const int head = static_cast<int>(block / per_kv_head) * a.group + static_cast<int>(in_kv_head % a.group);
  const ValTile vt = a.tiles[in_kv_head / a.group];
  const SeqDesc sd = a.seqs[vt.seq];
  const int set = sd.set_base + (a.per_group ? head / a.group : head);
  if (a.set_active[set] == 0) return;  // no bucket layout (over the cost budget): nothing to measure
  const int kvh = head / a.group;
  const int64_t q_offset = sd.k_len - sd.q_len;
  const T* Q = static_cast<const T*>(a.q) + head * a.q_head_stride;
  const uint8_t* bucket = a.buckets + a.set_offset[set];

  for (int i = tid; i < RM * CHUNKS; i += NTH) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool valid = r < vt.count;
    const int64_t token = sd.q_begin + (valid ? a.rows[vt.first + r] : 0);
    dev::cp_async16(sQ + r * S + c * 8, Q + token * a.q_token_stride + c * 8, valid);
  }
  for (int i = tid; i < RM * MS; i += NTH) acc[i] = 0;

  auto load_tile = [&](int64_t tile, int stage) {
    const int64_t t0 = vt.k0 + tile * BN;
    T* dk = sK + stage * BN * S;
    for (int i = tid; i < BN * CHUNKS; i += NTH) {
      const int r = i / CHUNKS, c = i % CHUNKS;
      const bool valid = t0 + r < vt.k1;
      const KvRow row = a.kv.layout.row(vt.seq, sd.k_begin, valid ? t0 + r : 0, kvh);
      dev::load_k_chunk<T>(dk + r * S + c * 8, a.kv, row, c, valid);
    }
    if (tid < BN) sB[stage * BN + tid] = t0 + tid < vt.k1 ? bucket[t0 + tid] : kBucketUnused;
  };

  // This thread's rows warp * 16 + g and + 8: their statistics, positions, the keys they see in
  // this chunk, [lo, hi) (the model's window model_lo .. p within [k0, k1)), and where their window
  // band starts (columns below `split` are stripe candidates).
  const ScoreMod mod = a.mod.head(head);
  const bool modifies = mod.modifies_scores();
  const float scale = modifies ? 1.f : a.scale_log2;  // modified scores are in log2 units already
  float rmax[2], rscale[2];
  int64_t pos[2], lo[2], hi[2], split[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + h * 8 + g;
    rmax[h] = 0.f;
    rscale[h] = 0.f;
    pos[h] = 0;
    lo[h] = 0;
    hi[h] = 0;
    split[h] = 0;
    if (r < vt.count) {
      const int64_t at = static_cast<int64_t>(head) * a.total_rows + vt.first + r;
      const int64_t p = q_offset + a.rows[vt.first + r];
      const float sum = a.row_sum[at];
      rmax[h] = a.row_max[at];
      rscale[h] = sum > 0.f ? 1.f / sum : 0.f;
      pos[h] = p;
      lo[h] = model_lo(p, a.window_left);
      hi[h] = sum > 0.f ? (causal_end(p) < vt.k1 ? causal_end(p) : vt.k1) : 0;
      split[h] = stripe_limit(p, sd.window) + 1;
    }
  }

  const int64_t n_tiles = (vt.k1 - vt.k0 + BN - 1) / BN;
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
    const uint8_t* tb = sB + stage * BN;
    const int64_t t0 = vt.k0 + tile * BN;
    const int64_t c0 = t0 + half * (BN / 2);  // the warp's 32 columns: c0 ..
    // A warp whose 16 rows see none of its 32 keys (past their causal end or before their model
    // window; the block's rows spread over a sixth of the sequence) skips them: they would add
    // nothing. The whole warp votes, so the branch does not diverge.
    const bool sees = (lo[0] < c0 + BN / 2 && hi[0] > c0 && lo[0] < hi[0]) || (lo[1] < c0 + BN / 2 && hi[1] > c0 && lo[1] < hi[1]);
    if (__any_sync(0xffffffffu, sees)) {

      // S = Q K^T for the warp's 16 rows and 32 columns.
      float s[NW][4];
#pragma unroll
      for (int n = 0; n < NW; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      const T* k_half = tk + half * (BN / 2) * S;
      const T* q_slice = sQ + warp * 16 * S;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t af[4];
        dev::ldsm_x4(af[0], af[1], af[2], af[3], q_slice + ((lane % 8) + ((lane / 8) % 2) * 8) * S + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < NW / 2; ++np) {
          uint32_t b0, b1, b2, b3;
          dev::ldsm_x4(b0, b1, b2, b3, k_half + (np * 16 + (lane % 8) + (lane / 16) * 8) * S + kk * 16 + ((lane / 8) % 2) * 8);
          dev::mma16816<T>(s[2 * np], af, b0, b1);
          dev::mma16816<T>(s[2 * np + 1], af, b2, b3);
        }
      }

      // Each visible probability into its row's bucket.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int32_t first = static_cast<int32_t>(lo[h] - t0 < BN ? (lo[h] - t0 > 0 ? lo[h] - t0 : 0) : BN);
        const int32_t lim = static_cast<int32_t>(hi[h] - t0 < BN ? (hi[h] - t0 > 0 ? hi[h] - t0 : 0) : BN);
        const int32_t band = static_cast<int32_t>(split[h] - t0 < BN ? (split[h] - t0 > 0 ? split[h] - t0 : 0) : BN);
        uint32_t* row_acc = acc + (warp * 16 + h * 8 + g) * MS;
#pragma unroll
        for (int n = 0; n < NW; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int32_t c = half * (BN / 2) + n * 8 + 2 * t + e;
            if (c < first || c >= lim) continue;
            const uint8_t b = c < band ? tb[c] : kBucketKept;
            if (b == kBucketUnused) continue;
            float x = s[n][2 * h + e];
            if (modifies) x = modified_score(mod, x * a.scale_log2, pos[h], t0 + c);
            const float p = dev::fast_exp2(fmaf(x, scale, -rmax[h])) * rscale[h];
            const uint32_t v = __float2uint_rn(p * static_cast<float>(kValidationMassOne));
            if (v != 0) atomicAdd(row_acc + b, v);
          }
        }
      }
    }  // the warp's rows see the tile
    __syncthreads();  // the stage is overwritten by the load issued next iteration
  }
  dev::cp_async_wait<0>();
  __syncthreads();

  uint32_t* out = a.masses + sd.mass_offset + (static_cast<int64_t>(head) * sd.val_count + (vt.first - sd.val_begin)) * MS;
  for (int i = tid; i < vt.count * MS; i += NTH) {
    const uint32_t v = acc[i];
    if (v != 0) atomicAdd(out + i, v);
  }
}

template <int D, typename T>
cudaError_t launch_validation_typed(const ValidationArgs& a, cudaStream_t stream) {
  return dev::launch_with_smem(validation_kernel<D, T>, a.num_tiles * a.num_q_heads, ValidationConfig<D>::kThreads,
                               ValidationConfig<D>::kSmemBytes, a, stream);
}

}  // namespace sampleattn::cuda
