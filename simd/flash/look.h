// The look's kernels on the f32 products (simd/kernels.h, LookPath): rows quantized to integers
// (look_quantize.h) kept as f32, K in the f32 path's panels, the products by the f32 path's
// score kernel (exact: integers below 2^24), then the scales. The AVX-512 table replaces the
// packing and the products with vpdpbusd where the CPU has VNNI (flash_avx512.cpp); row_max is
// every vector table's.
//
// Every function is a static member of a class template over the xsimd architecture, so each
// ISA's translation unit gets its own symbols. Include only from a per-ISA translation unit
// (flash_<isa>.cpp), at namespace scope, after <immintrin.h> and <xsimd/xsimd.hpp>.
#pragma once

#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "simd/flash/attend.h"
#include "simd/flash/look_quantize.h"
#include "simd/flash/pack.h"
#include "simd/flash/vec.h"
#include "simd/kernels.h"

namespace sampleattn::flash {

template <class Arch>
struct Look : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;
  using V::W;
  using V::P;
  using V::imin;
  using V::imax;
  using V::round_up;
  using V::with_dtype;
  using V::kNegInf;
  using Pk = Pack<Arch>;

  static constexpr int kMaxDim = 256;  // Pack::pack_panels' row buffer

  // Source row r of src dequantized to f32 (as the attention reads it), then quantized into out;
  // returns the row's scale.
  template <DType T>
  static float quantized_row(const RowSource& src, int r, int d, float* out) {
    alignas(64) float row[kMaxDim];
    Pk::template convert_row<T>(src, r, d, 1.0f, row);
    return look_quantize(row, d, out);
  }

  // Q: [m][d] f32 integers.
  static size_t q_bytes(int rows, int d) { return round_up(static_cast<size_t>(rows) * d * sizeof(float), 64); }
  static void pack_q(const RowSource& src, int m, int d, float scale, void* dst, float* scales) {
    float* q = static_cast<float*>(dst);
    with_dtype(src.dtype, [&](auto t) {
      for (int r = 0; r < m; ++r) {
        scales[r] = quantized_row<decltype(t)::value>(src, r, d, q + static_cast<int64_t>(r) * d) * scale;
      }
    });
  }

  // K: the f32 path's panels [ceil(n/P)][d][P] of integers; scales up to a whole panel.
  static size_t k_bytes(int rows, int d) { return Pk::packed_bytes(rows, d); }
  static void pack_k(const RowSource& src, int n, int d, float scale, void* dst, float* scales) {
    with_dtype(src.dtype, [&](auto t) {
      Pk::pack_panels(n, d, P, static_cast<uint32_t*>(dst),
                      [&](int j, float* row) { scales[j] = quantized_row<decltype(t)::value>(src, j, d, row) * scale; },
                      [&](int j) { Pk::prefetch_row(src, j, d); });
    });
    for (int j = n; j < static_cast<int>(round_up(static_cast<size_t>(n), P)); ++j) scales[j] = 0.f;
  }

  static void scores(const void* q, const float* q_scales, int m, const void* k, const float* k_scales, int n, int d,
                     float* s, int64_t lds) {
    Attend<Arch>::scores(q, m, k, n, d, s, lds);
    for (int r = 0; r < m; ++r) {
      float* row = s + r * lds;
      const B qs(q_scales[r]);
      for (int j = 0; j < n; j += W) {
        const int count = imin(W, n - j);
        V::store_n(row + j, (V::load_n(row + j, count, 0.f) * V::load_n(k_scales + j, count, 0.f)) * qs, count);
      }
    }
  }

  // The largest of row[a, b) (-inf when empty).
  static float range_max(const float* row, int a, int b) {
    B best(kNegInf);
    int j = a;
    for (; j + W <= b; j += W) best = xsimd::max(best, B::load_unaligned(row + j));
    if (j < b) best = xsimd::max(best, V::load_n(row + j, b - j, kNegInf));
    return V::hmax(best);
  }

  static void row_max(const float* s, int64_t lds, int m, int n, const int32_t* lo, const int32_t* mid,
                      const int32_t* hi, float* outer, float* inner) {
    for (int r = 0; r < m; ++r) {
      const float* row = s + r * lds;
      const int a = imax(lo[r], 0), c = imin(hi[r], n);
      const int b = imin(imax(mid[r], a), c);
      const float o = range_max(row, a, b), i = range_max(row, b, c);
      outer[r] = o > outer[r] ? o : outer[r];
      inner[r] = i > inner[r] ? i : inner[r];
    }
  }
};

}  // namespace sampleattn::flash
