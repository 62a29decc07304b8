// Stages 1 and 2 of a sharded call (cpu/sampling.h, build_sharded_plan) against one process's
// build_sparse_plan on the whole batch: the same decision, window and stripes for every (sequence,
// head), and the same validated and in-sample kept mass (up to rounding), for 1-4 simulated
// processes (threads, tests/thread_collective.h) over contiguous, zigzag, uneven and empty splits,
// varlen batches, grouped heads and both stripe scopes.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/problem.h"
#include "core/shard_map.h"
#include "cpu/flash_driver.h"
#include "cpu/look.h"
#include "cpu/sampling.h"
#include "cpu/thread_pool.h"
#include "simd/dispatch.h"
#include "test_util.h"
#include "thread_collective.h"
#include "workload/generator.h"

namespace sampleattn {
namespace {

using testing::Buffer;
using testing::Case;
using testing::pool_of;

// Every process's runs: `cuts[s]` are the boundaries of sequence s's pieces (pieces.size() + 1
// of them), and piece i goes to process owner[i].
struct Split {
  std::vector<std::vector<int64_t>> cuts;
  std::vector<int> owner;
};

Split contiguous(const std::vector<int32_t>& lengths, int processes, bool zigzag) {
  Split split;
  const int pieces = zigzag ? 2 * processes : processes;
  for (int32_t len : lengths) {
    std::vector<int64_t> cuts;
    for (int i = 0; i <= pieces; ++i) cuts.push_back(static_cast<int64_t>(len) * i / pieces);
    split.cuts.push_back(cuts);
  }
  for (int i = 0; i < pieces; ++i) split.owner.push_back(zigzag && i >= processes ? pieces - 1 - i : i);
  return split;
}

// The shard map and each process's own copy of its Q/K/V tokens.
struct Shards {
  ShardMap map;
  std::vector<Buffer> q, k, v;
};

Shards make_shards(const Case& c, const Split& split, int processes) {
  Shards sh;
  sh.map.runs.resize(static_cast<size_t>(processes));
  std::vector<std::vector<std::pair<int64_t, int64_t>>> tokens(static_cast<size_t>(processes));  // global token, count
  for (size_t s = 0; s < split.cuts.size(); ++s) {
    const std::vector<int64_t>& cuts = split.cuts[s];
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      const int r = split.owner[i];
      auto& runs = sh.map.runs[static_cast<size_t>(r)];
      const int64_t local = runs.empty() ? 0 : runs.back().local + (runs.back().end - runs.back().begin);
      runs.push_back({static_cast<int>(s), cuts[i], cuts[i + 1], local});
      tokens[static_cast<size_t>(r)].push_back({c.cu_q[s] + cuts[i], cuts[i + 1] - cuts[i]});
    }
  }
  auto copy = [](const Buffer& from, const std::vector<std::pair<int64_t, int64_t>>& pieces) {
    int64_t n = 0;
    for (auto [t, len] : pieces) n += len;
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
    sh.q.push_back(copy(c.q, tokens[static_cast<size_t>(r)]));
    sh.k.push_back(copy(c.k, tokens[static_cast<size_t>(r)]));
    sh.v.push_back(copy(c.v, tokens[static_cast<size_t>(r)]));
  }
  return sh;
}

// The active kernel table with every path rescoring (FlashPath::rescore, the AMX tiles' choice):
// stage 1 then computes its scores twice wherever its keys are packed once, on any machine.
KernelTable rescoring_table() {
  KernelTable t = active_kernel_table();
  for (FlashPath& path : t.paths) path.rescore = true;
  return t;
}

// Every process's sharded plan, then its look, under the thread collective (each call's
// workspace limit given); a process whose plan fails runs no look.
struct ShardedRun {
  std::vector<SparsePlan> plans;
  std::vector<Status> plan_status, look_status;
};
ShardedRun run_sharded(const Problem& whole, Shards& sh, int processes, const KernelTable& kernels,
                       uint64_t plan_limit, uint64_t look_limit) {
  ShardedRun out;
  out.plans.resize(static_cast<size_t>(processes));
  out.plan_status.resize(static_cast<size_t>(processes));
  out.look_status.resize(static_cast<size_t>(processes));
  testing::ThreadWorld world(processes);
  world.run([&](int r) {
    Problem mine = whole;
    mine.q.data = sh.q[r].data();
    mine.k.data = sh.k[r].data();
    mine.v.data = sh.v[r].data();
    auto pool = pool_of(1);
    testing::ThreadCollective coll(world, r);
    out.plan_status[r] = cpu::build_sharded_plan(*pool, plan_limit, kernels, mine, sh.map, coll, true, &out.plans[r]);
    if (out.plan_status[r].is_ok()) {
      out.look_status[r] = cpu::find_dense_rows_sharded(*pool, look_limit, kernels, mine, sh.map, coll, &out.plans[r]);
    }
  });
  return out;
}

// workspace_limit: the sharded calls' (one process's: none). table: the kernels of both (default:
// the active table).
void expect_same_plan(Case& c, const sampleattn::Params& params, const Split& split, int processes,
                      uint64_t workspace_limit = 0, const KernelTable* table = nullptr) {
  Problem whole;
  ASSERT_TRUE(build_problem(&params, true, &whole).is_ok());
  const KernelTable& kernels = table != nullptr ? *table : active_kernel_table();
  SparsePlan one;
  {
    auto pool = pool_of(2);
    ASSERT_TRUE(cpu::build_sparse_plan(*pool, 0, cpu::WorkspaceParts{}, kernels, whole, true, &one).is_ok());
    ASSERT_TRUE(cpu::find_dense_rows(*pool, 0, cpu::WorkspaceParts{}, kernels, whole, &one).is_ok());
  }
  // The case must test something: sparse heads with ranked stripes, validated.
  int sparse = 0;
  for (const HeadPlan& h : one.heads) sparse += !h.dense && h.stripes.size() > 4 && h.val_min >= 0 ? 1 : 0;
  ASSERT_GT(sparse, 0) << "every head dense: the case tests nothing";
  Shards sh = make_shards(c, split, processes);
  const ShardedRun run = run_sharded(whole, sh, processes, kernels, workspace_limit, workspace_limit);
  if (params.sample.look > 0.f) {
    int64_t rows = 0;
    for (const HeadPlan& h : one.heads) rows += static_cast<int64_t>(h.dense_rows.size());
    ASSERT_GT(rows, 0) << "no row sent dense: the look tests nothing";
  }
  for (int r = 0; r < processes; ++r) {
    ASSERT_TRUE(run.plan_status[r].is_ok()) << run.plan_status[r].message();
    ASSERT_TRUE(run.look_status[r].is_ok()) << run.look_status[r].message();
    const SparsePlan& got = run.plans[r];
    ASSERT_EQ(got.heads.size(), one.heads.size());
    for (size_t i = 0; i < one.heads.size(); ++i) {
      const HeadPlan& a = one.heads[i];
      const HeadPlan& b = got.heads[i];
      SCOPED_TRACE("process " + std::to_string(r) + " of " + std::to_string(processes) + ", (sequence, head) " +
                   std::to_string(i));
      EXPECT_EQ(b.decision, a.decision);
      EXPECT_EQ(b.dense, a.dense);
      EXPECT_EQ(b.window, a.window);
      EXPECT_EQ(b.alpha_stripes, a.alpha_stripes);
      EXPECT_EQ(b.stripes, a.stripes);
      EXPECT_EQ(b.has_look_stripes, a.has_look_stripes);
      EXPECT_EQ(b.look_stripes, a.look_stripes);
      EXPECT_EQ(b.dense_rows, a.dense_rows);
      EXPECT_NEAR(b.cra_min, a.cra_min, 1e-4);
      EXPECT_NEAR(b.cra_mean, a.cra_mean, 1e-4);
      EXPECT_NEAR(b.val_min, a.val_min, 1e-4);
      EXPECT_NEAR(b.val_p5, a.val_p5, 1e-4);
      EXPECT_NEAR(b.val_mean, a.val_mean, 1e-4);
      EXPECT_NEAR(b.val_lost_rms, a.val_lost_rms, 1e-4);
    }
  }
}

// A batch of the generator's sequences (workload/generator.h, its mix with copy and retrieval
// heads by default, so the heads run sparse, widened and dense): 8 query / 2 kv heads, d 64.
Case generated_case(const std::vector<int32_t>& lengths, DType dtype, uint64_t seed,
                    workload::HeadMix mix = workload::HeadMix::kReal) {
  Case c;
  c.d = 64;
  c.hq = 8;
  c.hkv = 2;
  c.in = c.out = dtype;
  for (int32_t len : lengths) c.add_sequence(len, len);
  c.materialize(seed);
  for (size_t s = 0; s < lengths.size(); ++s) {
    workload::GeneratorConfig cfg;
    cfg.seq = lengths[s];
    cfg.head_dim = c.d;
    cfg.num_q_heads = c.hq;
    cfg.num_kv_heads = c.hkv;
    cfg.seed = seed + s;
    cfg.mix = mix;
    workload::GeneratedData g;
    EXPECT_TRUE(workload::generate(cfg, &g).is_ok());
    const auto* q = reinterpret_cast<const float*>(g.q.bytes.data());
    const auto* k = reinterpret_cast<const float*>(g.k.bytes.data());
    const auto* v = reinterpret_cast<const float*>(g.v.bytes.data());
    for (int64_t i = 0; i < g.q.num_elements(); ++i) c.q.set(c.cu_q[s] * c.hq * c.d + i, q[i]);
    for (int64_t i = 0; i < g.k.num_elements(); ++i) c.k.set(c.cu_k[s] * c.hkv * c.d + i, k[i]);
    for (int64_t i = 0; i < g.v.num_elements(); ++i) c.v.set(c.cu_k[s] * c.hkv * c.d + i, v[i]);
  }
  return c;
}

sampleattn::Params sample_params(Case& c) {
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  p.sample.dense_below = 0;
  return p;
}

// A workspace limit under which no process packs its keys once (build_sharded_plan): under 4x one
// key tile of every kv group packed by the path the call runs, while a chunk's scores still fit.
// None where they do not: the scalar table's 64-key tiles make that limit smaller than one worker's
// stage-1 scratch (a chunk of at least 32 rows' scores), which such a call refuses as out of memory.
std::optional<uint64_t> keys_apart_limit(const Case& c, const sampleattn::Params& params) {
  Problem problem;
  EXPECT_TRUE(build_problem(&params, true, &problem).is_ok());
  const KernelTable& kernels = active_kernel_table();
  const uint64_t tile = cpu::select_path(kernels, problem).packed_bytes(kernels.key_tile, c.d);
  const uint64_t limit = 4 * static_cast<uint64_t>(c.hkv) * tile - 64;
  if (cpu::sampling_footprint(kernels, problem, 1, limit).scratch_per_worker > limit) {
    std::printf("keys packed apart: not on the %s table (%d-key tiles)\n", kernels.name, kernels.key_tile);
    return std::nullopt;
  }
  return limit;
}

// Stage 1's keys (stage1_keys): every position of every sequence scored by one process, in
// runs that one holder each holds, numbered in holder order; every process scores a pair of
// chunks (c, 2P - 1 - c), c its place in the order of where the processes' keys begin, so the
// same stage-1 work each (the keys' visible rows summed); a zigzag split keeps its own keys.
TEST(ShardedPlan, StageOneKeysBalancedAndCoveringOnce) {
  const std::vector<int32_t> lengths{2000, 7, 0, 333};
  const std::vector<int64_t> lengths64(lengths.begin(), lengths.end());
  for (int processes = 1; processes <= 5; ++processes) {
    for (int kind = 0; kind < 3; ++kind) {
      SCOPED_TRACE(std::to_string(processes) + " processes, split " + std::to_string(kind));
      Split split = contiguous(lengths, processes, kind == 1);
      if (kind == 2) {  // uneven: the first process holds most of each sequence
        for (size_t s = 0; s < lengths.size(); ++s) {
          for (size_t i = 1; i + 1 < split.cuts[s].size(); ++i) {
            split.cuts[s][i] = lengths[s] - (lengths[s] / 4) * static_cast<int64_t>(split.cuts[s].size() - 1 - i) / processes;
          }
        }
      }
      ShardMap map;
      map.runs.resize(static_cast<size_t>(processes));
      for (size_t s = 0; s < split.cuts.size(); ++s) {
        for (size_t i = 0; i + 1 < split.cuts[s].size(); ++i) {
          auto& runs = map.runs[static_cast<size_t>(split.owner[i])];
          const int64_t local = runs.empty() ? 0 : runs.back().local + (runs.back().end - runs.back().begin);
          runs.push_back({static_cast<int>(s), split.cuts[s][i], split.cuts[s][i + 1], local});
        }
      }
      const StageKeys keys = stage1_keys(map, lengths64);
      ASSERT_EQ(keys.map.processes(), processes);
      std::vector<std::vector<int>> scorer(lengths.size());
      for (size_t s = 0; s < lengths.size(); ++s) scorer[s].assign(static_cast<size_t>(lengths[s]), -1);
      for (int r = 0; r < processes; ++r) {
        const auto& runs = keys.map.runs[static_cast<size_t>(r)];
        ASSERT_EQ(keys.holder[static_cast<size_t>(r)].size(), runs.size());
        int64_t next = 0;
        std::vector<double> work(lengths.size(), 0.0);
        std::vector<int64_t> own(lengths.size(), 0), held(lengths.size(), 0);
        for (size_t i = 0; i < runs.size(); ++i) {
          const ShardRun& run = runs[i];
          const int holder = keys.holder[static_cast<size_t>(r)][i];
          EXPECT_EQ(run.local, next);  // the gathered rows in order
          EXPECT_TRUE(i == 0 || holder >= keys.holder[static_cast<size_t>(r)][i - 1]);
          next += run.end - run.begin;
          for (int64_t j = run.begin; j < run.end; ++j) {
            EXPECT_EQ(scorer[run.seq][j], -1) << "position " << j << " of sequence " << run.seq;
            scorer[run.seq][j] = r;
            work[run.seq] += static_cast<double>(lengths[run.seq] - j);
            // the holder holds it
            bool found = false;
            for (const ShardRun& h : map.runs[static_cast<size_t>(holder)]) found |= h.seq == run.seq && h.begin <= j && j < h.end;
            EXPECT_TRUE(found);
          }
          if (holder == r) own[run.seq] += run.end - run.begin;
        }
        for (const ShardRun& h : map.runs[static_cast<size_t>(r)]) held[h.seq] += h.end - h.begin;
        // Each process's work on a sequence: a pair of chunks, sum over keys of (L - j), equal to
        // L^2 / 2P + O(L) whatever the split; the pair's place is the process's (contiguous and
        // uneven splits: its rank; zigzag: its rank too, its first chunk being chunk r, when no
        // chunk is empty).
        for (size_t s = 0; s < lengths.size(); ++s) {
          const double even = static_cast<double>(lengths[s]) * (lengths[s] + 1) / 2 / processes;
          EXPECT_NEAR(work[s], even, 2.0 * lengths[s] + 2) << "sequence " << s;
          const int64_t chunks = 2 * static_cast<int64_t>(processes);
          if (lengths[s] < chunks) continue;  // empty chunks: a zigzag process may begin late
          if (kind == 1) {
            EXPECT_EQ(own[s], held[s]) << "a zigzag split keeps its keys, sequence " << s;
          }
          const int64_t lo = lengths[s] * r / chunks, hi = lengths[s] * (r + 1) / chunks;
          for (int64_t j = lo; j < hi; ++j) EXPECT_EQ(scorer[s][static_cast<size_t>(j)], r) << "sequence " << s;
        }
      }
      for (size_t s = 0; s < lengths.size(); ++s) {
        for (int32_t j = 0; j < lengths[s]; ++j) EXPECT_GE(scorer[s][static_cast<size_t>(j)], 0) << j;
      }
    }
  }
}

// Stage 1's three ways: without a limit each process packs its key tiles once, then keeps the
// scores in waves (the FMA paths) or, on a rescoring path, scores twice (the statistics, one
// reduction, the column sums); under keys_apart_limit, each chunk packs its tiles, in waves.
TEST(ShardedPlan, SameAsOneProcessForEverySplit) {
  const std::vector<int32_t> lengths{2000};
  Case c = generated_case(lengths, DType::kF32, 5);
  const sampleattn::Params p = sample_params(c);
  const std::optional<uint64_t> keys_apart = keys_apart_limit(c, p);
  const KernelTable rescoring = rescoring_table();
  // (Under keys_apart_limit no path rescores: the keys are not packed once.)
  struct Way {
    uint64_t limit;
    const KernelTable* table;
  };
  std::vector<Way> ways{Way{0, &active_kernel_table()}, Way{0, &rescoring}};
  if (keys_apart) ways.push_back(Way{*keys_apart, &active_kernel_table()});
  for (const Way& way : ways) {
    for (int processes = 1; processes <= 4; ++processes) {
      SCOPED_TRACE(std::to_string(processes) + " processes, workspace limit " + std::to_string(way.limit) +
                   (way.table == &rescoring ? ", rescoring" : ""));
      expect_same_plan(c, p, contiguous(lengths, processes, false), processes, way.limit, way.table);
      expect_same_plan(c, p, contiguous(lengths, processes, true), processes, way.limit, way.table);
    }
  }
}

// One process: the same plan whether stage 1 keeps its scores or computes them twice.
TEST(ShardedPlan, OneProcessSamePlanWithScoresKeptOrComputedTwice) {
  const std::vector<int32_t> lengths{1700, 2100};
  Case c = generated_case(lengths, DType::kF32, 9);
  const sampleattn::Params p = sample_params(c);
  Problem whole;
  ASSERT_TRUE(build_problem(&p, true, &whole).is_ok());
  const KernelTable rescoring = rescoring_table();
  SparsePlan kept, twice;
  auto pool = pool_of(2);
  ASSERT_TRUE(cpu::build_sparse_plan(*pool, 0, cpu::WorkspaceParts{}, active_kernel_table(), whole, true, &kept).is_ok());
  ASSERT_TRUE(cpu::build_sparse_plan(*pool, 0, cpu::WorkspaceParts{}, rescoring, whole, true, &twice).is_ok());
  ASSERT_EQ(kept.heads.size(), twice.heads.size());
  int sparse = 0;
  for (size_t i = 0; i < kept.heads.size(); ++i) {
    SCOPED_TRACE("(sequence, head) " + std::to_string(i));
    const HeadPlan& a = kept.heads[i];
    const HeadPlan& b = twice.heads[i];
    sparse += !a.dense && a.stripes.size() > 4 ? 1 : 0;
    EXPECT_EQ(b.decision, a.decision);
    EXPECT_EQ(b.dense, a.dense);
    EXPECT_EQ(b.window, a.window);
    EXPECT_EQ(b.stripes, a.stripes);
    EXPECT_NEAR(b.cra_min, a.cra_min, 1e-5);
    EXPECT_NEAR(b.val_min, a.val_min, 1e-5);
  }
  EXPECT_GT(sparse, 0) << "every head dense: the case tests nothing";
}

TEST(ShardedPlan, UnevenEmptyAndVarlen) {
  const std::vector<int32_t> lengths{1700, 640, 2100};
  Case c = generated_case(lengths, DType::kBF16, 6);
  const sampleattn::Params p = sample_params(c);
  Split uneven;
  uneven.cuts = {{0, 10, 10, 1200, 1700}, {0, 0, 300, 640, 640}, {0, 1000, 1001, 1500, 2100}};
  uneven.owner = {2, 0, 1, 0};  // process 3 holds nothing; process 0 two pieces of each
  expect_same_plan(c, p, uneven, 4);
  expect_same_plan(c, p, contiguous(lengths, 3, true), 3);
  if (const std::optional<uint64_t> keys_apart = keys_apart_limit(c, p)) expect_same_plan(c, p, uneven, 4, *keys_apart);
  const KernelTable rescoring = rescoring_table();
  expect_same_plan(c, p, uneven, 4, 0, &rescoring);
}

TEST(ShardedPlan, KvGroupScopeWindowMassAndAlpha) {
  const std::vector<int32_t> lengths{3000};
  // The default mix: a kv group of the real mix holds a copy head, which sends the group dense.
  Case plain = generated_case(lengths, DType::kF32, 8, workload::HeadMix::kDefault);
  sampleattn::Params group = sample_params(plain);
  group.sample.scope = SAMPLEATTN_STRIPES_PER_KV_GROUP;
  expect_same_plan(plain, group, contiguous(lengths, 3, true), 3);
  Case c = generated_case(lengths, DType::kF32, 7);
  sampleattn::Params p = sample_params(c);
  p.sample.scope = SAMPLEATTN_STRIPES_PER_HEAD;
  p.sample.window_mass_counts = 1;
  expect_same_plan(c, p, contiguous(lengths, 2, true), 2);
  p.sample.window_mass_counts = 0;
  p.sample.alpha = 0.8f;
  p.sample.sink_tokens = 0;
  expect_same_plan(c, p, contiguous(lengths, 4, false), 4);
}

// The look at every row (cpu/look.h): the same reference stripes and dense rows as one process,
// through the probe (3,000 rows: every second row past the band first) and the rows gathered from
// every process, on the far mix (rare rows that fetch one far key) and every split.
TEST(ShardedPlan, TheLookSameAsOneProcess) {
  const std::vector<int32_t> lengths{3000};
  Case c = generated_case(lengths, DType::kF32, 1, workload::HeadMix::kFar);
  sampleattn::Params p = sample_params(c);
  p.sample.look = 4.f;
  for (int processes = 1; processes <= 4; ++processes) {
    SCOPED_TRACE(std::to_string(processes) + " processes");
    expect_same_plan(c, p, contiguous(lengths, processes, false), processes);
    expect_same_plan(c, p, contiguous(lengths, processes, true), processes);
  }
  Split uneven;
  uneven.cuts = {{0, 10, 10, 1900, 3000}};
  uneven.owner = {2, 0, 1, 0};
  expect_same_plan(c, p, uneven, 4);
}

// Under a workspace limit too small for the gathered keys (2 x tokens x kv heads x (d + 4) bytes),
// every process returns OUT_OF_MEMORY with the message, none waits for another.
TEST(ShardedPlan, TheLookPastTheWorkspaceLimitFailsOnEveryProcess) {
  const std::vector<int32_t> lengths{3000};
  Case c = generated_case(lengths, DType::kF32, 1, workload::HeadMix::kFar);
  sampleattn::Params p = sample_params(c);
  p.sample.look = 4.f;
  Problem whole;
  ASSERT_TRUE(build_problem(&p, true, &whole).is_ok());
  const int processes = 3;
  const Split split = contiguous(lengths, processes, true);
  Shards sh = make_shards(c, split, processes);
  const uint64_t gathered = 2ull * 3000 * static_cast<uint64_t>(c.hkv) * (static_cast<uint64_t>(c.d) + 4);
  // The plan under no limit (its own needs are not this test's), the look under one just short.
  const ShardedRun run = run_sharded(whole, sh, processes, active_kernel_table(), 0, gathered - 1);
  const std::vector<Status>& plan_status = run.plan_status;
  const std::vector<Status>& look_status = run.look_status;
  for (int r = 0; r < processes; ++r) {
    ASSERT_TRUE(plan_status[r].is_ok()) << plan_status[r].message();
    EXPECT_EQ(look_status[r].code(), SAMPLEATTN_OUT_OF_MEMORY) << "process " << r;
    EXPECT_NE(look_status[r].message().find("gathers every process's keys"), std::string::npos) << look_status[r].message();
  }
}

// The gathered keys travel as the look's integers and scales (cpu/look.cpp): a varlen bf16 batch,
// each sequence's keys at its own offset, gives the one-process plan too.
TEST(ShardedPlan, TheLookOfAVarlenBatchSameAsOneProcess) {
  const std::vector<int32_t> lengths{2200, 3000};
  Case c = generated_case(lengths, DType::kBF16, 3, workload::HeadMix::kFar);
  sampleattn::Params p = sample_params(c);
  p.sample.look = 4.f;
  for (int processes = 2; processes <= 3; ++processes) {
    SCOPED_TRACE(std::to_string(processes) + " processes");
    expect_same_plan(c, p, contiguous(lengths, processes, true), processes);
  }
}

}  // namespace
}  // namespace sampleattn
