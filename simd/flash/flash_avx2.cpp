// AVX2 + FMA3 instantiation of the flash kernels (simd/flash/*.h): 8-float vectors, 6-row by
// 16-key register blocks. No bf16 dot product on this ISA, so there is no bf16 path.
// GCC 12 reports _mm512_undefined_ps() inside its own intrinsic headers as maybe-uninitialized
// (GCC bug 105593); the pragma must precede the first include of those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "simd/flash/attend.h"
#include "simd/flash/entry_points.h"
#include "simd/flash/pack.h"
#include "simd/flash/row_ops.h"

namespace sampleattn::avx2 {

using Arch = xsimd::fma3<xsimd::avx2>;
using V = flash::Vec<Arch>;
using Pack = flash::Pack<Arch>;
using Attend = flash::Attend<Arch>;
using RowOps = flash::RowOps<Arch>;

size_t f32_packed_bytes(int rows, int d) { return Pack::packed_bytes(rows, d); }
size_t f32_scratch_bytes(int m, int n) { return Attend::scratch_bytes(m, n); }
void f32_pack_q(const RowSource& src, int m, int d, float scale, void* dst) { Pack::pack_q(src, m, d, scale, dst); }
void f32_pack_k(const RowSource& src, int n, int d, void* dst) { Pack::pack_k(src, n, d, dst); }
void f32_pack_v(const RowSource& src, int n, int d, void* dst) { Pack::pack_v(src, n, d, dst); }
void f32_attend(const AttendTileArgs& args) { Attend::attend(args); }
void f32_scores(const void* q, int m, const void* k, int n, int d, float* s, int64_t lds) {
  Attend::scores(q, m, k, n, d, s, lds);
}

void row_stats(const float* s, int64_t lds, int m, int n, const int32_t* lo, const int32_t* hi, float* row_max,
               float* row_sum) {
  RowOps::row_stats(s, lds, m, n, lo, hi, row_max, row_sum);
}
void accumulate_columns(const float* s, int64_t lds, int m, int n, const int32_t* lo, const int32_t* hi,
                        const float* row_max, const float* row_scale, float* col_sum) {
  RowOps::accumulate_columns(s, lds, m, n, lo, hi, row_max, row_scale, col_sum);
}
void store_rows(const float* acc, int m, int d, const float* row_scale, void* dst, DType dtype, int64_t row_stride) {
  RowOps::store_rows(acc, m, d, row_scale, dst, dtype, row_stride);
}

}  // namespace sampleattn::avx2
