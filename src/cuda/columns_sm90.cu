// The Hopper (sm_90a) stage-1 column-score kernel for head dim 128: what column_kernel
// (columns_kernel.cuh) computes (the model's window, softcap and ALiBi included), with the
// products on wgmma and a producer warpgroup. Key rows through the KV cache's row() (paged caches
// included); quantized or unaligned K runs the mma.sync kernel (kernel_dispatch.cpp).
//
// A block owns kColumns = 128 key columns of one query head and walks the sampled rows that see
// them in chunks of 64. The producer warpgroup loads the key tile once, then streams the query
// chunks with cp.async into a ring of kStages shared-memory stages (mbarriers "full"/"empty", as
// in attention_sm90.cu). Consumer warpgroup wg takes chunks wg, wg + 2, ...: S = Q K^T on wgmma
// m64n128k16 (both K-major, 128-byte swizzled), then p = 2^(s scale - max - log2 sum) of each
// visible (row, column) added into the thread's column sums. The result is deterministic: each
// thread adds its rows in chunk order, then the sums are reduced over lanes and warps in a fixed
// order.
#include <type_traits>

#include "cuda/columns_kernel.cuh"
#include "cuda/launch.h"
#include "cuda/wgmma.cuh"

namespace sampleattn::cuda {
namespace {

constexpr int kD = 128;
constexpr int kColumns = 128;  // = ColumnConfig<128>::kColumns: the host plans tiles of this size
constexpr int kRows = 64;      // rows per chunk: one warpgroup's m64
constexpr int kStages = 6;
constexpr int kConsumers = 256, kProducers = 128, kThreads = kConsumers + kProducers;
constexpr uint32_t kKBytes = kColumns * kD * 2;
constexpr uint32_t kChunkBytes = kRows * kD * 2;
constexpr size_t kSmemBytes = kKBytes + kStages * kChunkBytes + 1024;  // + alignment of the first atom

static_assert(kColumns == ColumnConfig<128>::kColumns, "key tiles are planned in units of the mma.sync kernel's");
static_assert(kProducers == 8 * 16, "the producer copies 8 rows at a time, 16 threads (16-byte chunks) per row");

// kMods: the call has score variants (softcap or ALiBi); without, no variant code is built in
// (as attention_sm90.cu's kernel).
template <typename T, bool kMods>
__global__ void __launch_bounds__(kThreads, 1) column_kernel_sm90(const ColumnArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int CHUNKS = kD / 8;
  constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // as in attention_sm90.cu
  constexpr int kReduced = 1;                             // named barrier: the consumers' reduction
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t base = (dev::smem_addr(smem_raw) + 1023) & ~1023u;
  unsigned char* const gbase = smem_raw + (base - dev::smem_addr(smem_raw));
  const uint32_t sK = base, sQ = base + kKBytes;
  __shared__ uint64_t s_bars[2 * kStages + 1];  // full[kStages], empty[kStages], key tile
  __shared__ float red[kConsumers / 32][kColumns];
  const uint32_t full_bar = dev::smem_addr(s_bars), empty_bar = full_bar + kStages * 8,
                 key_bar = full_bar + 2 * kStages * 8;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);  // warp-uniform for the compiler
  const ColumnBlock cb = ColumnBlock::make(a, blockIdx.x, kColumns);
  const SeqDesc& sd = cb.sd;
  const int64_t nr = cb.last, t0 = cb.t0, first = cb.first;  // rows first .. nr - 1
  const int32_t* rows = cb.rows;
  const int64_t n_chunks = (nr - first + kRows - 1) / kRows;

  if (tid == 0) {
    for (int i = 0; i < kStages; ++i) {
      dev::mbarrier_init(full_bar + 8 * i, kProducers);
      dev::mbarrier_init(empty_bar + 8 * i, 128);
    }
    dev::mbarrier_init(key_bar, kProducers);
    dev::mbarrier_init_fence();
  }
  __syncthreads();

  if (wg == kConsumers / 128) {
    // Producer: the key tile, then chunk j into stage j % kStages. Thread i copies chunk i % 16
    // of rows i / 16 + 8 q (16 threads read one row's 256 contiguous bytes).
    dev::setmaxnreg_dec<kProducerRegs>();
    const int c = (tid - kConsumers) % CHUNKS, r0 = (tid - kConsumers) / CHUNKS;
    const T* K = static_cast<const T*>(a.kv.k) + c * 8;
    const T* Q = static_cast<const T*>(a.q) + cb.head * a.q_head_stride + c * 8;
#pragma unroll 4
    for (int q = 0; q < kColumns / 8; ++q) {
      const int r = r0 + 8 * q;
      const bool valid = t0 + r < sd.k_len;
      const KvRow row = a.kv.layout.row(cb.kt.seq, sd.k_begin, valid ? t0 + r : 0, cb.kvh);
      dev::cp_async16(gbase + dev::sw128_offset(kColumns, r, c), K + row.k, valid);
    }
    dev::mbarrier_arrive_cp_async(key_bar);
    for (int64_t j = 0; j < n_chunks; ++j) {
      const int stage = static_cast<int>(j % kStages);
      dev::mbarrier_wait(empty_bar + 8 * stage, static_cast<uint32_t>(((j / kStages) & 1) ^ 1));
      unsigned char* dq = gbase + (sQ - base) + stage * kChunkBytes;
#pragma unroll
      for (int q = 0; q < kRows / 8; ++q) {
        const int r = r0 + 8 * q;
        const int64_t row = first + j * kRows + r;
        const bool valid = row < nr;
        const int64_t token = sd.q_begin + (valid ? rows[row] : 0);
        dev::cp_async16(dq + dev::sw128_offset(kRows, r, c), Q + token * a.q_token_stride, valid);
      }
      dev::mbarrier_arrive_cp_async(full_bar + 8 * stage);
    }
    dev::cp_async_wait<0>();
    return;
  }

  dev::setmaxnreg_inc<kConsumerRegs>();
  const int g = lane / 4, t = lane % 4;
  const bool modifies = kMods && cb.modifies;
  const float scale = modifies ? 1.f : a.scale_log2;
  float acc[kColumns / 8][2];
  float s[kColumns / 8][4];
#pragma unroll
  for (int n = 0; n < kColumns / 8; ++n) {
    acc[n][0] = acc[n][1] = 0.f;
    s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  }
  dev::mbarrier_wait(key_bar, 0);
  for (int64_t j = wg; j < n_chunks; j += 2) {
    const int stage = static_cast<int>(j % kStages);
    // This thread's rows of the chunk (warp % 4) * 16 + g and + 8: the exponent's offset
    // max + log2(sum) (p = 0 for a row without mass or past the list), their positions and the
    // local columns [lo, hi) they count.
    float bias[2];
    int32_t pos[2], lo[2], hi[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = first + j * kRows + (warp % 4) * 16 + h * 8 + g;
      const float sum = r < nr ? cb.row_sum[r] : 0.f;
      bias[h] = sum > 0.f ? cb.row_max[r] + __log2f(sum) : INFINITY;
      pos[h] = r < nr ? static_cast<int32_t>(cb.q_offset + rows[r]) : 0;
      lo[h] = r < nr ? static_cast<int32_t>(cb.column_lo(pos[h]) - t0) : 0;
      hi[h] = r < nr ? static_cast<int32_t>(cb.column_hi(pos[h]) - t0) : 0;
    }
    dev::mbarrier_wait(full_bar + 8 * stage, static_cast<uint32_t>((j / kStages) & 1));
    dev::fence_proxy_async_smem();
    const uint32_t q_rows = sQ + stage * kChunkBytes;
    dev::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      const uint32_t qstep = (kk / 4) * (kRows * 128) + (kk % 4) * 32;
      const uint32_t kstep = (kk / 4) * (kColumns * 128) + (kk % 4) * 32;
      dev::wgmma_ss<T>(s, dev::smem_desc_sw128(q_rows + qstep, 16, 1024), dev::smem_desc_sw128(sK + kstep, 16, 1024),
                       kk > 0 ? 1 : 0);
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();
    dev::fence_registers(s);
    dev::mbarrier_arrive(empty_bar + 8 * stage);
    if (modifies) {  // the modified scores, in log2 units (scale 1 below)
#pragma unroll
      for (int n = 0; n < kColumns / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t col = t0 + n * 8 + 2 * t + e;
          s[n][e] = modified_score(cb.mod, s[n][e] * a.scale_log2, pos[0], col);
          s[n][2 + e] = modified_score(cb.mod, s[n][2 + e] * a.scale_log2, pos[1], col);
        }
      }
    }
#pragma unroll
    for (int n = 0; n < kColumns / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int32_t col = n * 8 + 2 * t + e;
        const float p0 = col >= lo[0] && col < hi[0] ? dev::fast_exp2(fmaf(s[n][e], scale, -bias[0])) : 0.f;
        const float p1 = col >= lo[1] && col < hi[1] ? dev::fast_exp2(fmaf(s[n][2 + e], scale, -bias[1])) : 0.f;
        acc[n][e] += p0 + p1;
      }
    }
  }

  // Sum over the 8 row groups of the warp, then over the warps in order.
  store_warp_column_sums<kColumns>(acc, red[warp], g, t);
  dev::named_barrier_sync(kReduced, kConsumers);
  float* out = a.scores + a.score_offset[cb.kt.seq] + static_cast<int64_t>(cb.head) * sd.k_len;
  for (int c = tid; c < kColumns; c += kConsumers) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kConsumers / 32; ++w) v += red[w][c];
    if (t0 + c < sd.k_len) out[t0 + c] = v;
  }
#endif
}

template <typename T>
cudaError_t launch_typed(const ColumnArgs& a, cudaStream_t stream) {
  const bool mods = a.mod.softcap_log2 > 0.f || a.mod.alibi_log2 != nullptr;
  return mods ? dev::launch_with_smem(column_kernel_sm90<T, true>, a.num_tiles * a.num_q_heads, kThreads, kSmemBytes,
                                      a, stream)
              : dev::launch_with_smem(column_kernel_sm90<T, false>, a.num_tiles * a.num_q_heads, kThreads, kSmemBytes,
                                      a, stream);
}

}  // namespace

cudaError_t launch_columns_sm90_d128(bool bf16, const ColumnArgs& args, cudaStream_t stream) {
  return bf16 ? launch_typed<__nv_bfloat16>(args, stream) : launch_typed<__half>(args, stream);
}

}  // namespace sampleattn::cuda
