// The attention of a sharded call (cpu/sharded_attention.h) against one process's
// run_flash_attention over the whole batch under the same plan: every process's output rows and
// lse, for 1-4 simulated processes (threads, tests/thread_collective.h) over contiguous, zigzag,
// uneven and empty splits (runs shorter than a decode chunk among them), varlen batches, grouped
// and plain heads, f32 and bf16 (both paths), head dims 64 and 128, random plans (dense heads,
// windows, stripes before and inside the band, sinks, none; per head and per kv group) and the
// plans stages 1 and 2 build on a planted input; failures before the exchange reach every process.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/problem.h"
#include "core/shard_map.h"
#include "core/sparse_plan.h"
#include "cpu/flash_driver.h"
#include "cpu/sampling.h"
#include "cpu/sharded_attention.h"
#include "cpu/thread_pool.h"
#include "simd/dispatch.h"
#include "test_util.h"
#include "thread_collective.h"

namespace sampleattn {
namespace {

using testing::Buffer;
using testing::Case;
using testing::pool_of;
using testing::Rng;

// Positions [begin, end) of a sequence and the process that holds them; each process stores its
// pieces in the order of the list.
struct Piece {
  int seq;
  int64_t begin, end;
  int owner;
};
using Split = std::vector<Piece>;

// Every sequence cut in `processes` equal pieces (contiguous) or 2 x processes (zigzag: process r
// holds pieces r and 2P - 1 - r).
Split even_split(const std::vector<int32_t>& lengths, int processes, bool zigzag) {
  Split split;
  const int pieces = zigzag ? 2 * processes : processes;
  for (size_t s = 0; s < lengths.size(); ++s) {
    for (int i = 0; i < pieces; ++i) {
      split.push_back({static_cast<int>(s), int64_t{lengths[s]} * i / pieces, int64_t{lengths[s]} * (i + 1) / pieces,
                       zigzag && i >= processes ? pieces - 1 - i : i});
    }
  }
  return split;
}

// The shard map, each process's own Q/K/V tokens and its output (poisoned).
struct Shards {
  ShardMap map;
  std::vector<Buffer> q, k, v, o;
  std::vector<std::vector<float>> lse;
};

Shards make_shards(const Case& c, const Split& split, int processes) {
  Shards sh;
  sh.map.runs.resize(static_cast<size_t>(processes));
  std::vector<std::vector<std::pair<int64_t, int64_t>>> tokens(static_cast<size_t>(processes));  // global token, count
  std::vector<int64_t> held(static_cast<size_t>(processes), 0);
  for (const Piece& p : split) {
    sh.map.runs[static_cast<size_t>(p.owner)].push_back({p.seq, p.begin, p.end, held[static_cast<size_t>(p.owner)]});
    tokens[static_cast<size_t>(p.owner)].push_back({c.cu_q[static_cast<size_t>(p.seq)] + p.begin, p.end - p.begin});
    held[static_cast<size_t>(p.owner)] += p.end - p.begin;
  }
  auto copy = [](const Buffer& from, const std::vector<std::pair<int64_t, int64_t>>& pieces, int64_t n) {
    Buffer to(from.dtype, n, from.heads, from.d);
    const size_t row = static_cast<size_t>(from.heads) * from.d * dtype_size(from.dtype);
    size_t at = 0;
    for (auto [t, len] : pieces) {
      if (len > 0) std::memcpy(to.bytes.data() + at, from.bytes.data() + static_cast<size_t>(t) * row, len * row);
      at += static_cast<size_t>(len) * row;
    }
    return to;
  };
  for (int r = 0; r < processes; ++r) {
    const int64_t n = held[static_cast<size_t>(r)];
    sh.q.push_back(copy(c.q, tokens[static_cast<size_t>(r)], n));
    sh.k.push_back(copy(c.k, tokens[static_cast<size_t>(r)], n));
    sh.v.push_back(copy(c.v, tokens[static_cast<size_t>(r)], n));
    sh.o.emplace_back(c.o.dtype, n, c.o.heads, c.o.d);
    sh.o.back().poison();
    sh.lse.emplace_back(static_cast<size_t>(n) * c.hq, std::nanf(""));
  }
  return sh;
}

// Runs body(rank, collective) on `processes` threads, one simulated process each, and returns
// their statuses.
std::vector<Status> run_processes(int processes, const std::function<Status(int, Collective&)>& body) {
  testing::ThreadWorld world(processes);
  std::vector<Status> status(static_cast<size_t>(processes));
  world.run([&](int r) {
    testing::ThreadCollective coll(world, r);
    status[static_cast<size_t>(r)] = body(r, coll);
  });
  return status;
}

// A plan with every kind of head: dense ones (a quarter, or dense_share), and sparse ones with a
// window (the sequence's, or each head's own with head_windows) and no stripes, sinks only, stripes
// anywhere (so also inside the band of later queries) or sinks plus many stripes near the end.
// per_group: the heads of a kv group share their kind, window and stripes (STRIPES_PER_KV_GROUP).
// Sequences of at most 16 keys are dense, as stage 1 leaves them.
SparsePlan random_plan(const Problem& p, uint64_t seed, double dense_share, bool per_group, bool head_windows) {
  Rng rng(seed);
  const int hq = p.num_q_heads;
  SparsePlan plan;
  plan.heads.resize(p.sequences.size() * static_cast<size_t>(hq));
  const auto below = [&rng](int64_t n) { return static_cast<int64_t>(rng.next() % static_cast<uint64_t>(n)); };
  for (size_t s = 0; s < p.sequences.size(); ++s) {
    const int64_t len = p.sequences[s].k_len;
    const auto pick_window = [&]() {
      const int64_t choices[] = {1, 7, 16, 63, 100, std::max<int64_t>(1, len / 3)};
      return std::min(len, choices[below(6)]);
    };
    const int64_t seq_window = pick_window();
    for (int h = 0; h < hq; ++h) {
      HeadPlan& hp = plan.heads[s * hq + h];
      if (per_group && h % p.group != 0) {
        hp = plan.heads[s * hq + h - h % p.group];
        continue;
      }
      if (len <= 16 || rng.uniform() < dense_share) {
        hp.dense = true;
        hp.window = len;
        continue;
      }
      hp.dense = false;
      hp.decision = SAMPLEATTN_DECISION_SPARSE;
      hp.window = head_windows ? pick_window() : seq_window;
      std::set<int32_t> stripes;
      const int64_t kind = below(4);
      if (kind == 1 || kind == 3) {
        for (int64_t j = 0, sinks = 1 + below(4); j < std::min(sinks, len); ++j) stripes.insert(static_cast<int32_t>(j));
      }
      if (kind == 2) {
        for (int64_t i = 0, n = 1 + len / 20; i < n; ++i) stripes.insert(static_cast<int32_t>(below(len)));
      }
      if (kind == 3) {
        for (int64_t i = 0, n = 1 + len / 8; i < n; ++i) stripes.insert(static_cast<int32_t>(len - 1 - below(std::min<int64_t>(len, 150))));
      }
      hp.stripes.assign(stripes.begin(), stripes.end());
    }
  }
  return plan;
}

struct Tolerance {
  double out;  // of a row's largest |value|
  double lse;  // of max(1, |lse|)
};
constexpr Tolerance kF32{1e-5, 1e-5};
constexpr Tolerance kBF16{1e-2, 3e-2};  // bf16 outputs (one rounding, 2^-8) and attention_test's lse

// The whole batch on one process (the output and lse land in c.o and c.lse), then on `processes`
// through sharded_attention; every process's rows against the whole batch's.
void expect_same_as_whole(Case& c, const sampleattn::Params& params, const SparsePlan& plan, const Split& split,
                          int processes, Tolerance tol) {
  Problem whole;
  ASSERT_TRUE(build_problem(&params, true, &whole).is_ok());
  const KernelTable& kernels = active_kernel_table();
  {
    auto pool = pool_of(2);
    bool unchecked = false;
    const Status s = cpu::run_flash_attention(*pool, 0, cpu::WorkspaceParts{}, kernels, whole, &plan, nullptr, &unchecked);
    ASSERT_TRUE(s.is_ok()) << s.message();
    ASSERT_FALSE(unchecked);
  }
  Shards sh = make_shards(c, split, processes);
  const std::vector<Status> status = run_processes(processes, [&](int r, Collective& coll) {
    Problem mine = whole;
    mine.q.data = sh.q[r].data();
    mine.k.data = sh.k[r].data();
    mine.v.data = sh.v[r].data();
    mine.o.data = sh.o[r].data();
    mine.lse = sh.lse[r].data();
    auto pool = pool_of(1);
    return cpu::sharded_attention(*pool, 0, kernels, mine, sh.map, plan, coll);
  });
  const int hq = c.hq, d = c.d;
  int64_t rows = 0;
  for (int r = 0; r < processes; ++r) {
    ASSERT_TRUE(status[r].is_ok()) << "process " << r << ": " << status[r].message();
    for (const ShardRun& run : sh.map.runs[static_cast<size_t>(r)]) {
      for (int64_t pos = run.begin; pos < run.end; ++pos) {
        const int64_t mine = run.local + (pos - run.begin), there = c.cu_q[static_cast<size_t>(run.seq)] + pos;
        for (int h = 0; h < hq; ++h, ++rows) {
          const std::string where = "process " + std::to_string(r) + " of " + std::to_string(processes) + ", sequence " +
                                    std::to_string(run.seq) + ", position " + std::to_string(pos) + ", head " +
                                    std::to_string(h);
          double scale = 0;
          for (int x = 0; x < d; ++x) scale = std::max(scale, std::abs(static_cast<double>(c.o.get((there * hq + h) * d + x))));
          const double limit = tol.out * std::max(scale, 1e-3);
          for (int x = 0; x < d; ++x) {
            const double a = sh.o[r].get((mine * hq + h) * d + x), b = c.o.get((there * hq + h) * d + x);
            ASSERT_TRUE(std::abs(a - b) <= limit) << where << ", element " << x << ": " << a << " vs " << b;
          }
          const double a = sh.lse[r][static_cast<size_t>(mine * hq + h)], b = c.lse[static_cast<size_t>(there * hq + h)];
          ASSERT_TRUE(std::abs(a - b) <= tol.lse * std::max(1.0, std::abs(b))) << where << ": lse " << a << " vs " << b;
        }
      }
    }
  }
  EXPECT_EQ(rows, whole.total_q * hq) << "the split must cover the batch";
}

Case random_case(const std::vector<int32_t>& lengths, int d, int hq, int hkv, DType dtype, uint64_t seed) {
  Case c;
  c.d = d;
  c.hq = hq;
  c.hkv = hkv;
  c.in = c.out = dtype;
  for (int32_t len : lengths) c.add_sequence(len, len);
  c.materialize(seed, 1.0f);
  return c;
}

Problem problem_of(Case& c, const sampleattn::Params& p) {
  Problem problem;
  EXPECT_TRUE(build_problem(&p, true, &problem).is_ok());
  return problem;
}

TEST(ShardedAttention, RandomPlansEverySplit) {
  const std::vector<int32_t> lengths{700, 300};
  Case c = random_case(lengths, 64, 8, 2, DType::kF32, 11);
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  const Problem whole = problem_of(c, p);
  for (int processes = 1; processes <= 4; ++processes) {
    SCOPED_TRACE(std::to_string(processes) + " processes");
    const SparsePlan plan = random_plan(whole, 100 + processes, 0.25, false, processes % 2 == 0);
    expect_same_as_whole(c, p, plan, even_split(lengths, processes, false), processes, kF32);
    expect_same_as_whole(c, p, plan, even_split(lengths, processes, true), processes, kF32);
  }
  // Every head dense: each process gathers every key before its runs.
  const SparsePlan dense = random_plan(whole, 7, 1.0, false, false);
  expect_same_as_whole(c, p, dense, even_split(lengths, 3, true), 3, kF32);
}

// The look's dense rows (a few rows of some sparse heads attend over every key they see): each
// process gathers the keys before its dense rows, and every split gives the whole batch's rows.
TEST(ShardedAttention, DenseRowsOfTheLook) {
  const std::vector<int32_t> lengths{700, 300};
  Case c = random_case(lengths, 64, 8, 2, DType::kF32, 13);
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  const Problem whole = problem_of(c, p);
  for (int processes = 1; processes <= 4; ++processes) {
    SCOPED_TRACE(std::to_string(processes) + " processes");
    SparsePlan plan = random_plan(whole, 200 + processes, 0.25, false, processes % 2 == 0);
    Rng rng(300 + static_cast<uint64_t>(processes));
    int with_rows = 0;
    for (size_t i = 0; i < plan.heads.size(); ++i) {
      HeadPlan& hp = plan.heads[i];
      if (hp.dense || i % 3 == 0) continue;
      const int64_t len = lengths[i / static_cast<size_t>(c.hq)];
      std::set<int32_t> rows;
      for (int k = 0; k < 6; ++k) rows.insert(static_cast<int32_t>(rng.next() % static_cast<uint64_t>(len)));
      rows.insert(static_cast<int32_t>(len - 1));
      hp.dense_rows.assign(rows.begin(), rows.end());
      ++with_rows;
    }
    ASSERT_GT(with_rows, 0);
    expect_same_as_whole(c, p, plan, even_split(lengths, processes, false), processes, kF32);
    expect_same_as_whole(c, p, plan, even_split(lengths, processes, true), processes, kF32);
  }
}

TEST(ShardedAttention, UnevenEmptyAndShortRuns) {
  // Runs of 1 to 17 queries (at most 16 is a decode chunk), empty runs, a process that holds
  // nothing, a sequence of 12 keys, and a process holding several pieces of one sequence.
  const std::vector<int32_t> lengths{500, 12, 333};
  const Split split{{0, 0, 5, 2},     {0, 5, 5, 1},     {0, 5, 21, 0},    {0, 21, 38, 1},  {0, 38, 39, 2},
                    {0, 39, 300, 0},  {0, 300, 301, 1}, {0, 301, 500, 2}, {1, 0, 12, 1},   {1, 12, 12, 0},
                    {2, 0, 200, 2},   {2, 200, 216, 0}, {2, 216, 217, 1}, {2, 217, 333, 0}};
  for (const auto& [hq, hkv, d] : {std::tuple{4, 4, 128}, std::tuple{8, 2, 64}}) {
    SCOPED_TRACE(std::to_string(hq) + " query heads, " + std::to_string(hkv) + " kv heads, d " + std::to_string(d));
    Case c = random_case(lengths, d, hq, hkv, DType::kF32, 21 + d);
    sampleattn::Params p = c.params();
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    const Problem whole = problem_of(c, p);
    expect_same_as_whole(c, p, random_plan(whole, 5, 0.2, false, true), split, 4, kF32);
    p.sample.scope = SAMPLEATTN_STRIPES_PER_KV_GROUP;
    expect_same_as_whole(c, p, random_plan(whole, 6, 0.2, true, false), split, 4, kF32);
  }
}

TEST(ShardedAttention, Bf16BothPaths) {
  const std::vector<int32_t> lengths{640, 250};
  for (int d : {64, 128}) {
    Case c = random_case(lengths, d, 8, 2, DType::kBF16, 31 + d);
    for (sampleattn_precision precision : {SAMPLEATTN_PRECISION_F32, SAMPLEATTN_PRECISION_BF16}) {
      SCOPED_TRACE("d " + std::to_string(d) + (precision == SAMPLEATTN_PRECISION_BF16 ? ", bf16 path" : ", f32 path"));
      sampleattn::Params p = c.params();
      p.method = SAMPLEATTN_METHOD_SAMPLE;
      p.precision = precision;
      const Problem whole = problem_of(c, p);
      expect_same_as_whole(c, p, random_plan(whole, 40 + d, 0.25, false, false), even_split(lengths, 3, true), 3, kBF16);
    }
  }
}

TEST(ShardedAttention, PlanOfStagesOneAndTwo) {
  // Planted columns strong enough (8 nats) that stages 1 and 2 choose sparse heads.
  const std::vector<int32_t> lengths{1500, 600};
  Case c = random_case(lengths, 64, 8, 2, DType::kF32, 51);
  testing::plant(c, {3, 77, 400, 401, 1023}, 8.f);
  for (sampleattn_stripe_scope scope : {SAMPLEATTN_STRIPES_PER_HEAD, SAMPLEATTN_STRIPES_PER_KV_GROUP}) {
    SCOPED_TRACE(scope == SAMPLEATTN_STRIPES_PER_HEAD ? "per head" : "per kv group");
    sampleattn::Params p = c.params();
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    p.sample.dense_below = 0;
    p.sample.sample_block = 32;
    p.sample.r_row = 0.1f;
    p.sample.max_density = 0.9f;
    p.sample.scope = scope;
    // Per head, validation widens the masks (about half the keys become stripes); per group,
    // alpha's masks as they stand (a sixth of the keys or so).
    if (scope == SAMPLEATTN_STRIPES_PER_KV_GROUP) p.sample.r_val = 0.f;
    const Problem whole = problem_of(c, p);
    SparsePlan plan;
    {
      auto pool = pool_of(2);
      const Status s = cpu::build_sparse_plan(*pool, 0, cpu::WorkspaceParts{}, active_kernel_table(), whole, false, &plan);
      ASSERT_TRUE(s.is_ok()) << s.message();
    }
    int sparse = 0;
    for (const HeadPlan& h : plan.heads) sparse += !h.dense && h.stripes.size() > 4 ? 1 : 0;
    ASSERT_GT(sparse, 0) << "every head dense: the case tests nothing";
    expect_same_as_whole(c, p, plan, even_split(lengths, 3, true), 3, kF32);
    expect_same_as_whole(c, p, plan, even_split(lengths, 2, false), 2, kF32);
  }
}

TEST(ShardedAttention, FailuresBeforeTheExchangeReachEveryProcess) {
  const std::vector<int32_t> lengths{200};
  Case c = random_case(lengths, 64, 4, 2, DType::kF32, 61);
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  const Problem whole = problem_of(c, p);
  const SparsePlan plan = random_plan(whole, 3, 0.25, false, false);
  const KernelTable& kernels = active_kernel_table();
  const auto run = [&](Shards& sh, int processes, uint64_t limit_of_0) {
    return run_processes(processes, [&](int r, Collective& coll) {
      Problem mine = whole;
      mine.q.data = sh.q[r].data();
      mine.k.data = sh.k[r].data();
      mine.v.data = sh.v[r].data();
      mine.o.data = sh.o[r].data();
      mine.lse = sh.lse[r].data();
      auto pool = pool_of(1);
      return cpu::sharded_attention(*pool, r == 0 ? limit_of_0 : 0, kernels, mine, sh.map, plan, coll);
    });
  };
  // A map that leaves positions 100..119 to nobody: every process says so.
  Shards gap = make_shards(c, {{0, 0, 100, 0}, {0, 120, 200, 1}}, 2);
  for (const Status& s : run(gap, 2, 0)) EXPECT_EQ(s.code(), SAMPLEATTN_INVALID_ARGUMENT) << s.message();
  // Process 0 alone runs out of workspace: it says so, the other one points to it, nobody waits.
  Shards sh = make_shards(c, even_split(lengths, 3, true), 3);
  const std::vector<Status> status = run(sh, 3, 1);
  EXPECT_EQ(status[0].code(), SAMPLEATTN_OUT_OF_MEMORY) << status[0].message();
  for (int r = 1; r < 3; ++r) EXPECT_EQ(status[r].code(), SAMPLEATTN_INTERNAL_ERROR) << status[r].message();
}

}  // namespace
}  // namespace sampleattn
