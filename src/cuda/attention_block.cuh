// What one block of an attention kernel works on, and the per-row math every attention kernel
// shares: the mapping of a block to its query head, rows and key segments, the online softmax of
// one 16-row score fragment, and the epilogue. Used by the mma.sync kernel (attention_kernel.cuh)
// and the Hopper wgmma kernel (attention_sm90.cu), so both compute the same masks the same way;
// the mask rules themselves (window band, the model's window, stripe visibility, segment spans,
// the lse) are core/mask.h's and the score variants (softcap, ALiBi, sinks) core/score_mod.h's,
// shared with the CPU backend.
//
// Keys come in tiles of BN from "segments": segment 0 is the sequence's own keys (the dense
// range, or a sparse head's window band), segment 1 the stripe columns of a sparse head, gathered
// through their index list. Every row sees one contiguous span [lo, hi) of each segment (causal
// diagonal, the model's window, window edges and stripe visibility stripe_first <= j <= p - w are
// all such spans, and every bound is non-decreasing in the row's position), so the tiles outside
// a block's spans are skipped and a tile needs a mask only where it crosses a span edge.
//
// Score fragments are in the m16n8 accumulator layout of mma.sync, which is also that of each
// warp's 16 rows of a wgmma m64nN accumulator: s[n][0..1] are row g, columns 8n + 2t + {0, 1};
// s[n][2..3] row g + 8.
#pragma once

#include <cuda_runtime.h>

#include "core/mask.h"
#include "core/score_mod.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernel_params.h"

namespace sampleattn::cuda {

struct TileSpan {
  bool seg1;   // a tile of stripe columns
  int64_t t0;  // first key (segment 0) or first stripe ordinal (segment 1)
  bool full;   // every row of the block sees every key of the tile
};

// A thread's two rows of a 16-row score fragment (g and g + 8): their positions and the runs
// [vis_lo, vis_hi) of the stripe list they see (segment 1). Positions and key counts fit 32 bits
// (checked on the host).
struct FragmentRows {
  int32_t pos[2];
  int32_t vis_lo[2], vis_hi[2];
};

struct AttentionBlock {
  int head, kvh;
  RowBlock blk;
  SeqDesc sd;
  bool list_mode, with_pv, sparse, causal;
  int64_t q_offset, w;
  int64_t left;     // the model's window (kNoModelWindow: none)
  const int32_t* stripes;
  int64_t n_stripes;
  const int32_t* rows;
  // Tiles (after plan_tiles): segment 0, then segment 1.
  int64_t s0_start, s0_tiles, s0_lo_max, s0_hi_min;
  int64_t s1_start, s1_tiles, s1_lo_max, s1_hi_min, n_tiles;

  // Grid order: kv head, then row block (most expensive first), then the group's query heads.
  // Blocks resident together then read one kv head's K/V (and one stripe set) from L2 instead of
  // each streaming its own head's from memory.
  // kDenseRows: one block per row block, of its own head.
  __device__ static AttentionBlock make(const AttentionArgs& a, int64_t block_index) {
    AttentionBlock b;
    if (a.mode == AttentionMode::kDenseRows) {
      b.head = a.block_heads[block_index];
      b.blk = a.blocks[block_index];
    } else {
      const int64_t per_kv_head = a.num_blocks * a.group;
      const int64_t in_kv_head = block_index % per_kv_head;
      b.head = static_cast<int>(block_index / per_kv_head) * a.group + static_cast<int>(in_kv_head % a.group);
      b.blk = a.blocks[in_kv_head / a.group];
    }
    b.sd = a.seqs[b.blk.seq];
    b.kvh = b.head / a.group;
    b.list_mode = a.mode != AttentionMode::kForward;
    b.with_pv = a.mode == AttentionMode::kForward || a.mode == AttentionMode::kDenseRows;
    b.rows = a.rows;
    // Sparse: the sequence is sampled, this head's set did not fall back to dense, nor did the
    // look make the head dense; the look's dense rows see every key.
    const int set = b.sd.set_base + (a.per_group ? b.head / a.group : b.head);
    b.sparse = b.sd.sparse != 0 && a.mode != AttentionMode::kRowStats && a.mode != AttentionMode::kDenseRows &&
               a.set_dense[set] == 0 &&
               (a.head_dense == nullptr || a.head_dense[static_cast<int64_t>(b.blk.seq) * a.num_q_heads + b.head] == 0);
    b.q_offset = b.sd.k_len - b.sd.q_len;
    b.w = b.sd.window;
    b.left = a.window_left;
    b.stripes = nullptr;
    b.n_stripes = 0;
    if (b.sparse) {
      b.stripes = a.stripes + a.set_offset[set];
      b.n_stripes = a.set_count[set];
    }
    b.causal = a.causal != 0;
    return b;
  }

  // Sequence-local query index of block row r (rows past the block repeat its last row).
  __device__ int64_t local_row(int r) const {
    r = r < blk.count ? r : blk.count - 1;
    return list_mode ? static_cast<int64_t>(rows[blk.first + r]) : blk.first + r;
  }
  __device__ int64_t position(int r) const { return q_offset + local_row(r); }

  // Segment 0 spans (core/mask.h): lo(p), hi(p), both non-decreasing in p. A dense row sees
  // model_lo .. p (the model's window), a sparse row its window band (inside it).
  __device__ int64_t seg0_lo(int64_t p) const { return own_keys_lo(sparse, p, w, left); }
  __device__ int64_t seg0_hi(int64_t p) const { return own_keys_hi(sparse, causal, p, sd.k_len); }

  // The run of the stripe list each row sees (segment 1): stripe_first(p, left) <= j <=
  // stripe_limit(p, w), two binary searches per row. BM entries each; the caller synchronizes
  // before plan_tiles reads them.
  __device__ void fill_visible(int32_t* vis_lo, int32_t* vis_hi, int bm, int tid, int threads) const {
    if (!sparse) return;
    for (int r = tid; r < bm; r += threads) {
      const int64_t p = position(r);
      const int64_t hi = dev::count_at_most(stripes, n_stripes, stripe_limit(p, w));
      const int64_t lo = dev::count_below(stripes, n_stripes, stripe_first(p, left));
      vis_lo[r] = static_cast<int32_t>(lo < hi ? lo : hi);
      vis_hi[r] = static_cast<int32_t>(hi);
    }
  }

  // Both runs are non-decreasing in p, so the block's tiles of each segment run from the first
  // row's lo to the last row's hi, and a tile is full when it lies inside every row's span.
  template <int BN>
  __device__ void plan_tiles(const int32_t* vis_lo, const int32_t* vis_hi) {
    const int64_t p_first = position(0), p_last = position(blk.count - 1);
    s0_start = seg0_lo(p_first) / BN * BN;
    const int64_t s0_end = seg0_hi(p_last);
    s0_tiles = s0_end > s0_start ? (s0_end - s0_start + BN - 1) / BN : 0;
    s0_lo_max = seg0_lo(p_last);
    s0_hi_min = seg0_hi(p_first);
    s1_start = 0;
    s1_tiles = 0;
    s1_lo_max = 0;
    s1_hi_min = 0;
    if (sparse) {
      s1_start = vis_lo[0] / BN * BN;
      const int64_t s1_end = vis_hi[blk.count - 1];
      s1_tiles = s1_end > s1_start ? (s1_end - s1_start + BN - 1) / BN : 0;
      s1_lo_max = vis_lo[blk.count - 1];
      s1_hi_min = vis_hi[0];
    }
    n_tiles = s0_tiles + s1_tiles;
  }

  template <int BN>
  __device__ TileSpan tile(int64_t i) const {
    TileSpan ts;
    ts.seg1 = i >= s0_tiles;
    ts.t0 = ts.seg1 ? s1_start + (i - s0_tiles) * BN : s0_start + i * BN;
    ts.full = ts.seg1 ? (ts.t0 >= s1_lo_max && ts.t0 + BN <= s1_hi_min) : (ts.t0 >= s0_lo_max && ts.t0 + BN <= s0_hi_min);
    return ts;
  }

  // The key at ordinal `ord` of a segment; false (and key 0) past its end.
  __device__ bool key_at(bool seg1, int64_t ord, int64_t* key) const {
    const bool valid = ord < (seg1 ? n_stripes : sd.k_len);
    *key = valid ? (seg1 ? stripes[ord] : ord) : 0;
    return valid;
  }

  // The position of the key at ordinal `ord` of a segment, which must be inside the segment.
  __device__ int64_t key_position(bool seg1, int32_t ord) const { return seg1 ? stripes[ord] : ord; }

  // The span [lo, hi) of a segment that the row at position p (seeing the stripe run
  // [vis_lo, vis_hi)) sees.
  __device__ void span(bool seg1, int32_t p, int32_t vis_lo, int32_t vis_hi, int32_t* lo, int32_t* hi) const {
    if (seg1) {
      *lo = vis_lo;
      *hi = vis_hi;
    } else {
      *lo = static_cast<int32_t>(seg0_lo(p));
      *hi = static_cast<int32_t>(seg0_hi(p));
    }
  }

  // A thread's two rows of the 16-row fragment starting at block row r16 (rows r16 + g and
  // r16 + g + 8), reading the runs fill_visible wrote.
  __device__ FragmentRows fragment_rows(int r16, int g, const int32_t* vis_lo, const int32_t* vis_hi) const {
    FragmentRows fr;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = r16 + h * 8 + g;
      fr.pos[h] = static_cast<int32_t>(position(r));
      fr.vis_lo[h] = sparse ? vis_lo[r] : 0;
      fr.vis_hi[h] = sparse ? vis_hi[r] : 0;
    }
    return fr;
  }
};

// The head's softcap and ALiBi on one 16-row score fragment: raw q.k in, core/score_mod.h's
// modified_score (log2 units) out. Columns past the tile's segment get a score too; the mask
// removes them afterwards. Two forms of the same floats (softcapped(s2) + alibi_bias; a head
// without ALiBi adds -0): one pass over both variants, or a pass per variant, each under its own
// block-uniform condition. Which one ptxas allocates without spilling differs between kernels:
// the sm90 kernel takes the one pass (the per-variant passes spill its consumers), the mma.sync
// kernels the per-variant passes (the one pass spills dim 256 on sm_90a and dims 96 and below more
// than before the variants).
template <int NT, bool kPassPerVariant>
__device__ __forceinline__ void modify_scores(float (&s)[NT][4], const ScoreMod& mod, const AttentionBlock& b,
                                              const TileSpan& ts, const FragmentRows& fr, int t, float scale_log2) {
  auto key_of = [&](int32_t col) -> int64_t {
    return !(ts.seg1 && mod.has_alibi()) ? col : (col < b.n_stripes ? b.key_position(true, col) : 0);
  };
  if constexpr (!kPassPerVariant) {
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int32_t col = static_cast<int32_t>(ts.t0) + n * 8 + 2 * t + e;
        const int64_t key = key_of(col);
#pragma unroll
        for (int h = 0; h < 2; ++h) s[n][2 * h + e] = modified_score(mod, s[n][2 * h + e] * scale_log2, fr.pos[h], key);
      }
    }
  } else {
    if (mod.has_softcap()) {
#pragma unroll
      for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) s[n][i] = softcapped(s[n][i] * scale_log2, mod.softcap_log2);
      }
    } else {
#pragma unroll
      for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) s[n][i] *= scale_log2;
      }
    }
    if (mod.has_alibi()) {
#pragma unroll
      for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int32_t col = static_cast<int32_t>(ts.t0) + n * 8 + 2 * t + e;
          const int64_t key = key_of(col);
#pragma unroll
          for (int h = 0; h < 2; ++h) s[n][2 * h + e] += alibi_bias(mod.alibi_log2, fr.pos[h], key);
        }
      }
    }
  }
}

// Online softmax (log2 units) of one 16-row score fragment s[NT][4] against a tile: applies the
// head's score variants (modify_scores), masks the columns outside each row's span, updates the
// running max m and sum l of the thread's two rows (g and g + 8), rescales their output fragment
// o[DT][4] and leaves the probabilities in s.
// The variants come straight from the kernel's parameters (mods, read per tile): held in
// registers across the tile loop they would cost the kernels registers they do not have.
template <int NT, int DT, bool kPassPerVariant>
__device__ __forceinline__ void online_softmax(float (&s)[NT][4], float (&m)[2], float (&l)[2], float (&o)[DT][4],
                                               const AttentionBlock& b, const TileSpan& ts, const FragmentRows& fr,
                                               int t, float scale_log2, const ScoreModParams& mods) {
  // Plain scores stay raw (the scale folds into each exponent's FFMA); modified ones are already
  // in log2 units.
  float scale = scale_log2;
  if (mods.softcap_log2 > 0.f || mods.alibi_log2 != nullptr) {
    const ScoreMod mod = mods.head(b.head);
    if (mod.modifies_scores()) {
      modify_scores<NT, kPassPerVariant>(s, mod, b, ts, fr, t, scale_log2);
      scale = 1.f;
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    int32_t lo = 0, hi = 0;
    if (!ts.full) b.span(ts.seg1, fr.pos[h], fr.vis_lo[h], fr.vis_hi[h], &lo, &hi);
    // Max over the scores (the scale is positive), in two chains (e) to halve the
    // dependent-latency chain.
    float mx2[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float v = s[n][2 * h + e];
        if (!ts.full) {
          const int32_t col = static_cast<int32_t>(ts.t0) + n * 8 + 2 * t + e;
          if (col < lo || col >= hi) v = -INFINITY;
        }
        s[n][2 * h + e] = v;
        mx2[e] = fmaxf(mx2[e], v);
      }
    }
    float mx = fmaxf(mx2[0], mx2[1]);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[h], mx * scale);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;
    const float alpha = dev::fast_exp2(m[h] - m_use);
    m[h] = m_new;
    float sum2[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float p = dev::fast_exp2(fmaf(s[n][2 * h + e], scale, -m_use));
        s[n][2 * h + e] = p;
        sum2[e] += p;
      }
    }
    l[h] = l[h] * alpha + (sum2[0] + sum2[1]);
    // Rescale only when the running max moved (alpha == 1 leaves O as it is, bit for bit): past
    // the first tiles of a long row it rarely does.
    if (b.with_pv && alpha != 1.f) {
#pragma unroll
      for (int dn = 0; dn < DT; ++dn) {
        o[dn][2 * h] *= alpha;
        o[dn][2 * h + 1] *= alpha;
      }
    }
  }
}

// Probabilities of key columns 16 kk .. 16 kk + 15 as the A fragment of an m16k16 (mma.sync) or
// m64k16 (wgmma) product.
template <typename T, int NT>
__device__ __forceinline__ void probabilities_a(const float (&s)[NT][4], int kk, uint32_t (&pa)[4]) {
  pa[0] = dev::pack2<T>(s[2 * kk][0], s[2 * kk][1]);
  pa[1] = dev::pack2<T>(s[2 * kk][2], s[2 * kk][3]);
  pa[2] = dev::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  pa[3] = dev::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// Epilogue of the thread's two rows r0 = row of h = 0 (in the block) and r0 + 8: O / l and the lse
// (forward and dense rows, the head's sink in the denominator), or the row statistics / kept mass (row-list
// modes, without the sink: stage 1 and validation measure each row's distribution over its keys).
template <int DT>
__device__ __forceinline__ void finish_rows(const AttentionArgs& a, const AttentionBlock& b, const float (&o)[DT][4],
                                            const float (&m)[2], const float (&l)[2], int r0, int t) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = l[h];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int r = r0 + h * 8;
    if (r >= b.blk.count) continue;
    const float mx = m[h];
    if (b.with_pv) {
      // The sink joins the denominator (and the lse); the output has dv columns.
      sum = sum_with_sink(a.mod.head(b.head), mx, sum);
      const int64_t token = b.sd.q_begin + b.local_row(r);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int64_t base = token * a.o_token_stride + b.head * a.o_head_stride;
#pragma unroll
      for (int dn = 0; dn < DT; ++dn) {
        if (dn * 8 >= a.head_dim_v) break;
        dev::store_out(a.o, a.o_type, base + dn * 8 + 2 * t, o[dn][2 * h] * inv);
        dev::store_out(a.o, a.o_type, base + dn * 8 + 2 * t + 1, o[dn][2 * h + 1] * inv);
      }
      if (a.lse != nullptr && t == 0) {
        a.lse[token * a.num_q_heads + b.head] = sum > 0.f ? lse_from_log2<float>(mx, log2f(sum)) : -INFINITY;
      }
    } else if (t == 0) {
      const int64_t at = static_cast<int64_t>(b.head) * a.total_rows + b.blk.first + r;
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

}  // namespace sampleattn::cuda
