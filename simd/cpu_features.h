// CPU feature detection (cpuid + xgetbv), done once per process.
#pragma once

#include <cstdint>

#include "simd/isa.h"

namespace sampleattn {

struct CpuFeatures {
  bool avx2_fma = false;     // AVX2 + FMA3, with the OS saving YMM state
  bool avx512 = false;       // AVX-512 F/BW/DQ/VL, with the OS saving ZMM and opmask state
  bool avx512_bf16 = false;  // vdpbf16ps
  bool avx512_vnni = false;  // vpdpwssd (int16 dot products)
  bool f16c = false;
  // AMX tiles (amx_tile + amx_bf16, amx_fp16), with the OS enabling the tile state in XCR0.
  bool amx_bf16 = false;
  bool amx_fp16 = false;
  // Linux granted this process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once at
  // detection when amx_bf16 is set): the amx table needs it, or the first tile load faults.
  bool amx_permitted = false;
  // The CPU's vendor is AMD: vdpbf16ps runs at the f32 FMA's rate there (Zen 4, Zen 5), so bf16
  // products are the faster path; on Intel parts it is slower than f32 FMA (docs/KERNELS.md).
  bool amd = false;
};

// Detected once; thread-safe.
const CpuFeatures& cpu_features();

// Whether this CPU (and OS) runs the kernels of `isa`.
bool cpu_supports(Isa isa);

// Best ISA this CPU (and OS) supports: the last of the list it runs.
Isa best_supported_isa();

// The processor's brand string (cpuid 0x80000002-4), trimmed, e.g. "AMD EPYC 7B13"; "" if none.
const char* cpu_model_name();

}  // namespace sampleattn
