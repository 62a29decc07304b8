// The model's score variants (simd/kernels.h ScoreModArgs; the definition is core/score_mod.h)
// on rows of scores in memory, in log2 units: s = cap * tanh(s / cap) when cap > 0, then
// s -= slope[r] * |row_pos[r] - key_pos[j]|.
//
// modify_rows is the one function that applies them: attend (f32 and bf16 paths) calls it on a
// register block's scores in L1 scratch before the softmax, and the modify_scores entry point
// calls it on stage 1's score blocks. It is kept out of line, so both run the same instructions
// on each score and get bit-identical results; every lane goes through the same arithmetic
// whether it sits in a full vector or in a row's masked tail.
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols: no inline function is shared between units
// compiled with different -m flags (which is also why this does not call ScoreModArgs::any()).
// Include only from a per-ISA translation unit (flash_<isa>.cpp), at namespace scope, after
// <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "simd/flash/vec.h"
#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct ScoreMods : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using typename V::I;
  using V::W;

  static bool any(const ScoreModArgs& mod) { return mod.softcap > 0.f || mod.alibi != nullptr; }

  // a * b + c and c - a * b, each rounded once: the FMA instructions themselves. xsimd 8.1 has no
  // AVX-512 fma (its generic one is a * b + c, left to the compiler's contraction), and GCC
  // contracts whichever product it meets first, so an expression with two products (the capped
  // score minus the bias) could round differently in two inlined copies of the same code.
  static B fmadd(B a, B b, B c) {
    if constexpr (W == 16) {
      return B(_mm512_fmadd_ps(a, b, c));
    } else {
      return B(_mm256_fmadd_ps(a, b, c));
    }
  }
  static B fnmadd(B a, B b, B c) {
    if constexpr (W == 16) {
      return B(_mm512_fnmadd_ps(a, b, c));
    } else {
      return B(_mm256_fnmadd_ps(a, b, c));
    }
  }

  // cap * tanh(s / cap) (cap > 0), with tanh(x) the 13/6 minimax rational x P(x^2) / Q(x^2) of
  // Eigen's generic_fast_tanh_float, x clamped to +-7.9988 first as Eigen does under FMA. Written
  // as sc * P(x^2) / Q(x^2) with sc = s clamped to +-7.9988 cap and x = sc / cap, which saves the
  // two multiplies by the cap: 13 vector operations a score on AVX-512 (vrangeps clamps in one),
  // one of them a division (a reciprocal estimate and a Newton step measured slower on Zen 4).
  // Against double cap * tanh(s / cap) over every float s up to 30 caps, for caps 1 to 3000: at
  // most 3.6e-7 relative error (6 ulp); a saturated score may exceed the cap by an ulp.
  struct Softcap {
    B limit, inv_cap;
    explicit Softcap(float c) : limit(7.99881172180175781f * c), inv_cap(1.0f / c) {}
  };
  static B softcapped(B s, const Softcap& c) {
    B sc;
    if constexpr (W == 16) {
      // min(|s|, limit) with the sign of s (imm 0b0010: the smaller absolute value, sign from
      // the first operand; AVX512DQ).
      sc = B(_mm512_range_ps(s, c.limit, 0x2));
    } else {
      sc = xsimd::max(xsimd::min(s, c.limit), -c.limit);
    }
    const B x = sc * c.inv_cap;
    const B x2 = x * x;
    B p(-2.76076847742355e-16f);
    p = fmadd(p, x2, B(2.00018790482477e-13f));
    p = fmadd(p, x2, B(-8.60467152213735e-11f));
    p = fmadd(p, x2, B(5.12229709037114e-08f));
    p = fmadd(p, x2, B(1.48572235717979e-05f));
    p = fmadd(p, x2, B(6.37261928875436e-04f));
    p = fmadd(p, x2, B(4.89352455891786e-03f));
    B q(1.19825839466702e-06f);
    q = fmadd(q, x2, B(1.18534705686654e-04f));
    q = fmadd(q, x2, B(2.26843463243900e-03f));
    q = fmadd(q, x2, B(4.89352518554385e-03f));
    return (sc * p) / q;
  }

  // The first `count` (0 < count < W) lanes at p; the others 0 / untouched. Masked loads and
  // stores, so a row's tail never reads or writes past the row.
  static B load_part(const float* p, int count) {
    if constexpr (W == 16) {
      return B(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), p));
    } else {
      return B(_mm256_maskload_ps(p, tail_mask(count)));
    }
  }
  static I load_part(const int32_t* p, int count) {
    if constexpr (W == 16) {
      return I(_mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << count) - 1), p));
    } else {
      return I(_mm256_maskload_epi32(reinterpret_cast<const int*>(p), tail_mask(count)));
    }
  }
  static void store_part(float* p, B v, int count) {
    if constexpr (W == 16) {
      _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << count) - 1), v);
    } else {
      _mm256_maskstore_ps(p, tail_mask(count), v);
    }
  }
  // AVX2: lanes i < count with the sign bit set.
  static __m256i tail_mask(int count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  // Row r of a block (rows r0.. of mod's per-row arrays), columns [j0, j1) of sr.
  template <bool kCap, bool kAlibi>
  static void modify_row(float* sr, int j0, int j1, const ScoreModArgs& mod, int r) {
    const Softcap cap(kCap ? mod.softcap : 1.0f);
    const B slope(kAlibi ? mod.alibi[r] : 0.0f);
    const I pos(kAlibi ? mod.row_pos[r] : 0);
    // The same operations for every lane: softcapped (a multiply by the reciprocal of the cap,
    // the rational not being exact anyway), then s - slope * |p - j| as one fused multiply-add,
    // with the distance converted from int32 as score_mod.h's static_cast<float> of the int64
    // difference (both round to nearest). No plain multiply here feeds an add or a subtract, so
    // the compiler's contraction has nothing to choose and the loop and the tail round alike.
    const auto apply = [&](B x, int j, int count) {
      if constexpr (kCap) x = softcapped(x, cap);
      if constexpr (kAlibi) {
        const I key = count == W ? I::load_unaligned(mod.key_pos + j) : load_part(mod.key_pos + j, count);
        x = fnmadd(slope, xsimd::to_float(xsimd::abs(pos - key)), x);
      }
      return x;
    };
    int j = j0;
    for (; j + W <= j1; j += W) apply(B::load_unaligned(sr + j), j, W).store_unaligned(sr + j);
    if (j < j1) store_part(sr + j, apply(load_part(sr + j, j1 - j), j, j1 - j), j1 - j);
  }

  template <bool kCap, bool kAlibi>
  static void modify_rows_with(float* s, int64_t lds, const ScoreModArgs& mod, int r0, int rows, const int* lo,
                               const int* hi, int n) {
    for (int r = 0; r < rows; ++r) {
      const int j0 = lo ? lo[r] : 0, j1 = hi ? hi[r] : n;
      if (j0 < j1) modify_row<kCap, kAlibi>(s + r * lds, j0, j1, mod, r0 + r);
    }
  }

  // Applies mod to rows [0, rows) of s (leading dimension lds), which are rows r0.. of mod's
  // per-row arrays; row r over columns [lo[r], hi[r]) (within [0, n)), or [0, n) when lo and hi
  // are null. Columns outside a row's range are left as they are.
  [[gnu::noinline]] static void modify_rows(float* s, int64_t lds, const ScoreModArgs& mod, int r0, int rows,
                                            const int* lo, const int* hi, int n) {
    const bool cap = mod.softcap > 0.f, alibi = mod.alibi != nullptr;
    if (cap && alibi) {
      modify_rows_with<true, true>(s, lds, mod, r0, rows, lo, hi, n);
    } else if (cap) {
      modify_rows_with<true, false>(s, lds, mod, r0, rows, lo, hi, n);
    } else if (alibi) {
      modify_rows_with<false, true>(s, lds, mod, r0, rows, lo, hi, n);
    }
  }
};

}  // namespace sampleattn::flash
