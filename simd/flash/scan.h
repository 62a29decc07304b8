// The input policy's row scan (core/row_scan.h), vectorized: the same bits as
// scan_row_portable, eight lanes of 32-bit values at a time (AVX2 instructions, which the avx2,
// avx512 and amx units all compile): element i adds x * x (rounded, then added; no FMA) to lane
// i % 8 and its |x| to that lane's max, so each lane sums exactly what the portable lane sums, in
// the same order. The exponent test (all ones: NaN or Inf) runs on the raw bits.
//
// A static member of a class template over the xsimd architecture, like the flash kernels, so each
// unit gets its own symbols. Include only from a per-ISA translation unit.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/row_scan.h"

namespace sampleattn::flash {

template <class Arch>
struct Scan {
  static RowScan scan_row(const void* data, DType dtype, int dim) {
    switch (dtype) {
      case DType::kF32: return run<DType::kF32>(static_cast<const char*>(data), dim);
      case DType::kBF16: return run<DType::kBF16>(static_cast<const char*>(data), dim);
      case DType::kF16: return run<DType::kF16>(static_cast<const char*>(data), dim);
      case DType::kI8:
      case DType::kFP8: break;
    }
    return scan_row_portable(data, dtype, dim);  // not rows of this kind (scan_kv_rows)
  }

 private:
  // Keeps a product from being fused with the add that follows (these units compile with -mfma,
  // and GCC contracts a * b + c in C++ by default): the portable definition rounds the square.
  template <typename X>
  static void rounded(X& x) {
    asm("" : "+x"(x));
  }

  // Element i as f32 bits (f32 and bf16 rows).
  template <DType T>
  static uint32_t bits_at(const char* row, int i) {
    if constexpr (T == DType::kF32) {
      uint32_t b;
      std::memcpy(&b, row + 4 * i, 4);
      return b;
    } else {
      uint16_t h;
      std::memcpy(&h, row + 2 * i, 2);
      return static_cast<uint32_t>(h) << 16;
    }
  }

  // The first index whose exponent bits are all ones.
  template <DType T>
  static int first_bad(const char* row, int dim) {
    for (int c = 0; c < dim; ++c) {
      if constexpr (T == DType::kF16) {
        uint16_t h;
        std::memcpy(&h, row + 2 * c, 2);
        if ((h & 0x7c00u) == 0x7c00u) return c;
      } else {
        if ((bits_at<T>(row, c) & 0x7f800000u) == 0x7f800000u) return c;
      }
    }
    return 0;
  }

  template <DType T>
  static RowScan run(const char* row, int dim) {
    RowScan r;
    int i = 0;
    if constexpr (T == DType::kF16) {
      // Bits only (the dtype bounds the values, as in the portable definition).
      const __m256i exponent = _mm256_set1_epi16(0x7c00);
      __m256i bad = _mm256_setzero_si256();
      for (; i + 16 <= dim; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * i));
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi16(_mm256_and_si256(h, exponent), exponent));
      }
      bool finite = _mm256_testz_si256(bad, bad) != 0;
      for (; i < dim; ++i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        finite = finite && (h & 0x7c00u) != 0x7c00u;
      }
      r.finite = finite;
      r.sumsq = static_cast<float>(dim) * 65504.f * 65504.f;
      r.max_abs = 65504.f;
    } else {
      const __m256i exponent = _mm256_set1_epi32(0x7f800000);
      const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
      __m256i bad = _mm256_setzero_si256();
      __m256 s = _mm256_setzero_ps(), m = _mm256_setzero_ps();
      for (; i + 8 <= dim; i += 8) {
        __m256i b;
        if constexpr (T == DType::kF32) {
          b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 4 * i));
        } else {
          b = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i))), 16);
        }
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(b, exponent), exponent));
        const __m256 x = _mm256_castsi256_ps(b);
        __m256 sq = _mm256_mul_ps(x, x);
        rounded(sq);
        s = _mm256_add_ps(s, sq);
        m = _mm256_max_ps(_mm256_and_ps(x, magnitude), m);  // NaN |x| keeps m, as std::max(m, |x|)
      }
      alignas(32) float sl[8], ml[8];
      _mm256_store_ps(sl, s);
      _mm256_store_ps(ml, m);
      bool finite = _mm256_testz_si256(bad, bad) != 0;
      for (; i < dim; ++i) {
        const uint32_t b = bits_at<T>(row, i);
        float x;
        std::memcpy(&x, &b, 4);
        finite = finite && (b & 0x7f800000u) != 0x7f800000u;
        float sq = x * x;
        rounded(sq);
        sl[0] += sq;
        const float ax = x < 0 ? -x : x;
        ml[0] = ml[0] < ax ? ax : ml[0];
      }
      for (int l = 0; l < 8; ++l) {
        r.sumsq += sl[l];
        r.max_abs = r.max_abs < ml[l] ? ml[l] : r.max_abs;
      }
      r.finite = finite;
    }
    if (!r.finite) r.bad_dim = first_bad<T>(row, dim);
    return r;
  }
};

}  // namespace sampleattn::flash
