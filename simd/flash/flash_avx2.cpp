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
#include "simd/flash/look.h"
#include "simd/flash/pack.h"
#include "simd/flash/row_ops.h"
#include "simd/flash/scan.h"
#include "simd/flash/score_mods.h"

namespace sampleattn::avx2 {

using Arch = xsimd::fma3<xsimd::avx2>;
using V = flash::Vec<Arch>;
using Pack = flash::Pack<Arch>;
using Attend = flash::Attend<Arch>;
using RowOps = flash::RowOps<Arch>;
using ScoreMods = flash::ScoreMods<Arch>;
using Look = flash::Look<Arch>;

#include "simd/flash/vector_entry_points.inc"

}  // namespace sampleattn::avx2
