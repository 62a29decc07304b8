// Row operations on score matrices and accumulators: stage 1's row statistics and column sums,
// and the final scaled store of output rows in the caller's dtype.
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols: no inline function is shared between units
// compiled with different -m flags. Include only from a per-ISA translation unit (flash_<isa>.cpp),
// at namespace scope, after <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "core/validation_units.h"
#include "simd/flash/vec.h"
#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct RowOps : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using V::W;
  using V::kNegInf;
  using V::imin;
  using V::span_lo;
  using V::span_hi;
  using V::load_n;
  using V::store_n;
  using V::hmax;
  using V::span_mask;
  using V::exp2;
  using V::with_dtype;

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

  // col_sum[j] += exp2(s[r][j] - row_max[r]) * row_scale[r] over each row's span [lo, hi), the
  // rows added in order. Whole blocks of kColumnVectors vectors of columns stay in registers while
  // the rows go by, so the scores are read row by row in memory order (a chunk's tiles come back
  // from memory, not the caches: one vector of columns at a time read them a line per row, 1 KiB
  // apart); the columns past the last whole block, one vector at a time. Each column's sum is the
  // same either way.
  static constexpr int kColumnVectors = 8;
  static void accumulate_columns(const float* s, int64_t lds, int m, int n, const int32_t* lo,
                                 const int32_t* hi, const float* row_max, const float* row_scale,
                                 float* col_sum) {
    constexpr int kBlock = kColumnVectors * W;
    int j0 = 0;
    for (; j0 + kBlock <= n; j0 += kBlock) {
      B cs[kColumnVectors];
#pragma GCC unroll 8
      for (int v = 0; v < kColumnVectors; ++v) cs[v] = B::load_unaligned(col_sum + j0 + v * W);
      for (int r = 0; r < m; ++r) {
        const int l = span_lo(lo, r), h = span_hi(hi, r, n);
        if (h <= j0 || l >= j0 + kBlock || l >= h) continue;
        const float* sr = s + r * lds + j0;
        const B mx(row_max[r]), sc(row_scale[r]);
        if (l <= j0 && h >= j0 + kBlock) {
#pragma GCC unroll 8
          for (int v = 0; v < kColumnVectors; ++v) cs[v] += exp2(B::load_unaligned(sr + v * W) - mx) * sc;
        } else {
#pragma GCC unroll 8
          for (int v = 0; v < kColumnVectors; ++v) {
            const int j = j0 + v * W;
            if (j + W <= l || j >= h) continue;
            B p = exp2(B::load_unaligned(sr + v * W) - mx) * sc;
            if (!(j >= l && j + W <= h)) p = xsimd::select(span_mask(j, l, h), p, B(0.0f));
            cs[v] += p;
          }
        }
      }
#pragma GCC unroll 8
      for (int v = 0; v < kColumnVectors; ++v) cs[v].store_unaligned(col_sum + j0 + v * W);
    }
    for (int j = j0; j < n; j += W) {
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

  // W probabilities exp2(s - mx) * scale in kValidationMassOne units (sc: scale times the unit,
  // exact: a power of two), rounded to the nearest integer (ties to even); p <= 1, so at most
  // 2^31, which the signed AVX2 conversion writes as 0x80000000, the same bits.
  static auto mass_units(B x, B mx, B sc) {
    const B u = exp2(x - mx) * sc;
    if constexpr (W == 16) {
      return _mm512_cvtps_epu32(u);
    } else {
      return _mm256_cvtps_epi32(u);
    }
  }

  static void bucket_masses(const float* s, int lo, int split, int hi, float row_max, float scale,
                            const uint8_t* bucket, uint32_t* masses) {
    const B mx(row_max), sc(scale * static_cast<float>(kValidationMassOne));
    alignas(64) uint32_t units[W];
    // The stripe candidates, each to its bucket.
    for (int j = lo; j < split; j += W) {
      const int count = imin(W, split - j);
      const auto u = mass_units(load_n(s + j, count, kNegInf), mx, sc);
      if constexpr (W == 16) {
        _mm512_store_si512(units, u);
      } else {
        _mm256_store_si256(reinterpret_cast<__m256i*>(units), u);
      }
      for (int l = 0; l < count; ++l) {
        const uint8_t b = bucket[j + l];
        if (b != kBucketUnused) masses[b] += units[l];
      }
    }
    // The window band, in vector lanes (a lane past hi reads -inf: 0 units).
    uint32_t band = 0;
    if constexpr (W == 16) {
      __m512i acc = _mm512_setzero_si512();
      for (int j = split; j < hi; j += W) acc = _mm512_add_epi32(acc, mass_units(load_n(s + j, hi - j, kNegInf), mx, sc));
      _mm512_store_si512(units, acc);
    } else {
      __m256i acc = _mm256_setzero_si256();
      for (int j = split; j < hi; j += W) acc = _mm256_add_epi32(acc, mass_units(load_n(s + j, hi - j, kNegInf), mx, sc));
      _mm256_store_si256(reinterpret_cast<__m256i*>(units), acc);
    }
    for (int l = 0; l < W; ++l) band += units[l];
    masses[0] += band;
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
