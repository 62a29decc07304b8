// The online softmax of one register block of rows of scores, in L1 scratch.
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols: no inline function is shared between units
// compiled with different -m flags. Include only from a per-ISA translation unit (flash_<isa>.cpp),
// at namespace scope, after <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <cmath>
#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "simd/flash/vec.h"

namespace sampleattn::flash {

template <class Arch>
struct Softmax : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using typename V::BlockSpans;
  using V::W;
  using V::kNegInf;
  using V::hmax;
  using V::span_mask;
  using V::exp2;

  struct VecExp2 {
    B operator()(B x) const { return exp2(x); }
  };

  // Online softmax of R rows of scores scale * s (scale > 0; s with leading dimension lds) over
  // the vector-aligned range [ja, jb): the maximum is taken on s and scaled once, and each
  // probability is exp2(fma(s, scale, -max)), so scale = 1 gives exactly exp2(s - max). exp2fn
  // may be a cheaper exp2 where the probabilities are rounded further (the bf16 paths). For active rows: updates row_max/row_sum, sets corr[r] = exp2(old - new max), and
  // hands each vector of probabilities (0 outside the row's span) to emit(r, j, p), which stores
  // it and returns the values the row sum should add (the stored ones, after any rounding).
  // Inactive rows get zeros over [ja, jb) and corr 1.
  template <class Emit, class Exp2 = VecExp2>
  static void softmax_rows(const float* s, int64_t lds, int R, const BlockSpans& b, int ja, int jb,
                           float* row_max, float* row_sum, float* corr, Emit&& emit, float scale = 1.0f,
                           Exp2 exp2fn = {}) {
    for (int r = 0; r < R; ++r) {
      const float* sr = s + static_cast<int64_t>(r) * lds;
      if (!b.active[r]) {
        for (int j = ja; j < jb; j += W) emit(r, j, B(0.0f));
        corr[r] = 1.0f;
        continue;
      }
      const int lo = b.lo[r], hi = b.hi[r];
      const int first = lo / W * W;
      // The partial vectors at the span's ends masked, the whole ones between them in four
      // independent maxima (one chain would wait on vmaxps's latency for every vector).
      B vmax(kNegInf);
      const int whole_lo = (lo + W - 1) / W * W, whole_hi = hi / W * W;
      if (whole_lo >= whole_hi) {
        for (int j = first; j < hi; j += W) {
          vmax = xsimd::max(vmax, xsimd::select(span_mask(j, lo, hi), B::load_unaligned(sr + j), B(kNegInf)));
        }
      } else {
        if (first < whole_lo) {
          vmax = xsimd::select(span_mask(first, lo, hi), B::load_unaligned(sr + first), B(kNegInf));
        }
        if (whole_hi < hi) {
          vmax = xsimd::max(vmax, xsimd::select(span_mask(whole_hi, lo, hi), B::load_unaligned(sr + whole_hi),
                                                B(kNegInf)));
        }
        B m1(kNegInf), m2(kNegInf), m3(kNegInf);
        int j = whole_lo;
        for (; j + 4 * W <= whole_hi; j += 4 * W) {
          vmax = xsimd::max(vmax, B::load_unaligned(sr + j));
          m1 = xsimd::max(m1, B::load_unaligned(sr + j + W));
          m2 = xsimd::max(m2, B::load_unaligned(sr + j + 2 * W));
          m3 = xsimd::max(m3, B::load_unaligned(sr + j + 3 * W));
        }
        for (; j < whole_hi; j += W) vmax = xsimd::max(vmax, B::load_unaligned(sr + j));
        vmax = xsimd::max(xsimd::max(vmax, m1), xsimd::max(m2, m3));
      }
      const float old_max = row_max[r];
      const float tile_max = hmax(vmax) * scale;
      const float new_max = tile_max > old_max ? tile_max : old_max;
      const B mx(new_max);
      const B sc(scale);
      B sum(0.0f);
      for (int j = ja; j < jb; j += W) {
        if (j + W <= lo || j >= hi) {
          emit(r, j, B(0.0f));
          continue;
        }
        B p = exp2fn(xsimd::fms(B::load_unaligned(sr + j), sc, mx));
        if (!(j >= lo && j + W <= hi)) p = xsimd::select(span_mask(j, lo, hi), p, B(0.0f));
        sum += emit(r, j, p);
      }
      const float c = std::exp2(old_max - new_max);  // 0 on the first tile (old_max = -inf)
      corr[r] = c;
      row_sum[r] = row_sum[r] * c + xsimd::hadd(sum);
      row_max[r] = new_max;
    }
  }

  // s[r][j] *= scale over the vectors that hold each row's span [lo[r], hi[r]) (rows with an
  // empty span untouched): the bf16 paths' deferred scale, applied before the score variants.
  static void scale_rows(float* s, int64_t lds, int R, const int* lo, const int* hi, float scale) {
    const B sc(scale);
    for (int r = 0; r < R; ++r) {
      if (lo[r] >= hi[r]) continue;
      float* sr = s + static_cast<int64_t>(r) * lds;
      for (int j = lo[r] / W * W; j < hi[r]; j += W) (B::load_unaligned(sr + j) * sc).store_unaligned(sr + j);
    }
  }
};

}  // namespace sampleattn::flash
