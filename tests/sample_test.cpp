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
#include "core/validation.h"
#include "cpu/sampling.h"
#include "cpu/stripe_selection.h"
#include "test_util.h"

namespace sampleattn::testing {
namespace {

// Runs the call and returns the chosen masks per (sequence, head) from the statistics.
struct Outcome {
  sampleattn_status status;
  std::vector<sampleattn_head_stats> heads;
  MaskMap masks;
  sampleattn_stats stats;
};

Outcome run(Case& c, sampleattn::Params& p, int threads, uint64_t max_workspace = 0) {
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
  sampleattn_context* ctx = cpu_context(threads, max_workspace);
  out.status = sampleattn_forward(ctx, &p, &out.stats);
  sampleattn_context_destroy(ctx);
  if (out.status != SAMPLEATTN_SUCCESS) return out;
  EXPECT_LE(out.stats.stripes_required, out.stats.stripe_capacity);
  out.masks = masks_from_stats(out.heads, nseq, c.hq, offsets, stripes);
  return out;
}

// Two calls chose the same mask for every (sequence, head).
void expect_same_masks(const MaskMap& a, const MaskMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, mask] : a) {
    EXPECT_EQ(mask.stripes, b.at(key).stripes);
    EXPECT_EQ(mask.window, b.at(key).window);
  }
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
    p.sample.r_val = 0.1f;  // validation on: whatever it decides, the output is the mask's exact attention
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

// The whole ranking (validation widens along it), against a comparison sort on score desc, index
// asc: ties, zeros of both signs, tiny and huge scores, negatives (not produced by stage 1, but
// ordered all the same), and the lengths around the sinks.
TEST(StripeSelection, RankingIsTheComparisonOrder) {
  Rng rng(11);
  for (int64_t k_len : {int64_t{0}, int64_t{1}, int64_t{4}, int64_t{5}, int64_t{37}, int64_t{2048}, int64_t{40000}}) {
    std::vector<float> s(static_cast<size_t>(k_len));
    for (float& v : s) {
      const double u = rng.uniform();
      v = u < 0.2   ? static_cast<float>(std::floor(rng.uniform() * 8) / 8)  // ties
          : u < 0.3 ? (rng.uniform() < 0.5 ? 0.0f : -0.0f)
          : u < 0.35 ? -static_cast<float>(rng.uniform())
          : u < 0.4  ? static_cast<float>(rng.uniform() * 1e-30)
          : u < 0.45 ? static_cast<float>(rng.uniform() * 1e30)
                     : static_cast<float>(rng.uniform());
    }
    cpu::SelectionRule rule;
    rule.sink_tokens = 4;
    rule.target = 1;
    const cpu::Selection got = cpu::rank_and_select(s.data(), k_len, rule);
    std::vector<int32_t> want;
    for (int64_t j = std::min<int64_t>(4, k_len); j < k_len; ++j) want.push_back(static_cast<int32_t>(j));
    std::sort(want.begin(), want.end(), [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
    EXPECT_EQ(got.ranked, want) << "k_len " << k_len;
  }
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

// The same mask and output bits whatever the threads: with 16, the call's chunks of sampled and
// validation rows (one a kv group and sequence at one or two threads) are cut into smaller ones so
// that every thread has one; a row's results must not depend on its chunk.
TEST(SampleAttentionThreads, SameMaskAndBitsForOneTwoAndSixteenThreads) {
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
  expect_same_masks(one.masks, two.masks);
  c.o.poison();
  Outcome sixteen = run(c, p, 16);
  ASSERT_EQ(sixteen.status, SAMPLEATTN_SUCCESS);
  EXPECT_EQ(bits_one, c.o.bytes);
  expect_same_masks(one.masks, sixteen.masks);
  for (size_t h = 0; h < one.heads.size(); ++h) {  // validation's figures, the sampled rows' kept mass
    EXPECT_EQ(one.heads[h].val_cra_p5, sixteen.heads[h].val_cra_p5) << h;
    EXPECT_EQ(one.heads[h].val_lost_rms, sixteen.heads[h].val_lost_rms) << h;
    EXPECT_EQ(one.heads[h].cra_min, sixteen.heads[h].cra_min) << h;
    EXPECT_EQ(one.heads[h].decision, sixteen.heads[h].decision) << h;
  }
}

// Stage 1 packs each sampled sequence's keys once when they fit (without a limit, or in a
// quarter of it), else each chunk of rows packs the tiles it reads: the same scores either way,
// so the same masks and output bits. Two sequences (key tiles of each counted apart), GQA, bf16
// inputs (the amx table's tile products where precision AUTO picks them) and f32.
TEST(SampleAttentionPackedKeys, OncePerSequenceOrPerChunkGiveTheSameMasksAndBits) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    Case c;
    c.d = 256;  // packed keys large beside the score buffers, so that a limit can leave them out
    c.hq = 4;
    c.hkv = 2;
    c.in = dtype;
    c.add_sequence(1500, 1500);
    c.add_sequence(700, 1900);
    c.materialize(29, 0.7f);
    plant(c, {33, 1200}, 2.0f);
    sampleattn::Params p = c.params();
    small_sample_params(p);
    p.sample.r_row = 0.1f;
    p.sample.r_val = 0.05f;  // validation rows read the packed keys too
    p.sample.max_stripes = 96;  // small stripe buffers
    Outcome once = run(c, p, 2);
    ASSERT_EQ(once.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    const auto bits_once = c.o.bytes;
    // A limit under 4x the packed keys (counted here as f32 tiles; bf16 ones are half), still
    // above what the call needs without them.
    const KernelTable& kernels = active_kernel_table();
    uint64_t packed = 0;
    for (const int64_t keys : {1500, 1900}) {
      packed += static_cast<uint64_t>((keys + kernels.key_tile - 1) / kernels.key_tile) *
                kernels.path(Precision::kF32)->packed_bytes(kernels.key_tile, c.d) * c.hkv;
    }
    sampleattn_plan_info info;
    sampleattn_plan_info_init(&info);
    sampleattn_context* ctx = cpu_context(2);
    ASSERT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_SUCCESS);
    sampleattn_context_destroy(ctx);
    ASSERT_GT(info.workspace_bytes, packed) << "the unlimited call holds the packed keys";
    const uint64_t limit = std::min<uint64_t>(2 * packed - 64, info.workspace_bytes - packed / 2);
    c.o.poison();
    Outcome per_chunk = run(c, p, 2, limit);
    ASSERT_EQ(per_chunk.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    EXPECT_EQ(bits_once, c.o.bytes);
    expect_same_masks(once.masks, per_chunk.masks);
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

// Under a workspace limit too small for the sampled keys packed once (a quarter of it at most),
// stage 1 packs them per chunk of rows and keeps each chunk's scores (16 MiB per worker at most):
// those buffers shrink with the limit (smaller chunks) instead of failing the call.
TEST(SampleAttentionWorkspace, ScoreBuffersShrinkToTheContextLimit) {
  Case c;
  c.d = 128;
  c.hq = c.hkv = 2;
  c.add_sequence(4096, 4096);
  c.materialize(17, 0.6f);
  plant(c, {11, 2000}, 2.5f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.r_row = 0.1f;
  // At most 256 stripes a head: these random inputs would keep about 3,000 of their 4,096 columns,
  // whose packed K and V (6 MiB for the two heads on the amx table's 512-key tiles) beside that
  // table's attention scratch (10.7 MB for two workers) would put the call over the limit below,
  // a clear out-of-memory status rather than a test of stage 1's buffers. Stage 1 is unchanged.
  p.sample.max_stripes = 256;
  // The keys packed once: 4096 keys x 128 x 4 bytes x 2 kv heads (f32 path) = 4 MiB, so a limit
  // under 16 MiB packs per chunk. Two workers' score buffers get a quarter of the limit, a chunk
  // at most the table's block of rows: `wide` gives a chunk its 127 rows of 4,096 scores (4 bytes
  // each) or the table's block, `narrow` fewer rows than either (the scalar table's block is 64).
  const KernelTable& table = active_kernel_table();
  const uint64_t row_bytes = 4096 * 4, most = static_cast<uint64_t>(table.block_rows);
  const uint64_t wide = (16u << 20) - (64u << 10);
  const uint64_t narrow = std::min<uint64_t>(15u << 20, 8 * row_bytes * most * 7 / 8);
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto scratch_at = [&](uint64_t limit) {
    return cpu::sampling_footprint(table, problem, 2, limit).scratch_per_worker;
  };
  const uint64_t wide_rows = std::min<uint64_t>(most, wide / 8 / row_bytes);
  EXPECT_GT(scratch_at(wide), wide_rows * row_bytes) << wide_rows << " rows' scores, 4096 keys each";
  EXPECT_LT(scratch_at(narrow), scratch_at(wide)) << "smaller chunks under the smaller limit";

  const uint64_t limit = narrow;  // also above the stripe buffers
  sampleattn_context* ctx = cpu_context(2, limit);
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
    // Half the trials with a model window (window_left); the local window never exceeds it.
    Problem problem;
    problem.window_left = rng.uniform() < 0.5 ? kNoModelWindow : static_cast<int64_t>(rng.uniform() * seq.k_len);
    const int64_t span = problem.span(seq);
    const int64_t window = std::min<int64_t>(static_cast<int64_t>(rng.uniform() * (seq.k_len + 5)), span);
    std::vector<int32_t> stripes;
    for (int32_t j = 0; j < seq.k_len; ++j) {
      if (rng.uniform() < 0.2) stripes.push_back(j);
    }
    HeadPlan hp;
    hp.dense = false;
    hp.window = window;
    hp.stripes = stripes;
    int64_t win = 0, str = 0, model = 0;
    for (int64_t p = seq.q_offset(); p < seq.k_len; ++p) {
      const int64_t lo = problem.window_left < 0 ? 0 : std::max<int64_t>(0, p - problem.window_left);
      win += std::min<int64_t>(window, p + 1);
      const StripeRun run = visible_stripes(hp, p, problem.window_left);
      int64_t seen = 0;  // brute force: stripes lo <= j <= p - window
      for (int32_t j : stripes) seen += j >= lo && j <= p - window;
      ASSERT_EQ(run.end - run.begin, seen) << trial << " p " << p;
      for (int64_t i = run.begin; i < run.end; ++i) ASSERT_TRUE(stripes[i] >= lo && stripes[i] <= p - window);
      str += seen;
      model += p + 1 - lo;
    }
    ASSERT_EQ(window_pairs(seq, window), win) << trial;
    ASSERT_EQ(stripe_pairs(problem, seq, window, stripes.data(), static_cast<int64_t>(stripes.size())), str) << trial;
    ASSERT_EQ(model_pairs(problem, seq), model) << trial;
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

// ---- Validation (core/validation.h) ------------------------------------------------------------

TEST(ValidationRows, DisjointFromTheSampledRowsAndSpread) {
  sampleattn_sample_params params = default_sample_params();
  for (int64_t q_len : {int64_t{1}, int64_t{63}, int64_t{64}, int64_t{65}, int64_t{1000}, int64_t{4096}, int64_t{16384}}) {
    for (float r_row : {0.05f, 0.5f, 1.f}) {
      for (float r_val : {0.f, 0.02f, 0.3f, 0.99f}) {
        params.r_row = r_row;
        params.r_val = r_val;
        params.sample_block = 64;
        params.val_rows = q_len == 16384 ? 300 : 100000;  // the count binds, or the share
        const std::vector<int64_t> sampled = sampled_rows(params, q_len);
        const std::vector<int64_t> rows = validation_rows(params, q_len, sampled);
        const int64_t unsampled = q_len - static_cast<int64_t>(sampled.size());
        const int64_t by_ratio = static_cast<int64_t>(std::ceil(double{r_val} * q_len));
        const int64_t want = std::min<int64_t>({unsampled, by_ratio, params.val_rows});
        ASSERT_EQ(static_cast<int64_t>(rows.size()), want) << q_len << " " << r_row << " " << r_val;
        for (size_t i = 0; i < rows.size(); ++i) {
          ASSERT_GE(rows[i], 0);
          ASSERT_LT(rows[i], q_len);
          if (i > 0) {
            ASSERT_GT(rows[i], rows[i - 1]);
          }
          ASSERT_FALSE(std::binary_search(sampled.begin(), sampled.end(), rows[i])) << "row " << rows[i] << " is sampled";
        }
        if (rows.size() >= 4) {  // spread: no half of the unsampled rows holds more than ~half of them
          const int64_t mid = rows[rows.size() / 2];
          EXPECT_GT(mid, q_len / 8);
          EXPECT_LT(mid, q_len - q_len / 8);
        }
      }
    }
  }
}

// A layout over 10 ranked columns (no sinks) with the grid as buckets, and masses made so each
// row keeps `base` plus `step` per ranked column.
ValidationLayout toy_layout(int64_t alpha_ranked, int64_t cap) {
  ValidationLayout v;
  v.num_ranked = 1000;
  v.alpha_ranked = alpha_ranked;
  v.cap = cap;
  v.over_budget = cap < alpha_ranked;
  v.bounds.push_back(0);
  for (int64_t g = 1; g < kValidationGrid && validation_grid_point(g, v.num_ranked) <= cap; ++g) {
    v.bounds.push_back(validation_grid_point(g, v.num_ranked));
  }
  v.bounds.push_back(alpha_ranked);
  std::sort(v.bounds.begin(), v.bounds.end());
  v.bounds.erase(std::unique(v.bounds.begin(), v.bounds.end()), v.bounds.end());
  return v;
}

// Masses of `rows` rows whose kept mass grows linearly with the ranked count: each row keeps
// base[r] + (1 - base[r]) * min(1, count / need).
// In fixed point (core/validation_units.h), as the kernels write them: each bucket's mass rounded.
std::vector<uint32_t> toy_masses(const ValidationLayout& v, const std::vector<double>& base, int64_t need) {
  const int stride = v.row_masses();
  std::vector<uint32_t> m(base.size() * stride, 0u);
  const auto units = [](double mass) { return static_cast<uint32_t>(std::llround(mass * kValidationMassOne)); };
  for (size_t r = 0; r < base.size(); ++r) {
    auto kept = [&](int64_t count) { return base[r] + (1 - base[r]) * std::min(1.0, double(count) / need); };
    m[r * stride] = units(base[r]);
    for (int b = 1; b <= v.buckets(); ++b) m[r * stride + b] = units(kept(v.bounds[b]) - kept(v.bounds[b - 1]));
  }
  return m;
}

TEST(ValidationDecision, AlphaWideningDenseAndCost) {
  const std::vector<double> base(40, 0.5);
  HeadValidation h;
  const ValidationBar bar{0.9f, 0.05f};
  {  // needs 960 of the ranked columns to keep 0.98: alpha's 100 fall short, widened to the grid point
    const ValidationLayout v = toy_layout(100, 1000);
    const auto m = toy_masses(v, base, 1000);
    const ValidationDecision d = decide_validation(v, m.data(), v.row_masses(), 1, 40, bar, &h);
    EXPECT_EQ(d.decision, SAMPLEATTN_DECISION_SPARSE_WIDENED);
    // rms lost 0.5 * (1 - c/1000) <= 0.05  <=>  c >= 900; the first grid point at or past it.
    int64_t want = 0;
    for (int64_t g = 0; g < kValidationGrid; ++g) {
      if (validation_grid_point(g, 1000) >= 900) { want = validation_grid_point(g, 1000); break; }
    }
    EXPECT_EQ(d.ranked, want);
    EXPECT_NEAR(h.mean, 0.5 + 0.5 * want / 1000.0, 1e-6);
    EXPECT_LE(h.rms_lost, 0.05f);
  }
  {  // alpha's count beyond the passing one: alpha's stands
    const ValidationLayout v = toy_layout(950, 1000);
    const auto m = toy_masses(v, base, 1000);
    const ValidationDecision d = decide_validation(v, m.data(), v.row_masses(), 1, 40, bar, &h);
    EXPECT_EQ(d.decision, SAMPLEATTN_DECISION_SPARSE);
    EXPECT_EQ(d.ranked, 950);
  }
  {  // the cap stops short of passing: dense
    const ValidationLayout v = toy_layout(100, 800);
    const auto m = toy_masses(v, base, 1000);
    EXPECT_EQ(decide_validation(v, m.data(), v.row_masses(), 1, 40, bar, &h).decision,
              SAMPLEATTN_DECISION_DENSE_VALIDATION);
  }
  {  // alpha's own mask over the budget: dense by cost, whatever the rows say
    const ValidationLayout v = toy_layout(900, 800);
    EXPECT_EQ(decide_validation(v, nullptr, 1, 1, 0, bar, &h).decision, SAMPLEATTN_DECISION_DENSE_COST);
  }
  {  // no validation rows: alpha's count, figures -1
    const ValidationLayout v = toy_layout(100, 1000);
    const ValidationDecision d = decide_validation(v, nullptr, v.row_masses(), 1, 0, bar, &h);
    EXPECT_EQ(d.decision, SAMPLEATTN_DECISION_SPARSE);
    EXPECT_EQ(d.ranked, 100);
    EXPECT_EQ(h.p5, -1.f);
  }
  {  // the 5th percentile: 1 row in 40 that never keeps enough does not block; 3 do
    std::vector<double> bad = std::vector<double>(40, 0.99);
    bad[7] = 0.0;
    ValidationLayout v = toy_layout(0, 1000);
    auto m = toy_masses(v, bad, 1000000000);  // the stripes add (almost) nothing
    const ValidationBar p5_only{0.9f, 1.f};
    EXPECT_EQ(decide_validation(v, m.data(), v.row_masses(), 1, 40, p5_only, &h).decision, SAMPLEATTN_DECISION_SPARSE);
    EXPECT_FLOAT_EQ(h.min, 0.f);
    bad[8] = bad[9] = 0.0;
    m = toy_masses(v, bad, 1000000000);
    EXPECT_EQ(decide_validation(v, m.data(), v.row_masses(), 1, 40, p5_only, &h).decision,
              SAMPLEATTN_DECISION_DENSE_VALIDATION);
  }
}

// A copy head, planted: from row 1400 on, each query is a scaled copy of its own far key (400 to
// 1399 positions back, outside the window), different for every row, so it puts most of its mass
// there; earlier rows copy the previous key (inside the window). Head 1 is a local head (each
// query copies the previous key). The columns the sampled rows choose cover only their own
// targets.
Case copy_head_case() {
  Case c;
  c.d = 64;
  c.hq = c.hkv = 2;
  c.add_sequence(4096, 4096);
  c.materialize(2024, 0.5f);
  for (int64_t i = 1; i < 4096; ++i) {
    const int64_t target = i >= 1400 ? i - 400 - (i * 7) % 1000 : i - 1;
    for (int e = 0; e < c.d; ++e) {
      c.q.set((i * c.hq + 0) * c.d + e, 1.5f * c.k.get((target * c.hkv + 0) * c.d + e));
      c.q.set((i * c.hq + 1) * c.d + e, 2.5f * c.k.get(((i - 1) * c.hkv + 1) * c.d + e));
    }
  }
  return c;
}

sampleattn::Params copy_head_params(Case& c) {
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  p.sample.dense_below = 0;
  p.sample.r_val = 0.05f;
  return p;
}

// The kept mass of `rows` of head h under the masks, from the oracle (exp(lse_mask - lse)).
std::vector<double> oracle_kept(const Problem& problem, const MaskMap& masks, int h, const std::vector<int64_t>& rows) {
  std::vector<double> kept;
  for (int64_t i : rows) {
    const auto full = reference::attention_rows(problem, {{i, h}});
    const auto masked = reference::attention_rows(problem, {{i, h}}, lookup(masks));
    kept.push_back(std::exp(masked[0].lse - full[0].lse));
  }
  return kept;
}

TEST(Validation, PlantedCopyHeadInSampleHighValidatedLow) {
  Case c = copy_head_case();
  sampleattn::Params p = copy_head_params(c);
  p.sample.min_kept = 0.f;  // measure only: alpha's stripes stand
  p.sample.max_lost = 1.f;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  const sampleattn_head_stats& copy = o.heads[0];
  ASSERT_EQ(copy.decision, SAMPLEATTN_DECISION_SPARSE);
  EXPECT_GT(copy.cra_mean, 0.85f) << "the sampled rows chose their own targets";
  EXPECT_GT(copy.cra_min, 0.5f);
  EXPECT_LT(copy.val_cra_p5, 0.5f) << "the validation rows' targets are not stripes";
  EXPECT_LT(copy.val_cra_mean, copy.cra_mean - 0.3f);

  // The reported figures are the validation rows' kept mass under the chosen mask (oracle).
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = validation_rows(problem.sample, 4096, sampled_rows(problem.sample, 4096));
  ASSERT_EQ(rows.size(), 205u);
  for (int h = 0; h < c.hq; ++h) {
    std::vector<double> kept = oracle_kept(problem, o.masks, h, rows);
    std::sort(kept.begin(), kept.end());
    const double mean = std::accumulate(kept.begin(), kept.end(), 0.0) / kept.size();
    EXPECT_NEAR(o.heads[h].val_cra_min, kept.front(), 2e-4) << "head " << h;
    EXPECT_NEAR(o.heads[h].val_cra_p5, kept[quantile_index(0.05, kept.size())], 2e-4) << "head " << h;
    EXPECT_NEAR(o.heads[h].val_cra_mean, mean, 2e-4) << "head " << h;
  }
  EXPECT_NEAR(o.stats.val_cra_p5, std::min(o.heads[0].val_cra_p5, o.heads[1].val_cra_p5), 1e-7);
}

TEST(Validation, PlantedCopyHeadIsCaughtAndTheOutputStaysNearDense) {
  Case c = copy_head_case();
  sampleattn::Params p = copy_head_params(c);
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  const sampleattn_head_stats& copy = o.heads[0];
  EXPECT_NE(copy.decision, SAMPLEATTN_DECISION_SPARSE) << "alpha's stripes alone fail the validation rows";
  if (!copy.dense) {
    EXPECT_GE(copy.val_cra_p5, 0.9f);
  }
  const sampleattn_head_stats& plain = o.heads[1];
  EXPECT_EQ(plain.dense, 0) << "the plain head keeps its sparse mask; decision " << plain.decision << " alpha stripes " << plain.alpha_stripes << " val p5 " << plain.val_cra_p5;
  EXPECT_GE(plain.val_cra_p5, 0.9f);

  // Output against dense: both heads near it.
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  std::vector<std::pair<int64_t, int>> rows;
  for (int64_t i = 0; i < 4096; i += 37) rows.push_back({i, 0}), rows.push_back({i, 1});
  const auto dense = reference::attention_rows(problem, rows);
  EXPECT_LT(errors_of(dense, output_rows(c, rows)).rel_l2, 0.05);
}

// The error never rises when alpha rises: the mask of each head only grows (the grid and the cap
// do not depend on alpha), dense stays dense, and the output's error against dense falls. With
// the look too: the rows it sends dense stay the same (it leaves out the validation's passing
// prefix, not alpha's stripes).
void expect_error_never_rises_with_alpha(float look) {
  Case c = copy_head_case();
  Problem problem;
  std::vector<std::pair<int64_t, int>> rows;
  for (int64_t i = 0; i < 4096; i += 29) rows.push_back({i, 0}), rows.push_back({i, 1});
  std::vector<reference::RowResult> dense;
  std::vector<double> last_err(c.hq, 1e300);
  MaskMap last;
  std::vector<int> was_dense(c.hq, 0);
  std::vector<int> look_rows(c.hq, -1);
  int64_t any_rows = 0;
  for (float alpha : {0.3f, 0.5f, 0.7f, 0.8f, 0.9f, 0.95f, 0.98f, 0.995f, 1.f}) {
    sampleattn::Params p = copy_head_params(c);
    p.sample.alpha = alpha;
    p.sample.max_density = 0.9f;
    p.sample.look = look;
    Outcome o = run(c, p, 2);
    ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    if (dense.empty()) {
      ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
      dense = reference::attention_rows(problem, rows);
    }
    const auto out = output_rows(c, rows);
    for (int h = 0; h < c.hq; ++h) {
      std::vector<reference::RowResult> ref;
      std::vector<std::vector<double>> got;
      for (size_t r = 0; r < rows.size(); ++r) {
        if (rows[r].second == h) ref.push_back(dense[r]), got.push_back(out[r]);
      }
      const double err = errors_of(ref, got).rel_l2;
      EXPECT_LE(err, last_err[h] + 1e-6) << "head " << h << " alpha " << alpha;
      last_err[h] = err;
      if (was_dense[h]) {
        EXPECT_EQ(o.heads[h].dense, 1) << "head " << h << " alpha " << alpha;
      }
      was_dense[h] = o.heads[h].dense;
      if (!o.heads[h].dense) {
        if (look_rows[h] >= 0) {
          EXPECT_EQ(o.heads[h].dense_rows, look_rows[h]) << "head " << h << " alpha " << alpha;
        }
        look_rows[h] = o.heads[h].dense_rows;
        any_rows += o.heads[h].dense_rows;
      }
      if (!o.heads[h].dense && last.count({0, h}) != 0) {
        const auto& before = last.at({0, h}).stripes;
        const auto& now = o.masks.at({0, h}).stripes;
        EXPECT_TRUE(std::includes(now.begin(), now.end(), before.begin(), before.end()))
            << "head " << h << " alpha " << alpha << ": the mask lost stripes";
      }
    }
    last = o.masks;
  }
  if (look > 0) {
    EXPECT_GT(any_rows, 0) << "the look sent rows dense";
  } else {
    EXPECT_EQ(any_rows, 0);
  }
}

TEST(Validation, ErrorNeverRisesWithAlpha) { expect_error_never_rises_with_alpha(0.f); }
TEST(Validation, ErrorNeverRisesWithAlphaWithTheLook) { expect_error_never_rises_with_alpha(4.f); }

}  // namespace
}  // namespace sampleattn::testing
