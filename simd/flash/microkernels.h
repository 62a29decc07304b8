// The two GEMM microkernels of attend and scores, in the OpenBLAS style (broadcast A, load a
// panel of B): S = Q K^T for R rows against one K panel, and acc = acc * c + P V for R rows.
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols: no inline function is shared between units
// compiled with different -m flags. Include only from a per-ISA translation unit (flash_<isa>.cpp),
// at namespace scope, after <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "simd/flash/vec.h"

namespace sampleattn::flash {

template <class Arch>
struct Microkernels : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using V::W;
  using V::P;
  using V::store_n;

  // s[r][0, P) = q_r . panel, for R rows; q rows at q + r * d; stores `cols` (<= P) columns.
  template <int R>
  static void qk_block(const float* q, int d, const float* kp, float* s, int64_t lds, int cols) {
    B acc[R][2];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = B(0.0f);
    for (int c = 0; c < d; ++c) {
      const B k0 = B::load_unaligned(kp + c * P);
      const B k1 = B::load_unaligned(kp + c * P + W);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const B a(q[r * d + c]);
        acc[r][0] = xsimd::fma(a, k0, acc[r][0]);
        acc[r][1] = xsimd::fma(a, k1, acc[r][1]);
      }
    }
    if (cols == P) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc[r][0].store_unaligned(s + r * lds);
        acc[r][1].store_unaligned(s + r * lds + W);
      }
    } else {
      // Unrolled as the full stores are: a rolled loop indexes acc, which puts it on the stack
      // (zeroed there on every call, 2R vector stores queued behind the scores' line fills).
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        store_n(s + r * lds, acc[r][0], cols);
        store_n(s + r * lds + W, acc[r][1], cols - W);
      }
    }
  }

  // acc rows (leading dimension ldacc, the value head size) = acc * corr[r] + p_r . V over
  // jcount keys, for the NC (1 or 2) vectors of columns at vp (rows of `width` floats). Rows with
  // active[r] false are left as they are.
  template <int R, int NC>
  static void pv_block(const float* p, int64_t lds, int jcount, const float* vp, int width,
                       float* acc, int ldacc, const float* corr, const bool* active) {
    B o[R][NC];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int k = 0; k < NC; ++k) o[r][k] = B(0.0f);
    for (int j = 0; j < jcount; ++j) {
      B v[NC];
#pragma GCC unroll 2
      for (int k = 0; k < NC; ++k) v[k] = B::load_unaligned(vp + static_cast<int64_t>(j) * width + k * W);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const B a(p[r * lds + j]);
#pragma GCC unroll 2
        for (int k = 0; k < NC; ++k) o[r][k] = xsimd::fma(a, v[k], o[r][k]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (!active[r]) continue;
      float* out = acc + static_cast<int64_t>(r) * ldacc;
      const B c(corr[r]);
#pragma GCC unroll 2
      for (int k = 0; k < NC; ++k) xsimd::fma(B::load_unaligned(out + k * W), c, o[r][k]).store_unaligned(out + k * W);
    }
  }
};

}  // namespace sampleattn::flash
