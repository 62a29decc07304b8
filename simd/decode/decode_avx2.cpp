// AVX2 + FMA3 instantiation of the decode kernel (simd/decode/decode.h): 8-float vectors.
// GCC 12 reports _mm512_undefined_ps() inside its own intrinsic headers as maybe-uninitialized
// (GCC bug 105593); the pragma must precede the first include of those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "simd/decode/decode.h"
#include "simd/decode/entry_points.h"

namespace sampleattn::avx2 {

using Decode = flash::Decode<xsimd::fma3<xsimd::avx2>>;

bool attend_rows(const AttendRowsArgs& args) { return Decode::attend_rows(args); }
size_t attend_rows_scratch_bytes(int m, int n) { return Decode::scratch_bytes(m, n); }

}  // namespace sampleattn::avx2
