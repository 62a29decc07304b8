// The Hopper (sm_90a) attention kernel for head_dim = head_dim_v = 128: the same blocks, segments,
// masks, score variants and softmax as the mma.sync kernel (attention_block.cuh), with both
// products on wgmma, a producer warpgroup and two consumer warpgroups (FlashAttention-3's warp
// specialization, with cp.async instead of TMA). Other pairs of attention dim 128 (e.g. 64/128)
// run the mma.sync kernel (kernel_dispatch.cpp): zero-filling their padding here would cost the
// producer the registers it does not have (40, below).
//
// A block takes 128 query rows of one query head: consumer warpgroup wg (threads 128 wg ..
// 128 wg + 127) owns rows 64 wg .. 64 wg + 63; warpgroup 2 is the producer. Q and a ring of kStages
// K/V tiles of 128 keys sit in shared memory in the 128-byte swizzled layout that wgmma reads
// through descriptors: a [rows][128] tile is stored as two [rows][64] halves, each row 128 bytes,
// 16-byte chunk c of row r at chunk c ^ (r % 8).
//   S = Q K^T: wgmma m64n128k16, A = Q and B = K both K-major in shared memory (8 k-steps).
//   O += P V:  wgmma m64n128k16, A = P from registers (the score accumulator, rounded to T), B = V
//              N-major ("transposed": its rows are keys, contiguous along d) in shared memory.
// Pipeline: the producer gathers tile j's keys (window band rows, or stripe rows through their
// index list: no TMA box describes those) with cp.async into stage j % kStages once both
// warpgroups released it (mbarrier "empty"), and signals "full" when its copies landed. Each
// consumer warpgroup runs phases k = 0, 1, ...: wait for tile k, issue P_{k-1} V_{k-1} and
// S_k = Q K_k, wait, release tile k - 1, softmax of S_k into P_k. One warpgroup's softmax overlaps the
// other's products on the tensor cores.
// FlashAttention-3's ping-pong scheduling (named barriers making the warpgroups take turns) is
// not used: it gained nothing here (docs/CUDA.md, "How the Hopper kernels got here").
// K/V rows: each key's row through the KV cache's row() (core/kv_cache.h) on a packed cache; paged,
// quantized or unaligned K/V run the mma.sync kernel instead (kernel_dispatch.cpp): the page
// lookup or the dequantizing in this producer's 40 registers would spill.
#include <type_traits>

#include "cuda/attention_kernel.cuh"
#include "cuda/launch.h"
#include "cuda/wgmma.cuh"

namespace sampleattn::cuda {
namespace {

constexpr int kD = 128;
constexpr int kBM = 128;  // = AttentionConfig<128>::kBM: the host plans row blocks of this size
constexpr int kBN = 128;
constexpr int kStages = 3;
constexpr int kConsumers = 256;
constexpr int kProducers = 128;
constexpr int kThreads = kConsumers + kProducers;

constexpr uint32_t kHalfBytes(int rows) { return static_cast<uint32_t>(rows) * (kD / 2) * 2; }  // [rows][64]
constexpr uint32_t kQBytes = 2 * kHalfBytes(kBM);
constexpr uint32_t kTileBytes = 2 * kHalfBytes(kBN);  // one K or V tile
constexpr size_t kSmemBytes = kQBytes + 2 * kStages * kTileBytes + 1024;  // + alignment of the first atom

static_assert(kProducers == 8 * 16, "the producer copies 8 rows at a time, 16 threads (16-byte chunks) per row");
static_assert(kBM == AttentionConfig<128>::kBM, "row blocks are planned in units of the mma.sync kernel's");

// kMods: the call has score variants (softcap or ALiBi). Without them the kernel is built with
// no variant code at all: present but skipped, it cost the plain path 5% (register allocation and
// scheduling of the consumer loop, measured on the H200).
template <typename T, bool kForward, bool kMods>
__global__ void __launch_bounds__(kThreads, 1) attention_kernel_sm90(const AttentionArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int NT = kBN / 8, DT = kD / 8, CHUNKS = kD / 8;
  constexpr int kQReady = 1;  // named barriers 1, 2: each consumer warpgroup's Q load
  // Registers per thread: 65536 / 384 = 170 at launch, then moved from the producer warpgroup to
  // the consumers (128 * 40 + 256 * 232 <= 65536). ptxas allocates the code after each
  // setmaxnreg within its budget: without them the consumers spill and their wgmma serialize.
  constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t base = (dev::smem_addr(smem_raw) + 1023) & ~1023u;
  unsigned char* const gbase = smem_raw + (base - dev::smem_addr(smem_raw));
  const uint32_t sQ = base, sK = base + kQBytes, sV = sK + kStages * kTileBytes;
  __shared__ int32_t s_vis_lo[kBM], s_vis_hi[kBM];
  __shared__ uint64_t s_bars[2 * kStages];  // full[kStages], empty[kStages]
  const uint32_t full_bar = dev::smem_addr(s_bars), empty_bar = full_bar + kStages * 8;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // Warpgroup index, broadcast so that the compiler knows it is warp-uniform.
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  AttentionBlock b = AttentionBlock::make(a, blockIdx.x);
  if (tid == 0) {
    for (int i = 0; i < kStages; ++i) {
      dev::mbarrier_init(full_bar + 8 * i, kProducers);
      dev::mbarrier_init(empty_bar + 8 * i, kConsumers);
    }
    dev::mbarrier_init_fence();
  }
  b.fill_visible(s_vis_lo, s_vis_hi, kBM, tid, kThreads);
  __syncthreads();
  b.plan_tiles<kBN>(s_vis_lo, s_vis_hi);
  const int64_t n = b.n_tiles;

  if (wg == kConsumers / 128) {
    // Producer warpgroup: tile j into stage j % kStages once both consumers released it. Thread
    // i copies chunk i % 16 of rows i / 16 + 8 q, so that 16 threads read one key's 256
    // contiguous bytes; each thread's arrival on "full" fires when its copies have landed.
    dev::setmaxnreg_dec<kProducerRegs>();
    const int c = (tid - kConsumers) % CHUNKS, r0 = (tid - kConsumers) / CHUNKS;
    const uint32_t chunk_off = dev::sw128_offset(kBN, r0, c);  // rows r0 + 8 q: + 8 q * 128 bytes
    // A packed cache here (kernel_dispatch.cpp): one run from key 0 (KvLayout::run_from), so key
    // j's rows are key 0's plus j token strides.
    const KvRow first = a.kv.layout.row(b.blk.seq, b.sd.k_begin, 0, b.kvh);
    const T* K = static_cast<const T*>(a.kv.k) + first.k + c * 8;
    const T* V = static_cast<const T*>(a.kv.v) + first.v + c * 8;
    const int64_t k_stride = a.kv.layout.k_token_stride, v_stride = a.kv.layout.v_token_stride;
    for (int64_t j = 0; j < n; ++j) {
      const int stage = static_cast<int>(j % kStages);
      dev::mbarrier_wait(empty_bar + 8 * stage, static_cast<uint32_t>(((j / kStages) & 1) ^ 1));
      const TileSpan ts = b.tile<kBN>(j);
      unsigned char* dk = gbase + (sK - base) + stage * kTileBytes + chunk_off;
      unsigned char* dv = gbase + (sV - base) + stage * kTileBytes + chunk_off;
#pragma unroll 4
      for (int q = 0; q < kBN / 8; ++q) {
        int64_t key;
        const bool valid = b.key_at(ts.seg1, ts.t0 + r0 + 8 * q, &key);
        dev::cp_async16(dk + q * 8 * 128, K + key * k_stride, valid);
        if constexpr (kForward) dev::cp_async16(dv + q * 8 * 128, V + key * v_stride, valid);
      }
      dev::mbarrier_arrive_cp_async(full_bar + 8 * stage);
    }
    dev::cp_async_wait<0>();
    return;
  }

  // Consumers. Warpgroup wg loads its own 64 query rows.
  dev::setmaxnreg_inc<kConsumerRegs>();
  const int wtid = tid % 128, g = lane / 4, t = lane % 4;
  {
    const T* Q = static_cast<const T*>(a.q);
    for (int i = wtid; i < 64 * CHUNKS; i += 128) {
      const int r = wg * 64 + i / CHUNKS, c = i % CHUNKS;
      const bool valid = r < b.blk.count;
      const int64_t token = b.sd.q_begin + (valid ? b.local_row(r) : 0);
      dev::cp_async16(gbase + dev::sw128_offset(kBM, r, c), Q + token * a.q_token_stride + b.head * a.q_head_stride + c * 8,
                      valid);
    }
    dev::cp_async_commit();
    dev::cp_async_wait<0>();
    dev::fence_proxy_async_smem();
    dev::named_barrier_sync(kQReady + wg, 128);
  }

  // This thread's rows: warp * 16 + g and + 8.
  const FragmentRows fr = b.fragment_rows(warp * 16, g, s_vis_lo, s_vis_hi);

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[DT][4], s[NT][4];
  uint32_t pa[kBN / 16][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < NT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < kBN / 16; ++i) pa[i][0] = pa[i][1] = pa[i][2] = pa[i][3] = 0u;

  const uint32_t q_rows = sQ + wg * 64 * 128;
  // Phase k: P_{k-1} V_{k-1} (pv) and S_k = Q K_k (qk). The flags are compile-time so that no
  // wgmma sits in a branch the compiler cannot prove warp-uniform (it would serialize them).
  auto phase = [&](int64_t k, auto pv, auto qk) {
    constexpr bool kPV = decltype(pv)::value, kQK = decltype(qk)::value;
    if constexpr (kQK) {
      dev::mbarrier_wait(full_bar + 8 * (k % kStages), static_cast<uint32_t>((k / kStages) & 1));
      dev::fence_proxy_async_smem();  // the producer's cp.async writes, before wgmma reads them
    }
    dev::wgmma_fence();
    if constexpr (kPV) {
      // O += P V: key steps of 16 rows (two 8-row groups, 1024 bytes apart); the d halves are
      // kHalfBytes(kBN) apart.
      const uint32_t v_tile = sV + static_cast<uint32_t>((k - 1) % kStages) * kTileBytes;
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        dev::wgmma_rs_tb<T>(o, pa[kk], dev::smem_desc_sw128(v_tile + kk * 16 * 128, kHalfBytes(kBN), 1024));
      }
    }
    if constexpr (kQK) {
      // S = Q K^T: k-steps of 16 walk 32 bytes along a 128-byte swizzled row, then the other half.
      const uint32_t k_tile = sK + static_cast<uint32_t>(k % kStages) * kTileBytes;
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const uint32_t qstep = (kk / 4) * kHalfBytes(kBM) + (kk % 4) * 32;
        const uint32_t kstep = (kk / 4) * kHalfBytes(kBN) + (kk % 4) * 32;
        dev::wgmma_ss<T>(s, dev::smem_desc_sw128(q_rows + qstep, 16, 1024),
                         dev::smem_desc_sw128(k_tile + kstep, 16, 1024), kk > 0 ? 1 : 0);
      }
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();
    dev::fence_registers(s);
    dev::fence_registers(o);
    if (k > 0) dev::mbarrier_arrive(empty_bar + 8 * ((k - 1) % kStages));  // tile k - 1 is done
    if constexpr (kQK) {
      online_softmax<NT, DT, /*kPassPerVariant=*/false>(s, m, l, o, b, b.tile<kBN>(k), fr, t, a.scale_log2,
                                                         kMods ? a.mod : ScoreModParams{});
      if constexpr (kForward) {
#pragma unroll
        for (int kk = 0; kk < kBN / 16; ++kk) probabilities_a<T, NT>(s, kk, pa[kk]);
      }
    }
  };
  using No = std::false_type;
  using Yes = std::true_type;
  if (n > 0) {
    phase(0, No{}, Yes{});
    for (int64_t k = 1; k < n; ++k) phase(k, std::integral_constant<bool, kForward>{}, Yes{});
    if constexpr (kForward) phase(n, Yes{}, No{});
  }

  finish_rows<DT>(a, b, o, m, l, warp * 16 + g, t);
#endif
}

template <typename T, bool kForward>
cudaError_t launch_typed(const AttentionArgs& a, cudaStream_t stream) {
  const bool mods = a.mod.softcap_log2 > 0.f || a.mod.alibi_log2 != nullptr;
  return mods ? dev::launch_with_smem(attention_kernel_sm90<T, kForward, true>, attention_grid(a), kThreads,
                                      kSmemBytes, a, stream)
              : dev::launch_with_smem(attention_kernel_sm90<T, kForward, false>, attention_grid(a), kThreads,
                                      kSmemBytes, a, stream);
}

template <typename T>
cudaError_t launch_mode(const AttentionArgs& a, cudaStream_t stream) {
  const bool forward = a.mode == AttentionMode::kForward || a.mode == AttentionMode::kDenseRows;  // with P V
  return forward ? launch_typed<T, true>(a, stream) : launch_typed<T, false>(a, stream);
}

}  // namespace

cudaError_t launch_attention_sm90_d128(bool bf16, const AttentionArgs& args, cudaStream_t stream) {
  return bf16 ? launch_mode<__nv_bfloat16>(args, stream) : launch_mode<__half>(args, stream);
}

}  // namespace sampleattn::cuda
