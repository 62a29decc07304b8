// The decode kernel (attend_rows, simd/kernels.h): a few query rows against keys and values read
// straight from their source rows (any K/V dtype, dequantized on the fly), with no packing. For a
// short query chunk (a decode step) each key is used by a handful of rows, so the f32 path's panel
// packing of K and V would cost more than the products; here every K and V row is read once per
// block of rows, converted in registers and used at once.
//
// Scores: each key row, converted and scaled, is dotted with up to kRows query rows at a time
// (vector accumulators over d, then a horizontal sum). Softmax: the online step of
// simd/flash/softmax.h on the block's scores. Values: each value row, converted, is added into
// register blocks of kPvRows x kPvVecs accumulator vectors.
//
// Every value read is also checked: f32/f16/bf16 NaN or Inf, and fp8 e4m3's NaN codes (read as
// +-1.875 by Pack::load_src before the 2^8 unbias; the largest finite code reads 1.75), so the
// driver can skip the separate scan of such K/V (docs/SECURITY.md).
//
// Every function is a static member of a class template over the xsimd architecture (see
// simd/flash/vec.h). Include only from a per-ISA translation unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "simd/flash/pack.h"
#include "simd/flash/score_mods.h"
#include "simd/flash/softmax.h"
#include "simd/flash/vec.h"
#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct Decode : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using typename V::BlockSpans;
  using V::W;
  using V::kMaxRows;
  using V::imin;
  using V::round_up;
  using V::with_dtype;
  using PackT = Pack<Arch>;

  static constexpr int kRows = 4;                 // query rows per score block
  static constexpr int kPvRows = W == 16 ? 4 : 2;  // accumulator rows per value block
  static constexpr int kPvVecs = 4;               // accumulator vectors per row of a value block
  // Rows requested ahead of use by the first pass over a tile's keys or values: cache rows are
  // kilobytes apart ([token, kv head, dim]), where the hardware prefetcher does not follow, and a
  // decode step is a stream of such rows.
  static constexpr int kAhead = 16;

  static size_t scratch_bytes(int m, int n) {
    return round_up(static_cast<size_t>(m) * round_up(static_cast<size_t>(n), W) * sizeof(float), 64);
  }

  // Tracks whether the fp8 values read so far held a NaN code (they load as +-1.875, past the
  // largest finite 1.75). Other dtypes need no look at the values: int8 is always finite, and a
  // non-finite f32/f16/bf16 key makes its scores non-finite, a non-finite value the accumulators
  // it is added to (times 0 included), which run() checks instead, once per block.
  template <DType T>
  struct Check {
    B acc = B(0.0f);
    void see(B x) {
      if constexpr (T == DType::kFP8) acc = xsimd::max(acc, xsimd::abs(x));
    }
    bool ok() const {
      if constexpr (T == DType::kFP8) return V::hmax(acc) <= 1.75f;
      return true;
    }
  };
  static constexpr bool reads_bits(DType t) { return t == DType::kFP8; }

  // Whether rows [0, m) x columns [0, n) of s (leading dimension lds) are all finite: x * 0 is 0
  // for finite x and NaN otherwise, and NaN sticks under addition.
  static bool all_finite(const float* s, int64_t lds, int m, int n) {
    B acc(0.0f);
    for (int r = 0; r < m; ++r) {
      const float* sr = s + static_cast<int64_t>(r) * lds;
      int j = 0;
      for (; j + W <= n; j += W) acc = xsimd::fma(B::load_unaligned(sr + j), B(0.0f), acc);
      for (; j < n; ++j) {
        if (!(sr[j] * 0.0f == 0.0f)) return false;
      }
    }
    return !xsimd::any(xsimd::isnan(acc));
  }

  static int64_t row_base(const RowSource& src, int j) { return src.offsets ? src.offsets[j] : j * src.row_stride; }

  // Requests row j of src into L2, not L1: cache rows are a power of two apart (2 KiB for 8 kv
  // heads of 128 f16), so rows kAhead ahead fall in a few L1 sets and would evict each other
  // before use.
  static void prefetch(const RowSource& src, int j, int d) {
    const int esize = src.dtype == DType::kF32 ? 4 : (src.dtype == DType::kI8 || src.dtype == DType::kFP8) ? 1 : 2;
    const char* p = static_cast<const char*>(src.base) + row_base(src, j) * esize;
    for (int b = 0; b < d * esize; b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
  }

  // s[i][j + u] = q_(r0 + i) . k_(j + u) for R rows and J keys: R x J independent chains.
  template <DType T, int R, int J>
  static void score_keys(const float* q, int r0, const RowSource& k, int j, int d, float* s, int64_t lds,
                         Check<T>* check) {
    int64_t base[J];
    B factor[J];
    B acc[R][J];
    for (int u = 0; u < J; ++u) {
      base[u] = row_base(k, j + u);
      factor[u] = B(PackT::template row_factor<T>(k, j + u));
      for (int i = 0; i < R; ++i) acc[i][u] = B(0.0f);
    }
    for (int c = 0; c < d; c += W) {
      B x[J];
      for (int u = 0; u < J; ++u) {
        const B raw = PackT::template load_src<T>(k.base, base[u] + c);
        if constexpr (reads_bits(T)) {
          if (check != nullptr) check->see(raw);
        }
        x[u] = raw * factor[u];
      }
      for (int i = 0; i < R; ++i) {
        const B qi = B::load_unaligned(q + static_cast<int64_t>(r0 + i) * d + c);
        for (int u = 0; u < J; ++u) acc[i][u] = xsimd::fma(qi, x[u], acc[i][u]);
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int u = 0; u < J; ++u) s[static_cast<int64_t>(i) * lds + j + u] = xsimd::hadd(acc[i][u]);
    }
  }

  // s[i][j] = q_(r0 + i) . k_j for R rows and the n keys, two keys at a time.
  template <DType T, int R>
  static void score_block(const float* q, int r0, const RowSource& k, int n, int d, float* s, int64_t lds,
                          Check<T>* check) {
    if (check != nullptr) {
      for (int j = 0; j < imin(n, kAhead); ++j) prefetch(k, j, d);
    }
    int j = 0;
    for (; j + 2 <= n; j += 2) {
      if (check != nullptr && j + kAhead + 1 < n) {
        prefetch(k, j + kAhead, d);
        prefetch(k, j + kAhead + 1, d);
      } else if (check != nullptr && j + kAhead < n) {
        prefetch(k, j + kAhead, d);
      }
      score_keys<T, R, 2>(q, r0, k, j, d, s, lds, check);
    }
    if (j < n) score_keys<T, R, 1>(q, r0, k, j, d, s, lds, check);
  }

  // acc rows r0.. (R of them), columns [x0, x0 + C * W) += p rows . V rows.
  template <DType T, int R, int C>
  static void value_block(const float* p, int64_t lds, int r0, const RowSource& v, int n, int dv, int x0, float* acc,
                          Check<T>* check) {
    B a[R][C];
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < C; ++c) a[i][c] = B::load_unaligned(acc + static_cast<int64_t>(r0 + i) * dv + x0 + c * W);
    }
    const bool first = check != nullptr && x0 == 0;  // the first pass over these value rows
    if (first) {
      for (int j = 0; j < imin(n, kAhead); ++j) prefetch(v, j, dv);
    }
    for (int j = 0; j < n; ++j) {
      if (first && j + kAhead < n) prefetch(v, j + kAhead, dv);
      const int64_t base = row_base(v, j) + x0;
      const B factor(PackT::template row_factor<T>(v, j));
      B x[C];
      for (int c = 0; c < C; ++c) {
        const B raw = PackT::template load_src<T>(v.base, base + c * W);
        if constexpr (reads_bits(T)) {
          if (check != nullptr) check->see(raw);
        }
        x[c] = raw * factor;
      }
      for (int i = 0; i < R; ++i) {
        const B pj(p[static_cast<int64_t>(r0 + i) * lds + j]);
        for (int c = 0; c < C; ++c) a[i][c] = xsimd::fma(pj, x[c], a[i][c]);
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < C; ++c) a[i][c].store_unaligned(acc + static_cast<int64_t>(r0 + i) * dv + x0 + c * W);
    }
  }

  template <DType T, int R>
  static void value_rows(const float* p, int64_t lds, int r0, const RowSource& v, int n, int dv, float* acc,
                         Check<T>* check) {
    for (int x0 = 0; x0 < dv; x0 += kPvVecs * W) {
      switch (imin(kPvVecs, (dv - x0) / W)) {
        case 1: value_block<T, R, 1>(p, lds, r0, v, n, dv, x0, acc, check); break;
        case 2: value_block<T, R, 2>(p, lds, r0, v, n, dv, x0, acc, check); break;
        case 3: value_block<T, R, 3>(p, lds, r0, v, n, dv, x0, acc, check); break;
        default: value_block<T, R, kPvVecs>(p, lds, r0, v, n, dv, x0, acc, check); break;
      }
    }
  }

  template <DType TK, DType TV>
  static bool run(const AttendRowsArgs& a) {
    const int m = a.m, n = a.n, d = a.d, dv = a.dv;
    const int64_t lds = static_cast<int64_t>(round_up(static_cast<size_t>(n), W));
    float* s = a.scratch;
    Check<TK> kcheck;
    Check<TV> vcheck;
    // Scores, kRows rows at a time; the first block checks the key values.
    for (int r0 = 0; r0 < m; r0 += kRows) {
      float* sr = s + static_cast<int64_t>(r0) * lds;
      Check<TK>* check = r0 == 0 ? &kcheck : nullptr;
      switch (imin(kRows, m - r0)) {
        case 1: score_block<TK, 1>(a.q, r0, a.k, n, d, sr, lds, check); break;
        case 2: score_block<TK, 2>(a.q, r0, a.k, n, d, sr, lds, check); break;
        case 3: score_block<TK, 3>(a.q, r0, a.k, n, d, sr, lds, check); break;
        default: score_block<TK, kRows>(a.q, r0, a.k, n, d, sr, lds, check); break;
      }
    }
    // Non-finite keys show in their scores (before a softcap could make them finite again).
    bool finite = reads_bits(TK) || TK == DType::kI8 || all_finite(s, lds, m, n);
    if (ScoreMods<Arch>::any(a.mod)) {
      ScoreMods<Arch>::modify_rows(s, lds, a.mod, 0, m, a.lo, a.hi, n);
    }
    // The online softmax in register blocks of rows: probabilities replace the scores (0 outside
    // each row's span), and each row's accumulator is rescaled to its new max.
    for (int r0 = 0; r0 < m; r0 += kMaxRows) {
      const int R = imin(kMaxRows, m - r0);
      const BlockSpans b = V::block_spans(a.lo, a.hi, r0, R, n);
      const int ja = 0, jb = static_cast<int>(lds);
      float corr[kMaxRows];
      float* sb = s + static_cast<int64_t>(r0) * lds;
      Softmax<Arch>::softmax_rows(sb, lds, R, b, ja, jb, a.row_max + r0, a.row_sum + r0, corr,
                                  [&](int r, int j, B p) {
                                    p.store_unaligned(sb + static_cast<int64_t>(r) * lds + j);
                                    return p;
                                  });
      for (int r = 0; r < R; ++r) {
        if (corr[r] == 1.0f) continue;
        float* acc = a.acc + static_cast<int64_t>(r0 + r) * dv;
        const B c(corr[r]);
        for (int x = 0; x < dv; x += W) (B::load_unaligned(acc + x) * c).store_unaligned(acc + x);
      }
    }
    // Values, kPvRows rows at a time; the first block checks the values.
    for (int r0 = 0; r0 < m; r0 += kPvRows) {
      Check<TV>* check = r0 == 0 ? &vcheck : nullptr;
      switch (imin(kPvRows, m - r0)) {
        case 1: value_rows<TV, 1>(s, lds, r0, a.v, n, dv, a.acc, check); break;
        case 2: value_rows<TV, 2>(s, lds, r0, a.v, n, dv, a.acc, check); break;
        case 3: value_rows<TV, 3 < kPvRows ? 3 : kPvRows>(s, lds, r0, a.v, n, dv, a.acc, check); break;
        default: value_rows<TV, kPvRows>(s, lds, r0, a.v, n, dv, a.acc, check); break;
      }
    }
    // Non-finite values show in the accumulators they were added to (every row, p = 0 included).
    if (!reads_bits(TV) && TV != DType::kI8) finite = finite && all_finite(a.acc, dv, m, dv);
    return finite && kcheck.ok() && vcheck.ok();
  }

  static bool attend_rows(const AttendRowsArgs& a) {
    bool finite = true;
    with_dtype(a.k.dtype, [&](auto tk) {
      with_dtype(a.v.dtype, [&](auto tv) { finite = run<decltype(tk)::value, decltype(tv)::value>(a); });
    });
    return finite;
  }
};

}  // namespace sampleattn::flash
