// Vector helpers shared by the flash kernels (simd/flash/*.h): the vector types and widths,
// masked loads and stores, the exp2 polynomial, dtype dispatch, and how a tile's rows are cut into
// register blocks. See simd/kernels.h for the contract and docs/KERNELS.md for the design.
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols: no inline function is shared between units
// compiled with different -m flags. Include only from a per-ISA translation unit (flash_<isa>.cpp),
// at namespace scope, after <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct Vec {
  using B = xsimd::batch<float, Arch>;
  using BB = xsimd::batch_bool<float, Arch>;
  using I = xsimd::batch<int32_t, Arch>;
  static constexpr int W = static_cast<int>(B::size);
  // Keys per K panel (and columns per V block) of the f32 layouts: two vectors.
  static constexpr int P = 2 * W;
  // Rows of a register block: R x 2 accumulators plus 2 panel vectors and a broadcast fit the
  // register file (32 zmm on AVX-512, 16 ymm on AVX2).
  static constexpr int kMaxRows = W == 16 ? 14 : 6;
  static constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  static int imin(int a, int b) { return a < b ? a : b; }
  static int imax(int a, int b) { return a > b ? a : b; }
  static size_t round_up(size_t x, size_t k) { return (x + k - 1) / k * k; }
  // Requests the cache line at p into L1 (to_l1) or L2 (to_l2). In assembly, because GCC 12 deletes
  // _mm_prefetch behind a helper: __builtin_prefetch touches no memory as GCC models it, so its
  // IPA pure-const analysis finds a function that only prefetches free of effects and removes the
  // calls (-fno-ipa-pure-const -fno-ipa-modref keeps them). Pack::prefetch_row's requests were
  // never in the objects; the decode kernel's read-ahead, moved into a helper, vanished too and
  // the decode step ran 2.5x slower. An asm volatile cannot be removed.
  static void to_l1(const void* p) { asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p))); }
  static void to_l2(const void* p) { asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p))); }
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
    if (count <= 0) return;  // e.g. a panel's second vector when the panel has <= W columns
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

  // 2^x with a degree-6 polynomial on the fraction f = x - round(x) (about 1 ulp on [-126, 128]).
  // x < -126.5 (including -inf) and NaN give exactly 0. On AVX-512 the fraction is one vreduceps
  // and the scaling by 2^round(x) one vscalefps, masked to 0 below -126.5: 10 operations instead
  // of the 14 below (docs/PERF.md, session 35), with the same bits for every x under 127.5
  // (checked on all 2^32 inputs; at 127.5 and above the AVX-512 form gives the finite 2^x where
  // the other gives inf, an argument no softmax passes: theirs are at most 0).
  [[gnu::always_inline]] static inline B exp2(B x) {
    if constexpr (W == 16) {
      const __m512 v = x;
      const __mmask16 live = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-126.5f), _CMP_GE_OQ);
      const __m512 f = _mm512_reduce_ps(v, 0x08);  // x - round(x): M = 0, nearest even, no precision exception
      return B(_mm512_maskz_scalef_ps(live, exp2_fraction(B(f)), _mm512_sub_ps(v, f)));
    }
    x = xsimd::min(xsimd::max(x, B(-127.0f)), B(128.0f));
    const B magic(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the low bits
    const B t = x + magic;
    const B xi = t - magic;
    const B f = x - xi;  // [-0.5, 0.5]
    // The low bits of t hold xi; shifting them into the exponent field and adding the bias gives
    // 2^xi (0 for xi = -127, inf for xi = 128).
    const I bits = (xsimd::bitwise_cast<I>(t) << 23) + I(0x3f800000);
    return exp2_fraction(f) * xsimd::bitwise_cast<B>(bits);
  }
  // 2^f for f in [-0.5, 0.5].
  [[gnu::always_inline]] static inline B exp2_fraction(B f) {
    B p(1.535336188319500e-4f);
    p = xsimd::fma(p, f, B(1.339887440266574e-3f));
    p = xsimd::fma(p, f, B(9.618437357674640e-3f));
    p = xsimd::fma(p, f, B(5.550332471162809e-2f));
    p = xsimd::fma(p, f, B(2.402264791363012e-1f));
    p = xsimd::fma(p, f, B(6.931472028550421e-1f));
    return xsimd::fma(p, f, B(1.0f));
  }

  template <class F>
  static void with_dtype(DType t, F&& f) {
    switch (t) {
      case DType::kF32: f(std::integral_constant<DType, DType::kF32>{}); break;
      case DType::kF16: f(std::integral_constant<DType, DType::kF16>{}); break;
      case DType::kBF16: f(std::integral_constant<DType, DType::kBF16>{}); break;
      case DType::kI8: f(std::integral_constant<DType, DType::kI8>{}); break;
      case DType::kFP8: f(std::integral_constant<DType, DType::kFP8>{}); break;
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
};

}  // namespace sampleattn::flash
