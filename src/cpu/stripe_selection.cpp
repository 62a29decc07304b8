#include "cpu/stripe_selection.h"

#include <algorithm>

namespace sampleattn::cpu {

StripeCount count_ranked(const float* scores, const std::vector<int32_t>& ranked, int64_t k_len,
                         const SelectionRule& rule) {
  const int64_t sinks = sink_count(rule.sink_tokens, k_len);
  double covered = 0;
  for (int64_t j = 0; j < sinks; ++j) covered += scores[j];
  const double need = rule.target - covered;
  const int64_t rest = static_cast<int64_t>(ranked.size());
  int64_t take = 0;
  if (need > 0) {
    double running = 0;
    take = -1;
    for (int64_t i = 0; i < rest; ++i) {
      running += scores[ranked[i]];
      if (running >= need) {
        take = i + 1;
        break;
      }
    }
    // Every column together does not reach the target (alpha = 1 with rounding): keep the
    // columns that carry any score.
    if (take < 0) take = std::count_if(ranked.begin(), ranked.end(), [scores](int32_t j) { return scores[j] > 0; });
  }
  return clamp_stripe_count(sinks, take, rest, rule.min_stripes, rule.max_stripes);
}

Selection rank_and_select(const float* scores, int64_t k_len, const SelectionRule& rule) {
  const int64_t sinks = sink_count(rule.sink_tokens, k_len);
  Selection out;
  out.ranked.resize(static_cast<size_t>(k_len - sinks));
  for (int64_t j = sinks; j < k_len; ++j) out.ranked[j - sinks] = static_cast<int32_t>(j);
  // Higher score first, then lower index: a strict total order, so the ranking is unique.
  std::sort(out.ranked.begin(), out.ranked.end(), [scores](int32_t a, int32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  out.count = count_ranked(scores, out.ranked, k_len, rule);
  return out;
}

std::vector<int32_t> select_stripes(const float* scores, int64_t k_len, const SelectionRule& rule) {
  const Selection s = rank_and_select(scores, k_len, rule);
  std::vector<int32_t> kept;
  kept.reserve(static_cast<size_t>(s.count.sinks + s.count.ranked));
  for (int64_t j = 0; j < s.count.sinks; ++j) kept.push_back(static_cast<int32_t>(j));
  kept.insert(kept.end(), s.ranked.begin(), s.ranked.begin() + s.count.ranked);
  std::sort(kept.begin(), kept.end());
  return kept;
}

}  // namespace sampleattn::cpu
