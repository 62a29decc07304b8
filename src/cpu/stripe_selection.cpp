#include "cpu/stripe_selection.h"

#include <algorithm>
#include <cstring>
#include <utility>

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

namespace {

// A key whose ascending order is the scores' descending order: the float's bits made monotonic
// (negatives inverted, positives with the sign bit set; -0 read as +0, so that it ties with +0 as
// the comparison of floats does), then inverted. For the scores stage 1 makes (>= 0) it is the high
// half of rank_key (core/sharded_selection.h), the sharded ranking's key, so both rank alike; it
// also orders negative scores, which rank_key's 63-bit keys leave out.
uint32_t descending_key(float score) {
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  if (bits == 0x80000000u) bits = 0;
  const uint32_t ascending = (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
  return ~ascending;
}

// Columns [first, k_len) by score, higher first, ties by lower index: a least-significant-digit
// radix sort of descending_key in three passes of 11 bits. Each pass is stable and the columns
// start in ascending order, so equal scores keep ascending indices: the order of the comparison
// sort it replaces (score desc, index asc), 13x faster at 32K columns (docs/PERF.md, session 33).
std::vector<int32_t> rank_columns(const float* scores, int64_t first, int64_t k_len) {
  const size_t n = static_cast<size_t>(k_len - first);
  std::vector<uint32_t> key(n), key_next(n);
  std::vector<int32_t> index(n), index_next(n);
  for (size_t i = 0; i < n; ++i) {
    index[i] = static_cast<int32_t>(first + static_cast<int64_t>(i));
    key[i] = descending_key(scores[index[i]]);
  }
  constexpr int kDigitBits = 11;
  constexpr uint32_t kDigits = 1u << kDigitBits;
  std::vector<uint32_t> start(kDigits);
  for (int shift = 0; shift < 32 && n > 1; shift += kDigitBits) {
    std::fill(start.begin(), start.end(), 0u);
    for (size_t i = 0; i < n; ++i) ++start[(key[i] >> shift) & (kDigits - 1)];
    if (start[(key[0] >> shift) & (kDigits - 1)] == n) continue;  // one digit: the order stands
    uint32_t sum = 0;
    for (uint32_t& c : start) sum += std::exchange(c, sum);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t at = start[(key[i] >> shift) & (kDigits - 1)]++;
      key_next[at] = key[i];
      index_next[at] = index[i];
    }
    key.swap(key_next);
    index.swap(index_next);
  }
  return index;
}

}  // namespace

Selection rank_and_select(const float* scores, int64_t k_len, const SelectionRule& rule) {
  const int64_t sinks = sink_count(rule.sink_tokens, k_len);
  Selection out;
  // Higher score first, then lower index: a strict total order, so the ranking is unique.
  out.ranked = rank_columns(scores, sinks, k_len);
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
