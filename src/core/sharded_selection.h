// Stage 2 of SampleAttention over key columns spread across processes (context parallelism,
// docs/SCALING.md), without gathering the column scores: the same stripes, counts and validation
// layout as one process's rank_and_select + plan_validation + decided_stripes (cpu/
// stripe_selection.h, core/validation.h) would give on all the columns.
//
// The ranking (score descending, index ascending) is a total order of 63-bit keys
// rank_key(score, j). Each process sorts the columns it holds once, with prefix sums of their
// scores (in the fixed point of stage 1: the f32 scores are multiples of 2^-30, so the sums are
// exact, as is the one-process double sum they replace) and of their stripe costs (query-key
// pairs). A search finds the smallest key at which the total over all processes of columns, score
// or cost reaches a target, by bisection over the keys: each step is one all-reduce of a vector of
// every pending search's local totals.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/mask.h"
#include "core/problem.h"
#include "core/status.h"
#include "core/validation.h"

namespace sampleattn {

// Ascending keys are the ranking: score descending (scores are >= 0), then index ascending.
uint64_t rank_key(float score, int32_t column);
inline int32_t key_column(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }
// Above every column's key.
inline constexpr uint64_t kPastLastKey = uint64_t{1} << 63;

// One process's ranked columns of one selection set (its columns past the sinks).
class LocalRanking {
 public:
  struct Totals {
    int64_t count = 0;
    int64_t score = 0;  // 2^-30 units
    int64_t cost = 0;   // stripe pairs
  };
  // columns[i] with score[i] (f32, from stage 1's fixed point) and cost[i].
  LocalRanking(const int32_t* columns, const float* score, const int64_t* cost, int64_t n);
  // Of the columns whose key is <= key.
  Totals at(uint64_t key) const;
  const std::vector<uint64_t>& keys() const { return keys_; }

 private:
  std::vector<uint64_t> keys_;                       // ascending
  std::vector<int64_t> score_prefix_, cost_prefix_;  // [n + 1]
};

// Adds a vector over all processes, in place (an all-reduce sum); every process calls it with a
// vector of the same length at the same time.
using SumOverProcesses = std::function<Status(std::vector<int64_t>*)>;

// The smallest key at which a set's total (over every process) of `kind` reaches `target`.
struct RankSearch {
  enum Kind { kCount, kScore, kCost };
  int set = 0;
  Kind kind = kCount;
  int64_t target = 0;
  // Results: reached (false when even every column falls short: key = kPastLastKey) and the
  // totals of the columns up to the key, included.
  bool reached = false;
  uint64_t key = kPastLastKey;
  LocalRanking::Totals total;
};
Status search_rankings(const std::vector<LocalRanking>& sets, std::vector<RankSearch>* searches,
                       const SumOverProcesses& sum);

// What the processes agree on about one selection set after stage 2 (one per set, the same on
// every process), and this process's part of the layout.
struct ShardedSet {
  StripeCount count;          // alpha's count after the clamp (as rank_and_select's)
  int64_t look_ranked = 0;    // with sample.look > 0: the ranked count kLookAlpha keeps (clamped)
  ValidationLayout layout;    // as plan_validation's, except `bucket`: indexed like the local
                              // columns passed in (LocalRanking's input order), sinks not included
  std::vector<uint64_t> bound_keys;  // [buckets + 1]: the key of the last column of each bound
};

// The inputs of one set on this process: its columns past the sinks with their scores, and the
// sum of the scores (2^-30 units) of the sink columns it holds.
struct LocalSet {
  std::vector<int32_t> columns;
  std::vector<float> scores;
  int64_t sink_score = 0;
  int64_t outside_score = 0;  // window_mass_counts: the sum of all its columns' scores (sinks too)
  double total = 0;           // the set's sampled rows x heads (selection_target's total)
};

// Stage 2 of every set of one sequence (window w) on this process; every process builds one and
// calls its methods at the same time.
class ShardedSelection {
 public:
  ShardedSelection(const Problem& problem, const Sequence& seq, int64_t window, std::vector<LocalSet> sets);

  // Alpha's counts and the validation layouts (with_rows: the sequence has validation rows, so
  // the buckets are laid out).
  Status select(bool with_rows, const SumOverProcesses& sum, std::vector<ShardedSet>* out) const;

  // The local columns of the first decided[i] ranked stripes of set i (ascending; sinks not
  // included).
  Status decided_stripes(const std::vector<int64_t>& decided, const SumOverProcesses& sum,
                         std::vector<std::vector<int32_t>>* out) const;

 private:
  const Problem& problem_;
  const Sequence& seq_;
  int64_t window_;
  std::vector<LocalSet> sets_;
  std::vector<LocalRanking> rankings_;
};

}  // namespace sampleattn
