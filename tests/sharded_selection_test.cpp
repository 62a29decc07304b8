// Stage 2 over columns spread across processes (core/sharded_selection.h) against one process's
// rank_and_select + plan_validation + decided_stripes on all the columns: the same counts, cap,
// buckets and stripes, for 1-5 simulated processes (threads whose all-reduce is a shared sum),
// contiguous, zigzag and scattered column ownership, ties, zero scores, sinks, min/max stripes,
// max_density, window_mass_counts and scores summed over heads.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "core/sharded_selection.h"
#include "core/sparse_plan.h"
#include "core/validation.h"
#include "cpu/score_fixed_point.h"
#include "cpu/stripe_selection.h"

namespace sampleattn {
namespace {

// All-reduce for `ranks` threads: every call adds the threads' vectors and hands the sum back.
// One barrier a call: the barrier's completion step takes the sum into the call's result buffer
// (two, alternating: a thread reads call k's while others may already add for call k + 1, and
// call k + 2 overwrites it only after every thread has passed call k + 1's barrier).
class ThreadWorld {
 public:
  explicit ThreadWorld(int ranks) : barrier_(ranks, Completion{this}) {}
  Status sum(int rank, std::vector<int64_t>* v) {
    (void)rank;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (acc_.size() < v->size()) acc_.resize(v->size(), 0);
      for (size_t i = 0; i < v->size(); ++i) acc_[i] += (*v)[i];
    }
    const int call = calls_[static_cast<size_t>(rank)]++;
    barrier_.arrive_and_wait();
    const std::vector<int64_t>& result = results_[call % 2];
    std::copy(result.begin(), result.begin() + static_cast<std::ptrdiff_t>(v->size()), v->begin());
    return Status::ok();
  }

 private:
  struct Completion {
    ThreadWorld* w;
    void operator()() noexcept {
      w->results_[w->phase_ % 2] = w->acc_;
      std::fill(w->acc_.begin(), w->acc_.end(), 0);
      ++w->phase_;
    }
  };
  std::mutex mutex_;
  std::vector<int64_t> acc_;
  std::vector<int64_t> results_[2];
  int phase_ = 0;
  std::vector<int> calls_ = std::vector<int>(64, 0);
  std::barrier<Completion> barrier_;
};

struct Scenario {
  int64_t k_len = 3000;
  int64_t window = 240;
  int sets = 3;
  double total = 150;  // sampled rows x heads
  sampleattn_sample_params sample{};
  int64_t window_left = kNoModelWindow;
};

// Scores as stage 1 leaves them: fixed-point totals as f32, with ties and zeros.
std::vector<std::vector<float>> make_scores(const Scenario& sc, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> scores(static_cast<size_t>(sc.sets), std::vector<float>(static_cast<size_t>(sc.k_len)));
  std::exponential_distribution<double> heavy(1.0);
  std::uniform_int_distribution<int> kind(0, 9);
  for (auto& set : scores) {
    double sum = 0;
    std::vector<double> raw(set.size());
    for (double& r : raw) {
      const int k = kind(rng);
      r = k == 0 ? 0.0 : k == 1 ? 0.25 : std::pow(heavy(rng), 3.0);  // zeros, ties, a heavy tail
      sum += r;
    }
    for (size_t j = 0; j < set.size(); ++j) {
      const double value = raw[j] / sum * sc.total;
      set[j] = cpu::fixed_to_score(cpu::column_sum_to_fixed(static_cast<float>(value), 1 << 20));
    }
  }
  return scores;
}

// Which process holds column j.
using Owner = std::function<int(int64_t j)>;

void expect_same_as_one_process(const Scenario& sc, int ranks, const Owner& owner, uint32_t seed) {
  Problem problem;
  problem.sample = sc.sample;
  problem.window_left = sc.window_left;
  Sequence seq;
  seq.q_len = seq.k_len = sc.k_len;
  const auto scores = make_scores(sc, seed);
  const bool window_mass_counts = sc.sample.window_mass_counts == 1;

  // One process.
  struct Expected {
    cpu::Selection selection;
    ValidationLayout layout;
  };
  std::vector<Expected> expected;
  for (const auto& s : scores) {
    cpu::SelectionRule rule;
    double outside = 0;
    for (float v : s) outside += v;
    rule.target = selection_target(sc.sample.alpha, sc.total, window_mass_counts, window_mass_counts ? outside : 0.0);
    rule.sink_tokens = sc.sample.sink_tokens;
    rule.min_stripes = sc.sample.min_stripes;
    rule.max_stripes = sc.sample.max_stripes;
    Expected e;
    e.selection = cpu::rank_and_select(s.data(), sc.k_len, rule);
    e.layout = plan_validation(problem, seq, sc.window, e.selection.ranked.data(),
                               static_cast<int64_t>(e.selection.ranked.size()), e.selection.count, true);
    expected.push_back(std::move(e));
  }

  // `ranks` processes.
  ThreadWorld world(ranks);
  std::vector<std::vector<ShardedSet>> got(static_cast<size_t>(ranks));
  std::vector<std::vector<LocalSet>> inputs(static_cast<size_t>(ranks));
  std::vector<std::vector<std::vector<int32_t>>> stripes(static_cast<size_t>(ranks));
  std::vector<Status> status(static_cast<size_t>(ranks));
  const int64_t sinks = sink_count(sc.sample.sink_tokens, sc.k_len);
  for (int r = 0; r < ranks; ++r) {
    for (const auto& s : scores) {
      LocalSet set;
      set.total = sc.total;
      for (int64_t j = 0; j < sc.k_len; ++j) {
        if (owner(j) != r) continue;
        const int64_t fixed = std::llrint(std::ldexp(static_cast<double>(s[j]), 30));
        set.outside_score += fixed;
        if (j < sinks) {
          set.sink_score += fixed;
        } else {
          set.columns.push_back(static_cast<int32_t>(j));
          set.scores.push_back(s[j]);
        }
      }
      inputs[r].push_back(std::move(set));
    }
  }
  std::vector<int64_t> decided;
  for (const Expected& e : expected) decided.push_back(std::min<int64_t>(e.layout.cap, e.selection.count.ranked + 7));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      const SumOverProcesses sum = [&world, r](std::vector<int64_t>* v) { return world.sum(r, v); };
      ShardedSelection selection(problem, seq, sc.window, inputs[r]);
      status[r] = selection.select(true, sum, &got[r]);
      if (status[r].is_ok()) status[r] = selection.decided_stripes(decided, sum, &stripes[r]);
    });
  }
  for (std::thread& t : threads) t.join();

  for (int r = 0; r < ranks; ++r) {
    ASSERT_TRUE(status[r].is_ok()) << status[r].message();
    for (int i = 0; i < sc.sets; ++i) {
      const Expected& e = expected[i];
      const ShardedSet& g = got[r][i];
      SCOPED_TRACE("rank " + std::to_string(r) + " of " + std::to_string(ranks) + ", set " + std::to_string(i));
      EXPECT_EQ(g.count.sinks, e.selection.count.sinks);
      EXPECT_EQ(g.count.ranked, e.selection.count.ranked);
      EXPECT_EQ(g.layout.num_ranked, e.layout.num_ranked);
      EXPECT_EQ(g.layout.cap, e.layout.cap);
      EXPECT_EQ(g.layout.over_budget, e.layout.over_budget);
      EXPECT_EQ(g.layout.bounds, e.layout.bounds);
      // Each local column's bucket is the one-process layout's.
      if (!e.layout.over_budget) {
        const LocalSet& in = inputs[r][i];
        ASSERT_EQ(g.layout.bucket.size(), in.columns.size());
        for (size_t c = 0; c < in.columns.size(); ++c) {
          ASSERT_EQ(g.layout.bucket[c], e.layout.bucket[static_cast<size_t>(in.columns[c])]) << "column " << in.columns[c];
        }
      }
    }
  }
  // The decided stripes, gathered over the processes, are decided_stripes' (sinks aside).
  for (int i = 0; i < sc.sets; ++i) {
    std::vector<int32_t> all;
    for (int r = 0; r < ranks; ++r) all.insert(all.end(), stripes[r][i].begin(), stripes[r][i].end());
    std::sort(all.begin(), all.end());
    std::vector<int32_t> want = decided_stripes(expected[i].layout, expected[i].selection.ranked.data(), decided[i]);
    want.erase(want.begin(), want.begin() + expected[i].layout.sinks);
    EXPECT_EQ(all, want) << "set " << i;
  }
}

Scenario base_scenario() {
  Scenario sc;
  sc.sample = default_sample_params();
  sc.sample.max_density = 0.8f;
  return sc;
}

TEST(ShardedSelection, RankKeysOrderAsTheRanking) {
  EXPECT_LT(rank_key(2.f, 7), rank_key(1.f, 3));  // higher score first
  EXPECT_LT(rank_key(1.f, 3), rank_key(1.f, 4));  // then lower index
  EXPECT_LT(rank_key(0x1p-30f, 9), rank_key(0.f, 0));
  EXPECT_LT(rank_key(0.f, 100), kPastLastKey);
}

TEST(ShardedSelection, MatchesOneProcessForEveryOwnership) {
  const Scenario sc = base_scenario();
  for (int ranks = 1; ranks <= 5; ++ranks) {
    SCOPED_TRACE(std::to_string(ranks) + " processes");
    const int64_t n = sc.k_len;
    expect_same_as_one_process(sc, ranks, [&](int64_t j) { return static_cast<int>(j * ranks / n); }, 11);
    expect_same_as_one_process(
        sc, ranks,
        [&](int64_t j) {
          const int64_t chunk = j * 2 * ranks / n;
          return static_cast<int>(chunk < ranks ? chunk : 2 * ranks - 1 - chunk);
        },
        12);
    expect_same_as_one_process(sc, ranks, [&](int64_t j) { return static_cast<int>((j * 7919) % ranks); }, 13);
  }
}

TEST(ShardedSelection, MatchesOneProcessAcrossParameters) {
  const Owner three = [](int64_t j) { return static_cast<int>((j / 97) % 3); };
  uint32_t seed = 100;
  for (float alpha : {0.5f, 0.9f, 0.95f, 0.99f, 1.f}) {
    for (float max_density : {0.1f, 0.5f, 1.f}) {
      Scenario sc = base_scenario();
      sc.sample.alpha = alpha;
      sc.sample.max_density = max_density;
      SCOPED_TRACE("alpha " + std::to_string(alpha) + ", max_density " + std::to_string(max_density));
      expect_same_as_one_process(sc, 3, three, ++seed);
    }
  }
  Scenario clamps = base_scenario();
  clamps.sample.min_stripes = 900;
  expect_same_as_one_process(clamps, 3, three, ++seed);
  clamps.sample.min_stripes = 0;
  clamps.sample.max_stripes = 20;
  expect_same_as_one_process(clamps, 3, three, ++seed);
  clamps.sample.max_stripes = 2;  // fewer than the sinks
  expect_same_as_one_process(clamps, 3, three, ++seed);
  Scenario wmc = base_scenario();
  wmc.sample.window_mass_counts = 1;
  expect_same_as_one_process(wmc, 3, three, ++seed);
  Scenario no_sinks = base_scenario();
  no_sinks.sample.sink_tokens = 0;
  expect_same_as_one_process(no_sinks, 3, three, ++seed);
  Scenario model_window = base_scenario();
  model_window.window_left = 1000;
  expect_same_as_one_process(model_window, 3, three, ++seed);
}

}  // namespace
}  // namespace sampleattn
