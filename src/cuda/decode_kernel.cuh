// Decode (flash-decoding): short query runs of dense sequences over many keys, split over the
// keys. Templated on the attention dim D and the operand type; instantiated per head dim in the
// attention_dNN.cu files (attention_head_dim.cu.in). The merge is decode_merge.cu.
//
// One block of 4 warps takes one DecodeUnit: up to kDecodeRows stacked query rows of one
// (sequence, kv head) group, i.e. the query heads of the kv group stacked over the sequence's
// queries (row r: query r / group, head kvh * group + r % group), so that one read of each K/V
// tile serves every query head of the group; and one range of keys [k0, k1). Each warp owns 16
// rows (a warp without rows only helps load). K/V tiles of kBN keys are double-buffered, every
// key's row addressed through the KV cache's row() and copied or dequantized by kv_load.cuh;
// S = Q K^T and O += P V on mma.sync m16n8k16 with f32 accumulation; the online softmax in log2
// units over each row's own mask (core/mask.h: model_lo .. p causal, or every key) and its head's
// softcap and ALiBi (core/score_mod.h). The unit writes each row's max, sum and unnormalized
// output; the sink joins in the merge.
#pragma once

#include <cuda_runtime.h>

#include "core/mask.h"
#include "core/score_mod.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"
#include "cuda/kv_load.cuh"

namespace sampleattn::cuda {

template <int D>
struct DecodeConfig {
  static constexpr int kBN = D <= 128 ? 64 : 32;
  static constexpr int kStride = D + 8;  // ldmatrix without bank conflicts
  static constexpr size_t kSmemBytes = static_cast<size_t>(kDecodeRows + 4 * kBN) * kStride * 2;
  static_assert(kDecodeRows == 4 * 16, "4 warps of 16 rows");
};

template <int D, typename T>
__global__ void __launch_bounds__(128) decode_kernel(const DecodeArgs da) {
  using C = DecodeConfig<D>;
  constexpr int BN = C::kBN, S = C::kStride, NT = BN / 8, DT = D / 8, CHUNKS = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kDecodeRows * S;
  T* sV = sK + 2 * BN * S;

  const AttentionArgs& a = da.attn;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const DecodeUnit u = da.units[blockIdx.x];
  const DecodeGroup gr = da.groups[u.group];
  const SeqDesc sd = a.seqs[gr.seq];
  const int64_t q_offset = sd.k_len - sd.q_len;
  const int qk_chunks = a.head_dim / 8, v_chunks = a.head_dim_v / 8;
  // Stacked row r of the group: its query (local index) and query head.
  auto query_of = [&](int r) { return (gr.row0 + (r < gr.rows ? r : gr.rows - 1)) / a.group; };
  auto head_of = [&](int r) { return gr.kvh * a.group + (gr.row0 + (r < gr.rows ? r : gr.rows - 1)) % a.group; };

  const T* Q = static_cast<const T*>(a.q);
  for (int i = tid; i < kDecodeRows * CHUNKS; i += 128) {
    const int r = i / CHUNKS, c = i % CHUNKS;
    const bool valid = r < gr.rows && c < qk_chunks;
    const int64_t token = sd.q_begin + query_of(r);
    dev::cp_async16(sQ + r * S + c * 8, Q + token * a.q_token_stride + head_of(r) * a.q_head_stride + (valid ? c * 8 : 0),
                    valid);
  }
  dev::cp_async_commit();

  // This thread's rows warp * 16 + g and + 8: positions, visible keys [lo, hi), variants.
  int64_t pos[2], lo[2], hi[2];
  ScoreMod mod[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + h * 8 + g;
    pos[h] = q_offset + query_of(r);
    lo[h] = own_keys_lo(false, pos[h], 0, a.window_left);
    hi[h] = own_keys_hi(false, a.causal != 0, pos[h], sd.k_len);
    if (hi[h] > u.k1) hi[h] = u.k1;
    mod[h] = a.mod.head(head_of(r));
  }
  const bool modifies = a.mod.softcap_log2 > 0.f || a.mod.alibi_log2 != nullptr;
  const bool active = warp * 16 < gr.rows;  // warp-uniform

  const int64_t n_tiles = (u.k1 - u.k0 + BN - 1) / BN;
  auto load_tile = [&](int64_t tile, int stage) {
    const int64_t t0 = u.k0 + tile * BN;
    T* dk = sK + stage * BN * S;
    T* dv = sV + stage * BN * S;
    for (int i = tid; i < BN * CHUNKS; i += 128) {
      const int r = i / CHUNKS, c = i % CHUNKS;
      const bool valid = t0 + r < u.k1;
      const bool k_valid = valid && c < qk_chunks, v_valid = valid && c < v_chunks;
      const KvRow row = a.kv.layout.row(gr.seq, sd.k_begin, valid ? t0 + r : 0, gr.kvh);
      dev::load_k_chunk<T>(dk + r * S + c * 8, a.kv, row, k_valid ? c : 0, k_valid);
      dev::load_v_chunk<T>(dv + r * S + c * 8, a.kv, row, v_valid ? c : 0, v_valid);
    }
  };

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[DT][4];
#pragma unroll
  for (int dn = 0; dn < DT; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;

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
    if (active) {
      const T* tk = sK + stage * BN * S;
      const T* tv = sV + stage * BN * S;
      const int64_t t0 = u.k0 + tile * BN;
      float s[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t af[4];
        dev::ldsm_x4(af[0], af[1], af[2], af[3],
                     sQ + (warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * S + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          uint32_t b0, b1, b2, b3;
          dev::ldsm_x4(b0, b1, b2, b3, tk + (np * 16 + (lane % 8) + (lane / 16) * 8) * S + kk * 16 + ((lane / 8) % 2) * 8);
          dev::mma16816<T>(s[2 * np], af, b0, b1);
          dev::mma16816<T>(s[2 * np + 1], af, b2, b3);
        }
      }
      // Online softmax of the thread's two rows (log2 units), each with its own head and mask.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int64_t col = t0 + n * 8 + 2 * t + e;
            float x = s[n][2 * h + e] * a.scale_log2;
            if (modifies) x = modified_score(mod[h], x, pos[h], col);
            if (col < lo[h] || col >= hi[h]) x = -INFINITY;
            s[n][2 * h + e] = x;
            mx = fmaxf(mx, x);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[h], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = dev::fast_exp2(m[h] - m_use);
        m[h] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = dev::fast_exp2(s[n][2 * h + e] - m_use);
            s[n][2 * h + e] = p;
            sum += p;
          }
        }
        l[h] = l[h] * alpha + sum;
#pragma unroll
        for (int dn = 0; dn < DT; ++dn) {
          o[dn][2 * h] *= alpha;
          o[dn][2 * h + 1] *= alpha;
        }
      }
      // O += P V.
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[4];
        pa[0] = dev::pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        pa[1] = dev::pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        pa[2] = dev::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[3] = dev::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t b0, b1, b2, b3;
          dev::ldsm_x4_trans(b0, b1, b2, b3, tv + (kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * S + dp * 16 + (lane / 16) * 8);
          dev::mma16816<T>(o[2 * dp], pa, b0, b1);
          dev::mma16816<T>(o[2 * dp + 1], pa, b2, b3);
        }
      }
    }
    __syncthreads();  // the stage is overwritten by the load issued next iteration
  }
  dev::cp_async_wait<0>();

  // The partial rows: max, sum (over the quad), unnormalized output.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = l[h];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int r = warp * 16 + h * 8 + g;
    if (r >= gr.rows) continue;
    const int64_t at = u.part + r;
    if (t == 0) {
      da.part_max[at] = m[h];
      da.part_sum[at] = sum;
    }
    float* out = da.part_o + at * a.head_dim_v;
#pragma unroll
    for (int dn = 0; dn < DT; ++dn) {
      if (dn * 8 >= a.head_dim_v) break;
      out[dn * 8 + 2 * t] = o[dn][2 * h];
      out[dn * 8 + 2 * t + 1] = o[dn][2 * h + 1];
    }
  }
}

template <int D, typename T>
cudaError_t launch_decode_typed(const DecodeArgs& a, cudaStream_t stream) {
  return dev::launch_with_smem(decode_kernel<D, T>, a.num_units, 128, DecodeConfig<D>::kSmemBytes, a, stream);
}

}  // namespace sampleattn::cuda
