// CPU feature detection (cpuid + xgetbv), done once per process.
#pragma once

#include <cstdint>

#include "simd/isa.h"

namespace sampleattn {

struct CpuFeatures {
  bool avx2_fma = false;     // AVX2 + FMA3, with the OS saving YMM state
  bool avx512 = false;       // AVX-512 F/BW/DQ/VL, with the OS saving ZMM and opmask state
  bool avx512_bf16 = false;  // vdpbf16ps
  bool f16c = false;
};

// Detected once; thread-safe.
const CpuFeatures& cpu_features();

// Whether this CPU (and OS) runs the kernels of `isa`.
bool cpu_supports(Isa isa);

// Best ISA this CPU (and OS) supports: the last of the list it runs.
Isa best_supported_isa();

}  // namespace sampleattn
