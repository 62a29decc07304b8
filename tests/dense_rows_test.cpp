// Dense rows of a sparse head (HeadPlan::dense_rows): rows that attend over every key they see
// while the head's other rows keep its window and stripes. run_flash_attention against the
// double-precision oracle with the same masks (reference::HeadMask::dense_rows), f32 and bf16
// products, grouped heads, chunked prefill, and the model's window and ALiBi; and the pair count
// the statistics report.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <vector>

#include "core/problem.h"
#include "core/sparse_plan.h"
#include "cpu/flash_driver.h"
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

// Every head sparse but the last one of each sequence: a window of 24 keys, a few stripes, and
// `share` of the rows dense (the first and last rows among them). The oracle's masks alike.
SparsePlan plan_with_dense_rows(const Problem& p, uint64_t seed, double share, MaskMap* masks) {
  Rng rng(seed);
  SparsePlan plan;
  const int hq = p.num_q_heads;
  plan.heads.resize(p.sequences.size() * static_cast<size_t>(hq));
  for (size_t s = 0; s < p.sequences.size(); ++s) {
    const Sequence& seq = p.sequences[s];
    for (int h = 0; h < hq; ++h) {
      HeadPlan& hp = plan.heads[s * hq + h];
      if (h == hq - 1) {
        hp.dense = true;
        hp.window = seq.k_len;
        continue;
      }
      hp.dense = false;
      hp.decision = SAMPLEATTN_DECISION_SPARSE;
      hp.window = std::min<int64_t>(24, seq.k_len);
      std::set<int32_t> stripes = {0, 1};
      for (int i = 0; i < 6; ++i) stripes.insert(static_cast<int32_t>(rng.next() % static_cast<uint64_t>(seq.k_len)));
      hp.stripes.assign(stripes.begin(), stripes.end());
      for (int64_t i = 0; i < seq.q_len; ++i) {
        if (i == 0 || i == seq.q_len - 1 || rng.uniform() < share) hp.dense_rows.push_back(static_cast<int32_t>(i));
      }
      reference::HeadMask m;
      m.window = hp.window;
      m.stripes = hp.stripes;
      for (int32_t i : hp.dense_rows) m.dense_rows.push_back(seq.q_offset() + i);
      (*masks)[{static_cast<int>(s), h}] = std::move(m);
    }
  }
  return plan;
}

struct Variant {
  const char* name;
  Precision precision;
  int64_t window_left;
  bool alibi;
};

void expect_matches_oracle(const Variant& v) {
  SCOPED_TRACE(v.name);
  const KernelTable& kernels = active_kernel_table();
  if (kernels.path(v.precision) == nullptr) GTEST_SKIP() << "no " << precision_name(v.precision) << " path";
  Case c;
  c.d = 64;
  c.hq = 4;
  c.hkv = 2;
  c.add_sequence(300, 300);  // prefill
  c.add_sequence(150, 420);  // a chunk against a cache
  c.materialize(7, 1.5f);
  sampleattn::Params params = c.params();
  params.precision = v.precision == Precision::kBF16 ? SAMPLEATTN_PRECISION_BF16 : SAMPLEATTN_PRECISION_F32;
  params.method = SAMPLEATTN_METHOD_SAMPLE;
  params.window_left = v.window_left;
  const std::vector<float> slopes = {0.05f, 0.02f, 0.01f, 0.005f};
  if (v.alibi) params.alibi_slopes = slopes.data();
  Problem problem;
  ASSERT_TRUE(build_problem(&params, true, &problem).is_ok());
  MaskMap masks;
  const SparsePlan plan = plan_with_dense_rows(problem, 11, 0.05, &masks);
  bool unchecked = false;
  const Status s = cpu::run_flash_attention(*pool_of(2), 0, cpu::WorkspaceParts{}, kernels, problem, &plan, nullptr,
                                            &unchecked);
  ASSERT_TRUE(s.is_ok()) << s.message();
  ASSERT_FALSE(unchecked);
  const auto rows = testing::all_rows(problem);
  const auto oracle = reference::attention_rows(problem, rows, testing::lookup(masks));
  const testing::Errors e = testing::errors_of(oracle, testing::output_rows(c, rows));
  const bool bf16 = v.precision == Precision::kBF16;
  EXPECT_LT(e.rel_l2, bf16 ? 1e-2 : 1e-5);
  for (size_t r = 0; r < rows.size(); ++r) {
    const float lse = c.lse[static_cast<size_t>(rows[r].first) * c.hq + rows[r].second];
    ASSERT_NEAR(lse, oracle[r].lse, (bf16 ? 3e-2 : 1e-5) * std::max(1.0, std::abs(oracle[r].lse))) << "row " << r;
  }
  // The dense rows matter: the same plan without them gives another output.
  SparsePlan without = plan;
  for (HeadPlan& hp : without.heads) hp.dense_rows.clear();
  MaskMap plain = masks;
  for (auto& [key, m] : plain) m.dense_rows.clear();
  const auto oracle_plain = reference::attention_rows(problem, rows, testing::lookup(plain));
  EXPECT_GT(testing::errors_of(oracle_plain, testing::output_rows(c, rows)).rel_l2, 10 * (bf16 ? 1e-2 : 1e-5));
}

TEST(DenseRows, MatchTheOracleF32) { expect_matches_oracle({"f32", Precision::kF32, -1, false}); }
TEST(DenseRows, MatchTheOracleBf16) { expect_matches_oracle({"bf16", Precision::kBF16, -1, false}); }
TEST(DenseRows, MatchTheOracleWithWindowAndAlibi) { expect_matches_oracle({"variants", Precision::kF32, 100, true}); }

// The pairs a head computes count each dense row's keys once: its band, its visible stripes and
// the rest of what it sees, counted here key by key.
TEST(DenseRows, PairCountAddsTheirKeys) {
  Case c;
  c.d = 64;
  c.hq = 2;
  c.hkv = 1;
  c.add_sequence(200, 260);
  c.materialize(3);
  for (const int64_t left : {int64_t{-1}, int64_t{90}}) {
    sampleattn::Params params = c.params();
    params.method = SAMPLEATTN_METHOD_SAMPLE;
    params.window_left = left;
    Problem problem;
    ASSERT_TRUE(build_problem(&params, true, &problem).is_ok());
    MaskMap masks;
    const SparsePlan plan = plan_with_dense_rows(problem, 5, 0.1, &masks);
    const Sequence& seq = problem.sequences[0];
    const reference::HeadMask& m = masks.at({0, 0});
    int64_t counted = 0;
    for (int64_t i = 0; i < seq.q_len; ++i) {
      const int64_t p = seq.q_offset() + i;
      for (int64_t j = 0; j < seq.k_len; ++j) counted += reference::visible(true, &m, p, j, left);
    }
    EXPECT_EQ(computed_pairs(problem, seq, plan.heads[0]), static_cast<double>(counted)) << "window_left " << left;
  }
}

}  // namespace
}  // namespace sampleattn
