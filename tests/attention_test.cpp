// Dense attention through the public API against the double-precision oracle: every ISA table
// (forced through the test hook), every dtype, grouped-query ratios, causal and not, chunked
// prefill, varlen batches, strided layouts, threads, concurrency and the workspace limit.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <tuple>

#include "test_util.h"

namespace sampleattn::testing {
namespace {

std::vector<DenseShape> shapes() {
  return {
      {64, {{1, 1}}, true},
      {64, {{67, 67}}, true},
      {80, {{33, 130}}, true},             // chunked prefill: queries are the last 33 of 130
      {96, {{129, 129}}, false},
      {128, {{70, 70}, {0, 0}, {1, 1}, {0, 5}, {45, 200}}, true},  // varlen with empty sequences
      {128, {{20, 9}}, false},             // non-causal: more queries than keys is fine
      {256, {{40, 40}}, true},
  };
}

using Param = std::tuple<Isa, DType, int /*group*/>;

class DenseAttention : public ::testing::TestWithParam<Param> {};

void run_and_compare(const Param& param, const DenseShape& shape, sampleattn_precision precision, int threads) {
  const auto [isa, dtype, group] = param;
  Case c = dense_case(shape, dtype, group, 1234 + shape.d + group);
  sampleattn::Params p = c.params();
  p.precision = precision;

  sampleattn_context* ctx = cpu_context(threads);
  sampleattn_stats stats;
  sampleattn_stats_init(&stats);
  ASSERT_EQ(sampleattn_forward(ctx, &p, &stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  sampleattn_context_destroy(ctx);
  EXPECT_STREQ(stats.isa, isa_name(isa)) << "the forced ISA did not run";

  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = all_rows(problem);
  if (rows.empty()) return;
  const auto oracle = reference::attention_rows(problem, rows);
  const bool bf16_products =
      precision == SAMPLEATTN_PRECISION_BF16 && kernel_table_for(isa)->path(Precision::kBF16) != nullptr;
  const auto naive = reference::naive_attention_rows(problem, rows, bf16_products);
  const Errors ours = errors_of(oracle, output_rows(c, rows));
  const Errors base = errors_of(oracle, stored(naive, dtype));
  // The kernel's error is at most twice that of a naive implementation in the same precision
  // (plus a floor for the cases where the naive one happens to be exact).
  EXPECT_LE(ours.rel_l2, 2 * base.rel_l2 + 1e-7) << "naive " << base.rel_l2;
  EXPECT_LE(ours.max_abs, 2 * base.max_abs + 1e-6) << "naive " << base.max_abs;
  for (size_t r = 0; r < rows.size(); ++r) {
    const float lse = c.lse[static_cast<size_t>(rows[r].first) * c.hq + rows[r].second];
    if (std::isinf(oracle[r].lse)) {
      EXPECT_TRUE(std::isinf(lse) && lse < 0);
    } else {
      EXPECT_NEAR(lse, oracle[r].lse, bf16_products ? 3e-2 : 1e-4) << "row " << r;
    }
  }
}

TEST_P(DenseAttention, MatchesOracle) {
  ScopedIsa forced(std::get<0>(GetParam()));
  if (!forced.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(std::get<0>(GetParam()));
  for (const DenseShape& s : shapes()) {
    SCOPED_TRACE("d=" + std::to_string(s.d) + " causal=" + std::to_string(s.causal) +
                 " seqs=" + std::to_string(s.seqs.size()));
    run_and_compare(GetParam(), s, SAMPLEATTN_PRECISION_F32, 2);
  }
}

TEST_P(DenseAttention, Bf16ProductsMatchOracle) {
  const Isa isa = std::get<0>(GetParam());
  ScopedIsa forced(isa);
  if (!forced.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(isa);
  // On tables without bf16 products the request runs the f32 path; both are checked.
  for (const DenseShape& s : shapes()) {
    SCOPED_TRACE("d=" + std::to_string(s.d));
    run_and_compare(GetParam(), s, SAMPLEATTN_PRECISION_BF16, 2);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllIsas, DenseAttention,
    ::testing::Combine(::testing::ValuesIn(kAllIsas),
                       ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                       ::testing::Values(1, 4, 8)),
    [](const ::testing::TestParamInfo<Param>& tp) {
      return std::string(isa_name(std::get<0>(tp.param))) + "_" +
             dtype_name(std::get<1>(tp.param)) + "_g" + std::to_string(std::get<2>(tp.param));
    });

TEST(DenseAttentionLayout, HeadMajorStridesAndMixedDtypes) {
  // Q in f16, K/V in bf16, O in f32, laid out [head, token, dim].
  const int d = 64, hq = 4, hkv = 2, n = 53;
  Rng rng(7);
  Buffer q(DType::kF16, n, hq, d), k(DType::kBF16, n, hkv, d), v(DType::kBF16, n, hkv, d), o(DType::kF32, n, hq, d);
  q.fill_normal(rng, 1.f);
  k.fill_normal(rng, 1.f);
  v.fill_normal(rng, 1.f);
  o.poison();
  sampleattn::Params p;
  p.q = {q.data(), SAMPLEATTN_DTYPE_F16, d, int64_t{n} * d};
  p.k = {k.data(), SAMPLEATTN_DTYPE_BF16, d, int64_t{n} * d};
  p.v = {v.data(), SAMPLEATTN_DTYPE_BF16, d, int64_t{n} * d};
  p.o = {o.data(), SAMPLEATTN_DTYPE_F32, d, int64_t{n} * d};
  p.head_dim = d;
  p.num_q_heads = hq;
  p.num_kv_heads = hkv;
  p.seqlen_q = p.seqlen_k = n;
  sampleattn_context* ctx = cpu_context(2);
  ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  sampleattn_context_destroy(ctx);
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = all_rows(problem);
  const auto oracle = reference::attention_rows(problem, rows);
  double worst = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int x = 0; x < d; ++x) {
      const double got = o.get((int64_t{rows[r].second} * n + rows[r].first) * d + x);
      worst = std::max(worst, std::abs(got - oracle[r].o[x]));
    }
  }
  EXPECT_LT(worst, 1e-5);
}

TEST(DenseAttentionRows, NoKeysGivesZeroRowsAndMinusInfLse) {
  Case c;
  c.causal = false;
  c.add_sequence(3, 0);
  c.add_sequence(2, 4);
  c.materialize(3);
  sampleattn::Params p = c.params();
  sampleattn_context* ctx = cpu_context(1);
  ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  sampleattn_context_destroy(ctx);
  for (int64_t i = 0; i < 3 * c.hq * c.d; ++i) EXPECT_EQ(c.o.get(i), 0.f);
  for (int i = 0; i < 3 * c.hq; ++i) EXPECT_TRUE(std::isinf(c.lse[i]) && c.lse[i] < 0);
  for (int i = 3 * c.hq; i < 5 * c.hq; ++i) EXPECT_TRUE(std::isfinite(c.lse[i]));
}

TEST(DenseAttentionThreads, SameBitsForAnyThreadCount) {
  Case c;
  c.d = 128;
  c.hq = 8;
  c.hkv = 2;
  c.add_sequence(300, 300);
  c.add_sequence(77, 150);
  c.materialize(11);
  sampleattn::Params p = c.params();
  std::vector<std::vector<uint8_t>> results;
  for (int threads : {1, 2, 3}) {
    c.o.poison();
    sampleattn_context* ctx = cpu_context(threads);
    ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS);
    sampleattn_context_destroy(ctx);
    results.push_back(c.o.bytes);
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

TEST(DenseAttentionThreads, ConcurrentCallsOnOneContext) {
  sampleattn_context* ctx = cpu_context(2);
  std::vector<Case> cases(4);
  std::vector<std::vector<uint8_t>> expected;
  for (size_t i = 0; i < cases.size(); ++i) {
    cases[i].d = 64;
    cases[i].add_sequence(90 + static_cast<int>(i), 120);
    cases[i].materialize(100 + i);
    sampleattn::Params p = cases[i].params();
    ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS);
    expected.push_back(cases[i].o.bytes);
    cases[i].o.poison();
  }
  std::vector<std::thread> threads;
  std::vector<int> status(cases.size(), -1);
  for (size_t i = 0; i < cases.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int rep = 0; rep < 5; ++rep) {
        sampleattn::Params p = cases[i].params();
        status[i] = sampleattn_forward(ctx, &p, nullptr);
      }
    });
  }
  for (auto& t : threads) t.join();
  sampleattn_context_destroy(ctx);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(status[i], SAMPLEATTN_SUCCESS);
    EXPECT_EQ(cases[i].o.bytes, expected[i]) << "call " << i;
  }
}

TEST(DenseAttentionMemory, WorkspaceLimitFailsCleanly) {
  Case c;
  c.add_sequence(64, 64);
  c.materialize(5);
  sampleattn::Params p = c.params();
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.backend = SAMPLEATTN_BACKEND_CPU;
  o.max_workspace_bytes = 1024;
  sampleattn_context* ctx = nullptr;
  ASSERT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_SUCCESS);
  sampleattn_plan_info info;
  sampleattn_plan_info_init(&info);
  EXPECT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_NE(std::string(sampleattn_last_error()).find("workspace"), std::string::npos);
  for (int64_t i = 0; i < c.o.size(); ++i) ASSERT_TRUE(std::isnan(c.o.get(i))) << "output written";
  sampleattn_context_destroy(ctx);
}

TEST(DenseAttentionPlan, ReportsWorkspaceAndFlops) {
  Case c;
  c.d = 128;
  c.add_sequence(1000, 1000);
  c.materialize(5);
  sampleattn::Params p = c.params();
  sampleattn_context* ctx = cpu_context(2);
  sampleattn_plan_info info;
  sampleattn_plan_info_init(&info);
  ASSERT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_SUCCESS);
  EXPECT_GT(info.workspace_bytes, 0u);
  // O(threads x tile), not O(tokens): a few MiB a worker (the amx table's 512-key tiles: 10.7 MB
  // for two), and 16x the tokens add only their task list.
  EXPECT_LT(info.workspace_bytes, 16u << 20) << "scratch must be O(threads x tile)";
  EXPECT_DOUBLE_EQ(info.dense_flops, 4.0 * 128 * c.hq * (1000.0 * 1001 / 2));
  EXPECT_EQ(info.total_q_tokens, 1000);
  Case longer;
  longer.d = 128;
  longer.add_sequence(16000, 16000);
  longer.materialize(5);
  sampleattn::Params pl = longer.params();
  sampleattn_plan_info info_long;
  sampleattn_plan_info_init(&info_long);
  ASSERT_EQ(sampleattn_plan(ctx, &pl, &info_long), SAMPLEATTN_SUCCESS);
  EXPECT_LT(info_long.workspace_bytes, info.workspace_bytes + (256u << 10)) << "scratch must not grow with the tokens";
  sampleattn_context_destroy(ctx);
}

}  // namespace
}  // namespace sampleattn::testing
