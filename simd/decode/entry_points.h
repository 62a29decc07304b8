// The decode family's entry points (simd/decode/decode.h), one set per vector ISA, each in a
// namespace named for the ISA and defined in decode_<isa>.cpp; simd/kernel_config.cpp puts them in
// the kernel tables (the scalar table's decode step is the flash family's, flash_scalar.cpp). A
// family of its own, so that its units compile beside the flash family's (on the CI's two cores
// the AVX-512 flash unit, with the decode kernel in it, was the builds' longest step).
#pragma once

#include "simd/kernels.h"

namespace sampleattn::avx2 {
AttendRowsFn attend_rows;
ScratchBytesFn attend_rows_scratch_bytes;
}  // namespace sampleattn::avx2

// Plus the step with integer products for int8 K/V (vpdpwssd; only when the CPU has AVX512_VNNI).
namespace sampleattn::avx512 {
AttendRowsFn attend_rows;
ScratchBytesFn attend_rows_scratch_bytes;
AttendRowsFn attend_rows_vnni;
ScratchBytesFn attend_rows_vnni_scratch_bytes;
}  // namespace sampleattn::avx512
