// Element types. Scalar conversions live in core/dtype_convert.h, which per-ISA kernel
// translation units must not include (an inline function compiled there with -mavx512 flags
// could be the copy the linker keeps for everyone).
#pragma once

#include <cstdint>

#include "sampleattn/sampleattn.h"

namespace sampleattn {

enum class DType : int { kF32 = SAMPLEATTN_DTYPE_F32, kF16 = SAMPLEATTN_DTYPE_F16, kBF16 = SAMPLEATTN_DTYPE_BF16 };

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
  }
  return "?";
}

constexpr int dtype_size(DType t) { return t == DType::kF32 ? 4 : 2; }

}  // namespace sampleattn
