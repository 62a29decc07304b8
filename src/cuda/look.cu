// The look at every row on the device (docs/ALGORITHM.md, step 5; kernel_params.h, LookArgs):
// the CPU's arithmetic restated, so that both backends flag the same rows from the same mask.
//   Quantization (simd/flash/look_quantize.h): a row as f32 (f16/bf16 exactly; int8 and fp8
//   codes times the row's scale, one rounding, as the CPU dequantizes), its absolute maximum, the
//   integers rint(x * (127 / amax)) clamped to [-127, 127], the scale amax / 127 (times
//   scale_log2 for Q); a row of zeros or a non-finite maximum gives zeros and scale 0.
//   Scores: the int8 products summed exactly in int32 (mma.sync m16n8k32 s8, the same sums as
//   the CPU's vpdpbusd, AMX tdpbsud or f32 products of the integers), then (sum * k scale) * q
//   scale, each an IEEE product, then the score variants (core/score_mod.h).
//   The rule (cpu/look.cpp): a row's largest score over model_lo <= j < its band, the left-out
//   stripes excluded, against its mask's largest (band, and the left-out stripes and sinks it
//   sees): flagged when within `bar`.
// look_pack: one warp per (key, kv head) row. look: 4 warps per block of kLookRows rows of one
// query head, each the block's stride after the one before (16 rows a warp), key tiles of 64
// double-buffered with cp.async (the K rows, their scales and the tile's word of left-out bits,
// which the host lays out per set); each row's
// outside keys and band are bit masks of the tile. Without score variants the row's scale is
// applied to its two maxima at the end (a positive factor: the same bits as scaling each score).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/mask.h"
#include "core/score_mod.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"
#include "cuda/kv_load.cuh"
#include "cuda/launch.h"

namespace sampleattn::cuda {
namespace {

constexpr int kPackWarps = 8;
constexpr int kLookKeys = 64;  // keys a tile
constexpr int kMaxValues = 8;  // values a lane holds of a row (head dims up to 256)
static_assert(kLookRows == 64, "4 warps of 16 rows");

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// Element i of key row `row` of K as the CPU reads it (f32).
template <typename T>
__device__ __forceinline__ float key_value(const KvSource& kv, const KvRow& row, int i) {
  if (kv.k_type == KvType::kOperand) return to_float(static_cast<const T*>(kv.k)[row.k + i]);
  const uint8_t code = static_cast<const uint8_t*>(kv.k)[row.k + i];
  const float v = kv.k_type == KvType::kI8 ? static_cast<float>(static_cast<int8_t>(code)) : dev::fp8_e4m3_to_float(code);
  return __fmul_rn(v, kv.layout.k_scale[row.scale]);
}

// One warp quantizes one row whose values it holds (lane l: elements l, l + 32, ...; d of them)
// into dst[0, row_bytes) (zero-padded) and returns the row's scale (amax / 127).
__device__ __forceinline__ float quantize_row(const float (&x)[kMaxValues], int d, int row_bytes, int8_t* dst, int lane) {
  float amax = 0.f;
#pragma unroll
  for (int c = 0; c < kMaxValues; ++c) {
    if (lane + 32 * c < d) amax = fmaxf(amax, fabsf(x[c]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const bool zero = !(amax > 0.f) || !isfinite(amax);
  const float inv = zero ? 0.f : __fdiv_rn(127.f, amax);
#pragma unroll
  for (int c = 0; c < kMaxValues; ++c) {
    const int i = lane + 32 * c;
    if (i >= row_bytes) break;
    float v = 0.f;
    if (!zero && i < d) v = fminf(fmaxf(rintf(__fmul_rn(x[c], inv)), -127.f), 127.f);
    dst[i] = static_cast<int8_t>(v);
  }
  return zero ? 0.f : __fdiv_rn(amax, 127.f);
}

template <typename T>
__global__ void __launch_bounds__(32 * kPackWarps) look_pack_kernel(const LookArgs a) {
  const KeyTile tile = a.tiles[blockIdx.x];
  const int kvh = static_cast<int>(blockIdx.y);
  const SeqDesc sd = a.seqs[tile.seq];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t end = tile.t0 + a.tile_keys < sd.k_len ? tile.t0 + a.tile_keys : sd.k_len;
  for (int64_t j = tile.t0 + warp; j < end; j += kPackWarps) {
    const KvRow row = a.kv.layout.row(tile.seq, sd.k_begin, j, kvh);
    float x[kMaxValues];
#pragma unroll
    for (int c = 0; c < kMaxValues; ++c) {
      const int i = lane + 32 * c;
      x[c] = i < a.head_dim ? key_value<T>(a.kv, row, i) : 0.f;
    }
    const int64_t at = (sd.key_prefix + j) * a.num_kv_heads + kvh;
    const float scale = quantize_row(x, a.head_dim, a.row_bytes, a.keys + at * a.row_bytes, lane);
    if (lane == 0) a.key_scales[at] = scale;
  }
}

__device__ __forceinline__ void mma_s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t word_at(const int8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// 4 or 8 bytes global -> shared, asynchronously (zero-filled when !valid).
template <int kBytes>
__device__ __forceinline__ void cp_async_small(void* smem, const void* gmem, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8, "cp.async.ca copies 4, 8 or 16 bytes");
  const int bytes = valid ? kBytes : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dev::smem_addr(smem)), "l"(gmem), "n"(kBytes),
               "r"(bytes));
}

// Bits [from, 64) of a word (none when from >= 64).
__device__ __forceinline__ uint64_t bits_from(int from) { return from >= 64 ? 0ull : ~0ull << from; }

// RB: the quantized rows' bytes (head_dim rounded up to 32).
template <typename T, int RB>
__global__ void __launch_bounds__(128) look_kernel(const LookArgs a) {
  constexpr int kPitch = RB + 16;  // bytes a row: word loads of 8 rows x 4 lanes hit 32 banks
  constexpr int kChunks = RB / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  int8_t* sQ = reinterpret_cast<int8_t*>(smem_raw);
  int8_t* sK = sQ + kLookRows * kPitch;
  __shared__ float s_qscale[kLookRows];
  __shared__ __align__(16) float s_kscale[2][kLookKeys];
  __shared__ uint64_t s_left_out[2];  // the tile's left-out stripes, bit c = key base + c

  const LookBlock blk = a.blocks[blockIdx.x];
  const SeqDesc sd = a.seqs[blk.seq];
  const int head = blk.head, kvh = head / a.group;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t q_offset = sd.k_len - sd.q_len;
  const int set = sd.set_base + (a.per_group ? kvh : head);
  const uint64_t* left_out = a.left_out_bits + a.bits_offset[set];
  const ScoreMod mod = a.mod.head(head);
  const bool mods = mod.modifies_scores();

  // The block's rows, quantized (rows past the block: zeros).
  const T* Q = static_cast<const T*>(a.q);
  for (int r = warp; r < kLookRows; r += 4) {
    float x[kMaxValues];
    const bool valid = r < blk.count;
    const T* src = Q + (sd.q_begin + blk.first + (valid ? r : 0) * int64_t{blk.stride}) * a.q_token_stride + head * a.q_head_stride;
#pragma unroll
    for (int c = 0; c < kMaxValues; ++c) {
      const int i = lane + 32 * c;
      x[c] = valid && i < a.head_dim ? to_float(src[i]) : 0.f;
    }
    const float scale = quantize_row(x, a.head_dim, RB, sQ + r * kPitch, lane);
    if (lane == 0) s_qscale[r] = __fmul_rn(scale, a.scale_log2);
  }

  // The keys of the block's rows: model_lo of the first to the last one's position, in tiles of
  // 64 from a multiple of 64. Every load of a tile is asynchronous: its K rows, their scales and
  // its word of left-out bits.
  const int64_t p_first = q_offset + blk.first, p_last = p_first + int64_t{blk.count - 1} * blk.stride;
  const int64_t k0 = model_lo(p_first, a.window_left) / kLookKeys * kLookKeys;
  const int64_t n_tiles = (causal_end(p_last) - k0 + kLookKeys - 1) / kLookKeys;
  const int8_t* keys = a.keys + (sd.key_prefix * a.num_kv_heads + kvh) * RB;
  const int64_t key_step = static_cast<int64_t>(a.num_kv_heads) * RB;
  const float* scales = a.key_scales + sd.key_prefix * a.num_kv_heads + kvh;
  auto load_tile = [&](int64_t tile, int stage) {
    const int64_t base = k0 + tile * kLookKeys;
    int8_t* dk = sK + stage * kLookKeys * kPitch;
#pragma unroll
    for (int i = tid; i < kLookKeys * kChunks; i += 128) {
      const int r = i / kChunks, c = i % kChunks;
      const int64_t j = base + r;
      const bool valid = j < sd.k_len;
      dev::cp_async16(dk + r * kPitch + c * 16, keys + (valid ? j : 0) * key_step + c * 16, valid);
    }
    if (tid < kLookKeys) {
      const int64_t j = base + tid;
      const bool valid = j < sd.k_len;
      cp_async_small<4>(&s_kscale[stage][tid], scales + (valid ? j : 0) * a.num_kv_heads, valid);
    } else if (tid == kLookKeys) {
      cp_async_small<8>(&s_left_out[stage], left_out + base / kLookKeys, true);
    }
  };

  // This thread's two rows (g and g + 8 of its warp's 16): position, and where their outside
  // keys [lo, mid) and band [mid, hi) lie.
  int64_t pos[2], lo[2], mid[2], hi[2];
  // Largest scores outside and inside the band: without score variants, before the row's scale
  // (a positive factor: the largest scaled score is the scaled largest, bit for bit).
  float outer[2] = {-INFINITY, -INFINITY}, inner[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + g + 8 * h;
    pos[h] = q_offset + blk.first + int64_t{r < blk.count ? r : blk.count - 1} * blk.stride;
    lo[h] = model_lo(pos[h], a.window_left);
    hi[h] = causal_end(pos[h]);
    const int64_t w = window_lo(pos[h], sd.window);
    mid[h] = w < lo[h] ? lo[h] : (w > hi[h] ? hi[h] : w);
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
    const int8_t* tk = sK + stage * kLookKeys * kPitch;
    int acc[kLookKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kLookKeys / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0;
#pragma unroll
    for (int kk = 0; kk < RB; kk += 32) {
      const int8_t* qa = sQ + (warp * 16 + g) * kPitch + kk + 4 * t;
      const uint32_t af[4] = {word_at(qa), word_at(qa + 8 * kPitch), word_at(qa + 16), word_at(qa + 8 * kPitch + 16)};
#pragma unroll
      for (int n = 0; n < kLookKeys / 8; ++n) {
        const int8_t* kb = tk + (n * 8 + g) * kPitch + kk + 4 * t;
        mma_s8(acc[n], af, word_at(kb), word_at(kb + 16));
      }
    }
    const int64_t base = k0 + tile * kLookKeys;
    // The thread's 16 columns (8n + 2t + e): products times their keys' scales.
    float y[kLookKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kLookKeys / 8; ++n) {
      const float2 ks = *reinterpret_cast<const float2*>(&s_kscale[stage][n * 8 + 2 * t]);
      y[n][0] = __fmul_rn(__int2float_rn(acc[n][0]), ks.x);
      y[n][1] = __fmul_rn(__int2float_rn(acc[n][1]), ks.y);
      y[n][2] = __fmul_rn(__int2float_rn(acc[n][2]), ks.x);
      y[n][3] = __fmul_rn(__int2float_rn(acc[n][3]), ks.y);
    }
    const uint64_t left = s_left_out[stage];
    // Whether any of this thread's 16 columns (bits 8n + 2t + e) is a left-out stripe.
    const bool my_left = ((left >> (2 * t)) & 0x0303030303030303ull) != 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // The row's spans within the tile: outside its band [rl, rm), its band [rm, rh).
      const int rl = static_cast<int>(max(int64_t{0}, min(int64_t{kLookKeys}, lo[h] - base)));
      const int rm = static_cast<int>(max(int64_t{0}, min(int64_t{kLookKeys}, mid[h] - base)));
      const int rh = static_cast<int>(max(int64_t{0}, min(int64_t{kLookKeys}, hi[h] - base)));
      // Most of a row's tiles lie wholly outside its band or wholly inside it: then each of the
      // thread's columns goes to one maximum without a test (outside: when none of them is a
      // left-out stripe, which belongs to the mask). The per-column tests below are the ALU work
      // that bound this kernel (docs/PERF.md, 2026-12-05 (evening): 3.00 -> 2.04 ms on an H100).
      if (!mods && ((rl == 0 && rm == kLookKeys && !my_left) || (rm == 0 && rh == kLookKeys))) {
        float m[kLookKeys / 8];
#pragma unroll
        for (int n = 0; n < kLookKeys / 8; ++n) m[n] = fmaxf(y[n][2 * h], y[n][2 * h + 1]);
#pragma unroll
        for (int w = kLookKeys / 16; w > 0; w >>= 1) {
#pragma unroll
          for (int n = 0; n < w; ++n) m[n] = fmaxf(m[n], m[n + w]);
        }
        if (rm == 0) inner[h] = fmaxf(inner[h], m[0]);
        else outer[h] = fmaxf(outer[h], m[0]);
        continue;
      }
      // Else as bits: outside its band and not left out; its mask (its band, and the left-out
      // stripes and sinks before it).
      const uint64_t before_band = bits_from(rl) & ~bits_from(rm);
      // This thread's columns at bits 8n + e after the shift.
      const uint64_t out_bits = (before_band & ~left) >> (2 * t);
      const uint64_t in_bits = ((bits_from(rm) & ~bits_from(rh)) | (before_band & left)) >> (2 * t);
      if (out_bits == 0 && in_bits == 0) continue;
      const float qs = s_qscale[warp * 16 + g + 8 * h];
#pragma unroll
      for (int n = 0; n < kLookKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float v = y[n][2 * h + e];
          if (mods) v = modified_score(mod, __fmul_rn(v, qs), pos[h], base + n * 8 + 2 * t + e);
          if ((out_bits >> (8 * n + e)) & 1u) outer[h] = fmaxf(outer[h], v);
          if ((in_bits >> (8 * n + e)) & 1u) inner[h] = fmaxf(inner[h], v);
        }
      }
    }
    __syncthreads();  // the stage is overwritten by the load issued next iteration
  }
  dev::cp_async_wait<0>();

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float o = outer[h], i = inner[h];
    o = fmaxf(o, __shfl_xor_sync(0xffffffffu, o, 1));
    o = fmaxf(o, __shfl_xor_sync(0xffffffffu, o, 2));
    i = fmaxf(i, __shfl_xor_sync(0xffffffffu, i, 1));
    i = fmaxf(i, __shfl_xor_sync(0xffffffffu, i, 2));
    if (!mods) {  // the row's scale, now
      const float qs = s_qscale[warp * 16 + g + 8 * h];
      if (o > -INFINITY) o = __fmul_rn(o, qs);
      if (i > -INFINITY) i = __fmul_rn(i, qs);
    }
    const int r = warp * 16 + g + 8 * h;
    if (t == 0 && r < blk.count && o > -INFINITY && o >= __fsub_rn(i, a.bar)) {
      a.flags[(sd.q_begin + blk.first + int64_t{r} * blk.stride) * a.num_q_heads + head] = 1;
    }
  }
}

template <typename T, int RB>
cudaError_t launch_rows(const LookArgs& a, cudaStream_t stream) {
  constexpr size_t kSmem = static_cast<size_t>(3) * kLookRows * (RB + 16);
  return dev::launch_with_smem(look_kernel<T, RB>, a.num_blocks, 128, kSmem, a, stream);
}

template <typename T>
cudaError_t launch_typed(const LookArgs& a, cudaStream_t stream) {
  if (a.num_tiles > 0 && a.num_kv_heads > 0) {
    look_pack_kernel<T><<<dim3(static_cast<unsigned>(a.num_tiles), static_cast<unsigned>(a.num_kv_heads)), 32 * kPackWarps, 0,
                          stream>>>(a);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  switch (a.row_bytes) {
    case 32: return launch_rows<T, 32>(a, stream);
    case 64: return launch_rows<T, 64>(a, stream);
    case 96: return launch_rows<T, 96>(a, stream);
    case 128: return launch_rows<T, 128>(a, stream);
    case 160: return launch_rows<T, 160>(a, stream);
    case 192: return launch_rows<T, 192>(a, stream);
    case 224: return launch_rows<T, 224>(a, stream);
    case 256: return launch_rows<T, 256>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_look(bool bf16, const LookArgs& args, cudaStream_t stream) {
  if (args.head_dim > 32 * kMaxValues || args.row_bytes % 32 != 0) return cudaErrorInvalidValue;
  return bf16 ? launch_typed<__nv_bfloat16>(args, stream) : launch_typed<__half>(args, stream);
}

}  // namespace sampleattn::cuda
