// The flash kernels, written once over the xsimd architecture and instantiated per ISA in
// flash_<isa>.cpp (see simd/kernels.h for the contract and docs/KERNELS.md for the design).
//
// Every function here is a member of a class template over Arch, so each ISA's translation unit
// gets its own symbols: no inline function is shared between TUs compiled with different -m flags.
// Include this header only from a per-ISA TU, inside nothing (it opens its own namespace), after
// <immintrin.h> and <xsimd/xsimd.hpp>.
//
// f32 path layouts (W = floats per vector, P = 2W keys per panel):
//   Q: [m][d] f32, multiplied by scale.
//   K: [ceil(n/P)][d][P] f32 panels; keys past n are zero.
//   V: column blocks of width P (the last one W when d % P != 0): block at x0 holds [n][width].
// attend works on row blocks of R <= kMaxRows query rows: S = Q_R K^T (R x 2 vectors of
// accumulators, K panel rows loaded, Q broadcast), the online softmax of those R rows in L1
// scratch, then acc_R = acc_R * c + P V (R x 2 vectors of accumulators, P broadcast).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct FlashKernels {
  using B = xsimd::batch<float, Arch>;
  using BB = xsimd::batch_bool<float, Arch>;
  using I = xsimd::batch<int32_t, Arch>;
  static constexpr int W = static_cast<int>(B::size);
  static constexpr int P = 2 * W;
  // Rows of a register block: R x 2 accumulators plus 2 panel vectors and a broadcast fit the
  // register file (32 zmm on AVX-512, 16 ymm on AVX2).
  static constexpr int kMaxRows = W == 16 ? 14 : 6;
  // Rows a pack requests ahead of the one it converts.
  static constexpr int kPrefetchRows = 8;
  static constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  // ---- small helpers (members, so they are per-ISA symbols) ----

  static int imin(int a, int b) { return a < b ? a : b; }
  static int imax(int a, int b) { return a > b ? a : b; }
  static size_t round_up(size_t x, size_t k) { return (x + k - 1) / k * k; }
  static int span_lo(const int32_t* lo, int r) { return lo ? imax(lo[r], 0) : 0; }
  static int span_hi(const int32_t* hi, int r, int n) { return hi ? imin(hi[r], n) : n; }

  // Loads `count` (< W allowed) floats; lanes past count hold `fill`. Never reads past count.
  static B load_n(const float* p, int count, float fill) {
    if (count >= W) return B::load_unaligned(p);
    alignas(64) float tmp[W];
    for (int i = 0; i < W; ++i) tmp[i] = i < count ? p[i] : fill;
    return B::load_aligned(tmp);
  }
  static void store_n(float* p, B v, int count) {
    if (count >= W) {
      v.store_unaligned(p);
      return;
    }
    alignas(64) float tmp[W];
    v.store_aligned(tmp);
    for (int i = 0; i < count; ++i) p[i] = tmp[i];
  }
  static float hmax(B v) {
    alignas(64) float tmp[W];
    v.store_aligned(tmp);
    float m = tmp[0];
    for (int i = 1; i < W; ++i) m = tmp[i] > m ? tmp[i] : m;
    return m;
  }
  static B iota() {
    alignas(64) float tmp[W];
    for (int i = 0; i < W; ++i) tmp[i] = static_cast<float>(i);
    return B::load_aligned(tmp);
  }
  // Lanes j0 + i with lo <= j0 + i < hi.
  static BB span_mask(int j0, int lo, int hi) {
    const B idx = iota() + B(static_cast<float>(j0));
    return (idx >= B(static_cast<float>(lo))) & (idx < B(static_cast<float>(hi)));
  }

  // 2^x with a degree-6 polynomial on the fraction (about 1 ulp on [-126, 128]). x <= -127
  // (including -inf) gives exactly 0: the clamp makes the exponent field 0 and the mantissa 0.
  static B exp2(B x) {
    x = xsimd::min(xsimd::max(x, B(-127.0f)), B(128.0f));
    const B magic(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the low bits
    const B t = x + magic;
    const B xi = t - magic;
    const B f = x - xi;  // [-0.5, 0.5]
    B p(1.535336188319500e-4f);
    p = xsimd::fma(p, f, B(1.339887440266574e-3f));
    p = xsimd::fma(p, f, B(9.618437357674640e-3f));
    p = xsimd::fma(p, f, B(5.550332471162809e-2f));
    p = xsimd::fma(p, f, B(2.402264791363012e-1f));
    p = xsimd::fma(p, f, B(6.931472028550421e-1f));
    p = xsimd::fma(p, f, B(1.0f));
    // The low bits of t hold xi; shifting them into the exponent field and adding the bias gives
    // 2^xi (0 for xi = -127, inf for xi = 128).
    const I bits = (xsimd::bitwise_cast<I>(t) << 23) + I(0x3f800000);
    return p * xsimd::bitwise_cast<B>(bits);
  }

  // W source elements converted to f32.
  template <DType T>
  static B load_src(const void* base, int64_t index) {
    if constexpr (T == DType::kF32) {
      return B::load_unaligned(static_cast<const float*>(base) + index);
    } else if constexpr (T == DType::kF16) {
      const uint16_t* p = static_cast<const uint16_t*>(base) + index;
      if constexpr (W == 16) {
        return B(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
      } else {
        return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
      }
    } else {
      const uint16_t* p = static_cast<const uint16_t*>(base) + index;
      if constexpr (W == 16) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return B(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
      } else {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return B(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
    }
  }

  // Starts loading source row r of `src` into the cache. Rows are often a page apart ([token,
  // head, dim] with 8 heads of 128 f32 is 4 KiB), where the hardware prefetcher does not follow,
  // so packs request the rows a few iterations ahead themselves.
  static void prefetch_row(const RowSource& src, int r, int d) {
    const int64_t base = src.offsets ? src.offsets[r] : r * src.row_stride;
    const int esize = src.dtype == DType::kF32 ? 4 : 2;
    const char* p = static_cast<const char*>(src.base) + base * esize;
    for (int b = 0; b < d * esize; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
  }

  // Source row r of `src` converted to f32 times scale into dst[0, d) (d a multiple of 16).
  template <DType T>
  static void convert_row(const RowSource& src, int r, int d, float scale, float* dst) {
    const int64_t base = src.offsets ? src.offsets[r] : r * src.row_stride;
    const B s(scale);
    for (int c = 0; c < d; c += W) (load_src<T>(src.base, base + c) * s).store_unaligned(dst + c);
  }
  template <class F>
  static void with_dtype(DType t, F&& f) {
    switch (t) {
      case DType::kF32: f(std::integral_constant<DType, DType::kF32>{}); break;
      case DType::kF16: f(std::integral_constant<DType, DType::kF16>{}); break;
      case DType::kBF16: f(std::integral_constant<DType, DType::kBF16>{}); break;
    }
  }

  // Stores W floats as dtype T (round to nearest even; NaN stays NaN).
  template <DType T>
  static void store_dst(void* base, int64_t index, B v) {
    if constexpr (T == DType::kF32) {
      v.store_unaligned(static_cast<float*>(base) + index);
    } else if constexpr (T == DType::kF16) {
      uint16_t* p = static_cast<uint16_t*>(base) + index;
      if constexpr (W == 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                            _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      }
    } else {
      uint16_t* p = static_cast<uint16_t*>(base) + index;
      if constexpr (W == 16) {
        const __m512i bits = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
        const __m512i rounded = _mm512_srli_epi32(
            _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
        const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
        const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        const __m512i h = _mm512_mask_mov_epi32(rounded, nan, quiet);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(h));
      } else {
        const __m256i bits = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
        const __m256i rounded = _mm256_srli_epi32(
            _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
        const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        const __m256i h = _mm256_blendv_epi8(rounded, quiet, nan);
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0xd8);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
      }
    }
  }

  // ---- f32 path ----

  static size_t packed_bytes(int rows, int d) {
    return round_up(round_up(static_cast<size_t>(rows), P) * d * sizeof(float), 64);
  }
  static size_t scratch_bytes(int m, int n) {
    const size_t rows = static_cast<size_t>(imin(imax(m, 1), kMaxRows));
    return round_up(rows * round_up(static_cast<size_t>(n), P) * sizeof(float), 64);
  }

  static void pack_q(const RowSource& src, int m, int d, float scale, void* dst) {
    float* q = static_cast<float*>(dst);
    with_dtype(src.dtype, [&](auto t) {
      for (int r = 0; r < imin(m, kPrefetchRows); ++r) prefetch_row(src, r, d);
      for (int r = 0; r < m; ++r) {
        if (r + kPrefetchRows < m) prefetch_row(src, r + kPrefetchRows, d);
        convert_row<decltype(t)::value>(src, r, d, scale, q + static_cast<int64_t>(r) * d);
      }
    });
  }

  // Transposes an 8 x 8 block of 32-bit units: dst row i, column r = src row r, column i.
  static void transpose8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
      r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; ++i) {
      _mm256_storeu_ps(dst + i * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
      _mm256_storeu_ps(dst + (i + 4) * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
  }

  // Packs n rows as panels [ceil(n/panel)][units][panel] of 32-bit units, where row(j, out)
  // writes key j's `units` units to out (keys past n are zero): 8 keys at a time into a row
  // buffer, then 8 x 8 transposes.
  template <class RowFn, class PrefetchFn>
  static void pack_panels(int n, int units, int panel, uint32_t* dst, RowFn&& row, PrefetchFn&& prefetch) {
    alignas(64) float rows[8 * 256];
    for (int j = 0; j < imin(n, kPrefetchRows); ++j) prefetch(j);
    for (int p0 = 0; p0 < n; p0 += panel) {
      float* out = reinterpret_cast<float*>(dst) + static_cast<int64_t>(p0) * units;
      for (int j8 = 0; j8 < panel; j8 += 8) {
        for (int i = 0; i < 8; ++i) {
          const int ahead = p0 + j8 + i + kPrefetchRows;
          if (ahead < n) prefetch(ahead);
          const int j = p0 + j8 + i;
          if (j < n) {
            row(j, rows + i * units);
          } else {
            std::memset(rows + i * units, 0, sizeof(float) * units);
          }
        }
        for (int c = 0; c < units; c += 8) transpose8(rows + c, units, out + c * panel + j8, panel);
      }
    }
  }

  static void pack_k(const RowSource& src, int n, int d, void* dst) {
    with_dtype(src.dtype, [&](auto t) {
      pack_panels(n, d, P, static_cast<uint32_t*>(dst),
                  [&](int j, float* row) { convert_row<decltype(t)::value>(src, j, d, 1.0f, row); },
                  [&](int j) { prefetch_row(src, j, d); });
    });
  }

  static void pack_v(const RowSource& src, int n, int d, void* dst) {
    float* v = static_cast<float*>(dst);
    const int64_t n_pad = static_cast<int64_t>(round_up(static_cast<size_t>(n), P));
    with_dtype(src.dtype, [&](auto t) {
      constexpr DType T = decltype(t)::value;
      for (int j = 0; j < imin(n, kPrefetchRows); ++j) prefetch_row(src, j, d);
      for (int j = 0; j < n; ++j) {
        if (j + kPrefetchRows < n) prefetch_row(src, j + kPrefetchRows, d);
        const int64_t base = src.offsets ? src.offsets[j] : j * src.row_stride;
        for (int x0 = 0; x0 < d; x0 += P) {
          const int width = imin(P, d - x0);
          float* out = v + x0 * n_pad + static_cast<int64_t>(j) * width;
          for (int c = 0; c < width; c += W) load_src<T>(src.base, base + x0 + c).store_unaligned(out + c);
        }
      }
    });
  }

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
      for (int r = 0; r < R; ++r) {
        store_n(s + r * lds, acc[r][0], cols);
        store_n(s + r * lds + W, acc[r][1], cols - W);
      }
    }
  }

  // acc rows (leading dimension d) = acc * corr[r] + p_r . V over jcount keys, for the NC (1 or
  // 2) vectors of columns at vp (rows of `width` floats). Rows with active[r] false are left
  // as they are.
  template <int R, int NC>
  static void pv_block(const float* p, int64_t lds, int jcount, const float* vp, int width,
                       float* acc, int d, const float* corr, const bool* active) {
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
      float* out = acc + static_cast<int64_t>(r) * d;
      const B c(corr[r]);
#pragma GCC unroll 2
      for (int k = 0; k < NC; ++k) xsimd::fma(B::load_unaligned(out + k * W), c, o[r][k]).store_unaligned(out + k * W);
    }
  }

  // Spans of a row block, clipped to [0, n); the union [jlo, jhi) of the non-empty ones.
  struct BlockSpans {
    int lo[kMaxRows];
    int hi[kMaxRows];
    bool active[kMaxRows];
    int jlo, jhi;  // jlo >= jhi: no row sees anything
  };
  static BlockSpans block_spans(const int32_t* lo, const int32_t* hi, int r0, int R, int n) {
    BlockSpans b;
    b.jlo = n;
    b.jhi = 0;
    for (int r = 0; r < R; ++r) {
      b.lo[r] = span_lo(lo, r0 + r);
      b.hi[r] = span_hi(hi, r0 + r, n);
      b.active[r] = b.lo[r] < b.hi[r];
      if (b.active[r]) {
        b.jlo = imin(b.jlo, b.lo[r]);
        b.jhi = imax(b.jhi, b.hi[r]);
      }
    }
    return b;
  }

  // Online softmax of R rows of scores s (leading dimension lds) over the vector-aligned range
  // [ja, jb). For active rows: updates row_max/row_sum, sets corr[r] = exp2(old - new max), and
  // hands each vector of probabilities (0 outside the row's span) to emit(r, j, p), which stores
  // it and returns the values the row sum should add (the stored ones, after any rounding).
  // Inactive rows get zeros over [ja, jb) and corr 1.
  template <class Emit>
  static void softmax_rows(const float* s, int64_t lds, int R, const BlockSpans& b, int ja, int jb,
                           float* row_max, float* row_sum, float* corr, Emit&& emit) {
    for (int r = 0; r < R; ++r) {
      const float* sr = s + static_cast<int64_t>(r) * lds;
      if (!b.active[r]) {
        for (int j = ja; j < jb; j += W) emit(r, j, B(0.0f));
        corr[r] = 1.0f;
        continue;
      }
      const int lo = b.lo[r], hi = b.hi[r];
      const int first = lo / W * W;
      B vmax(kNegInf);
      for (int j = first; j < hi; j += W) {
        const B x = B::load_unaligned(sr + j);
        if (j >= lo && j + W <= hi) {
          vmax = xsimd::max(vmax, x);
        } else {
          vmax = xsimd::max(vmax, xsimd::select(span_mask(j, lo, hi), x, B(kNegInf)));
        }
      }
      const float old_max = row_max[r];
      const float tile_max = hmax(vmax);
      const float new_max = tile_max > old_max ? tile_max : old_max;
      const B mx(new_max);
      B sum(0.0f);
      for (int j = ja; j < jb; j += W) {
        if (j + W <= lo || j >= hi) {
          emit(r, j, B(0.0f));
          continue;
        }
        B p = exp2(B::load_unaligned(sr + j) - mx);
        if (!(j >= lo && j + W <= hi)) p = xsimd::select(span_mask(j, lo, hi), p, B(0.0f));
        sum += emit(r, j, p);
      }
      const float c = std::exp2(old_max - new_max);  // 0 on the first tile (old_max = -inf)
      corr[r] = c;
      row_sum[r] = row_sum[r] * c + xsimd::hadd(sum);
      row_max[r] = new_max;
    }
  }

  template <int R>
  static void attend_block(const AttendTileArgs& a, int r0, float* s, int64_t lds) {
    const BlockSpans b = block_spans(a.lo, a.hi, r0, R, a.n);
    if (b.jlo >= b.jhi) return;
    const int d = a.d;
    const float* q = static_cast<const float*>(a.q) + static_cast<int64_t>(r0) * d;
    const float* k = static_cast<const float*>(a.k);
    const int pa = b.jlo / P * P;
    for (int p0 = pa; p0 < b.jhi; p0 += P) qk_block<R>(q, d, k + static_cast<int64_t>(p0) * d, s + p0, lds, P);

    float corr[kMaxRows];
    const int ja = b.jlo / W * W;
    const int jb = static_cast<int>(round_up(static_cast<size_t>(b.jhi), W));
    float* sw = s;
    softmax_rows(s, lds, R, b, ja, jb, a.row_max + r0, a.row_sum + r0, corr, [&](int r, int j, B p) {
      p.store_unaligned(sw + r * lds + j);
      return p;
    });

    const int64_t n_pad = static_cast<int64_t>(round_up(static_cast<size_t>(a.n), P));
    const float* v = static_cast<const float*>(a.v);
    float* acc = a.acc + static_cast<int64_t>(r0) * d;
    const int jcount = b.jhi - b.jlo;
    for (int x0 = 0; x0 < d; x0 += P) {
      const int width = imin(P, d - x0);
      const float* vp = v + x0 * n_pad + static_cast<int64_t>(b.jlo) * width;
      if (width == P) {
        pv_block<R, 2>(s + b.jlo, lds, jcount, vp, width, acc + x0, d, corr, b.active);
      } else {
        pv_block<R, 1>(s + b.jlo, lds, jcount, vp, width, acc + x0, d, corr, b.active);
      }
    }
  }

  // Calls f(integral_constant<int, R>) for R in [1, kMaxRows].
  template <class F, int R = kMaxRows>
  static void with_rows(int rows, F&& f) {
    if constexpr (R >= 1) {
      if (rows == R) {
        f(std::integral_constant<int, R>{});
      } else {
        with_rows<F, R - 1>(rows, static_cast<F&&>(f));
      }
    }
  }

  // Splits m rows into ceil(m / kMaxRows) blocks of nearly equal size and calls f(r0, rows).
  template <class F>
  static void for_row_blocks(int m, F&& f) {
    if (m <= 0) return;
    const int blocks = (m + kMaxRows - 1) / kMaxRows;
    const int base = m / blocks, extra = m % blocks;
    int r0 = 0;
    for (int i = 0; i < blocks; ++i) {
      const int rows = base + (i < extra ? 1 : 0);
      f(r0, rows);
      r0 += rows;
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
          qk_block<decltype(R)::value>(q + static_cast<int64_t>(r0) * d, d, k + static_cast<int64_t>(p0) * d,
                                       s + r0 * lds + p0, lds, imin(P, n - p0));
        }
      });
    });
  }

  // ---- row operations on score matrices ----

  static void row_stats(const float* s, int64_t lds, int m, int n, const int32_t* lo,
                        const int32_t* hi, float* row_max, float* row_sum) {
    for (int r = 0; r < m; ++r) {
      const int l = span_lo(lo, r), h = span_hi(hi, r, n);
      if (l >= h) continue;
      const float* sr = s + r * lds;
      B vmax(kNegInf);
      for (int j = l; j < h; j += W) vmax = xsimd::max(vmax, load_n(sr + j, h - j, kNegInf));
      const float old_max = row_max[r];
      const float tile_max = hmax(vmax);
      const float new_max = tile_max > old_max ? tile_max : old_max;
      const B mx(new_max);
      B sum(0.0f);
      for (int j = l; j < h; j += W) {
        const B p = exp2(load_n(sr + j, h - j, kNegInf) - mx);
        sum += h - j >= W ? p : xsimd::select(span_mask(j, l, h), p, B(0.0f));
      }
      row_sum[r] = row_sum[r] * std::exp2(old_max - new_max) + xsimd::hadd(sum);
      row_max[r] = new_max;
    }
  }

  static void accumulate_columns(const float* s, int64_t lds, int m, int n, const int32_t* lo,
                                 const int32_t* hi, const float* row_max, const float* row_scale,
                                 float* col_sum) {
    for (int j = 0; j < n; j += W) {
      const int count = imin(W, n - j);
      B cs = load_n(col_sum + j, count, 0.0f);
      for (int r = 0; r < m; ++r) {
        const int l = span_lo(lo, r), h = span_hi(hi, r, n);
        if (j + W <= l || j >= h) continue;
        B p = exp2(load_n(s + r * lds + j, count, 0.0f) - B(row_max[r])) * B(row_scale[r]);
        if (!(j >= l && j + W <= h)) p = xsimd::select(span_mask(j, l, h), p, B(0.0f));
        cs += p;
      }
      store_n(col_sum + j, cs, count);
    }
  }

  static void store_rows(const float* acc, int m, int d, const float* row_scale, void* dst,
                         DType dtype, int64_t row_stride) {
    with_dtype(dtype, [&](auto t) {
      constexpr DType T = decltype(t)::value;
      for (int r = 0; r < m; ++r) {
        const B sc(row_scale[r]);
        for (int x = 0; x < d; x += W) {
          store_dst<T>(dst, r * row_stride + x, B::load_unaligned(acc + static_cast<int64_t>(r) * d + x) * sc);
        }
      }
    });
  }
};

}  // namespace sampleattn::flash
