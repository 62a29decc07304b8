// Element types. Scalar conversions live in core/dtype_convert.h, which per-ISA kernel
// translation units must not include (an inline function compiled there with -mavx512 flags
// could be the copy the linker keeps for everyone).
#pragma once

#include <cstdint>

#include "sampleattn/sampleattn.h"

namespace sampleattn {

// kI8 and kFP8 (e4m3fn) are the quantized K/V of a KV cache: each row comes with a scale.
enum class DType : int {
  kF32 = SAMPLEATTN_DTYPE_F32,
  kF16 = SAMPLEATTN_DTYPE_F16,
  kBF16 = SAMPLEATTN_DTYPE_BF16,
  kI8 = SAMPLEATTN_DTYPE_I8,
  kFP8 = SAMPLEATTN_DTYPE_FP8_E4M3
};

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI8: return "int8";
    case DType::kFP8: return "fp8_e4m3";
  }
  return "?";
}

constexpr int dtype_size(DType t) {
  return t == DType::kF32 ? 4 : (t == DType::kI8 || t == DType::kFP8) ? 1 : 2;
}

// Whether rows of this dtype carry a scale (quantized K/V).
constexpr bool dtype_quantized(DType t) { return t == DType::kI8 || t == DType::kFP8; }

}  // namespace sampleattn
