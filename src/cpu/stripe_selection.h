// Stage 2 of SampleAttention: the fewest key columns whose score reaches a target
// (docs/ALGORITHM.md). Columns are ranked by score, ties by lower index, so the answer is unique;
// the whole ranking is kept, since validation (core/validation.h) may widen the mask with the
// next columns of it. The target and the count's clamp are core/mask.h's (selection_target,
// clamp_stripe_count), as on the device.
#pragma once

#include <cstdint>
#include <vector>

#include "core/mask.h"

namespace sampleattn::cpu {

struct SelectionRule {
  double target = 0;      // score the kept columns must reach
  int64_t sink_tokens = 0;  // the first keys, always kept (their score counts)
  int64_t min_stripes = 0;
  int64_t max_stripes = 0;  // 0 = no limit
};

struct Selection {
  std::vector<int32_t> ranked;  // the columns after the sinks, best first (score desc, index asc)
  StripeCount count;            // the sinks kept and the ranked columns kept (a prefix of `ranked`)
};

Selection rank_and_select(const float* scores, int64_t k_len, const SelectionRule& rule);
// The count `rule` keeps of a ranking rank_and_select made (sinks, then the ranked prefix whose
// scores reach the target, clamped): rank_and_select's count, for another target.
StripeCount count_ranked(const float* scores, const std::vector<int32_t>& ranked, int64_t k_len,
                         const SelectionRule& rule);

// The kept columns of rank_and_select, in ascending order.
std::vector<int32_t> select_stripes(const float* scores, int64_t k_len, const SelectionRule& rule);

}  // namespace sampleattn::cpu
