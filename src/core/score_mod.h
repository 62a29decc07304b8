// The model's score variants (sampleattn_params: softcap, alibi_slopes, sinks; docs/ALGORITHM.md,
// "Model variants"), once, in the log2 units the kernels compute in (core/mask.h): a score is
// s2 = log2(e) * scale * q.k. Included by the CPU backend, the CUDA kernels and the statistics;
// only the test oracle (src/reference/) restates them in natural-log units, independently.
//
// In natural-log units, for the query at position p, key j, query head h:
//   s = scale * q.k;  s = softcap * tanh(s / softcap) (softcap > 0);  s -= slope[h] * |p - j|;
//   o = sum_j exp(s_j) v_j / (sum_j exp(s_j) + exp(sink[h])).
// Multiplying by log2(e) turns each into the same form on s2: the cap becomes softcap * log2(e),
// the slope slope * log2(e), the sink sink * log2(e).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/mask.h"

namespace sampleattn {

// One query head's variants, in log2 units. All zero (and sink_log2 = -inf) = plain attention.
struct ScoreMod {
  float softcap_log2 = 0.f;  // softcap * log2(e); 0 = no cap
  float alibi_log2 = 0.f;    // slope * log2(e); 0 = no bias
  float sink_log2 = -INFINITY;  // sink * log2(e); -inf = no sink

  SAMPLEATTN_HOST_DEVICE bool has_softcap() const { return softcap_log2 > 0.f; }
  SAMPLEATTN_HOST_DEVICE bool has_alibi() const { return alibi_log2 != 0.f; }
  SAMPLEATTN_HOST_DEVICE bool has_sink() const { return sink_log2 > -INFINITY; }
  // Whether the scores themselves change (the sink only enters the denominator).
  SAMPLEATTN_HOST_DEVICE bool modifies_scores() const { return has_softcap() || has_alibi(); }
};

// The capped score: cap * tanh(s2 / cap) (cap = softcap_log2 > 0), else s2.
SAMPLEATTN_HOST_DEVICE inline float softcapped(float s2, float cap) { return cap > 0.f ? cap * tanhf(s2 / cap) : s2; }

// The ALiBi bias of key j for the query at p: -slope * |p - j| (slope = alibi_log2).
SAMPLEATTN_HOST_DEVICE inline float alibi_bias(float slope, int64_t p, int64_t j) {
  return -slope * static_cast<float>(p >= j ? p - j : j - p);
}

// The score the softmax sees: the capped score plus the bias.
SAMPLEATTN_HOST_DEVICE inline float modified_score(const ScoreMod& m, float s2, int64_t p, int64_t j) {
  return softcapped(s2, m.softcap_log2) + alibi_bias(m.alibi_log2, p, j);
}

// A row's denominator with the sink: row_sum (the sum of exp2(s2 - row_max) over its keys) plus
// exp2(sink - row_max). A row that saw no key (row_max = -inf) keeps its zero sum: its output
// is 0 and its lse -inf, sink or not.
SAMPLEATTN_HOST_DEVICE inline float sum_with_sink(const ScoreMod& m, float row_max, float row_sum) {
  if (!m.has_sink() || !(row_max > -INFINITY)) return row_sum;
  return row_sum + exp2f(m.sink_log2 - row_max);
}

}  // namespace sampleattn
