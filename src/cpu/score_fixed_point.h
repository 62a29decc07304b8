// Stage 1's column scores in fixed point (2^-kScoreBits units): each row chunk adds its own
// in-order f32 column sums to a sequence's totals with an integer add, so the totals do not
// depend on which worker ran which chunk or when, and stage 2 adds the heads of a set exactly.
//
// The bound: a column's sum over a chunk of n rows is at most n (each row's probabilities are at
// most 1), so a conversion is clamped to [0, n] and a column's total over all chunks of one head
// is at most the sequence's sampled rows, below 2^31 (token counts are int32): below 2^61 units,
// so the stage-1 adds cannot overflow int64. Adding the totals of several heads (stage 2) can in
// principle pass 2^63 (more than 4 heads of 2^31 sampled rows), so that add saturates.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace sampleattn::cpu {

constexpr int kScoreBits = 30;

// One chunk's column sum over `rows` rows, as fixed point. NaN, negative values and rows <= 0
// give 0; values above `rows` (and +inf) give rows (which valid inputs never reach).
inline int64_t column_sum_to_fixed(float sum, int rows) {
  if (!(sum > 0.f) || rows <= 0) return 0;
  const double value = std::fmin(static_cast<double>(sum), static_cast<double>(rows));
  return std::llrint(std::ldexp(value, kScoreBits));
}

// a + b for non-negative totals, saturating at INT64_MAX.
inline int64_t add_fixed(int64_t a, int64_t b) {
  int64_t sum = 0;
  return __builtin_add_overflow(a, b, &sum) ? std::numeric_limits<int64_t>::max() : sum;
}

inline float fixed_to_score(int64_t total) {
  return static_cast<float>(std::ldexp(static_cast<double>(total), -kScoreBits));
}

}  // namespace sampleattn::cpu
