#include "core/sharded_selection.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/sparse_plan.h"

namespace sampleattn {
namespace {

// Stage 1's fixed point (cpu/score_fixed_point.h): the f32 scores are multiples of 2^-30.
constexpr int kFixedBits = 30;

int64_t to_fixed(float score) { return std::llrint(std::ldexp(static_cast<double>(score), kFixedBits)); }

RankSearch search(size_t set, RankSearch::Kind kind, int64_t target) {
  RankSearch s;
  s.set = static_cast<int>(set);
  s.kind = kind;
  s.target = target;
  return s;
}

int64_t value_of(const LocalRanking::Totals& t, RankSearch::Kind kind) {
  return kind == RankSearch::kCount ? t.count : kind == RankSearch::kScore ? t.score : t.cost;
}

}  // namespace

uint64_t rank_key(float score, int32_t column) {
  uint32_t bits = 0;
  std::memcpy(&bits, &score, sizeof bits);
  return (static_cast<uint64_t>(0x7fffffffu - (bits & 0x7fffffffu)) << 32) | static_cast<uint32_t>(column);
}

LocalRanking::LocalRanking(const int32_t* columns, const float* score, const int64_t* cost, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  keys_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) keys_[i] = rank_key(score[i], columns[i]);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys_[a] < keys_[b]; });
  std::vector<uint64_t> sorted(static_cast<size_t>(n));
  score_prefix_.assign(static_cast<size_t>(n) + 1, 0);
  cost_prefix_.assign(static_cast<size_t>(n) + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = order[i];
    sorted[i] = keys_[c];
    score_prefix_[i + 1] = score_prefix_[i] + to_fixed(score[c]);
    cost_prefix_[i + 1] = cost_prefix_[i] + cost[c];
  }
  keys_ = std::move(sorted);
}

LocalRanking::Totals LocalRanking::at(uint64_t key) const {
  const size_t n = static_cast<size_t>(std::upper_bound(keys_.begin(), keys_.end(), key) - keys_.begin());
  return {static_cast<int64_t>(n), score_prefix_[n], cost_prefix_[n]};
}

Status search_rankings(const std::vector<LocalRanking>& sets, std::vector<RankSearch>* searches,
                       const SumOverProcesses& sum) {
  std::vector<RankSearch>& s = *searches;
  const size_t n = s.size();
  std::vector<int64_t> values(n);
  // Whether every column together reaches the target (totals are monotone in the key).
  for (size_t i = 0; i < n; ++i) values[i] = value_of(sets[static_cast<size_t>(s[i].set)].at(kPastLastKey), s[i].kind);
  SAMPLEATTN_RETURN_IF_ERROR(sum(&values));
  std::vector<uint64_t> lo(n, 0), hi(n, kPastLastKey - 1);
  for (size_t i = 0; i < n; ++i) {
    s[i].reached = values[i] >= s[i].target;
    if (!s[i].reached) lo[i] = hi[i];  // settled: key stays kPastLastKey
  }
  // A (kWays)-ary search: each round evaluates kWays - 1 keys spread over every unsettled range,
  // so 63-bit keys take 16 rounds (all-reduces) instead of a bisection's 63.
  constexpr int kWays = 16;
  auto candidate = [&](size_t i, int m, int count) {
    const unsigned __int128 span = hi[i] - lo[i];
    return lo[i] + static_cast<uint64_t>(span * static_cast<unsigned>(m) / static_cast<unsigned>(count + 1));
  };
  auto candidates = [&](size_t i) { return static_cast<int>(std::min<uint64_t>(kWays - 1, hi[i] - lo[i])); };
  std::vector<int64_t> probe;
  for (;;) {
    probe.clear();
    for (size_t i = 0; i < n; ++i) {
      const int count = candidates(i);
      for (int m = 1; m <= count; ++m) {
        probe.push_back(value_of(sets[static_cast<size_t>(s[i].set)].at(candidate(i, m, count)), s[i].kind));
      }
    }
    if (probe.empty()) break;
    SAMPLEATTN_RETURN_IF_ERROR(sum(&probe));
    size_t at = 0;
    for (size_t i = 0; i < n; ++i) {
      const int count = candidates(i);
      if (count == 0) continue;
      // The first candidate whose total reaches the target bounds the range above; the one before
      // it, below.
      int first = count + 1;
      for (int m = count; m >= 1; --m) {
        if (probe[at + static_cast<size_t>(m - 1)] >= s[i].target) first = m;
      }
      const uint64_t new_lo = first == 1 ? lo[i] : candidate(i, first - 1, count) + 1;
      const uint64_t new_hi = first == count + 1 ? hi[i] : candidate(i, first, count);
      lo[i] = new_lo;
      hi[i] = new_hi;
      at += static_cast<size_t>(count);
    }
  }
  // The totals up to each key found (or of every column).
  std::vector<int64_t> totals(3 * n);
  for (size_t i = 0; i < n; ++i) {
    s[i].key = s[i].reached ? lo[i] : kPastLastKey;
    const LocalRanking::Totals t = sets[static_cast<size_t>(s[i].set)].at(s[i].key);
    totals[3 * i] = t.count;
    totals[3 * i + 1] = t.score;
    totals[3 * i + 2] = t.cost;
  }
  SAMPLEATTN_RETURN_IF_ERROR(sum(&totals));
  for (size_t i = 0; i < n; ++i) s[i].total = {totals[3 * i], totals[3 * i + 1], totals[3 * i + 2]};
  return Status::ok();
}

ShardedSelection::ShardedSelection(const Problem& problem, const Sequence& seq, int64_t window, std::vector<LocalSet> sets)
    : problem_(problem), seq_(seq), window_(window), sets_(std::move(sets)) {
  rankings_.reserve(sets_.size());
  for (const LocalSet& set : sets_) {
    std::vector<int64_t> cost(set.columns.size());
    for (size_t i = 0; i < cost.size(); ++i) {
      cost[i] = stripe_pairs_of(seq.k_len, seq.q_offset(), window, problem.window_left, set.columns[i]);
    }
    rankings_.emplace_back(set.columns.data(), set.scores.data(), cost.data(), static_cast<int64_t>(cost.size()));
  }
}

Status ShardedSelection::select(bool with_rows, const SumOverProcesses& sum, std::vector<ShardedSet>* out) const {
  const sampleattn_sample_params& sp = problem_.sample;
  const size_t nsets = sets_.size();
  const int64_t sinks = sink_count(sp.sink_tokens, seq_.k_len);
  const int64_t rest = seq_.k_len - sinks;
  const bool window_mass_counts = sp.window_mass_counts == 1;
  out->assign(nsets, ShardedSet{});

  // The sinks' scores, all scores (window_mass_counts), and the columns with a score above 0.
  std::vector<int64_t> totals(3 * nsets);
  const uint64_t last_positive = rank_key(0.f, 0) - 1;
  for (size_t i = 0; i < nsets; ++i) {
    totals[3 * i] = sets_[i].sink_score;
    totals[3 * i + 1] = sets_[i].outside_score;
    totals[3 * i + 2] = rankings_[i].at(last_positive).count;
  }
  SAMPLEATTN_RETURN_IF_ERROR(sum(&totals));

  // Alpha's cut: rank_and_select's running double sum reaches need, with sums exact in fixed point;
  // with the look, kLookAlpha's cut too (count_ranked's), in the same searches.
  std::vector<RankSearch> searches;
  std::vector<int> cut_of;  // [search]: 0 alpha's, 1 kLookAlpha's
  const bool look = sp.look > 0.f;
  for (size_t i = 0; i < nsets; ++i) {
    const double covered = std::ldexp(static_cast<double>(totals[3 * i]), -kFixedBits);
    const double outside = window_mass_counts ? std::ldexp(static_cast<double>(totals[3 * i + 1]), -kFixedBits) : 0.0;
    for (int cut = 0; cut < (look ? 2 : 1); ++cut) {
      const double need =
          selection_target(cut == 0 ? sp.alpha : kLookAlpha, sets_[i].total, window_mass_counts, outside) - covered;
      if (need > 0) {
        searches.push_back(search(i, RankSearch::kScore, static_cast<int64_t>(std::ceil(std::ldexp(need, kFixedBits)))));
        cut_of.push_back(cut);
      }
    }
  }
  SAMPLEATTN_RETURN_IF_ERROR(search_rankings(rankings_, &searches, sum));
  std::vector<int64_t> take(nsets, 0), look_take(nsets, 0);
  for (size_t k = 0; k < searches.size(); ++k) {
    const RankSearch& s = searches[k];
    // Every column together short of the target (alpha = 1 with rounding): those with a score.
    (cut_of[k] == 0 ? take : look_take)[static_cast<size_t>(s.set)] =
        s.reached ? s.total.count : totals[3 * static_cast<size_t>(s.set) + 2];
  }

  // The cost cap (plan_validation's loop): the first ranked column whose pairs pass max_density.
  const int64_t causal = model_pairs(problem_, seq_);
  std::vector<RankSearch> caps;
  std::vector<int64_t> base(nsets);
  for (size_t i = 0; i < nsets; ++i) {
    ShardedSet& o = (*out)[i];
    o.count = clamp_stripe_count(sinks, take[i], rest, sp.min_stripes, sp.max_stripes);
    if (look) o.look_ranked = clamp_stripe_count(sinks, look_take[i], rest, sp.min_stripes, sp.max_stripes).ranked;
    o.layout.sinks = o.count.sinks;
    o.layout.alpha_ranked = o.count.ranked;
    o.layout.num_ranked = rest;
    base[i] = mask_base_pairs(problem_, seq_, window_, o.count.sinks);
    if (mask_runs_dense(base[i], causal, sp.max_density)) continue;
    // The least added cost that makes the mask dense.
    const double limit = static_cast<double>(sp.max_density) * static_cast<double>(causal);
    int64_t c = std::max<int64_t>(1, static_cast<int64_t>(std::min(limit, 9.0e18)) - base[i]);
    while (!mask_runs_dense(base[i] + c, causal, sp.max_density)) ++c;
    while (c > 1 && mask_runs_dense(base[i] + c - 1, causal, sp.max_density)) --c;
    caps.push_back(search(i, RankSearch::kCost, c));
  }
  SAMPLEATTN_RETURN_IF_ERROR(search_rankings(rankings_, &caps, sum));
  std::vector<int64_t> cap(nsets, -1);
  for (const RankSearch& s : caps) cap[static_cast<size_t>(s.set)] = s.reached ? s.total.count - 1 : rest;

  // The layouts, and the keys of their bucket bounds.
  std::vector<RankSearch> bounds;
  for (size_t i = 0; i < nsets; ++i) {
    ValidationLayout& v = (*out)[i].layout;
    if (cap[i] >= 0) cap[i] = std::min(cap[i], most_ranked_stripes(sp, v.sinks, rest));
    v.over_budget = cap[i] < v.alpha_ranked;
    v.cap = std::max<int64_t>(cap[i], 0);
    if (v.over_budget || !with_rows) continue;
    set_validation_bounds(&v);
    for (int64_t count : v.bounds) bounds.push_back(search(i, RankSearch::kCount, count));
  }
  SAMPLEATTN_RETURN_IF_ERROR(search_rankings(rankings_, &bounds, sum));
  size_t at = 0;
  for (size_t i = 0; i < nsets; ++i) {
    ShardedSet& o = (*out)[i];
    ValidationLayout& v = o.layout;
    if (v.over_budget || !with_rows) continue;
    o.bound_keys.clear();
    for (size_t b = 0; b < v.bounds.size(); ++b) o.bound_keys.push_back(bounds[at++].key);
    // A column's bucket: the first bound whose prefix holds it.
    const LocalSet& set = sets_[i];
    v.bucket.assign(set.columns.size(), kBucketUnused);
    for (size_t c = 0; c < set.columns.size(); ++c) {
      const uint64_t key = rank_key(set.scores[c], set.columns[c]);
      for (int b = 1; b <= v.buckets(); ++b) {
        if (key <= o.bound_keys[static_cast<size_t>(b)]) {
          v.bucket[c] = static_cast<uint8_t>(b);
          break;
        }
      }
    }
  }
  return Status::ok();
}

Status ShardedSelection::decided_stripes(const std::vector<int64_t>& decided, const SumOverProcesses& sum,
                                         std::vector<std::vector<int32_t>>* out) const {
  std::vector<RankSearch> searches;
  for (size_t i = 0; i < sets_.size(); ++i) searches.push_back(search(i, RankSearch::kCount, decided[i]));
  SAMPLEATTN_RETURN_IF_ERROR(search_rankings(rankings_, &searches, sum));
  out->assign(sets_.size(), {});
  for (size_t i = 0; i < sets_.size(); ++i) {
    const LocalSet& set = sets_[i];
    for (size_t c = 0; c < set.columns.size(); ++c) {
      if (rank_key(set.scores[c], set.columns[c]) <= searches[i].key) (*out)[i].push_back(set.columns[c]);
    }
    std::sort((*out)[i].begin(), (*out)[i].end());
  }
  return Status::ok();
}

}  // namespace sampleattn
