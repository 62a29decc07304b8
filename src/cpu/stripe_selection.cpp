#include "cpu/stripe_selection.h"

#include <algorithm>

#include "core/mask.h"

namespace sampleattn::cpu {
namespace {

struct Ranked {
  float score;
  int32_t index;
};

// The ranking order: higher score first, then lower index.
bool before(const Ranked& a, const Ranked& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// Moves the k best (by `before`) of v[lo, hi) to the front, in no particular order.
void partial_select(std::vector<Ranked>& v, int64_t count) {
  if (count <= 0 || count >= static_cast<int64_t>(v.size())) return;
  std::nth_element(v.begin(), v.begin() + count, v.end(), before);
}

// The fewest best elements of v whose scores sum to >= need; they end up in v[0, result).
// Expected O(n): a quickselect that recurses into one side, carrying the mass of the part taken.
int64_t fewest_reaching(std::vector<Ranked>& v, double need) {
  int64_t lo = 0, hi = static_cast<int64_t>(v.size());
  if (need <= 0) return 0;
  uint64_t seed = 0x9E3779B97F4A7C15ull;  // fixed: the result is unique anyway; this is only speed
  while (lo < hi) {
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
    const int64_t pick = lo + static_cast<int64_t>(seed % static_cast<uint64_t>(hi - lo));
    std::swap(v[pick], v[hi - 1]);
    const Ranked pivot = v[hi - 1];
    int64_t store = lo;
    double left_sum = 0;
    for (int64_t i = lo; i < hi - 1; ++i) {
      if (before(v[i], pivot)) {
        left_sum += v[i].score;
        std::swap(v[i], v[store++]);
      }
    }
    std::swap(v[store], v[hi - 1]);  // pivot at `store`; better ones in [lo, store)
    if (left_sum >= need) {
      hi = store;  // the answer lies within the better part
    } else if (left_sum + pivot.score >= need) {
      return store + 1;
    } else {
      need -= left_sum + pivot.score;
      lo = store + 1;
    }
  }
  // Every column together does not reach `need` (alpha = 1 with rounding): keep the columns
  // that carry any score.
  return std::stable_partition(v.begin(), v.end(), [](const Ranked& r) { return r.score > 0; }) - v.begin();
}

}  // namespace

std::vector<int32_t> select_stripes(const float* scores, int64_t k_len, const SelectionRule& rule) {
  const int64_t sinks = sink_count(rule.sink_tokens, k_len);
  double covered = 0;
  for (int64_t j = 0; j < sinks; ++j) covered += scores[j];
  std::vector<Ranked> rest;
  rest.reserve(static_cast<size_t>(k_len - sinks));
  for (int64_t j = sinks; j < k_len; ++j) rest.push_back({scores[j], static_cast<int32_t>(j)});

  const int64_t take = fewest_reaching(rest, rule.target - covered);
  // Clamp the total count (sinks included) to [min_stripes, max_stripes]. The `take` chosen are
  // the best of the rest: a larger count extends them with the next best, a smaller one keeps
  // the best of them.
  const StripeCount count =
      clamp_stripe_count(sinks, take, static_cast<int64_t>(rest.size()), rule.min_stripes, rule.max_stripes);
  if (count.ranked > take) {
    std::vector<Ranked> tail(rest.begin() + take, rest.end());
    partial_select(tail, count.ranked - take);
    std::copy(tail.begin(), tail.begin() + (count.ranked - take), rest.begin() + take);
  } else if (count.ranked < take) {
    std::vector<Ranked> chosen(rest.begin(), rest.begin() + take);
    partial_select(chosen, count.ranked);
    std::copy(chosen.begin(), chosen.begin() + count.ranked, rest.begin());
  }
  std::vector<int32_t> kept;
  kept.reserve(static_cast<size_t>(count.sinks + count.ranked));  // exact: stage 2's memory bound counts it
  for (int64_t j = 0; j < count.sinks; ++j) kept.push_back(static_cast<int32_t>(j));
  for (int64_t i = 0; i < count.ranked; ++i) kept.push_back(rest[i].index);
  std::sort(kept.begin(), kept.end());
  return kept;
}

}  // namespace sampleattn::cpu
