// attend and scores of the f32 path: the m rows of a tile are cut into register blocks of
// R <= kMaxRows rows; each block computes S = Q_R K^T over d (R x 2 vectors of accumulators, K
// panel rows loaded, Q broadcast), applies the score variants if any, the online softmax of its
// R rows in L1 scratch, then acc_R = acc_R * c + P V over dv columns (R x 2 vectors of
// accumulators, P broadcast).
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols: no inline function is shared between units
// compiled with different -m flags. Include only from a per-ISA translation unit (flash_<isa>.cpp),
// at namespace scope, after <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "simd/flash/microkernels.h"
#include "simd/flash/score_mods.h"
#include "simd/flash/softmax.h"
#include "simd/flash/vec.h"
#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct Attend : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using typename V::BlockSpans;
  using V::W;
  using V::P;
  using V::kMaxRows;
  using V::imin;
  using V::imax;
  using V::round_up;
  using V::block_spans;
  using V::with_rows;
  using V::for_row_blocks;
  using Mk = Microkernels<Arch>;
  using Sm = Softmax<Arch>;
  using Mods = ScoreMods<Arch>;

  static size_t scratch_bytes(int m, int n) {
    const size_t rows = static_cast<size_t>(imin(imax(m, 1), kMaxRows));
    return round_up(rows * round_up(static_cast<size_t>(n), P) * sizeof(float), 64);
  }

  template <int R>
  static void attend_block(const AttendTileArgs& a, int r0, float* s, int64_t lds) {
    const BlockSpans b = block_spans(a.lo, a.hi, r0, R, a.n);
    if (b.jlo >= b.jhi) return;
    const int d = a.d;
    const float* q = static_cast<const float*>(a.q) + static_cast<int64_t>(r0) * d;
    const float* k = static_cast<const float*>(a.k);
    const int pa = b.jlo / P * P;
    for (int p0 = pa; p0 < b.jhi; p0 += P) Mk::template qk_block<R>(q, d, k + static_cast<int64_t>(p0) * d, s + p0, lds, P);
    // Each row's span only: the columns outside it are masked by the softmax (and key_pos has
    // only n entries).
    if (Mods::any(a.mod)) Mods::modify_rows(s, lds, a.mod, r0, R, b.lo, b.hi, a.n);

    float corr[kMaxRows];
    const int ja = b.jlo / W * W;
    const int jb = static_cast<int>(round_up(static_cast<size_t>(b.jhi), W));
    float* sw = s;
    Sm::softmax_rows(s, lds, R, b, ja, jb, a.row_max + r0, a.row_sum + r0, corr, [&](int r, int j, B p) {
      p.store_unaligned(sw + r * lds + j);
      return p;
    });

    const int64_t n_pad = static_cast<int64_t>(round_up(static_cast<size_t>(a.n), P));
    const float* v = static_cast<const float*>(a.v);
    const int dv = a.dv;
    float* acc = a.acc + static_cast<int64_t>(r0) * dv;
    const int jcount = b.jhi - b.jlo;
    for (int x0 = 0; x0 < dv; x0 += P) {
      const int width = imin(P, dv - x0);
      const float* vp = v + x0 * n_pad + static_cast<int64_t>(b.jlo) * width;
      if (width == P) {
        Mk::template pv_block<R, 2>(s + b.jlo, lds, jcount, vp, width, acc + x0, dv, corr, b.active);
      } else {
        Mk::template pv_block<R, 1>(s + b.jlo, lds, jcount, vp, width, acc + x0, dv, corr, b.active);
      }
    }
  }

  static void attend(const AttendTileArgs& a) {
    if (a.m <= 0 || a.n <= 0) return;
    float* s = static_cast<float*>(a.scratch);
    const int64_t lds = static_cast<int64_t>(round_up(static_cast<size_t>(a.n), P));
    for_row_blocks(a.m, [&](int r0, int rows) {
      with_rows(rows, [&](auto R) { attend_block<decltype(R)::value>(a, r0, s, lds); });
    });
  }

  static void scores(const void* qv, int m, const void* kv, int n, int d, float* s, int64_t lds) {
    const float* q = static_cast<const float*>(qv);
    const float* k = static_cast<const float*>(kv);
    for_row_blocks(m, [&](int r0, int rows) {
      with_rows(rows, [&](auto R) {
        for (int p0 = 0; p0 < n; p0 += P) {
          Mk::template qk_block<decltype(R)::value>(q + static_cast<int64_t>(r0) * d, d, k + static_cast<int64_t>(p0) * d,
                                       s + r0 * lds + p0, lds, imin(P, n - p0));
        }
      });
    });
  }
};

}  // namespace sampleattn::flash
