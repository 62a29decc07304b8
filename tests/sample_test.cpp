// SampleAttention on the CPU: the output equals the oracle restricted to the chosen mask (every
// ISA, dtype, grouped-query ratio, varlen and chunked case), the selection rule holds against
// column scores computed in double, planted structure is found, and threads do not change bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <tuple>

#include "core/sparse_plan.h"
#include "cpu/sampling.h"
#include "cpu/stripe_selection.h"
#include "test_util.h"

namespace sampleattn::testing {
namespace {

// Small-problem parameters: sampling applies from k_len 0, with a short window.
void small_sample_params(sampleattn::Params& p) {
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  p.sample.dense_below = 0;
  p.sample.min_window = 8;
  p.sample.r_w = 0.08f;
  p.sample.sample_block = 16;
  p.sample.r_row = 0.2f;
  p.sample.sink_tokens = 1;
  p.sample.max_density = 1.f;  // these small masks are dense-ish: keep them sparse to test the mechanism
  p.sample.r_val = 0.f;        // alpha's rule as it stands; validation has its own tests (mask_validation_test)
}

// Runs the call and returns the chosen masks per (sequence, head) from the statistics.
struct Outcome {
  sampleattn_status status;
  std::vector<sampleattn_head_stats> heads;
  MaskMap masks;
  sampleattn_stats stats;
};

Outcome run(Case& c, sampleattn::Params& p, int threads) {
  Outcome out;
  const int nseq = static_cast<int>(c.cu_q.size()) - 1;
  out.heads.resize(static_cast<size_t>(nseq) * c.hq);
  std::vector<int32_t> offsets(out.heads.size() + 1);
  std::vector<int32_t> stripes(1 << 16);
  sampleattn_stats_init(&out.stats);
  out.stats.head_stats = out.heads.data();
  out.stats.stripe_offsets = offsets.data();
  out.stats.stripes = stripes.data();
  out.stats.stripe_capacity = static_cast<int64_t>(stripes.size());
  sampleattn_context* ctx = cpu_context(threads);
  out.status = sampleattn_forward(ctx, &p, &out.stats);
  sampleattn_context_destroy(ctx);
  if (out.status != SAMPLEATTN_SUCCESS) return out;
  EXPECT_LE(out.stats.stripes_required, out.stats.stripe_capacity);
  out.masks = masks_from_stats(out.heads, nseq, c.hq, offsets, stripes);
  return out;
}

using Param = std::tuple<Isa, DType, int>;
class SampleAttention : public ::testing::TestWithParam<Param> {};

TEST_P(SampleAttention, EqualsOracleRestrictedToTheMask) {
  const auto [isa, dtype, group] = GetParam();
  ScopedIsa forced(isa);
  if (!forced.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(isa);
  for (int d : {64, 128}) {
    Case c;
    c.d = d;
    c.hkv = 2;
    c.hq = 2 * group;
    c.in = c.out = dtype;
    c.add_sequence(240, 240);
    c.add_sequence(0, 0);
    c.add_sequence(1, 1);
    c.add_sequence(70, 300);  // chunked prefill
    c.materialize(77 + d + group, 0.6f);
    plant(c, {5, 90, 150}, 2.5f);
    sampleattn::Params p = c.params();
    small_sample_params(p);
    Outcome o = run(c, p, 2);
    ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    EXPECT_STREQ(o.stats.isa, isa_name(isa));
    EXPECT_GT(o.masks.size(), 0u);
    EXPECT_LT(o.stats.density, 1.0);

    Problem problem;
    ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
    const auto rows = all_rows(problem);
    const auto oracle = reference::attention_rows(problem, rows, lookup(o.masks));
    const auto naive = reference::naive_attention_rows(problem, rows, false, lookup(o.masks));
    const Errors ours = errors_of(oracle, output_rows(c, rows));
    const Errors base = errors_of(oracle, stored(naive, dtype));
    EXPECT_LE(ours.rel_l2, 2 * base.rel_l2 + 1e-7) << "d=" << d;
    EXPECT_LE(ours.max_abs, 2 * base.max_abs + 1e-6) << "d=" << d;
    for (size_t r = 0; r < rows.size(); ++r) {
      const float lse = c.lse[static_cast<size_t>(rows[r].first) * c.hq + rows[r].second];
      ASSERT_NEAR(lse, oracle[r].lse, 1e-4) << "row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllIsas, SampleAttention,
    ::testing::Combine(::testing::ValuesIn(kAllIsas),
                       ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                       ::testing::Values(1, 4, 8)),
    [](const ::testing::TestParamInfo<Param>& tp) {
      return std::string(isa_name(std::get<0>(tp.param))) + "_" + dtype_name(std::get<1>(tp.param)) +
             "_g" + std::to_string(std::get<2>(tp.param));
    });

// Column scores of the sampled rows, in double, from the oracle's own softmax.
std::vector<double> column_scores(const Case& c, const Problem& problem, int seq, int head, int64_t window,
                                  bool outside_window_only) {
  const Sequence& s = problem.sequences[seq];
  std::vector<double> scores(static_cast<size_t>(s.k_len), 0.0);
  const int kvh = head / problem.group;
  for (int64_t i : sampled_rows(problem.sample, s.q_len)) {
    const int64_t p = s.q_offset() + i;
    std::vector<double> logits(static_cast<size_t>(p + 1));
    double mx = -1e300;
    for (int64_t j = 0; j <= p; ++j) {
      double dot = 0;
      for (int x = 0; x < c.d; ++x) {
        dot += static_cast<double>(c.q.get(((s.q_begin + i) * c.hq + head) * c.d + x)) *
               c.k.get(((s.k_begin + j) * c.hkv + kvh) * c.d + x);
      }
      logits[j] = dot * problem.scale;
      mx = std::max(mx, logits[j]);
    }
    double sum = 0;
    for (double& l : logits) sum += (l = std::exp(l - mx));
    const int64_t end = outside_window_only ? p - window + 1 : p + 1;
    for (int64_t j = 0; j < std::max<int64_t>(end, 0); ++j) scores[j] += logits[j] / sum;
  }
  return scores;
}

class SampleSelection : public ::testing::TestWithParam<bool> {};

TEST_P(SampleSelection, FewestColumnsReachingAlpha) {
  const bool window_counts = GetParam();
  Case c;
  c.d = 64;
  c.hq = c.hkv = 2;
  c.add_sequence(400, 400);
  c.materialize(5, 0.8f);
  plant(c, {3, 100, 101, 250}, 2.0f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.alpha = 0.9f;
  p.sample.sink_tokens = 0;
  p.sample.window_mass_counts = window_counts ? 1 : 0;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  for (int h = 0; h < c.hq; ++h) {
    const reference::HeadMask& m = o.masks.at({0, h});
    const auto scores = column_scores(c, problem, 0, h, m.window, window_counts);
    const double rows = static_cast<double>(sampled_rows(problem.sample, 400).size());
    const double outside = std::accumulate(scores.begin(), scores.end(), 0.0);
    const double target = 0.9 * rows - (window_counts ? rows - outside : 0.0);
    double kept = 0, weakest = 1e300;
    for (int32_t j : m.stripes) {
      kept += scores[j];
      weakest = std::min(weakest, scores[j]);
    }
    const double slack = 1e-4 * rows;  // f32 scores against double ones
    EXPECT_GE(kept, target - slack) << "head " << h;
    EXPECT_LT(kept - weakest, target + slack) << "head " << h << ": not the fewest";
    // The chosen columns are the best ones: nothing left out beats the weakest chosen by much.
    for (int64_t j = 0; j < static_cast<int64_t>(scores.size()); ++j) {
      if (!std::binary_search(m.stripes.begin(), m.stripes.end(), static_cast<int32_t>(j))) {
        EXPECT_LE(scores[j], weakest + 1e-5) << "column " << j << " beats a chosen one";
      }
    }
    // Planted columns are found.
    for (int32_t j : {3, 100, 101, 250}) {
      EXPECT_TRUE(std::binary_search(m.stripes.begin(), m.stripes.end(), j) || j > 400 - m.window)
          << "planted column " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, SampleSelection, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& tp) {
                           return tp.param ? std::string("WindowMassCounts") : std::string("PaperRule");
                         });

TEST(SampleAttentionNeedle, KeyThatOnlyLateQueriesReadSurvives) {
  // Key 50 matches a component only the last 16 queries carry: the last block is always
  // sampled, so its column score is large and it must become a stripe those queries see.
  Case c;
  c.d = 64;
  c.hq = c.hkv = 1;
  const int n = 512;
  c.add_sequence(n, n);
  c.materialize(31, 0.5f);
  for (int x = 0; x < c.d; ++x) c.k.set(50 * c.d + x, 0.f);
  c.k.set(50 * c.d + 1, 20.f);  // scores ~10 nats above the rest for those queries
  for (int t = n - 16; t < n; ++t) c.q.set(t * c.d + 1, 4.f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.sink_tokens = 0;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  const reference::HeadMask& m = o.masks.at({0, 0});
  EXPECT_TRUE(std::binary_search(m.stripes.begin(), m.stripes.end(), 50));
  EXPECT_LE(50, n - 16 - m.window) << "the needle must lie outside those queries' window";
  // And the output of those queries equals dense there.
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  std::vector<std::pair<int64_t, int>> rows;
  for (int t = n - 16; t < n; ++t) rows.emplace_back(t, 0);
  const auto dense = reference::attention_rows(problem, rows);
  EXPECT_LT(errors_of(dense, output_rows(c, rows)).rel_l2, 1e-2);
}

TEST(StripeSelection, UnitRules) {
  const std::vector<float> s = {0.5f, 0.1f, 0.3f, 0.3f, 0.05f, 0.0f, 0.05f};
  cpu::SelectionRule rule;
  rule.target = 0.75;
  // 0.5 + 0.3 (index 2 wins the tie with 3) reaches 0.8 >= 0.75.
  EXPECT_EQ(cpu::select_stripes(s.data(), 7, rule), (std::vector<int32_t>{0, 2}));
  rule.target = 0.81;
  EXPECT_EQ(cpu::select_stripes(s.data(), 7, rule), (std::vector<int32_t>{0, 2, 3}));
  rule.sink_tokens = 2;  // keys 0 and 1 always kept, their 0.6 counts
  rule.target = 0.85;
  EXPECT_EQ(cpu::select_stripes(s.data(), 7, rule), (std::vector<int32_t>{0, 1, 2}));
  rule.min_stripes = 5;  // padded with the next best (3, then 4 before 6 on the tie)
  EXPECT_EQ(cpu::select_stripes(s.data(), 7, rule), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  rule.min_stripes = 0;
  rule.max_stripes = 2;
  EXPECT_EQ(cpu::select_stripes(s.data(), 7, rule), (std::vector<int32_t>{0, 1}));
  rule = {};
  rule.target = 10;  // unreachable: every column with score
  EXPECT_EQ(cpu::select_stripes(s.data(), 7, rule), (std::vector<int32_t>{0, 1, 2, 3, 4, 6}));
  rule.target = 0;
  EXPECT_TRUE(cpu::select_stripes(s.data(), 7, rule).empty());
}

TEST(StripeSelection, LargeRandomAgreesWithSorting) {
  Rng rng(3);
  std::vector<float> s(20000);
  for (float& v : s) v = static_cast<float>(std::floor(rng.uniform() * 50) / 50);  // many ties
  cpu::SelectionRule rule;
  rule.target = 0.95 * std::accumulate(s.begin(), s.end(), 0.0);
  const auto chosen = cpu::select_stripes(s.data(), static_cast<int64_t>(s.size()), rule);
  std::vector<int32_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  double sum = 0;
  size_t n = 0;
  while (sum < rule.target) sum += s[order[n++]];
  std::vector<int32_t> expected(order.begin(), order.begin() + static_cast<int64_t>(n));
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(chosen, expected);
}

TEST(SampleRows, StridedBlocksWithTheLastAlwaysIncluded) {
  sampleattn_sample_params p;
  sampleattn_sample_params_init(&p);
  p.sample_block = 10;
  p.r_row = 0.25f;
  const auto rows = sampled_rows(p, 95);  // 10 blocks, 3 sampled: 9, 6, 3 (nb - 1 - t*nb/ns)
  std::vector<int64_t> expected;
  for (int64_t b : {3, 6}) {
    for (int64_t i = b * 10; i < b * 10 + 10; ++i) expected.push_back(i);
  }
  for (int64_t i = 90; i < 95; ++i) expected.push_back(i);
  EXPECT_EQ(rows, expected);
  EXPECT_EQ(sampled_rows(p, 1), (std::vector<int64_t>{0}));
  p.r_row = 1.f;
  EXPECT_EQ(sampled_rows(p, 25).size(), 25u);
}

TEST(SampleAttentionThreads, SameMaskAndBitsForOneAndTwoThreads) {
  Case c;
  c.d = 128;
  c.hq = 8;
  c.hkv = 2;
  c.add_sequence(500, 500);
  c.add_sequence(100, 260);
  c.materialize(21, 0.7f);
  plant(c, {7, 300}, 2.0f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  Outcome one = run(c, p, 1);
  const auto bits_one = c.o.bytes;
  c.o.poison();
  Outcome two = run(c, p, 2);
  ASSERT_EQ(one.status, SAMPLEATTN_SUCCESS);
  ASSERT_EQ(two.status, SAMPLEATTN_SUCCESS);
  EXPECT_EQ(bits_one, c.o.bytes);
  ASSERT_EQ(one.masks.size(), two.masks.size());
  for (const auto& [key, mask] : one.masks) {
    EXPECT_EQ(mask.stripes, two.masks.at(key).stripes);
    EXPECT_EQ(mask.window, two.masks.at(key).window);
  }
}

TEST(SampleAttentionScope, KvGroupSharesOneStripeSet) {
  Case c;
  c.d = 64;
  c.hq = 8;
  c.hkv = 2;
  c.add_sequence(300, 300);
  c.materialize(8, 0.7f);
  plant(c, {40, 41}, 2.0f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.scope = SAMPLEATTN_STRIPES_PER_KV_GROUP;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  for (int h = 0; h < c.hq; ++h) {
    EXPECT_EQ(o.masks.at({0, h}).stripes, o.masks.at({0, (h / 4) * 4}).stripes) << "head " << h;
  }
}

TEST(SampleAttentionFallback, ShortSequencesRunDenseAndSaySo) {
  Case c;
  c.add_sequence(100, 100);
  c.add_sequence(50, 300);
  c.materialize(4);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.dense_below = 200;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS);
  EXPECT_EQ(o.stats.num_dense_heads, c.hq);  // the first sequence's heads
  EXPECT_EQ(o.heads[0].dense, 1);
  EXPECT_EQ(o.heads[0].window, 100);
  EXPECT_FLOAT_EQ(o.heads[0].density, 1.f);
  EXPECT_EQ(o.heads[c.hq].dense, 0);
  // The dense sequence's output equals plain dense attention.
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  std::vector<std::pair<int64_t, int>> rows;
  for (int64_t t = 0; t < 100; ++t) rows.emplace_back(t, 1);
  const auto oracle = reference::attention_rows(problem, rows);
  EXPECT_LT(errors_of(oracle, output_rows(c, rows)).max_abs, 1e-5);
}

// max_density: a head whose mask would compute more than that share of its causal pairs runs
// dense, beside sparse heads of the same kv group; the others keep their masks unchanged.
TEST(SampleAttentionDensityRule, DenseMaskHeadsRunDenseBesideSparseOnes) {
  Case c;
  c.d = 64;
  c.hq = 4;
  c.hkv = 2;
  c.add_sequence(400, 400);
  c.add_sequence(150, 420);  // chunked prefill
  c.materialize(31, 0.3f);
  plant(c, {5, 60, 230}, 8.0f);  // even heads: the planted columns carry nearly all the mass
  // Odd query heads: near-uniform attention, so reaching alpha takes most columns.
  for (int64_t t = 0; t < c.cu_q.back(); ++t) {
    for (int h = 1; h < c.hq; h += 2) {
      for (int i = 0; i < c.d; ++i) {
        const int64_t at = (t * c.hq + h) * c.d + i;
        c.q.set(at, 0.02f * c.q.get(at));
      }
    }
  }
  sampleattn::Params p = c.params();
  small_sample_params(p);
  Outcome all_sparse = run(c, p, 2);
  ASSERT_EQ(all_sparse.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  ASSERT_EQ(all_sparse.stats.num_dense_heads, 0);
  for (int s = 0; s < 2; ++s) {
    for (int h = 0; h < c.hq; h += 2) {
      EXPECT_LT(all_sparse.heads[s * c.hq + h].density + 0.1f, all_sparse.heads[s * c.hq + h + 1].density);
    }
  }
  float highest_even = 0, lowest_odd = 1;
  for (int i = 0; i < 2 * c.hq; ++i) {
    float& bound = i % 2 == 0 ? highest_even : lowest_odd;
    bound = i % 2 == 0 ? std::max(bound, all_sparse.heads[i].density) : std::min(bound, all_sparse.heads[i].density);
  }
  ASSERT_LT(highest_even, lowest_odd);

  p.sample.max_density = 0.5f * (highest_even + lowest_odd);
  c.o.poison();
  Outcome mixed = run(c, p, 2);
  ASSERT_EQ(mixed.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(mixed.stats.num_dense_heads, c.hq);  // the odd heads of both sequences
  for (int s = 0; s < 2; ++s) {
    for (int h = 0; h < c.hq; ++h) {
      const sampleattn_head_stats& hs = mixed.heads[s * c.hq + h];
      if (h % 2 == 1) {
        EXPECT_EQ(hs.dense, 1);
        EXPECT_EQ(hs.num_stripes, 0);
        EXPECT_EQ(hs.window, c.cu_k[s + 1] - c.cu_k[s]);
        EXPECT_FLOAT_EQ(hs.density, 1.f);
        EXPECT_FLOAT_EQ(hs.cra_min, 1.f);
      } else {
        EXPECT_EQ(hs.dense, 0);
        EXPECT_EQ(mixed.masks.at({s, h}).stripes, all_sparse.masks.at({s, h}).stripes);
        EXPECT_FLOAT_EQ(hs.cra_min, all_sparse.heads[s * c.hq + h].cra_min);
      }
    }
  }
  // Dense heads (no mask in the lookup) against the full oracle, the others against theirs.
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = all_rows(problem);
  const auto oracle = reference::attention_rows(problem, rows, lookup(mixed.masks));
  const auto naive = reference::naive_attention_rows(problem, rows, false, lookup(mixed.masks));
  const Errors ours = errors_of(oracle, output_rows(c, rows));
  const Errors base = errors_of(oracle, stored(naive, DType::kF32));
  EXPECT_LE(ours.rel_l2, 2 * base.rel_l2 + 1e-7);
  EXPECT_LE(ours.max_abs, 2 * base.max_abs + 1e-6);
  for (size_t r = 0; r < rows.size(); ++r) {
    ASSERT_NEAR(c.lse[static_cast<size_t>(rows[r].first) * c.hq + rows[r].second], oracle[r].lse, 1e-4) << r;
  }

  // With the kv group sharing one stripe set, the group runs dense or sparse as a whole.
  p.sample.scope = SAMPLEATTN_STRIPES_PER_KV_GROUP;
  p.sample.max_density = 1.f;
  Outcome group = run(c, p, 2);
  ASSERT_EQ(group.status, SAMPLEATTN_SUCCESS);
  p.sample.max_density = 0.999f * group.heads[0].density;  // at least the first group runs dense
  Outcome group_dense = run(c, p, 2);
  ASSERT_EQ(group_dense.status, SAMPLEATTN_SUCCESS);
  EXPECT_EQ(group_dense.heads[0].dense, 1);
  for (int i = 0; i < 2 * c.hq; i += 2) {
    EXPECT_EQ(group_dense.heads[i].dense, group_dense.heads[i + 1].dense) << i;
    EXPECT_EQ(group_dense.heads[i].dense, group.heads[i].density > p.sample.max_density ? 1 : 0) << i;
  }
}

// Stage 1 keeps each row chunk's scores (16 MiB per worker at most); under a context's
// workspace limit those buffers shrink (smaller chunks) instead of failing the call.
TEST(SampleAttentionWorkspace, ScoreBuffersShrinkToTheContextLimit) {
  Case c;
  c.d = 64;
  c.hq = c.hkv = 2;
  c.add_sequence(4096, 4096);
  c.materialize(17, 0.6f);
  plant(c, {11, 2000}, 2.5f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.r_row = 0.1f;
  sampleattn_plan_info unlimited;
  sampleattn_plan_info_init(&unlimited);
  sampleattn_context* ctx = cpu_context(2);
  ASSERT_EQ(sampleattn_plan(ctx, &p, &unlimited), SAMPLEATTN_SUCCESS);
  sampleattn_context_destroy(ctx);
  ASSERT_GT(unlimited.workspace_bytes, 8u << 20) << "256-row chunks x 4096 keys x 4 bytes x 2 workers";

  const uint64_t limit = unlimited.workspace_bytes / 2;  // also above the stripe buffers (3 MB here)
  ctx = cpu_context(2, limit);
  sampleattn_plan_info limited;
  sampleattn_plan_info_init(&limited);
  ASSERT_EQ(sampleattn_plan(ctx, &p, &limited), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_LE(limited.workspace_bytes, limit);
  sampleattn_stats stats;
  sampleattn_stats_init(&stats);
  ASSERT_EQ(sampleattn_forward(ctx, &p, &stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_LT(stats.density, 1.0);
  sampleattn_context_destroy(ctx);

  // Far below what even 32-row chunks need: a clear out-of-memory status, no output.
  c.o.poison();
  ctx = cpu_context(2, 256 << 10);
  EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_NE(std::string(sampleattn_last_error()).find("workspace"), std::string::npos);
  EXPECT_TRUE(std::isnan(c.o.get(0)));
  sampleattn_context_destroy(ctx);
}

// The pair counts behind the density statistics and the max_density rule, against counting.
TEST(SparsePlanPairs, ClosedFormsAgreeWithCounting) {
  Rng rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    Sequence seq;
    seq.k_len = 1 + static_cast<int64_t>(rng.uniform() * 300);
    seq.q_len = 1 + static_cast<int64_t>(rng.uniform() * seq.k_len);
    const int64_t window = static_cast<int64_t>(rng.uniform() * (seq.k_len + 5));
    std::vector<int32_t> stripes;
    for (int32_t j = 0; j < seq.k_len; ++j) {
      if (rng.uniform() < 0.2) stripes.push_back(j);
    }
    HeadPlan hp;
    hp.dense = false;
    hp.window = window;
    hp.stripes = stripes;
    int64_t win = 0, str = 0, causal = 0;
    for (int64_t p = seq.q_offset(); p < seq.k_len; ++p) {
      win += std::min<int64_t>(window, p + 1);
      str += visible_stripes(hp, p);
      causal += p + 1;
    }
    ASSERT_EQ(window_pairs(seq, window), win) << trial;
    ASSERT_EQ(stripe_pairs(seq, window, stripes.data(), static_cast<int64_t>(stripes.size())), str) << trial;
    ASSERT_EQ(causal_pairs(seq), causal) << trial;
  }
  EXPECT_TRUE(mask_runs_dense(51, 100, 0.5f));
  EXPECT_FALSE(mask_runs_dense(50, 100, 0.5f));
  EXPECT_FALSE(mask_runs_dense(100, 100, 1.f));
}

TEST(SampleAttentionStats, KeptMassMatchesTheOracle) {
  Case c;
  c.d = 64;
  c.hq = c.hkv = 2;
  c.add_sequence(320, 320);
  c.materialize(12, 0.8f);
  plant(c, {9, 200}, 1.5f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.alpha = 0.8f;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS);
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  for (int h = 0; h < c.hq; ++h) {
    const reference::HeadMask& m = o.masks.at({0, h});
    double lo = 1, sum = 0;
    const auto rows = sampled_rows(problem.sample, 320);
    for (int64_t i : rows) {
      // Kept mass = exp(lse_masked - lse_full).
      const auto full = reference::attention_rows(problem, {{i, h}});
      const auto masked = reference::attention_rows(problem, {{i, h}}, lookup(o.masks));
      const double kept = std::exp(masked[0].lse - full[0].lse);
      lo = std::min(lo, kept);
      sum += kept;
    }
    EXPECT_NEAR(o.heads[h].cra_min, lo, 1e-4);
    EXPECT_NEAR(o.heads[h].cra_mean, sum / rows.size(), 1e-4);
    EXPECT_EQ(m.window, 26);  // ceil(0.08 * 320)
  }
  EXPECT_GT(o.stats.stripes_mean, 0);
  EXPECT_GE(o.stats.time_sampling_s, 0);
}

}  // namespace
}  // namespace sampleattn::testing
