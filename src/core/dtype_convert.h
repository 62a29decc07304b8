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

// OCP fp8 e4m3 ("e4m3fn"): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; subnormals, no
// infinity, 0x7f and 0xff are NaN; the largest finite value is 448.
inline float fp8_e4m3_to_f32(uint8_t b) {
  const float sign = (b & 0x80u) ? -1.f : 1.f;
  const int e = (b >> 3) & 0xf, m = b & 0x7;
  if (e == 0xf && m == 0x7) return __builtin_nanf("");
  if (e == 0) return sign * static_cast<float>(m) * 0x1p-9f;
  return sign * (1.f + static_cast<float>(m) * 0.125f) * __builtin_ldexpf(1.f, e - 7);
}

// Round to nearest even; beyond 448 (after rounding) saturates to +-448, NaN stays NaN.
inline uint8_t f32_to_fp8_e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80u : 0u;
  if (std::isnan(f)) return sign | 0x7fu;
  const float a = std::fabs(f);
  if (a >= 464.f) return sign | 0x7eu;  // 464 is the midpoint of 448 and the next step (480)
  // Candidates are k * 2^(e-3) for the binade of a (subnormal step 2^-9 below 2^-6).
  int exp2 = 0;
  std::frexp(a, &exp2);  // a = f * 2^exp2, f in [0.5, 1)
  const int e = exp2 - 1 < -6 ? -6 : exp2 - 1;  // unbiased exponent of the binade (subnormals: -6)
  const float step = std::ldexp(1.f, e - 3);
  const float q = std::nearbyint(a / step);  // round to nearest even (default rounding mode)
  const float v = q * step;
  if (v == 0.f) return sign;
  // Re-encode v exactly.
  int ve = 0;
  std::frexp(v, &ve);
  const int be = ve - 1;  // v in [2^be, 2^(be+1))
  if (be < -6) return static_cast<uint8_t>(sign | static_cast<uint8_t>(v / 0x1p-9f));  // subnormal: m * 2^-9
  const int mant = static_cast<int>(v / std::ldexp(1.f, be) * 8.f) - 8;
  return static_cast<uint8_t>(sign | ((be + 7) << 3) | mant);
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
