// AVX-512 instantiation of the decode kernel (simd/decode/decode.h): 16-float vectors, the score
// pass's 16 accumulators reduced by a shuffle tree, and the integer products for int8 K/V.
// GCC 12 reports _mm512_undefined_ps() inside its own intrinsic headers as maybe-uninitialized
// (GCC bug 105593); the pragma must precede the first include of those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "simd/decode/decode.h"
#include "simd/decode/entry_points.h"

namespace sampleattn::avx512 {

using Arch = xsimd::avx512bw;

bool attend_rows(const AttendRowsArgs& args) { return flash::Decode<Arch>::attend_rows(args); }
size_t attend_rows_scratch_bytes(int m, int n) { return flash::Decode<Arch>::scratch_bytes(m, n); }
// With int8 K/V products in integers.
bool attend_rows_vnni(const AttendRowsArgs& args) { return flash::Decode<Arch, true>::attend_rows(args); }
size_t attend_rows_vnni_scratch_bytes(int m, int n) { return flash::Decode<Arch, true>::scratch_bytes(m, n); }

}  // namespace sampleattn::avx512
