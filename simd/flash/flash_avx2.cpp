// AVX2 + FMA3 instantiation of the flash kernels (flash_kernels.h): 8-float vectors, 6-row by
// 16-key register blocks. No bf16 dot product on this ISA, so the bf16 path is absent.
// GCC 12 reports _mm512_undefined_ps() inside its own intrinsic headers as maybe-uninitialized
// (GCC bug 105593); the pragma must precede the first include of those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "simd/kernels.h"
#include "flash_kernels.h"

namespace sampleattn {
namespace avx2 {
namespace {

using Kernels = flash::FlashKernels<xsimd::fma3<xsimd::avx2>>;

const KernelTable kTable = {
    Isa::kAvx2,
    "avx2",
    /*block_rows=*/256,
    /*key_tile=*/256,
    FlashPath{4, Kernels::packed_bytes, Kernels::scratch_bytes, Kernels::pack_q, Kernels::pack_k,
              Kernels::pack_v, Kernels::attend, Kernels::scores},
    FlashPath{},
    /*has_bf16=*/false,
    Kernels::row_stats,
    Kernels::accumulate_columns,
    Kernels::store_rows,
};

}  // namespace
}  // namespace avx2

const KernelTable* avx2_kernel_table() { return &avx2::kTable; }

}  // namespace sampleattn
