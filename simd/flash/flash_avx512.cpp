// AVX-512 instantiation of the flash kernels (simd/flash/*.h): 16-float vectors, 14-row by
// 32-key register blocks; plus the bf16 path, written here with intrinsics because xsimd 8.1 has
// no vdpbf16ps.
//
// bf16 path layouts (bf16 = uint16_t, pairs of bf16 are the 32-bit units vdpbf16ps multiplies):
//   Q: [m][d] bf16 of q * scale (a pair along d is one broadcast 32-bit element).
//   K: [ceil(n/32)][d/2][32][2] panels: for each pair of dimensions, 32 keys, each key's pair
//      adjacent, so one zmm holds 16 keys x 2 dimensions. Keys past n are zero.
//   V: column blocks of width 32 (the last one 16 when dv % 32 != 0): block at x0 holds
//      [ceil(n/32)*32 / 2][width][2]: for each pair of keys, width columns, each column's pair
//      adjacent. Keys past n are zero.
//   P: bf16, round to nearest even from the f32 probabilities; the row sum adds the rounded values
//      so numerator and denominator see the same weights.
// GCC 12 reports _mm512_undefined_ps() inside its own intrinsic headers as maybe-uninitialized
// (GCC bug 105593); the pragma must precede the first include of those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include <xsimd/xsimd.hpp>

#include "simd/flash/attend.h"
#include "simd/flash/entry_points.h"
#include "simd/flash/look.h"
#include "simd/flash/look_layout.h"
#include "simd/flash/pack.h"
#include "simd/flash/row_ops.h"
#include "simd/flash/scan.h"
#include "simd/flash/score_mods.h"
#include "simd/flash/softmax.h"
#include "simd/flash/vec.h"
#include "simd/flash/vnni.h"

namespace sampleattn::avx512 {
namespace {

using Arch = xsimd::avx512bw;
using V = flash::Vec<Arch>;
using Pack = flash::Pack<Arch>;
using Attend = flash::Attend<Arch>;
using RowOps = flash::RowOps<Arch>;
using Softmax = flash::Softmax<Arch>;
using ScoreMods = flash::ScoreMods<Arch>;
using Look = flash::Look<Arch>;
using B = V::B;
constexpr int kMaxRows = V::kMaxRows;
constexpr int kPanel = 32;  // keys per K panel, columns per V block

__m256i to_bf16(__m512 v) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)); }
__m512 from_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <DType T>
void bf16_row(const RowSource& src, int r, int d, float scale, uint16_t* dst) {
  const int64_t base = src.offsets ? src.offsets[r] : r * src.row_stride;
  if constexpr (T == DType::kBF16) {
    if (scale == 1.0f) {  // already the packed values: a copy (no round trip through f32)
      std::memcpy(dst, static_cast<const uint16_t*>(src.base) + base, sizeof(uint16_t) * d);
      return;
    }
  }
  const __m512 s = _mm512_set1_ps(scale * Pack::row_factor<T>(src, r));
  for (int c = 0; c < d; c += 16) {
    const __m512 x = _mm512_mul_ps(Pack::load_src<T>(src.base, base + c), s);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c), to_bf16(x));
  }
}

}  // namespace

size_t bf16_packed_bytes(int rows, int d) {
  return V::round_up(V::round_up(static_cast<size_t>(rows), kPanel) * d * sizeof(uint16_t), 64);
}
// f32 scores then bf16 probabilities of a row block.
size_t bf16_scratch_bytes(int m, int n) {
  const size_t rows = static_cast<size_t>(V::imin(V::imax(m, 1), kMaxRows));
  const size_t n_pad = V::round_up(static_cast<size_t>(n), kPanel);
  return V::round_up(rows * n_pad * sizeof(float), 64) +
         V::round_up(rows * n_pad * sizeof(uint16_t), 64);
}

void bf16_pack_q(const RowSource& src, int m, int d, float scale, void* dst) {
  uint16_t* q = static_cast<uint16_t*>(dst);
  V::with_dtype(src.dtype, [&](auto t) {
    for (int r = 0; r < V::imin(m, Pack::kPrefetchRows); ++r) Pack::prefetch_row(src, r, d);
    for (int r = 0; r < m; ++r) {
      if (r + Pack::kPrefetchRows < m) Pack::prefetch_row(src, r + Pack::kPrefetchRows, d);
      bf16_row<decltype(t)::value>(src, r, d, scale, q + static_cast<int64_t>(r) * d);
    }
  });
}

void bf16_pack_k(const RowSource& src, int n, int d, void* dst) {
  V::with_dtype(src.dtype, [&](auto t) {
    Pack::pack_panels(n, d / 2, kPanel, static_cast<uint32_t*>(dst), [&](int j, float* row) {
      bf16_row<decltype(t)::value>(src, j, d, 1.0f, reinterpret_cast<uint16_t*>(row));
    }, [&](int j) { Pack::prefetch_row(src, j, d); });
  });
}

void bf16_pack_v(const RowSource& src, int n, int d, void* dst) {
  uint16_t* v = static_cast<uint16_t*>(dst);
  const int64_t n_pad = static_cast<int64_t>(V::round_up(static_cast<size_t>(n), kPanel));
  alignas(64) uint16_t even[256];
  alignas(64) uint16_t odd[256];
  // Interleaves 16 columns of two rows: lane 2i <- even[i], lane 2i+1 <- odd[i].
  alignas(64) uint16_t order[32];
  for (int i = 0; i < 16; ++i) {
    order[2 * i] = static_cast<uint16_t>(i);
    order[2 * i + 1] = static_cast<uint16_t>(16 + i);
  }
  const __m512i idx = _mm512_load_si512(order);
  V::with_dtype(src.dtype, [&](auto t) {
    constexpr DType T = decltype(t)::value;
    for (int j = 0; j < V::imin(n, Pack::kPrefetchRows); ++j) Pack::prefetch_row(src, j, d);
    for (int u = 0; 2 * u < n; ++u) {
      for (int j = 2 * u + Pack::kPrefetchRows; j < V::imin(n, 2 * u + Pack::kPrefetchRows + 2); ++j) {
        Pack::prefetch_row(src, j, d);
      }
      bf16_row<T>(src, 2 * u, d, 1.0f, even);
      if (2 * u + 1 < n) {
        bf16_row<T>(src, 2 * u + 1, d, 1.0f, odd);
      } else {
        std::memset(odd, 0, sizeof(uint16_t) * d);
      }
      for (int x0 = 0; x0 < d; x0 += kPanel) {
        const int width = V::imin(kPanel, d - x0);
        uint16_t* out = v + x0 * n_pad + static_cast<int64_t>(u) * width * 2;
        for (int c = 0; c < width; c += 16) {
          const __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i*>(even + x0 + c));
          const __m256i b = _mm256_load_si256(reinterpret_cast<const __m256i*>(odd + x0 + c));
          const __m512i ab = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
          _mm512_storeu_si512(out + 2 * c, _mm512_permutexvar_epi16(idx, ab));
        }
      }
    }
  });
  // The pairs past the last key, up to the panel's end, are zero: the amx table's tile products
  // read whole 32-key steps (P is 0 there, and 0 x a stale NaN would still be NaN).
  const int64_t pairs = (n + 1) / 2, pairs_pad = n_pad / 2;
  for (int x0 = 0; x0 < d; x0 += kPanel) {
    const int width = V::imin(kPanel, d - x0);
    std::memset(v + x0 * n_pad + pairs * width * 2, 0, sizeof(uint16_t) * (pairs_pad - pairs) * width * 2);
  }
}

namespace {

__m512 dot(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
}

// s[r][0, 32) = q_r . panel for R rows of bf16 q (pairs at q + r * d / 2).
template <int R>
void bf16_qk_block(const uint32_t* q, int d, const uint32_t* kp, float* s, int64_t lds, int cols,
                   float scale = 1.0f) {
  __m512 acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const int half = d / 2;
  for (int c = 0; c < half; ++c) {
    const __m512i k0 = _mm512_loadu_si512(kp + c * kPanel);
    const __m512i k1 = _mm512_loadu_si512(kp + c * kPanel + 16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(q[r * half + c]));
      acc[r][0] = dot(acc[r][0], a, k0);
      acc[r][1] = dot(acc[r][1], a, k1);
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  // Unrolled: a rolled loop indexes acc, which puts it on the stack (microkernels.h, qk_block).
  if (cols == kPanel) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_ps(s + r * lds, _mm512_mul_ps(acc[r][0], sc));
      _mm512_storeu_ps(s + r * lds + 16, _mm512_mul_ps(acc[r][1], sc));
    }
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      V::store_n(s + r * lds, B(_mm512_mul_ps(acc[r][0], sc)), cols);
      V::store_n(s + r * lds + 16, B(_mm512_mul_ps(acc[r][1], sc)), cols - 16);
    }
  }
}

// acc rows = acc * corr + p . V for `pairs` key pairs; p rows are bf16 pairs at p + r * lds / 2.
template <int R, int NC>
void bf16_pv_block(const uint32_t* p, int64_t lds, int pairs, const uint16_t* vp, int width,
                   float* acc, int ldacc, const float* corr, const bool* active) {
  __m512 o[R][NC];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int k = 0; k < NC; ++k) o[r][k] = _mm512_setzero_ps();
  const int64_t ldp = lds / 2;
  for (int u = 0; u < pairs; ++u) {
    __m512i v[NC];
#pragma GCC unroll 2
    for (int k = 0; k < NC; ++k) v[k] = _mm512_loadu_si512(vp + (static_cast<int64_t>(u) * width + k * 16) * 2);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(p[r * ldp + u]));
#pragma GCC unroll 2
      for (int k = 0; k < NC; ++k) o[r][k] = dot(o[r][k], a, v[k]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    if (!active[r]) continue;
    float* out = acc + static_cast<int64_t>(r) * ldacc;
    const __m512 c = _mm512_set1_ps(corr[r]);
#pragma GCC unroll 2
    for (int k = 0; k < NC; ++k) _mm512_storeu_ps(out + k * 16, _mm512_fmadd_ps(_mm512_loadu_ps(out + k * 16), c, o[r][k]));
  }
}

template <int R>
void bf16_attend_block(const AttendTileArgs& a, int r0, float* s, uint16_t* pb, int64_t lds) {
  const V::BlockSpans b = V::block_spans(a.lo, a.hi, r0, R, a.n);
  if (b.jlo >= b.jhi) return;
  const int d = a.d;
  const uint32_t* q = static_cast<const uint32_t*>(a.q) + static_cast<int64_t>(r0) * (d / 2);
  const uint32_t* k = static_cast<const uint32_t*>(a.k);
  for (int p0 = b.jlo / kPanel * kPanel; p0 < b.jhi; p0 += kPanel) {
    bf16_qk_block<R>(q, d, k + static_cast<int64_t>(p0) * (d / 2), s + p0, lds, kPanel);
  }
  // The deferred scale (kernels.h): folded into the softmax, or applied first when the score
  // variants need the scaled scores.
  float softmax_scale = a.qk_scale;
  if (ScoreMods::any(a.mod)) {
    if (a.qk_scale != 1.0f) Softmax::scale_rows(s, lds, R, b.lo, b.hi, a.qk_scale);
    softmax_scale = 1.0f;
    ScoreMods::modify_rows(s, lds, a.mod, r0, R, b.lo, b.hi, a.n);
  }

  float corr[kMaxRows];
  const int ja = b.jlo / 16 * 16;
  const int jb = static_cast<int>(V::round_up(static_cast<size_t>(b.jhi), 16));
  Softmax::softmax_rows(s, lds, R, b, ja, jb, a.row_max + r0, a.row_sum + r0, corr, [&](int r, int j, B p) {
    const __m256i h = to_bf16(p);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pb + r * lds + j), h);
    return B(from_bf16(h));
  }, softmax_scale);

  const int64_t n_pad = lds;
  const uint16_t* v = static_cast<const uint16_t*>(a.v);
  const int dv = a.dv;
  float* acc = a.acc + static_cast<int64_t>(r0) * dv;
  const int u0 = b.jlo / 2, u1 = (b.jhi + 1) / 2;
  const uint32_t* p = reinterpret_cast<const uint32_t*>(pb) + u0;
  for (int x0 = 0; x0 < dv; x0 += kPanel) {
    const int width = V::imin(kPanel, dv - x0);
    const uint16_t* vp = v + x0 * n_pad + static_cast<int64_t>(u0) * width * 2;
    if (width == kPanel) {
      bf16_pv_block<R, 2>(p, lds, u1 - u0, vp, width, acc + x0, dv, corr, b.active);
    } else {
      bf16_pv_block<R, 1>(p, lds, u1 - u0, vp, width, acc + x0, dv, corr, b.active);
    }
  }
}

}  // namespace

void bf16_attend(const AttendTileArgs& a) {
  if (a.m <= 0 || a.n <= 0) return;
  const int64_t lds = static_cast<int64_t>(V::round_up(static_cast<size_t>(a.n), kPanel));
  const int rows_max = V::imin(a.m, kMaxRows);
  float* s = static_cast<float*>(a.scratch);
  uint16_t* pb = reinterpret_cast<uint16_t*>(
      static_cast<char*>(a.scratch) + V::round_up(static_cast<size_t>(rows_max) * lds * sizeof(float), 64));
  V::for_row_blocks(a.m, [&](int r0, int rows) {
    V::with_rows(rows, [&](auto R) { bf16_attend_block<decltype(R)::value>(a, r0, s, pb, lds); });
  });
}

void bf16_scores(const void* qv, int m, const void* kv, int n, int d, float* s, int64_t lds, float qk_scale) {
  const uint32_t* q = static_cast<const uint32_t*>(qv);
  const uint32_t* k = static_cast<const uint32_t*>(kv);
  V::for_row_blocks(m, [&](int r0, int rows) {
    V::with_rows(rows, [&](auto R) {
      for (int p0 = 0; p0 < n; p0 += kPanel) {
        bf16_qk_block<decltype(R)::value>(q + static_cast<int64_t>(r0) * (d / 2), d, k + static_cast<int64_t>(p0) * (d / 2),
                                          s + r0 * lds + p0, lds, V::imin(kPanel, n - p0), qk_scale);
      }
    });
  });
}

#include "simd/flash/vector_entry_points.inc"

// The look's products on vpdpbusd (simd/kernels.h, LookPath; the integers of look_quantize.h),
// on the layouts of look_layout.h.
namespace {

namespace layout = flash::look_layout;
constexpr int kLookGroup = layout::kGroup;
constexpr int kLookKeys = layout::kStep;
constexpr int kLookRows = 8;  // rows a kernel step (8 x 2 accumulators)

template <int R>
void look_block_vnni(const int8_t* q, const int32_t* fix, const float* qs, const uint8_t* k, const float* ks, int n,
                     int d, float* s, int64_t lds) {
  const int steps = d / 4;
  for (int j0 = 0; j0 < n; j0 += kLookKeys) {
    __m512i acc[R][2];
    for (auto& a : acc) a[0] = a[1] = _mm512_setzero_si512();
    const auto* k0 = reinterpret_cast<const __m512i*>(k + static_cast<size_t>(j0) * d);
    const auto* k1 = k0 + steps;
    for (int c = 0; c < steps; ++c) {
      const __m512i a = _mm512_loadu_si512(k0 + c), b = _mm512_loadu_si512(k1 + c);
      for (int r = 0; r < R; ++r) {
        int32_t q4;
        std::memcpy(&q4, q + r * d + 4 * c, sizeof q4);
        const __m512i qv = _mm512_set1_epi32(q4);
        acc[r][0] = flash::vnni::dpbusd(acc[r][0], a, qv);
        acc[r][1] = flash::vnni::dpbusd(acc[r][1], b, qv);
      }
    }
    const int left = n - j0;
    const __mmask16 m0 = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    const __mmask16 m1 = left >= 32 ? __mmask16(0xffff) : (left <= 16 ? __mmask16(0) : static_cast<__mmask16>((1u << (left - 16)) - 1));
    const __m512 s0 = _mm512_loadu_ps(ks + j0), s1 = _mm512_loadu_ps(ks + j0 + kLookGroup);
    for (int r = 0; r < R; ++r) {
      const __m512i f = _mm512_set1_epi32(fix[r]);
      const __m512 scale = _mm512_set1_ps(qs[r]);
      const __m512 e0 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][0], f)), s0), scale);
      const __m512 e1 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][1], f)), s1), scale);
      _mm512_mask_storeu_ps(s + r * lds + j0, m0, e0);
      _mm512_mask_storeu_ps(s + r * lds + j0 + kLookGroup, m1, e1);
    }
  }
}

template <int R = kLookRows>
void look_rows_vnni(int rows, const int8_t* q, const int32_t* fix, const float* qs, const uint8_t* k, const float* ks,
                    int n, int d, float* s, int64_t lds) {
  if constexpr (R >= 1) {
    if (rows == R) {
      look_block_vnni<R>(q, fix, qs, k, ks, n, d, s, lds);
    } else {
      look_rows_vnni<R - 1>(rows, q, fix, qs, k, ks, n, d, s, lds);
    }
  }
}

// look_quantize (look_quantize.h) on 16 values at a time: the same integers and scale for finite
// values (the largest magnitude is exact in any order; each value's product and its rounding to
// the nearest even integer are the same IEEE operations; the clamp is the same), which
// LookScoresAreTheIntegerProducts checks against the scalar definition. d a multiple of 16; store
// (i, v) receives the integers of values [i, i + 16) as int32.
template <class Store>
float look_quantize_vnni(const float* x, int d, Store store) {
  __m512 top = _mm512_setzero_ps();
  for (int i = 0; i < d; i += 16) top = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), top);
  const float amax = _mm512_reduce_max_ps(top);
  if (!(amax > 0.f) || !std::isfinite(amax)) {
    for (int i = 0; i < d; i += 16) store(i, _mm512_setzero_si512());
    return 0.f;
  }
  const __m512 inv = _mm512_set1_ps(127.f / amax), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  for (int i = 0; i < d; i += 16) {
    const __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    store(i, _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi)));
  }
  return amax / 127.f;
}

}  // namespace

size_t look_q_bytes_vnni(int rows, int d) { return layout::q_bytes(rows, d); }
size_t look_k_bytes_vnni(int rows, int d) { return layout::k_bytes(rows, d); }

void look_pack_q_vnni(const RowSource& src, int m, int d, float scale, void* dst, float* scales) {
  int8_t* q = static_cast<int8_t*>(dst);
  int32_t* fix = reinterpret_cast<int32_t*>(static_cast<char*>(dst) + layout::fix_offset(m, d));
  alignas(64) float row[Look::kMaxDim];
  V::with_dtype(src.dtype, [&](auto t) {
    for (int r = 0; r < m; ++r) {
      Pack::convert_row<decltype(t)::value>(src, r, d, 1.0f, row);
      __m512i sum = _mm512_setzero_si512();
      int8_t* out = q + static_cast<int64_t>(r) * d;
      scales[r] = look_quantize_vnni(row, d, [&](int i, __m512i v) {
        sum = _mm512_add_epi32(sum, v);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(v));
      }) * scale;
      fix[r] = 128 * _mm512_reduce_add_epi32(sum);
    }
  });
}

void look_pack_k_vnni(const RowSource& src, int n, int d, float scale, void* dst, float* scales) {
  uint8_t* k = static_cast<uint8_t*>(dst);
  alignas(64) float row[Look::kMaxDim];
  alignas(64) uint8_t keys[kLookGroup][Look::kMaxDim];  // a group's keys, u8, row by row
  const int n_pad = static_cast<int>(V::round_up(static_cast<size_t>(n), kLookKeys));
  const __m512i bias = _mm512_set1_epi32(128);
  const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(Look::kMaxDim));
  V::with_dtype(src.dtype, [&](auto t) {
    for (int j0 = 0; j0 < n_pad; j0 += kLookGroup) {
      for (int i = 0; i < kLookGroup; ++i) {
        const int j = j0 + i;
        if (j >= n) {
          scales[j] = 0.f;
          std::memset(keys[i], 128, static_cast<size_t>(d));
          continue;
        }
        Pack::convert_row<decltype(t)::value>(src, j, d, 1.0f, row);
        uint8_t* out = keys[i];
        scales[j] = look_quantize_vnni(row, d, [&](int c, __m512i v) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm512_cvtepi32_epi8(_mm512_add_epi32(v, bias)));
        }) * scale;
      }
      // The group's layout: 4 dimensions of each of its 16 keys a 64-byte line.
      uint8_t* group = k + static_cast<size_t>(j0) * d;
      for (int c = 0; c < d / 4; ++c) {
        _mm512_storeu_si512(group + c * 64, _mm512_i32gather_epi32(rows, keys[0] + 4 * c, 1));
      }
    }
  });
}

void look_scores_vnni(const void* qv, const float* q_scales, int m, const void* kv, const float* k_scales, int n,
                      int d, float* s, int64_t lds) {
  const int8_t* q = static_cast<const int8_t*>(qv);
  const int32_t* fix = reinterpret_cast<const int32_t*>(static_cast<const char*>(qv) + layout::fix_offset(m, d));
  const uint8_t* k = static_cast<const uint8_t*>(kv);
  for (int r0 = 0; r0 < m; r0 += kLookRows) {
    const int rows = V::imin(kLookRows, m - r0);
    look_rows_vnni(rows, q + static_cast<int64_t>(r0) * d, fix + r0, q_scales + r0, k, k_scales, n, d,
                   s + r0 * lds, lds);
  }
}

}  // namespace sampleattn::avx512
