// The decode kernel (attend_rows, simd/kernels.h): a few query rows against keys and values read
// straight from their source rows (any K/V dtype, dequantized on the fly), with no packing. For a
// short query chunk (a decode step) each key is used by a handful of rows, so the f32 path's panel
// packing of K and V would cost more than the products; here every K and V row is read once per
// block of rows, converted in registers and used at once.
//
// Order: every kv head of a group of keys before the next group. A cache keeps a token's kv
// heads side by side ([token, kv head, dim]), so the score pass walks the cache in memory order.
// Reading ahead: while it scores a head's keys, it requests into L2 the K and V lines of that
// head's keys kAhead further on (the caller's n_ahead rows past the block included), a few
// prefetches between each step of products, so the requests go out at the rate lines are used
// and the value pass finds its rows in the cache too. Measured on the Zen 4 machine of
// docs/PERF.md: the same prefetches issued in bursts (a block's worth at a time) changed nothing,
// because a core keeps only a few dozen misses in flight and a prefetch that finds them all
// taken waits or is dropped; spread out they took a 1-thread decode step from 21-28 to 12-13 ms.
//
// Scores: R query rows x J keys of one head at a time (R * J = 16 accumulator vectors on
// AVX-512: 4 x 4 for a GQA group of 4), the key rows converted once and dotted with the R rows;
// the 16 dot products are then reduced together (a tree of shuffles and adds, four levels, 45
// instructions for 16 sums instead of 16 horizontal sums). Softmax: the online step of
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
  static constexpr int kKeyGroup = 16;            // keys per step of the score pass (all heads)
  static constexpr int kPvRows = W == 16 ? 4 : 2;  // accumulator rows per value block
  static constexpr int kPvVecs = 4;               // accumulator vectors per row of a value block
  // Keys between the ones scored and the ones whose lines are requested (K and V); the driver
  // passes the offsets of the next block's rows as n_ahead. 16 to 64 measured the same (1 thread:
  // 12.0-12.9 ms).
  static constexpr int kAhead = 32;

  static size_t scratch_bytes(int m, int n) {
    return round_up(static_cast<size_t>(m) * round_up(static_cast<size_t>(n), W) * sizeof(float), 64);
  }

  // Tracks what the values read so far say: for fp8, whether one held a NaN code (they load as
  // +-1.875, past the largest finite 1.75); for f32 and bf16, their largest magnitude (the input
  // policy's bounds, AttendRowsArgs::k_max_abs). f16 and int8 need no look at the values (their
  // dtypes bound them; int8 is always finite), and a non-finite f32/f16/bf16 key makes its scores
  // non-finite, a non-finite value the accumulators it is added to (times 0 included), which run()
  // checks instead, once per block.
  template <DType T>
  struct Check {
    B acc = B(0.0f);
    void see(B x) {
      if constexpr (T == DType::kFP8 || T == DType::kF32 || T == DType::kBF16) acc = xsimd::max(acc, xsimd::abs(x));
    }
    bool ok() const {
      if constexpr (T == DType::kFP8) return V::hmax(acc) <= 1.75f;
      return true;
    }
    void raise(float* max_abs) const {
      if constexpr (T == DType::kF32 || T == DType::kBF16) {
        if (max_abs != nullptr) {
          const float m = V::hmax(acc);
          if (!(m <= *max_abs)) *max_abs = m;
        }
      }
    }
  };
  static constexpr bool reads_bits(DType t) { return t == DType::kFP8; }  // checked by Check, not by results
  static constexpr bool sees(DType t) { return t == DType::kFP8 || t == DType::kF32 || t == DType::kBF16; }

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

  // The rows of one head kAhead keys past the ones being scored, requested a few lines at a time
  // between the products (score_keys), so that the requests go out at the rate the lines are used.
  struct Ahead {
    const char* k = nullptr;  // head h's K row of key 0 + kAhead (row_base(j) moves it)
    const char* v = nullptr;
    const RowSource* ks = nullptr;
    const RowSource* vs = nullptr;
    int limit = 0;            // keys with rows: n + n_ahead
    int k_lines = 0, lines = 0;
    int esize_k = 0, esize_v = 0;
    int64_t k_head = 0, v_head = 0;  // bytes
    // Line l (< lines) of key j's rows: K's lines, then V's.
    const char* line(int j, int l) const {
      if (l < k_lines) return k + row_base(*ks, j) * esize_k + k_head + l * 64;
      return v + row_base(*vs, j) * esize_v + v_head + (l - k_lines) * 64;
    }
  };
  static Ahead ahead_of(const AttendRowsArgs& a, int h) {
    Ahead r;
    if (a.k.offsets == nullptr || a.v.offsets == nullptr) return r;
    r.esize_k = dtype_size(a.k.dtype);
    r.esize_v = dtype_size(a.v.dtype);
    r.k = static_cast<const char*>(a.k.base);
    r.v = static_cast<const char*>(a.v.base);
    r.ks = &a.k;
    r.vs = &a.v;
    r.limit = a.n + a.n_ahead;
    r.k_lines = (a.d * r.esize_k + 63) / 64;
    r.lines = r.k_lines + (a.dv * r.esize_v + 63) / 64;
    r.k_head = h * a.k_head_step * r.esize_k;
    r.v_head = h * a.v_head_step * r.esize_v;
    return r;
  }

  // Sums of 16 vectors: lane L of the result = sum of the lanes of in[L] (AVX-512 only).
  static B reduce16(const B* in) {
    // Lane (4 * quarter + position) of the tree's result sums v[q0[quarter] + q1[position]].
    constexpr int q0[4] = {0, 8, 4, 12};
    constexpr int q1[4] = {0, 2, 1, 3};
    __m512 v[16];
    for (int L = 0; L < 16; ++L) v[q0[L / 4] + q1[L % 4]] = in[L];
    __m512 w[8];
    for (int i = 0; i < 8; ++i) {
      w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44), _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
    }
    __m512 x[4];
    for (int i = 0; i < 4; ++i) {
      x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[i], w[i + 4], 0x88), _mm512_shuffle_f32x4(w[i], w[i + 4], 0xDD));
    }
    __m512 y[2];
    for (int i = 0; i < 2; ++i) {
      y[i] = _mm512_add_ps(_mm512_unpacklo_ps(x[i], x[i + 2]), _mm512_unpackhi_ps(x[i], x[i + 2]));
    }
    const __m512d y0 = _mm512_castps_pd(y[0]), y1 = _mm512_castps_pd(y[1]);
    return B(_mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(y0, y1)), _mm512_castpd_ps(_mm512_unpackhi_pd(y0, y1))));
  }

  // s[i][j + u] = q_(r0 + i) . k_(j + u) for R rows and J keys: R x J independent chains, reduced
  // together when they make 16 vectors (AVX-512), else one horizontal sum each.
  template <DType T, int R, int J>
  static void score_keys(const float* q, int r0, const RowSource& k, int j, int d, float* s, int64_t lds,
                         Check<T>* check, const Ahead& ahead) {
    // The lines of keys j + kAhead .. j + kAhead + J - 1 to request, spread over the d / W steps.
    const int fj = j + kAhead;
    const int fkeys = ahead.k == nullptr ? 0 : imin(J, ahead.limit - fj);
    const int steps = d / W;
    const int per_step = (ahead.lines + steps - 1) / steps;
    int64_t base[J];
    B factor[J];
    B acc[R * J];
    for (int u = 0; u < J; ++u) {
      base[u] = row_base(k, j + u);
      factor[u] = B(PackT::template row_factor<T>(k, j + u));
    }
    for (int i = 0; i < R * J; ++i) acc[i] = B(0.0f);
    for (int c = 0, step = 0; c < d; c += W, ++step) {
      for (int u = 0; u < fkeys; ++u) {
        for (int l = step * per_step; l < imin((step + 1) * per_step, ahead.lines); ++l) {
          _mm_prefetch(ahead.line(fj + u, l), _MM_HINT_T1);
        }
      }
      B qi[R];
      for (int i = 0; i < R; ++i) qi[i] = B::load_unaligned(q + static_cast<int64_t>(r0 + i) * d + c);
      for (int u = 0; u < J; ++u) {
        const B raw = PackT::template load_src<T>(k.base, base[u] + c);
        if constexpr (sees(T)) {
          if (check != nullptr) check->see(raw);
        }
        const B x = raw * factor[u];
        for (int i = 0; i < R; ++i) acc[i * J + u] = xsimd::fma(qi[i], x, acc[i * J + u]);
      }
    }
    if constexpr (W == 16 && R * J == 16) {
      const __m512 sums = reduce16(acc);
      for (int i = 0; i < R; ++i) {
        // Lanes [i * J, i * J + J) to s row i, columns [j, j + J).
        const __mmask16 lanes = static_cast<__mmask16>(((1u << J) - 1) << (i * J));
        _mm512_mask_storeu_ps(s + static_cast<int64_t>(i) * lds + j - i * J, lanes, sums);
      }
    } else {
      for (int i = 0; i < R; ++i) {
        for (int u = 0; u < J; ++u) s[static_cast<int64_t>(i) * lds + j + u] = xsimd::hadd(acc[i * J + u]);
      }
    }
  }

  // Keys [j0, j0 + nj) of one head, R rows: J keys at a time (16 / R on AVX-512, so that the 16
  // products are reduced together, 4 for R = 3; 2 elsewhere), the rest one by one.
  template <DType T, int R>
  static void score_group(const float* q, int r0, const RowSource& k, int j0, int nj, int d, float* s, int64_t lds,
                          Check<T>* check, const Ahead& ahead) {
    constexpr int J = W == 16 ? (R == 3 ? 4 : 16 / R) : 2;
    int j = j0;
    for (; j + J <= j0 + nj; j += J) score_keys<T, R, J>(q, r0, k, j, d, s, lds, check, ahead);
    for (; j < j0 + nj; ++j) score_keys<T, R, 1>(q, r0, k, j, d, s, lds, check, ahead);
  }

  // acc rows r0.. (R of them), columns [x0, x0 + C * W) += p rows . V rows.
  template <DType T, int R, int C>
  static void value_block(const float* p, int64_t lds, int r0, const RowSource& v, int n, int dv, int x0, float* acc,
                          Check<T>* check) {
    B a[R][C];
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < C; ++c) a[i][c] = B::load_unaligned(acc + static_cast<int64_t>(r0 + i) * dv + x0 + c * W);
    }
    for (int j = 0; j < n; ++j) {
      const int64_t base = row_base(v, j) + x0;
      const B factor(PackT::template row_factor<T>(v, j));
      B x[C];
      for (int c = 0; c < C; ++c) {
        const B raw = PackT::template load_src<T>(v.base, base + c * W);
        if constexpr (sees(T)) {
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
    const int m = a.m, n = a.n, d = a.d, dv = a.dv, heads = a.heads, rows = heads * m;
    const int64_t lds = static_cast<int64_t>(round_up(static_cast<size_t>(n), W));
    float* s = a.scratch;
    Check<TK> kcheck;
    Check<TV> vcheck;
    // Scores: every head of kKeyGroup keys, then the next keys; the first row block of each head
    // checks its keys' values.
    for (int j0 = 0; j0 < n; j0 += kKeyGroup) {
      const int nj = imin(kKeyGroup, n - j0);
      for (int h = 0; h < heads; ++h) {
        const RowSource k = head_rows(a.k, h, a.k_head_step, a.scale_head_step);
        const Ahead ahead = ahead_of(a, h);
        for (int r0 = 0; r0 < m; r0 += kRows) {
          const Ahead& fetch = r0 == 0 ? ahead : Ahead{};  // once per head
          const int row = h * m + r0;
          float* sr = s + static_cast<int64_t>(row) * lds;
          Check<TK>* check = r0 == 0 ? &kcheck : nullptr;
          switch (imin(kRows, m - r0)) {
            case 1: score_group<TK, 1>(a.q, row, k, j0, nj, d, sr, lds, check, fetch); break;
            case 2: score_group<TK, 2>(a.q, row, k, j0, nj, d, sr, lds, check, fetch); break;
            case 3: score_group<TK, 3>(a.q, row, k, j0, nj, d, sr, lds, check, fetch); break;
            default: score_group<TK, kRows>(a.q, row, k, j0, nj, d, sr, lds, check, fetch); break;
          }
        }
      }
    }
    // Non-finite keys show in their scores (before a softcap could make them finite again).
    bool finite = reads_bits(TK) || TK == DType::kI8 || all_finite(s, lds, rows, n);
    if (ScoreMods<Arch>::any(a.mod)) {
      ScoreMods<Arch>::modify_rows(s, lds, a.mod, 0, rows, a.lo, a.hi, n);
    }
    // The online softmax in register blocks of rows: probabilities replace the scores (0 outside
    // each row's span), and each row's accumulator is rescaled to its new max.
    for (int r0 = 0; r0 < rows; r0 += kMaxRows) {
      const int R = imin(kMaxRows, rows - r0);
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
    // Values, head by head, kPvRows rows at a time (the rows are in L2 by now); the first block of
    // each head checks its values.
    for (int h = 0; h < heads; ++h) {
      const RowSource v = head_rows(a.v, h, a.v_head_step, a.scale_head_step);
      for (int r0 = 0; r0 < m; r0 += kPvRows) {
        const int row = h * m + r0;
        Check<TV>* check = r0 == 0 ? &vcheck : nullptr;
        switch (imin(kPvRows, m - r0)) {
          case 1: value_rows<TV, 1>(s, lds, row, v, n, dv, a.acc, check); break;
          case 2: value_rows<TV, 2>(s, lds, row, v, n, dv, a.acc, check); break;
          case 3: value_rows<TV, 3 < kPvRows ? 3 : kPvRows>(s, lds, row, v, n, dv, a.acc, check); break;
          default: value_rows<TV, kPvRows>(s, lds, row, v, n, dv, a.acc, check); break;
        }
      }
    }
    // Non-finite values show in the accumulators they were added to (every row, p = 0 included).
    if (!reads_bits(TV) && TV != DType::kI8) finite = finite && all_finite(a.acc, dv, rows, dv);
    kcheck.raise(a.k_max_abs);
    vcheck.raise(a.v_max_abs);
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
