// CPU feature detection (cpuid + xgetbv), done once per process.
#pragma once

#include <cstdint>

namespace sampleattn {

// Kernel tables in ascending order of capability. The dispatch chain is avx512 -> avx2 -> scalar.
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
// Parses "scalar", "avx2", "avx512"; returns false for anything else.
bool parse_isa(const char* text, Isa* isa);

struct CpuFeatures {
  bool avx2_fma = false;     // AVX2 + FMA3, with the OS saving YMM state
  bool avx512 = false;       // AVX-512 F/BW/DQ/VL, with the OS saving ZMM and opmask state
  bool avx512_bf16 = false;  // vdpbf16ps
  bool f16c = false;
};

// Detected once; thread-safe.
const CpuFeatures& cpu_features();

// Best ISA this CPU (and OS) supports.
Isa best_supported_isa();

}  // namespace sampleattn
