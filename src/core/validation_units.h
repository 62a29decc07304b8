// The units of validation's per-bucket masses (core/validation.h, docs/ALGORITHM.md
// "Validation"): constants only, so that the per-ISA kernel translation units (simd/) can include
// it (no inline function to be compiled there with -m flags).
#pragma once

#include <cstdint>

namespace sampleattn {

// Bucket ids of a column in a validation layout: always kept (a sink), a ranked bucket 1 .. nb,
// or beyond the cost cap (never a stripe).
inline constexpr uint8_t kBucketKept = 0;
inline constexpr uint8_t kBucketUnused = 255;

// A validation row's masses per bucket are sums of its probabilities in fixed point: each
// probability rounded to the nearest 1 / kValidationMassOne, added as integers (uint32: a row's
// mass is at most 1), so that no order of the additions changes them: the CPU's kernel tables and
// the CUDA backend's blocks add them in their own orders, and a sharded call over its processes.
inline constexpr double kValidationMassOne = 2147483648.0;  // 2^31

}  // namespace sampleattn
