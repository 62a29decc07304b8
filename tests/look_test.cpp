// The look at every row (cpu/look.h; docs/ALGORITHM.md, step 5): the rows it sends dense are
// those the rule names on exact scores (outside a margin for the int8 products), the same on
// every kernel table, more as the look widens; through the C API the statistics name them, the
// output is exact attention over the mask with them, and a head they take past max_density runs
// dense. Bad values of the parameter are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/mask.h"
#include "core/problem.h"
#include "core/score_mod.h"
#include "core/sparse_plan.h"
#include "cpu/look.h"
#include "cpu/thread_pool.h"
#include "reference/attention_reference.h"
#include "simd/dispatch.h"
#include "test_util.h"

namespace sampleattn {
namespace {

using testing::Case;
using testing::pool_of;
using testing::MaskMap;
using testing::Rng;

// A prefill and a chunk against a cache, grouped heads, with the positional part of
// testing::add_positional.
Case look_case(uint64_t seed, bool local = false) {
  Case c;
  c.d = 64;
  c.hq = 4;
  c.hkv = 2;
  c.add_sequence(520, 520);
  c.add_sequence(200, 610);
  c.materialize(seed, local ? 0.5f : 1.5f);
  testing::add_positional(c, seed, local);
  return c;
}

// Every head sparse but head 3: a window of 40 keys and a few stripes (the first keys among them).
SparsePlan sparse_plan(const Problem& p, uint64_t seed) {
  Rng rng(seed);
  SparsePlan plan;
  const int hq = p.num_q_heads;
  plan.heads.resize(p.sequences.size() * static_cast<size_t>(hq));
  for (size_t s = 0; s < p.sequences.size(); ++s) {
    const Sequence& seq = p.sequences[s];
    for (int h = 0; h < hq; ++h) {
      HeadPlan& hp = plan.heads[s * hq + h];
      hp.window = seq.k_len;
      if (h == 3) continue;
      hp.dense = false;
      hp.decision = SAMPLEATTN_DECISION_SPARSE;
      hp.window = 40;
      std::set<int32_t> stripes = {0, 1};
      for (int i = 0; i < 12; ++i) stripes.insert(static_cast<int32_t>(rng.next() % static_cast<uint64_t>(seq.k_len)));
      hp.stripes.assign(stripes.begin(), stripes.end());
    }
  }
  return plan;
}

// The rule on exact scores (double products, the model's variants): for each row of a sparse
// head, its largest score outside its mask (band and stripes) less (its mask's largest - look), in log2
// units; a row is sent dense when this is >= 0. NaN for rows with nothing outside their band.
std::vector<std::vector<double>> exact_margins(const Problem& p, const SparsePlan& plan, double look) {
  std::vector<std::vector<double>> out(plan.heads.size());
  const double scale = static_cast<double>(scale_log2(p.scale));
  const int d = p.head_dim;
  for (size_t s = 0; s < p.sequences.size(); ++s) {
    const Sequence& seq = p.sequences[s];
    for (int h = 0; h < p.num_q_heads; ++h) {
      const HeadPlan& hp = plan.head(static_cast<int>(s), h, p.num_q_heads);
      std::vector<double>& margins = out[s * p.num_q_heads + h];
      margins.assign(static_cast<size_t>(seq.q_len), std::nan(""));
      if (hp.dense) continue;
      const ScoreMod mod = p.score_mod(h);
      const std::set<int32_t> stripes(hp.stripes.begin(), hp.stripes.end());
      for (int64_t i = 0; i < seq.q_len; ++i) {
        const int64_t pos = seq.q_offset() + i;
        const int64_t lo = model_lo(pos, p.window_left), band = window_lo(pos, hp.window);
        if (band <= lo) continue;
        double inner = -INFINITY, outer = -INFINITY;
        const float* q = static_cast<const float*>(p.q.data) + (seq.q_begin + i) * p.q.token_stride + h * p.q.head_stride;
        for (int64_t j = lo; j <= pos; ++j) {
          const float* k = static_cast<const float*>(p.k.data) + p.kv_row(static_cast<int>(s), j, h / p.group).k;
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * k[c];
          const double score = modified_score(mod, static_cast<float>(dot * scale), pos, j);
          if (j >= band || stripes.count(static_cast<int32_t>(j))) {
            inner = std::max(inner, score);
          } else {
            outer = std::max(outer, score);
          }
        }
        margins[static_cast<size_t>(i)] = outer - (inner - look * std::log2(std::exp(1.0)));
      }
    }
  }
  return out;
}

struct Variant {
  const char* name;
  int64_t window_left;
  bool alibi;
  float softcap;
};

class Look : public ::testing::TestWithParam<Variant> {};

TEST_P(Look, SendsDenseTheRowsTheExactRuleNames) {
  const Variant& v = GetParam();
  Case c = look_case(21);
  sampleattn::Params params = c.params();
  params.method = SAMPLEATTN_METHOD_SAMPLE;
  params.window_left = v.window_left;
  params.softcap = v.softcap;
  const std::vector<float> slopes = {0.05f, 0.02f, 0.01f, 0.005f};
  if (v.alibi) params.alibi_slopes = slopes.data();
  Problem problem;
  ASSERT_TRUE(build_problem(&params, true, &problem).is_ok());
  problem.sample.look = 3.0f;
  problem.sample.max_density = 1.f;  // the rows as found (DenseLook below tests the cap)
  const SparsePlan base = sparse_plan(problem, 4);
  const auto margins = exact_margins(problem, base, problem.sample.look);
  // Every table finds the same rows (the look's bits are the same everywhere).
  std::vector<SparsePlan> found;
  for (Isa isa : kAllIsas) {
    const KernelTable* table = kernel_table_for(isa);
    if (table == nullptr) continue;
    SparsePlan plan = base;
    const Status st = cpu::find_dense_rows(*pool_of(2), 0, cpu::WorkspaceParts{}, *table, problem, &plan);
    ASSERT_TRUE(st.is_ok()) << st.message();
    found.push_back(std::move(plan));
  }
  ASSERT_FALSE(found.empty());
  for (size_t t = 1; t < found.size(); ++t) {
    for (size_t i = 0; i < base.heads.size(); ++i) EXPECT_EQ(found[t].heads[i].dense_rows, found[0].heads[i].dense_rows);
  }
  // Against the exact rule: every row decided alike unless its margin is within what the int8
  // products can move (0.25 in log2 units at these magnitudes); both kinds of row are there.
  int agreed = 0, flagged = 0, kept = 0;
  for (size_t i = 0; i < base.heads.size(); ++i) {
    const std::set<int32_t> rows(found[0].heads[i].dense_rows.begin(), found[0].heads[i].dense_rows.end());
    EXPECT_TRUE(std::is_sorted(found[0].heads[i].dense_rows.begin(), found[0].heads[i].dense_rows.end()));
    for (size_t r = 0; r < margins[i].size(); ++r) {
      const double m = margins[i][r];
      const bool got = rows.count(static_cast<int32_t>(r)) > 0;
      if (std::isnan(m)) {
        EXPECT_FALSE(got) << "head " << i << " row " << r << " has nothing outside its band";
        continue;
      }
      if (std::abs(m) < 0.25) continue;
      EXPECT_EQ(got, m >= 0) << v.name << " head " << i << " row " << r << " margin " << m;
      ++agreed;
      (m >= 0 ? flagged : kept) += 1;
    }
  }
  EXPECT_GT(flagged, 50);
  EXPECT_GT(kept, 50);
  EXPECT_GT(agreed, 1500);
}

INSTANTIATE_TEST_SUITE_P(Variants, Look,
                         ::testing::Values(Variant{"plain", -1, false, 0.f}, Variant{"window", 300, false, 0.f},
                                           Variant{"alibi_softcap", -1, true, 30.f}),
                         [](const ::testing::TestParamInfo<Variant>& param) { return std::string(param.param.name); });

TEST(LookRows, GrowWithTheLook) {
  Case c = look_case(5);
  sampleattn::Params params = c.params();
  params.method = SAMPLEATTN_METHOD_SAMPLE;
  Problem problem;
  ASSERT_TRUE(build_problem(&params, true, &problem).is_ok());
  problem.sample.max_density = 1.f;
  const SparsePlan base = sparse_plan(problem, 9);
  std::vector<std::set<int32_t>> previous(base.heads.size());
  size_t previous_total = 0;
  for (float look : {0.5f, 2.f, 4.f, 8.f}) {
    problem.sample.look = look;
    SparsePlan plan = base;
    ASSERT_TRUE(cpu::find_dense_rows(*pool_of(2), 0, cpu::WorkspaceParts{}, active_kernel_table(), problem, &plan).is_ok());
    size_t total = 0;
    for (size_t i = 0; i < plan.heads.size(); ++i) {
      const std::set<int32_t> rows(plan.heads[i].dense_rows.begin(), plan.heads[i].dense_rows.end());
      EXPECT_TRUE(std::includes(rows.begin(), rows.end(), previous[i].begin(), previous[i].end())) << "look " << look;
      previous[i] = rows;
      total += rows.size();
    }
    EXPECT_GT(total, previous_total) << "look " << look;
    previous_total = total;
  }
}

// look_row_blocks covers every row once, the probe's rows (and no other) in `probe`, in blocks of
// at most kLookBlockRows rows one stride apart, at every length around the strides' edges.
TEST(LookRows, TheBlocksCoverEveryRowOnceAndTheProbeExactly) {
  for (const int64_t n : {1, 2, 63, 64, 65, 1023, 1024, 2047, 2048, 2049, 3100, 8191, 8192, 8193, 20000}) {
    const int64_t first = 17;
    std::vector<LookRowBlock> probe, rest;
    look_row_blocks(first, first + n, &probe, &rest);
    std::vector<int> seen(static_cast<size_t>(n), 0);
    for (const auto* list : {&probe, &rest}) {
      for (const LookRowBlock& b : *list) {
        ASSERT_GT(b.count, 0);
        ASSERT_LE(b.count, kLookBlockRows);
        ASSERT_EQ(b.stride, look_probe_stride(n));
        for (int r = 0; r < b.count; ++r) {
          const int64_t j = b.first + int64_t{r} * b.stride - first;
          ASSERT_TRUE(j >= 0 && j < n) << n;
          ++seen[static_cast<size_t>(j)];
          EXPECT_EQ(look_probe_row(j, n), list == &probe) << "n " << n << " row " << j;
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(seen[static_cast<size_t>(j)], 1) << "n " << n << " row " << j;
    EXPECT_TRUE(look_probe_row(n - 1, n));  // the last row always
  }
  EXPECT_EQ(look_probe_stride(2047), 1);
  EXPECT_EQ(look_probe_stride(8192), 8);
}

// The probe (core/mask.h, look_probe_row, look_whole_head): a head is looked at whole when its
// probe flags one of its rows in 1,024 (here 2 of 1,352), and past its probe not at all
// otherwise, keeping the rows the probe flagged. Rows fetch a far key of their own: in head 0 two
// in the probe and one outside it (all three found), in head 1 one in the probe
// (found) and one outside it (not looked at). Every row looked at follows the exact rule.
TEST(LookRows, TheProbeDecidesWhichHeadsAreLookedAtWhole) {
  const int32_t a = testing::kProbedRows[0], b = testing::kProbedRows[1], unprobed = testing::kUnprobedRow;
  Case c = testing::far_key_case(DType::kF32, 2, {{0, a}, {0, b}, {0, unprobed}, {1, b}, {1, unprobed}});
  sampleattn::Params params = c.params();
  params.method = SAMPLEATTN_METHOD_SAMPLE;
  Problem problem;
  ASSERT_TRUE(build_problem(&params, true, &problem).is_ok());
  problem.sample.look = 4.f;
  problem.sample.max_density = 1.f;
  SparsePlan base;
  base.heads.resize(2);
  for (HeadPlan& hp : base.heads) {
    hp.dense = false;
    hp.decision = SAMPLEATTN_DECISION_SPARSE;
    hp.window = 40;
    hp.stripes = {0, 1};
  }
  const int64_t n = 4096 - 40;  // rows past the band, from row 40
  ASSERT_EQ(look_probe_stride(n), 3);
  int64_t probe_rows = 0;
  for (int64_t j = 0; j < n; ++j) probe_rows += look_probe_row(j, n);
  ASSERT_TRUE(look_whole_head(2, probe_rows) && !look_whole_head(1, probe_rows)) << probe_rows << " rows in the probe";
  for (const int32_t row : {a, b}) ASSERT_TRUE(look_probe_row(row - 40, n));
  ASSERT_FALSE(look_probe_row(unprobed - 40, n));
  const auto margins = exact_margins(problem, base, problem.sample.look);
  SparsePlan plan = base;
  ASSERT_TRUE(cpu::find_dense_rows(*pool_of(2), 0, cpu::WorkspaceParts{}, active_kernel_table(), problem, &plan).is_ok());
  for (int h = 0; h < 2; ++h) {
    const std::set<int32_t> rows(plan.heads[h].dense_rows.begin(), plan.heads[h].dense_rows.end());
    int exact_flags = 0;
    for (int32_t row = 40; row < 4096; ++row) {
      const double m = margins[static_cast<size_t>(h)][static_cast<size_t>(row)];
      exact_flags += m >= 0;
      if (std::abs(m) < 0.25) continue;
      // Head 0 is looked at whole; head 1 in its probe only.
      const bool looked = h == 0 || look_probe_row(row - 40, n);
      EXPECT_EQ(rows.count(row) > 0, looked && m >= 0) << "head " << h << " row " << row << " margin " << m;
    }
    EXPECT_GE(margins[static_cast<size_t>(h)][static_cast<size_t>(unprobed)], 1.0) << "head " << h;
    EXPECT_EQ(exact_flags, h == 0 ? 3 : 2) << "head " << h << ": the far keys' rows alone";
  }
  EXPECT_EQ(plan.heads[0].dense_rows, (std::vector<int32_t>{unprobed, a, b}));
  EXPECT_EQ(plan.heads[1].dense_rows, (std::vector<int32_t>{b}));
}

// The max_density rule counts the look's cost (an eighth of the model's pairs) beside the mask: a
// head whose mask is within that of the cap runs dense without being looked at.
TEST(LookRows, TheLooksCostCountsInMaxDensity) {
  Case c = look_case(5, /*local=*/true);
  sampleattn::Params params = c.params();
  params.method = SAMPLEATTN_METHOD_SAMPLE;
  Problem problem;
  ASSERT_TRUE(build_problem(&params, true, &problem).is_ok());
  problem.sample.look = 4.f;
  SparsePlan plan = sparse_plan(problem, 9);
  const int hq = problem.num_q_heads;
  for (size_t s = 0; s < problem.sequences.size(); ++s) {  // head 1: the window that makes its density 0.74
    const Sequence& seq = problem.sequences[s];
    HeadPlan& wide = plan.heads[s * hq + 1];
    auto density_of = [&] { return computed_pairs(problem, seq, wide) / static_cast<double>(model_pairs(problem, seq)); };
    for (wide.window = 40; density_of() < 0.74 && wide.window < seq.k_len; ++wide.window) {
    }
    const double density = density_of();
    ASSERT_GT(density, 0.8 - 0.125);  // under the cap alone, over it with the look's cost
    ASSERT_LT(density, 0.8);
  }
  for (const float max_density : {0.8f, 1.f}) {
    problem.sample.max_density = max_density;
    SparsePlan looked = plan;
    ASSERT_TRUE(cpu::find_dense_rows(*pool_of(2), 0, cpu::WorkspaceParts{}, active_kernel_table(), problem, &looked).is_ok());
    for (size_t s = 0; s < problem.sequences.size(); ++s) {
      const HeadPlan& wide = looked.heads[s * hq + 1];
      if (max_density < 1.f) {
        EXPECT_TRUE(wide.dense);
        EXPECT_EQ(wide.decision, SAMPLEATTN_DECISION_DENSE_LOOK);
        EXPECT_TRUE(wide.dense_rows.empty());
      } else {
        EXPECT_FALSE(wide.dense) << "max_density 1: never dense";
      }
      // A narrow head stays sparse, with few dense rows on these inputs.
      EXPECT_FALSE(looked.heads[s * hq].dense);
      EXPECT_LT(looked.heads[s * hq].dense_rows.size(), problem.sequences[s].q_len / 10);
    }
  }
}

// Through the C API: a call with stats, its masks (window, stripes and the dense rows the stats
// name) for the oracle.
struct Outcome {
  sampleattn_status status;
  sampleattn_stats stats;
  std::vector<sampleattn_head_stats> heads;
  MaskMap masks;
};

Outcome run(Case& c, sampleattn::Params& p, int64_t row_capacity = 1 << 16) {
  Outcome out;
  const int nseq = static_cast<int>(c.cu_q.size()) - 1;
  out.heads.resize(static_cast<size_t>(nseq) * c.hq);
  std::vector<int32_t> offsets(out.heads.size() + 1), stripes(1 << 16);
  std::vector<int32_t> row_offsets(out.heads.size() + 1, -1), rows(1 << 16, -1);
  sampleattn_stats_init(&out.stats);
  out.stats.head_stats = out.heads.data();
  out.stats.stripe_offsets = offsets.data();
  out.stats.stripes = stripes.data();
  out.stats.stripe_capacity = static_cast<int64_t>(stripes.size());
  out.stats.dense_row_offsets = row_offsets.data();
  out.stats.dense_row_indices = rows.data();
  out.stats.dense_row_capacity = row_capacity;
  sampleattn_context* ctx = testing::cpu_context(2);
  out.status = sampleattn_forward(ctx, &p, &out.stats);
  sampleattn_context_destroy(ctx);
  if (out.status != SAMPLEATTN_SUCCESS) return out;
  out.masks = testing::masks_from_stats(out.heads, nseq, c.hq, offsets, stripes);
  if (out.stats.num_dense_rows > row_capacity) {
    EXPECT_EQ(row_offsets[0], -1) << "rows written past the capacity";
    return out;
  }
  testing::add_dense_rows(out.masks, out.heads, c, out.stats, row_offsets, rows);
  return out;
}

sampleattn::Params sample_params(Case& c, float look) {
  sampleattn::Params p = c.params();
  testing::small_sample_params(p);
  p.sample.sink_tokens = 4;
  p.sample.r_w = 0.05f;
  p.sample.alpha = 0.8f;
  p.sample.look = look;
  return p;
}

TEST(LookApi, OutputIsExactOverTheMaskWithTheRowsTheStatsName) {
  Case c = look_case(33);
  sampleattn::Params p = sample_params(c, 3.f);
  const Outcome o = run(c, p);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_GT(o.stats.num_dense_rows, 0);
  size_t with_rows = 0;
  for (const auto& [key, m] : o.masks) with_rows += !m.dense_rows.empty();
  EXPECT_GT(with_rows, 0u);
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = testing::all_rows(problem);
  const auto oracle = reference::attention_rows(problem, rows, testing::lookup(o.masks));
  EXPECT_LT(testing::errors_of(oracle, testing::output_rows(c, rows)).rel_l2, 1e-5);
  // Without the look the same call runs no dense rows and another output.
  sampleattn::Params off = sample_params(c, 0.f);
  const Outcome plain = run(c, off);
  ASSERT_EQ(plain.status, SAMPLEATTN_SUCCESS);
  EXPECT_EQ(plain.stats.num_dense_rows, 0);
  for (const auto& h : plain.heads) EXPECT_EQ(h.dense_rows, 0);
}

// The probe through the API, on the same rows: the head whose probe flags enough rows is looked
// at whole (its three far rows run dense), the head whose probe flags one keeps that one only, and
// the heads without far rows have no dense rows. cuda_test runs the same case on the device.
sampleattn::Params probe_params(Case& c) {
  sampleattn::Params p = c.params();
  testing::small_sample_params(p);
  p.sample.min_window = 40;
  p.sample.r_w = 0.f;
  p.sample.r_row = 0.05f;
  p.sample.sample_block = 64;
  p.sample.look = 4.f;
  return p;
}

TEST(LookApi, TheProbeLooksAtWholeTheHeadsItFlagsEnoughRowsOf) {
  const int32_t a = testing::kProbedRows[0], b = testing::kProbedRows[1], unprobed = testing::kUnprobedRow;
  Case c = testing::far_key_case(DType::kF32, 4, {{0, a}, {0, b}, {0, unprobed}, {1, b}, {1, unprobed}});
  sampleattn::Params p = probe_params(c);
  const Outcome o = run(c, p);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  for (int h = 0; h < 4; ++h) ASSERT_TRUE(o.masks.count({0, h})) << "head " << h << " sparse";
  EXPECT_EQ(o.masks.at({0, 0}).dense_rows, (std::vector<int64_t>{unprobed, a, b}));
  EXPECT_EQ(o.masks.at({0, 1}).dense_rows, (std::vector<int64_t>{b}));
  for (int h = 2; h < 4; ++h) EXPECT_TRUE(o.masks.at({0, h}).dense_rows.empty()) << "head " << h;
}

TEST(LookApi, RowsPastTheCapacityAreCountedNotWritten) {
  Case c = look_case(33);
  sampleattn::Params p = sample_params(c, 3.f);
  const Outcome o = run(c, p, /*row_capacity=*/1);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS);
  EXPECT_GT(o.stats.num_dense_rows, 1);
}

TEST(LookApi, HeadsTheRowsTakePastMaxDensityRunDense) {
  Case c = look_case(8);
  sampleattn::Params p = sample_params(c, 1000.f);  // every row with keys outside its band
  p.sample.max_density = 0.9f;
  const Outcome o = run(c, p);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  int looked = 0;
  for (const auto& h : o.heads) {
    if (h.decision != SAMPLEATTN_DECISION_DENSE_LOOK) continue;
    ++looked;
    EXPECT_EQ(h.dense, 1);
    EXPECT_EQ(h.dense_rows, 0);
    EXPECT_EQ(h.num_stripes, 0);
    EXPECT_FLOAT_EQ(h.density, 1.f);
  }
  EXPECT_GT(looked, 0);  // the others ran dense before the look, by their cost
  EXPECT_EQ(o.stats.num_dense_heads, o.stats.num_heads_total);
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = testing::all_rows(problem);
  const auto oracle = reference::attention_rows(problem, rows, testing::lookup(o.masks));
  EXPECT_LT(testing::errors_of(oracle, testing::output_rows(c, rows)).rel_l2, 1e-5);
}

TEST(LookApi, BadValuesAreRefused) {
  Case c = look_case(2);
  for (float look : {-1.f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
    sampleattn::Params p = sample_params(c, look);
    sampleattn_context* ctx = testing::cpu_context(1);
    EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_INVALID_ARGUMENT) << look;
    EXPECT_NE(std::string(sampleattn_last_error()).find("sample.look"), std::string::npos) << sampleattn_last_error();
    sampleattn_context_destroy(ctx);
  }
}

}  // namespace
}  // namespace sampleattn
