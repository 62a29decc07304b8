// Scalar conversions between f32 and f16/bf16, for portable code (scalar kernels, reference,
// tests, tools). Not for per-ISA translation units: see core/dtype.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace sampleattn {

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, with overflow to inf and gradual underflow.
inline uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;             // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;            // >= 65520 rounds to inf
  if (abs < 0x38800000u) {                                  // below the smallest normal
    if (abs < 0x33000000u) return sign;                     // rounds to zero
    const uint32_t e = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

// OCP fp8 e4m3 ("e4m3fn"): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; subnormals down to
// 2^-9, no infinity, 0x7f and 0xff are NaN; the largest finite value is 448.
inline float fp8_e4m3_to_f32(uint8_t code) {
  const bool negative = (code & 0x80u) != 0;
  const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
  float a;
  if (exponent == 15 && mantissa == 7) {
    a = __builtin_nanf("");
  } else if (exponent == 0) {
    a = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    a = std::ldexp(1.f + static_cast<float>(mantissa) / 8.f, exponent - 7);
  }
  return negative ? -a : a;
}

// Round to nearest, ties to even, saturating: a finite value or infinity at or past 448 becomes
// +-448 (0x7e / 0xfe); NaN becomes 0x7f (0xff when negative).
inline uint8_t f32_to_fp8_e4m3(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
  const float a = std::fabs(x);
  if (std::isnan(a)) return sign | 0x7f;
  if (a >= 448.f) return sign | 0x7e;  // ties between 448 and the missing 480 included
  if (a < 0x1p-6f) {
    // Subnormal (or zero): multiples of 2^-9. a * 2^9 is exact, and nearbyint rounds ties to even
    // in the default rounding mode; 8 is the smallest normal, 0x08, as it should be.
    return sign | static_cast<uint8_t>(std::nearbyint(a * 0x1p9f));
  }
  // Normal: keep 3 of f32's 23 mantissa bits, ties to even. The exponent field sits right above the
  // mantissa, so a carry out of the mantissa moves to the next binade by itself.
  uint32_t abits;
  std::memcpy(&abits, &a, sizeof abits);
  const int exponent = static_cast<int>(abits >> 23) - 127;  // -6 .. 8 here
  const uint32_t mantissa = abits & 0x7fffff;
  uint32_t code = (static_cast<uint32_t>(exponent + 7) << 3) | (mantissa >> 20);
  const uint32_t rest = mantissa & 0xfffff, half = 0x80000;
  if (rest > half || (rest == half && (code & 1))) ++code;
  return sign | static_cast<uint8_t>(code);  // below 448: at most 0x7e
}

inline float load_scalar(const void* base, DType t, int64_t index) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(base)[index];
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(base)[index]);
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(base)[index]);
    case DType::kI8: return static_cast<float>(static_cast<const int8_t*>(base)[index]);
    case DType::kFP8: return fp8_e4m3_to_f32(static_cast<const uint8_t*>(base)[index]);
  }
  return 0.f;
}

inline void store_scalar(void* base, DType t, int64_t index, float value) {
  switch (t) {
    case DType::kF32: static_cast<float*>(base)[index] = value; break;
    case DType::kF16: static_cast<uint16_t*>(base)[index] = f32_to_f16(value); break;
    case DType::kBF16: static_cast<uint16_t*>(base)[index] = f32_to_bf16(value); break;
    case DType::kI8:  // quantized dtypes are K/V inputs only, never stored to
    case DType::kFP8: break;
  }
}

}  // namespace sampleattn
