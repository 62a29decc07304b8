// Packing of Q, K and V for the f32 path (and the panel transpose the bf16 path reuses).
//
// f32 path layouts (W = floats per vector, P = 2W keys per panel):
//   Q: [m][d] f32, multiplied by scale.
//   K: [ceil(n/P)][d][P] f32 panels; keys past n are zero.
//   V: column blocks of width P (the last one W when dv % P != 0): block at x0 holds [n][width].
//      pack_v is called with the value head size dv as its d, and packed_bytes(n, dv) sizes it.
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols: no inline function is shared between units
// compiled with different -m flags. Include only from a per-ISA translation unit (flash_<isa>.cpp),
// at namespace scope, after <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "simd/flash/vec.h"
#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct Pack : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using V::W;
  using V::P;
  using V::imin;
  using V::round_up;
  using V::with_dtype;

  // Rows a pack requests ahead of the one it converts.
  static constexpr int kPrefetchRows = 8;

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
    } else if constexpr (T == DType::kI8) {
      const int8_t* p = static_cast<const int8_t*>(base) + index;
      if constexpr (W == 16) {
        return B(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
      } else {
        return B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
      }
    } else if constexpr (T == DType::kFP8) {
      // e4m3 -> f16 bits: sign to bit 15, exponent and mantissa (7 bits) to bits 13..7. That f16
      // has exponent bias 15 instead of 7 (subnormals included: both scale the same way), so
      // its value is 2^-8 of the e4m3 value; kFp8Unbias undoes it. NaN codes (0x7f, 0xff) come
      // out as +-480: the input scan rejects them before any kernel runs. In three operations:
      // sign-extend the byte to 16 bits (the sign fills bits 7..15), shift left by 7 (exponent
      // and mantissa to 13..7, sign copies to 14 and up), clear bit 14 (the f16 exponent's top
      // bit, which an e4m3 exponent never sets).
      const int8_t* p = static_cast<const int8_t*>(base) + index;
      if constexpr (W == 16) {
        const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m256i h = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
        return B(_mm512_cvtph_ps(h));
      } else {
        const __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        const __m128i h = _mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16(static_cast<short>(0xBFFF)));
        return B(_mm256_cvtph_ps(h));
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

  // 2^8: an e4m3 byte read as f16 by load_src<kFP8> is 2^-8 of its value.
  static constexpr float kFp8Unbias = 256.0f;

  // The factor that turns row r's loaded values into its real ones: the row's scale for quantized
  // dtypes (times kFp8Unbias for fp8), else 1.
  template <DType T>
  static float row_factor(const RowSource& src, int r) {
    if constexpr (T == DType::kI8) {
      return scale_at(src, r);
    } else if constexpr (T == DType::kFP8) {
      return scale_at(src, r) * kFp8Unbias;
    } else {
      return 1.0f;
    }
  }

  // Starts loading source row r of `src` into the cache. Rows are often a page apart ([token,
  // head, dim] with 8 heads of 128 f32 is 4 KiB), where the hardware prefetcher does not follow,
  // so packs request the rows a few iterations ahead themselves.
  static void prefetch_row(const RowSource& src, int r, int d) {
    const int64_t base = src.offsets ? src.offsets[r] : r * src.row_stride;
    const int esize = src.dtype == DType::kF32 ? 4 : (src.dtype == DType::kI8 || src.dtype == DType::kFP8) ? 1 : 2;
    const char* p = static_cast<const char*>(src.base) + base * esize;
    for (int b = 0; b < d * esize; b += 64) V::to_l1(p + b);
  }

  // Source row r of `src` converted to f32 (dequantized) times scale into dst[0, d) (d a multiple
  // of 16).
  template <DType T>
  static void convert_row(const RowSource& src, int r, int d, float scale, float* dst) {
    const int64_t base = src.offsets ? src.offsets[r] : r * src.row_stride;
    const B s(scale * row_factor<T>(src, r));
    for (int c = 0; c < d; c += W) (load_src<T>(src.base, base + c) * s).store_unaligned(dst + c);
  }

  static size_t packed_bytes(int rows, int d) {
    return round_up(round_up(static_cast<size_t>(rows), P) * d * sizeof(float), 64);
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
        const B factor(row_factor<T>(src, j));
        for (int x0 = 0; x0 < d; x0 += P) {
          const int width = imin(P, d - x0);
          float* out = v + x0 * n_pad + static_cast<int64_t>(j) * width;
          for (int c = 0; c < width; c += W) {
            B x = load_src<T>(src.base, base + x0 + c);
            if constexpr (T == DType::kI8 || T == DType::kFP8) x *= factor;
            x.store_unaligned(out + c);
          }
        }
      }
    });
  }
};

}  // namespace sampleattn::flash
