// The model variants of issue 15 on the CPU backend (docs/ALGORITHM.md, "Model variants"):
// head_dim_v, the model's sliding window (window_left), the logit softcap, ALiBi and learned
// sinks, each alone and combined, through the public API against the double-precision oracle
// (src/reference/, which restates every variant independently). Dense attention on every ISA,
// dtype and precision; SampleAttention equal to the oracle restricted to the mask it reports,
// with stripes chosen on the model's scores inside the model's window; the DENSE_WINDOW decision,
// densities as shares of the model's pairs, every head dim and pairs of head_dim != head_dim_v,
// sinks in the lse, thread independence, the plan's workspace and the statuses of bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>

#include "core/sparse_plan.h"
#include "core/validation.h"
#include "test_util.h"

namespace sampleattn::testing {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Which variants a case turns on (head_dim_v is the case's dv).
struct Variants {
  int64_t window_left = -1;
  float softcap = 0.f;
  bool alibi = false;
  bool sinks = false;

  std::string name() const {
    std::string n;
    if (window_left >= 0) n += "window" + std::to_string(window_left) + " ";
    if (softcap > 0) n += "softcap ";
    if (alibi) n += "alibi ";
    if (sinks) n += "sinks ";
    return n.empty() ? "plain" : n;
  }
};

// The ALiBi slopes of the paper for `heads` heads: 2^(-8 (h + 1) / heads).
std::vector<float> alibi_slopes(int heads) {
  std::vector<float> s(static_cast<size_t>(heads));
  for (int h = 0; h < heads; ++h) s[h] = std::exp2(-8.f * static_cast<float>(h + 1) / static_cast<float>(heads));
  return s;
}

// Sink logits per head: below, near and above the rows' scores, and none (-inf).
std::vector<float> sink_logits(int heads) {
  const float cycle[] = {1.f, 6.f, -kInf, 12.f, 0.f, 3.f};
  std::vector<float> s(static_cast<size_t>(heads));
  for (int h = 0; h < heads; ++h) s[h] = cycle[h % 6];
  return s;
}

// One problem with owned inputs, [token, head, dim], with head_dim_v and the variants.
struct VariantCase {
  int d = 64;
  int dv = 64;
  int hq = 4;
  int hkv = 2;
  DType in = DType::kF32;
  DType out = DType::kF32;
  bool causal = true;
  Variants var;
  std::vector<int32_t> cu_q{0}, cu_k{0};
  Buffer q, k, v, o;
  std::vector<float> lse, slopes, sinks;

  void add_sequence(int32_t q_len, int32_t k_len) {
    cu_q.push_back(cu_q.back() + q_len);
    cu_k.push_back(cu_k.back() + k_len);
  }
  int nseq() const { return static_cast<int>(cu_q.size()) - 1; }

  void materialize(uint64_t seed, float qk_scale = 1.5f) {
    Rng rng(seed);
    q = Buffer(in, cu_q.back(), hq, d);
    k = Buffer(in, cu_k.back(), hkv, d);
    v = Buffer(in, cu_k.back(), hkv, dv);
    o = Buffer(out, cu_q.back(), hq, dv);
    q.fill_normal(rng, qk_scale);
    k.fill_normal(rng, 1.f);
    v.fill_normal(rng, 1.f);
    o.poison();
    lse.assign(static_cast<size_t>(cu_q.back()) * hq, std::nanf(""));
    slopes = var.alibi ? alibi_slopes(hq) : std::vector<float>{};
    sinks = var.sinks ? sink_logits(hq) : std::vector<float>{};
  }

  sampleattn::Params params() {
    sampleattn::Params p;
    // The tests name their products: f32 unless a test asks for bf16 (what AUTO, the library's
    // default, resolves to is tested in abi_test).
    p.precision = SAMPLEATTN_PRECISION_F32;
    p.q = {q.data(), static_cast<sampleattn_dtype>(in), int64_t{hq} * d, d};
    p.k = {k.data(), static_cast<sampleattn_dtype>(in), int64_t{hkv} * d, d};
    p.v = {v.data(), static_cast<sampleattn_dtype>(in), int64_t{hkv} * dv, dv};
    p.o = {o.data(), static_cast<sampleattn_dtype>(out), int64_t{hq} * dv, dv};
    p.head_dim = d;
    p.head_dim_v = dv;
    p.num_q_heads = hq;
    p.num_kv_heads = hkv;
    p.causal = causal ? 1 : 0;
    p.batch = nseq();
    p.cu_seqlens_q = cu_q.data();
    p.cu_seqlens_k = cu_k.data();
    p.lse = lse.data();
    p.window_left = var.window_left;
    p.softcap = var.softcap;
    p.alibi_slopes = slopes.empty() ? nullptr : slopes.data();
    p.sinks = sinks.empty() ? nullptr : sinks.data();
    return p;
  }

  std::vector<std::vector<double>> output(const std::vector<std::pair<int64_t, int>>& rows) const {
    std::vector<std::vector<double>> r;
    for (const auto& [t, h] : rows) {
      std::vector<double> row(static_cast<size_t>(dv));
      for (int x = 0; x < dv; ++x) row[x] = o.get((t * hq + h) * dv + x);
      r.push_back(std::move(row));
    }
    return r;
  }
  float lse_of(int64_t token, int head) const { return lse[static_cast<size_t>(token) * hq + head]; }
};

// The variant cases most suites run: each alone, then combined.
std::vector<Variants> variant_list() {
  std::vector<Variants> list;
  Variants v;
  v.window_left = 20;
  list.push_back(v);
  v = {};
  v.softcap = 2.f;
  list.push_back(v);
  v = {};
  v.alibi = true;
  list.push_back(v);
  v = {};
  v.sinks = true;
  list.push_back(v);
  v = {};
  v.window_left = 20, v.softcap = 2.f, v.sinks = true;
  list.push_back(v);
  v = {};
  v.window_left = 33, v.alibi = true;
  list.push_back(v);
  v = {};
  v.window_left = 0;  // each query sees itself only
  list.push_back(v);
  v = {};
  v.window_left = 500, v.softcap = 1.f, v.alibi = true, v.sinks = true;  // wider than every sequence
  list.push_back(v);
  return list;
}

// The problem without its variants (head_dim_v kept): what the variants change.
Problem plain_of(const Problem& problem) {
  Problem plain = problem;
  plain.window_left = kNoModelWindow;
  plain.softcap = 0.f;
  plain.alibi_slopes.clear();
  plain.sinks.clear();
  return plain;
}

// The output against the oracle (restricted to `mask` when given): the error is at most twice
// that of a naive implementation in the same precision, and the lse agrees. Also checks (unless
// told not to, where other cases have) that the variants matter in this case, so that a backend
// ignoring them would fail.
void expect_matches_oracle(const VariantCase& c, const sampleattn::Params& p, bool bf16_products,
                           const reference::MaskLookup& mask = {}, bool check_effect = true) {
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = all_rows(problem);
  if (rows.empty()) return;
  const auto oracle = reference::attention_rows(problem, rows, mask);
  const auto naive = reference::naive_attention_rows(problem, rows, bf16_products, mask);
  const Errors ours = errors_of(oracle, c.output(rows));
  const Errors base = errors_of(oracle, stored(naive, c.out));
  EXPECT_LE(ours.rel_l2, 2 * base.rel_l2 + 1e-7) << "naive " << base.rel_l2;
  // With bf16 products the worst element of either side is one bf16 rounding, and the naive
  // side's worst varies by 2x between seeds (0.0052 .. 0.0111 over 11 seeds of the dense case,
  // window or not, while the relative L2 ratio stays at 1.33 .. 1.45): 3x of it for the max.
  const double max_factor = bf16_products ? 3 : 2;
  EXPECT_LE(ours.max_abs, max_factor * base.max_abs + 1e-6) << "naive " << base.max_abs;
  const double lse_tol = bf16_products ? 3e-2 : 1e-4;
  for (size_t r = 0; r < rows.size(); ++r) {
    const float lse = c.lse_of(rows[r].first, rows[r].second);
    if (std::isinf(oracle[r].lse)) {
      ASSERT_TRUE(std::isinf(lse) && lse < 0) << "row " << r << " lse " << lse;
    } else {
      ASSERT_NEAR(lse, oracle[r].lse, lse_tol * std::max(1.0, std::abs(oracle[r].lse))) << "row " << r;
    }
  }
  if (check_effect && (problem.window_left >= 0 || problem.has_score_mod())) {
    const auto plain = reference::attention_rows(plain_of(problem), rows, mask);
    double lse_moved = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      if (std::isfinite(plain[r].lse)) lse_moved = std::max(lse_moved, std::abs(plain[r].lse - oracle[r].lse));
    }
    EXPECT_GT(lse_moved, 1e-2) << "the variants do not change this case; it tests nothing";
  }
}

bool has_bf16(Isa isa) { return kernel_table_for(isa)->path(Precision::kBF16) != nullptr; }

// The precisions worth running on a table: bf16 only where the table has bf16 products.
std::vector<sampleattn_precision> precisions(Isa isa) {
  if (has_bf16(isa)) return {SAMPLEATTN_PRECISION_F32, SAMPLEATTN_PRECISION_BF16};
  return {SAMPLEATTN_PRECISION_F32};
}

// ---- Dense attention ---------------------------------------------------------------------------

using IsaDtype = std::tuple<Isa, DType>;
class VariantsDense : public ::testing::TestWithParam<IsaDtype> {};

TEST_P(VariantsDense, EachAndCombinedMatchTheOracle) {
  const auto [isa, dtype] = GetParam();
  ScopedIsa forced(isa);
  if (!forced.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(isa);
  sampleattn_context* ctx = cpu_context(2);
  uint64_t seed = 100;
  const std::vector<Variants> list = variant_list();
  for (size_t i = 0; i < list.size(); ++i) {
    const Variants& var = list[i];
    const int hkv = i % 2 == 0 ? 2 : 1;  // 4 query heads on 2 kv heads or on 1, by turns
    for (sampleattn_precision precision : precisions(isa)) {
      SCOPED_TRACE(var.name() + " hkv=" + std::to_string(hkv) + " precision=" + std::to_string(precision));
      VariantCase c;
      c.hkv = hkv;
      c.in = c.out = dtype;
      c.var = var;
      c.add_sequence(70, 70);
      c.add_sequence(0, 0);
      c.add_sequence(1, 1);
      c.add_sequence(33, 130);  // chunked prefill
      c.add_sequence(45, 200);
      c.materialize(++seed);
      sampleattn::Params p = c.params();
      p.precision = precision;
      sampleattn_stats stats;
      sampleattn_stats_init(&stats);
      ASSERT_EQ(sampleattn_forward(ctx, &p, &stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      EXPECT_STREQ(stats.isa, isa_name(isa)) << "the forced ISA did not run";
      // Whether the variants matter does not depend on the dtype: checked once, with f32.
      expect_matches_oracle(c, p, precision == SAMPLEATTN_PRECISION_BF16, {}, dtype == DType::kF32);
    }
  }
  sampleattn_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, VariantsDense,
                         ::testing::Combine(::testing::ValuesIn(kAllIsas),
                                            ::testing::Values(DType::kF32, DType::kF16, DType::kBF16)),
                         [](const ::testing::TestParamInfo<IsaDtype>& tp) {
                           return std::string(isa_name(std::get<0>(tp.param))) + "_" +
                                  dtype_name(std::get<1>(tp.param));
                         });

// Non-causal calls take softcap, ALiBi (|p - j| both ways) and sinks (a model window needs
// causal).
TEST(VariantsDenseNonCausal, SoftcapAlibiSinksBothDirections) {
  VariantCase c;
  c.causal = false;
  c.var.softcap = 1.5f;
  c.var.alibi = true;
  c.var.sinks = true;
  c.add_sequence(40, 90);
  c.add_sequence(3, 0);  // no key: o = 0, lse = -inf, sink or not
  c.add_sequence(60, 25);
  c.materialize(9);
  sampleattn::Params p = c.params();
  sampleattn_context* ctx = cpu_context(2);
  ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  sampleattn_context_destroy(ctx);
  expect_matches_oracle(c, p, false);
  for (int64_t t = 40; t < 43; ++t) {
    for (int h = 0; h < c.hq; ++h) {
      EXPECT_TRUE(std::isinf(c.lse_of(t, h)) && c.lse_of(t, h) < 0);
      for (int x = 0; x < c.dv; ++x) EXPECT_EQ(c.o.get((t * c.hq + h) * c.dv + x), 0.f);
    }
  }
}

// ---- Head dims ---------------------------------------------------------------------------------

bool head_dim_listed(int d) {
  return std::find(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims), d) != std::end(kSupportedHeadDims);
}

// (head_dim, head_dim_v) pairs: equal for every listed dim, the unequal pairs where both
// are listed, and the list's smallest with its largest both ways.
std::vector<std::pair<int, int>> head_dim_pairs() {
  std::vector<std::pair<int, int>> pairs;
  for (int d : kSupportedHeadDims) pairs.emplace_back(d, d);
  for (auto [d, dv] : {std::pair{192, 128}, std::pair{128, 192}, std::pair{32, 256}}) {
    if (head_dim_listed(d) && head_dim_listed(dv)) pairs.emplace_back(d, dv);
  }
  const int lo = *std::min_element(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims));
  const int hi = *std::max_element(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims));
  pairs.emplace_back(lo, hi);
  pairs.emplace_back(hi, lo);
  return pairs;
}

// Plants columns every query leans on (through dimension 0), so that sampling has stripes to find.
void plant(VariantCase& c, const std::vector<int32_t>& columns, float strength) {
  for (int s = 0; s < c.nseq(); ++s) {
    for (int32_t j : columns) {
      const int64_t key = c.cu_k[s] + j;
      if (key >= c.cu_k[s + 1]) continue;
      for (int h = 0; h < c.hkv; ++h) c.k.set((key * c.hkv + h) * c.d, strength);
    }
    for (int64_t t = c.cu_q[s]; t < c.cu_q[s + 1]; ++t) {
      for (int h = 0; h < c.hq; ++h) c.q.set((t * c.hq + h) * c.d, strength);
    }
  }
}

// A call with statistics: the status, per-head figures and the masks of the sparse heads.
struct Outcome {
  sampleattn_status status = SAMPLEATTN_SUCCESS;
  std::vector<sampleattn_head_stats> heads;
  MaskMap masks;
  sampleattn_stats stats{};
};

Outcome run(VariantCase& c, const sampleattn::Params& p, sampleattn_context* ctx) {
  Outcome out;
  out.heads.resize(static_cast<size_t>(c.nseq()) * c.hq);
  std::vector<int32_t> offsets(out.heads.size() + 1);
  std::vector<int32_t> stripes(1 << 16);
  sampleattn_stats_init(&out.stats);
  out.stats.head_stats = out.heads.data();
  out.stats.stripe_offsets = offsets.data();
  out.stats.stripes = stripes.data();
  out.stats.stripe_capacity = static_cast<int64_t>(stripes.size());
  out.status = sampleattn_forward(ctx, &p, &out.stats);
  if (out.status != SAMPLEATTN_SUCCESS) return out;
  EXPECT_LE(out.stats.stripes_required, out.stats.stripe_capacity);
  out.masks = masks_from_stats(out.heads, c.nseq(), c.hq, offsets, stripes);
  return out;
}

Outcome run(VariantCase& c, const sampleattn::Params& p, int threads) {
  sampleattn_context* ctx = cpu_context(threads);
  Outcome out = run(c, p, ctx);
  sampleattn_context_destroy(ctx);
  return out;
}

// Every pair on the best table this CPU runs; the unequal pairs on every table (their tile sizes
// differ). The kernels' own tests cover every head dim on every table.
TEST(VariantsHeadDims, EveryDimAndUnequalValueDimsDenseAndSampled) {
  Variants all;
  all.window_left = 40;
  all.softcap = 2.f;
  all.alibi = true;
  all.sinks = true;
  const Isa best = active_kernel_table().isa;
  for (Isa isa : kAllIsas) {
    ScopedIsa forced(isa);
    if (!forced.ok()) continue;  // the tables this CPU runs
    sampleattn_context* ctx = cpu_context(2);
    for (auto [d, dv] : head_dim_pairs()) {
      if (isa != best && d == dv) continue;
      SCOPED_TRACE(std::string(isa_name(isa)) + " d=" + std::to_string(d) + " dv=" + std::to_string(dv));
      VariantCase c;
      c.d = d;
      c.dv = dv;
      c.var = all;
      c.add_sequence(64, 64);
      c.add_sequence(16, 100);  // chunked prefill
      c.materialize(static_cast<uint64_t>(d * 1000 + dv), 0.8f);
      plant(c, {3, 30}, 2.f);
      sampleattn::Params p = c.params();
      ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      expect_matches_oracle(c, p, false, {}, false);

      // SampleAttention: the stripe buffers hold V in dv.
      c.o.poison();
      small_sample_params(p);
      Outcome o = run(c, p, ctx);
      ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      EXPECT_GT(o.masks.size(), 0u);
      expect_matches_oracle(c, p, false, lookup(o.masks), false);
    }
    sampleattn_context_destroy(ctx);
  }
}

// ---- SampleAttention ---------------------------------------------------------------------------

class VariantsSample : public ::testing::TestWithParam<IsaDtype> {};

TEST_P(VariantsSample, EqualsOracleRestrictedToTheMask) {
  const auto [isa, dtype] = GetParam();
  ScopedIsa forced(isa);
  if (!forced.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(isa);
  uint64_t seed = 500;
  sampleattn_context* ctx = cpu_context(2);
  const std::vector<Variants> list = variant_list();
  for (size_t i = 0; i < list.size(); ++i) {
    Variants var = list[i];
    if (var.window_left == 0) continue;  // runs dense (DENSE_WINDOW): VariantsDecision
    if (var.window_left == 20 || var.window_left == 33) var.window_left *= 4;  // wider than the local window
    const int hkv = i % 2 == 0 ? 2 : 1;  // 4 query heads on 2 kv heads or on 1, by turns
    SCOPED_TRACE(var.name() + " hkv=" + std::to_string(hkv));
    VariantCase c;
    c.hkv = hkv;
    c.in = c.out = dtype;
    c.var = var;
    c.add_sequence(240, 240);
    c.add_sequence(0, 0);
    c.add_sequence(1, 1);
    c.add_sequence(70, 300);  // chunked prefill
    c.materialize(++seed, 0.6f);
    plant(c, {5, 90, 150}, 2.5f);
    sampleattn::Params p = c.params();
    small_sample_params(p);
    p.sample.r_val = 0.1f;  // validation on: whatever it decides, the output is the mask's attention
    Outcome o = run(c, p, ctx);
    ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    EXPECT_STREQ(o.stats.isa, isa_name(isa));
    EXPECT_GT(o.masks.size(), 0u);
    EXPECT_LT(o.stats.density, 1.0);
    expect_matches_oracle(c, p, false, lookup(o.masks), dtype == DType::kF32);
  }
  sampleattn_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, VariantsSample,
                         ::testing::Combine(::testing::ValuesIn(kAllIsas),
                                            ::testing::Values(DType::kF32, DType::kF16, DType::kBF16)),
                         [](const ::testing::TestParamInfo<IsaDtype>& tp) {
                           return std::string(isa_name(std::get<0>(tp.param))) + "_" +
                                  dtype_name(std::get<1>(tp.param));
                         });

TEST(VariantsSampleScope, KvGroupSetsAndBf16Products) {
  VariantCase c;
  c.hq = 4;
  c.hkv = 1;
  c.var.window_left = 100;
  c.var.softcap = 2.f;
  c.var.alibi = true;
  c.var.sinks = true;
  c.add_sequence(300, 300);
  c.add_sequence(50, 220);
  c.materialize(44, 0.6f);
  plant(c, {2, 120, 200}, 2.5f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.scope = SAMPLEATTN_STRIPES_PER_KV_GROUP;
  for (sampleattn_precision precision : precisions(active_kernel_table().isa)) {
    SCOPED_TRACE("precision " + std::to_string(precision));
    p.precision = precision;
    c.o.poison();
    Outcome o = run(c, p, 2);
    ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    for (int s = 0; s < 2; ++s) {
      for (int h = 1; h < c.hq; ++h) EXPECT_EQ(o.masks.at({s, h}).stripes, o.masks.at({s, 0}).stripes);
    }
    expect_matches_oracle(c, p, precision == SAMPLEATTN_PRECISION_BF16, lookup(o.masks));
  }
}

// The scores the model uses, in double, per the spec: s = scale q.k, capped, minus the ALiBi
// bias, over the keys max(0, p - left) .. p.
struct ModelRow {
  int64_t lo = 0;              // first key the row sees
  std::vector<double> probs;   // keys lo .. p
};

ModelRow model_row(const VariantCase& c, const Problem& problem, int seq, int head, int64_t i) {
  const Sequence& s = problem.sequences[seq];
  const int64_t p = s.q_offset() + i;
  const int kvh = head / problem.group;
  ModelRow row;
  row.lo = problem.window_left >= 0 ? std::max<int64_t>(0, p - problem.window_left) : 0;
  const double slope = c.slopes.empty() ? 0.0 : c.slopes[head];
  double mx = -1e300;
  for (int64_t j = row.lo; j <= p; ++j) {
    double dot = 0;
    for (int x = 0; x < c.d; ++x) {
      dot += static_cast<double>(c.q.get(((s.q_begin + i) * c.hq + head) * c.d + x)) *
             c.k.get(((s.k_begin + j) * c.hkv + kvh) * c.d + x);
    }
    double score = dot * problem.scale;
    if (problem.softcap > 0) score = problem.softcap * std::tanh(score / problem.softcap);
    score -= slope * static_cast<double>(p - j);
    row.probs.push_back(score);
    mx = std::max(mx, score);
  }
  double sum = 0;
  for (double& x : row.probs) sum += (x = std::exp(x - mx));
  for (double& x : row.probs) x /= sum;
  return row;
}

// Stage 1 on the model's scores: the chosen stripes are the fewest columns whose scores (the
// sampled rows' probabilities over the keys the model shows them) reach alpha, and the best ones.
class VariantsSelection : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(VariantsSelection, FewestColumnsOfTheModelsScores) {
  const auto [score_mods, window_counts] = GetParam();
  VariantCase c;
  c.hq = 2;
  c.hkv = 1;
  c.var.window_left = 180;
  if (score_mods) {
    c.var.softcap = 1.5f;
    c.var.alibi = true;
  }
  c.add_sequence(400, 400);
  c.materialize(5, 0.8f);
  plant(c, {3, 100, 101, 250}, 2.f);
  if (score_mods) c.slopes = {0.004f, 0.02f};  // mild: far keys still count
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.alpha = 0.9f;
  p.sample.sink_tokens = 0;
  p.sample.window_mass_counts = window_counts ? 1 : 0;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const std::vector<int64_t> rows = sampled_rows(problem.sample, 400);
  for (int h = 0; h < c.hq; ++h) {
    const reference::HeadMask& m = o.masks.at({0, h});
    EXPECT_EQ(m.window, 15);  // ceil(0.08 * 181): r_w of what the model sees
    std::vector<double> scores(400, 0.0);
    for (int64_t i : rows) {
      const ModelRow row = model_row(c, problem, 0, h, i);
      const int64_t end = window_counts ? i - m.window + 1 : i + 1;  // p = i here
      for (int64_t j = row.lo; j < end; ++j) scores[j] += row.probs[j - row.lo];
    }
    const double total = static_cast<double>(rows.size());
    const double outside = std::accumulate(scores.begin(), scores.end(), 0.0);
    const double target = 0.9 * total - (window_counts ? total - outside : 0.0);
    double kept = 0, weakest = 1e300;
    for (int32_t j : m.stripes) {
      kept += scores[j];
      weakest = std::min(weakest, scores[j]);
    }
    const double slack = 1e-4 * total;  // f32 scores against double ones
    EXPECT_GE(kept, target - slack) << "head " << h;
    EXPECT_LT(kept - weakest, target + slack) << "head " << h << ": not the fewest";
    for (int64_t j = 0; j < 400; ++j) {
      if (!std::binary_search(m.stripes.begin(), m.stripes.end(), static_cast<int32_t>(j))) {
        EXPECT_LE(scores[j], weakest + 1e-5) << "head " << h << ": column " << j << " beats a chosen one";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, VariantsSelection, ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& tp) {
                           return std::string(std::get<0>(tp.param) ? "SoftcapAlibi" : "WindowOnly") +
                                  (std::get<1>(tp.param) ? "_WindowMassCounts" : "_PaperRule");
                         });

// The sampled rows' kept mass (cra) and the validation rows' (val_cra) are shares of each row's
// key mass over the keys the model shows it, on the model's scores, without the sink (spec):
// exp(lse_mask - lse_model) from the oracle on the problem without sinks.
TEST(VariantsSampleStats, KeptMassAndValidationOnTheModelsKeys) {
  VariantCase c;
  c.hq = 2;
  c.hkv = 1;
  c.var.window_left = 200;
  c.var.softcap = 2.f;
  c.var.alibi = true;
  c.var.sinks = true;
  c.add_sequence(512, 512);
  c.materialize(12, 0.8f);
  plant(c, {9, 300}, 1.5f);
  c.slopes = {0.003f, 0.01f};
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.alpha = 0.8f;
  p.sample.r_val = 0.1f;
  p.sample.min_kept = 0.f;  // measure only: alpha's stripes stand
  p.sample.max_lost = 1.f;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  Problem no_sink = problem;
  no_sink.sinks.clear();
  const std::vector<int64_t> sampled = sampled_rows(problem.sample, 512);
  const std::vector<int64_t> val = validation_rows(problem.sample, 512, sampled);
  ASSERT_GT(val.size(), 20u);
  auto kept_of = [&](int h, const std::vector<int64_t>& rows) {
    std::vector<std::pair<int64_t, int>> list;
    for (int64_t i : rows) list.emplace_back(i, h);
    const auto full = reference::attention_rows(no_sink, list);
    const auto masked = reference::attention_rows(no_sink, list, lookup(o.masks));
    std::vector<double> kept;
    for (size_t r = 0; r < list.size(); ++r) kept.push_back(std::exp(masked[r].lse - full[r].lse));
    return kept;
  };
  for (int h = 0; h < c.hq; ++h) {
    ASSERT_EQ(o.heads[h].decision, SAMPLEATTN_DECISION_SPARSE) << "head " << h;
    std::vector<double> kept = kept_of(h, sampled);
    EXPECT_NEAR(o.heads[h].cra_min, *std::min_element(kept.begin(), kept.end()), 2e-4) << "head " << h;
    EXPECT_NEAR(o.heads[h].cra_mean, std::accumulate(kept.begin(), kept.end(), 0.0) / kept.size(), 2e-4);
    kept = kept_of(h, val);
    std::sort(kept.begin(), kept.end());
    EXPECT_LT(kept.front(), 0.999) << "the mask loses mass somewhere, or this checks nothing";
    EXPECT_NEAR(o.heads[h].val_cra_min, kept.front(), 2e-4) << "head " << h;
    EXPECT_NEAR(o.heads[h].val_cra_p5, kept[quantile_index(0.05, static_cast<int64_t>(kept.size()))], 2e-4);
    EXPECT_NEAR(o.heads[h].val_cra_mean, std::accumulate(kept.begin(), kept.end(), 0.0) / kept.size(), 2e-4);
  }
}

// ---- Decisions and statistics ------------------------------------------------------------------

TEST(VariantsDecision, DenseWindowWhenTheModelWindowIsSmall) {
  for (int64_t left : {0, 7}) {  // w = 8 (min_window) covers left + 1 keys
    SCOPED_TRACE("window_left " + std::to_string(left));
    VariantCase c;
    c.var.window_left = left;
    c.var.sinks = true;
    c.add_sequence(200, 200);
    c.add_sequence(10, 10);   // short of dense_below: DENSE_SHORT comes first
    c.add_sequence(60, 250);  // chunked prefill
    c.materialize(3);
    sampleattn::Params p = c.params();
    small_sample_params(p);
    p.sample.dense_below = 20;
    Outcome o = run(c, p, 2);
    ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    EXPECT_EQ(o.stats.num_dense_heads, 3 * c.hq);
    EXPECT_DOUBLE_EQ(o.stats.density, 1.0);
    for (int s = 0; s < 3; ++s) {
      for (int h = 0; h < c.hq; ++h) {
        const sampleattn_head_stats& hs = o.heads[s * c.hq + h];
        EXPECT_EQ(hs.dense, 1);
        EXPECT_EQ(hs.decision, s == 1 ? SAMPLEATTN_DECISION_DENSE_SHORT : SAMPLEATTN_DECISION_DENSE_WINDOW);
        EXPECT_FLOAT_EQ(hs.density, 1.f);
      }
    }
    expect_matches_oracle(c, p, false);
  }
  // One key wider than the local window: sampled.
  VariantCase c;
  c.var.window_left = 8;
  c.add_sequence(200, 200);
  c.materialize(3);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  for (int h = 0; h < c.hq; ++h) EXPECT_NE(o.heads[h].decision, SAMPLEATTN_DECISION_DENSE_WINDOW);
}

// Densities are shares of the pairs the model computes (causal within its window), counted here
// with the oracle's own visibility rule.
TEST(VariantsStats, DensityIsAShareOfTheModelsPairs) {
  VariantCase c;
  c.var.window_left = 120;
  c.add_sequence(300, 300);
  c.add_sequence(90, 260);
  c.materialize(8, 0.6f);
  plant(c, {4, 100, 220}, 2.5f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.alpha = 0.8f;
  Outcome o = run(c, p, 2);
  ASSERT_EQ(o.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  double all_mask = 0, all_model = 0;
  for (int s = 0; s < c.nseq(); ++s) {
    const int64_t q_len = c.cu_q[s + 1] - c.cu_q[s], k_len = c.cu_k[s + 1] - c.cu_k[s];
    for (int h = 0; h < c.hq; ++h) {
      const auto it = o.masks.find({s, h});
      const reference::HeadMask* mask = it == o.masks.end() ? nullptr : &it->second;
      double in_mask = 0, in_model = 0;
      for (int64_t p_pos = k_len - q_len; p_pos < k_len; ++p_pos) {
        for (int64_t j = 0; j < k_len; ++j) {
          in_model += reference::visible(true, nullptr, p_pos, j, c.var.window_left);
          in_mask += reference::visible(true, mask, p_pos, j, c.var.window_left);
        }
      }
      EXPECT_NEAR(o.heads[s * c.hq + h].density, in_mask / in_model, 1e-6) << s << " " << h;
      all_mask += in_mask;
      all_model += in_model;
    }
  }
  EXPECT_LT(o.stats.density, 0.9);
  EXPECT_NEAR(o.stats.density, all_mask / all_model, 1e-9);

  // Dense with a model window: plan_info's dense FLOPs count the model's pairs.
  sampleattn_plan_info info;
  sampleattn_plan_info_init(&info);
  sampleattn_context* ctx = cpu_context(1);
  p.method = SAMPLEATTN_METHOD_DENSE;
  ASSERT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_SUCCESS);
  sampleattn_context_destroy(ctx);
  double model_pairs_count = 0;
  for (int s = 0; s < c.nseq(); ++s) {
    const int64_t q_len = c.cu_q[s + 1] - c.cu_q[s], k_len = c.cu_k[s + 1] - c.cu_k[s];
    for (int64_t p_pos = k_len - q_len; p_pos < k_len; ++p_pos) model_pairs_count += std::min<int64_t>(p_pos, 120) + 1;
  }
  EXPECT_DOUBLE_EQ(info.dense_flops, 4.0 * c.d * c.hq * model_pairs_count);
}

// ---- Sinks -------------------------------------------------------------------------------------

// The sink in the denominator and the lse, from far below the rows' scores to far above (a sink
// 10^4 above every score: o = 0 within f32, lse = the sink), and a row without keys.
TEST(VariantsSinks, LseAndExtremeSinks) {
  for (const std::vector<float>& sinks : {std::vector<float>{-1e4f, 4.f, 30.f, 1e4f},
                                          std::vector<float>{-kInf, -kInf, 200.f, -3.f}}) {
    VariantCase c;
    c.var.sinks = true;
    c.var.window_left = 40;
    c.add_sequence(90, 90);
    c.add_sequence(30, 75);
    c.materialize(21);
    c.sinks = sinks;
    sampleattn::Params p = c.params();
    sampleattn_context* ctx = cpu_context(2);
    ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    sampleattn_context_destroy(ctx);
    Problem problem;
    ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
    const auto rows = all_rows(problem);
    const auto oracle = reference::attention_rows(problem, rows);
    Problem no_sinks = problem;
    no_sinks.sinks.clear();
    const auto without = reference::attention_rows(no_sinks, rows);
    for (size_t r = 0; r < rows.size(); ++r) {
      const int h = rows[r].second;
      const float lse = c.lse_of(rows[r].first, h);
      ASSERT_NEAR(lse, oracle[r].lse, 1e-4 * std::max(1.0, std::abs(oracle[r].lse))) << "row " << r;
      if (sinks[h] >= 200.f) {
        // The keys' share is below e^-150: nothing left of the output, the lse is the sink's.
        EXPECT_NEAR(lse, sinks[h], 1e-3 * sinks[h]);
        for (int x = 0; x < c.dv; ++x) ASSERT_LT(std::abs(c.o.get((rows[r].first * c.hq + h) * c.dv + x)), 1e-30f);
      }
      if (sinks[h] == -kInf || sinks[h] <= -1e4f) {
        // No sink (or one that rounds to nothing): the plain softmax.
        ASSERT_NEAR(lse, without[r].lse, 1e-4 * std::max(1.0, std::abs(without[r].lse)));
      }
    }
    expect_matches_oracle(c, p, false);
  }
}

// ---- Threads, workspace, bad input -------------------------------------------------------------

TEST(VariantsThreads, SameMaskAndBitsForOneAndTwoThreads) {
  VariantCase c;
  c.d = 128;
  c.dv = 64;
  c.hq = 8;
  c.hkv = 2;
  c.var.window_left = 250;
  c.var.softcap = 3.f;
  c.var.alibi = true;
  c.var.sinks = true;
  c.add_sequence(500, 500);
  c.add_sequence(100, 260);
  c.materialize(21, 0.7f);
  plant(c, {7, 300}, 2.f);
  sampleattn::Params p = c.params();
  small_sample_params(p);
  p.sample.r_val = 0.05f;
  Outcome one = run(c, p, 1);
  const auto bits_one = c.o.bytes;
  const auto lse_one = c.lse;
  c.o.poison();
  Outcome two = run(c, p, 2);
  ASSERT_EQ(one.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  ASSERT_EQ(two.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(bits_one, c.o.bytes);
  EXPECT_EQ(0, std::memcmp(lse_one.data(), c.lse.data(), lse_one.size() * sizeof(float)));
  ASSERT_EQ(one.masks.size(), two.masks.size());
  ASSERT_GT(one.masks.size(), 0u);
  for (const auto& [key, mask] : one.masks) EXPECT_EQ(mask.stripes, two.masks.at(key).stripes);
}

// The plan's workspace is what the call holds with head_dim_v (dense: no stripe buffers), so a
// context limited to it runs the call and one byte less does not.
TEST(VariantsWorkspace, PlanBoundsTheCallWithHeadDimV) {
  const int lo = *std::min_element(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims));
  const int hi = *std::max_element(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims));
  for (auto [d, dv] : {std::pair{lo, hi}, std::pair{hi, lo}}) {
    VariantCase c;
    c.d = d;
    c.dv = dv;
    c.var.window_left = 50;
    c.add_sequence(300, 300);
    c.materialize(2);
    sampleattn::Params p = c.params();
    sampleattn_context* ctx = cpu_context(2);
    sampleattn_plan_info info;
    sampleattn_plan_info_init(&info);
    ASSERT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_SUCCESS);
    sampleattn_context_destroy(ctx);
    ctx = cpu_context(2, info.workspace_bytes);
    EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    sampleattn_context_destroy(ctx);
    expect_matches_oracle(c, p, false);
    ctx = cpu_context(2, info.workspace_bytes - 1);
    EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_OUT_OF_MEMORY);
    sampleattn_context_destroy(ctx);
  }
}

TEST(VariantsInput, BadVariantsFailClearly) {
  VariantCase c;
  c.add_sequence(20, 20);
  c.materialize(1);
  sampleattn_context* ctx = cpu_context(1);
  auto expect_status = [&](const sampleattn::Params& p, sampleattn_status want, const char* field) {
    c.o.poison();
    EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), want) << field;
    EXPECT_NE(std::string(sampleattn_last_error()).find(field), std::string::npos) << sampleattn_last_error();
    EXPECT_TRUE(std::isnan(c.o.get(0))) << field << ": output written";
  };
  sampleattn::Params p = c.params();
  p.softcap = std::nanf("");
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "softcap");
  p = c.params();
  p.softcap = -1.f;
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "softcap");
  p = c.params();
  p.window_left = -2;
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "window_left");
  p = c.params();
  p.window_left = 5;
  p.causal = 0;
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "window_left");
  std::vector<float> slopes = alibi_slopes(c.hq);
  slopes[1] = std::nanf("");
  p = c.params();
  p.alibi_slopes = slopes.data();
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "alibi_slopes[1]");
  // Finite but so steep that -slope * |p - j| would overflow the scores: the input scan's bound.
  slopes[1] = -1e37f;
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "ALiBi slopes too large");
  std::vector<float> sinks(static_cast<size_t>(c.hq), 0.f);
  sinks[3] = kInf;
  p = c.params();
  p.sinks = sinks.data();
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "sinks[3]");
  sinks[3] = std::nanf("");
  expect_status(p, SAMPLEATTN_INVALID_ARGUMENT, "sinks[3]");
  for (int dv : {8, 72, 512, -16}) {
    p = c.params();
    p.head_dim_v = dv;
    expect_status(p, SAMPLEATTN_UNSUPPORTED_HEAD_DIM, "head_dim_v");
  }
  sampleattn_context_destroy(ctx);
}

}  // namespace
}  // namespace sampleattn::testing
