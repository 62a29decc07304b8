// The input policies of docs/SECURITY.md on the C API: non-finite and overflowing inputs,
// aliased outputs, byte offsets that overflow, and number formatting in messages. Each case was a
// finding of the hardening review (issue 17); every kernel table runs each one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "test_util.h"

namespace sampleattn::testing {
namespace {

struct Forward {
  sampleattn_status status;
  std::string message;
};

Forward forward(sampleattn_context* ctx, const sampleattn_params& p, sampleattn_stats* stats = nullptr) {
  const sampleattn_status s = sampleattn_forward(ctx, &p, stats);
  return {s, s == SAMPLEATTN_SUCCESS ? "" : sampleattn_last_error()};
}

// A sampled GQA case long enough that stages 1 and 2 run: 4 query heads on 1 kv head.
Case sampled_case(DType dtype) {
  Case c;
  c.d = 64;
  c.hq = 4;
  c.hkv = 1;
  c.in = dtype;
  c.out = DType::kF32;
  c.add_sequence(600, 600);
  c.materialize(17, 1.0f);
  return c;
}

sampleattn::Params sampled_params(Case& c, sampleattn_stripe_scope scope) {
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  p.sample.dense_below = 128;
  p.sample.min_window = 16;
  p.sample.sample_block = 32;
  p.sample.r_row = 0.2f;
  p.sample.scope = scope;
  return p;
}

class NonFinite : public ::testing::TestWithParam<Isa> {};

// NaN and Inf anywhere in Q, K or V fail the call with a message that says where, on every
// table and for both methods and scopes, and leave O and lse untouched.
TEST_P(NonFinite, RejectedWithTheirPlace) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  const float specials[] = {std::nanf(""), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int which = 0; which < 3; ++which) {
      for (float bad : specials) {
        for (auto scope : {SAMPLEATTN_STRIPES_PER_HEAD, SAMPLEATTN_STRIPES_PER_KV_GROUP}) {
          Case c = sampled_case(dtype);
          Buffer& t = which == 0 ? c.q : (which == 1 ? c.k : c.v);
          const int heads = which == 0 ? c.hq : c.hkv;
          const int64_t token = 321, dim = 5;
          const int head = heads - 1;
          t.set((token * heads + head) * c.d + dim, bad);
          const std::vector<uint8_t> o_before = c.o.bytes;
          const std::vector<float> lse_before = c.lse;
          sampleattn::Params p = sampled_params(c, scope);
          const Forward f = forward(ctx, p);
          SCOPED_TRACE(std::string(dtype_name(dtype)) + " tensor " + "qkv"[which] + " value " + std::to_string(bad));
          EXPECT_EQ(f.status, SAMPLEATTN_INVALID_ARGUMENT);
          const std::string where = std::string(1, "qkv"[which]) + "[token 321, head " + std::to_string(head) + ", dim 5]";
          EXPECT_NE(f.message.find(where), std::string::npos) << f.message;
          EXPECT_EQ(c.o.bytes, o_before);
          EXPECT_EQ(0, std::memcmp(c.lse.data(), lse_before.data(), c.lse.size() * sizeof(float)));
          p.method = SAMPLEATTN_METHOD_DENSE;
          EXPECT_EQ(forward(ctx, p).status, SAMPLEATTN_INVALID_ARGUMENT);
        }
      }
    }
  }
  sampleattn_context_destroy(ctx);
}

// Scores that would overflow f32 (finite inputs of 1e30, the stage-2 overflow finding) are
// rejected instead of giving an all-zero row with lse = -inf ("saw no key").
TEST_P(NonFinite, OverflowingScoresRejected) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  for (auto scope : {SAMPLEATTN_STRIPES_PER_HEAD, SAMPLEATTN_STRIPES_PER_KV_GROUP}) {
    Case c = sampled_case(DType::kF32);
    for (int64_t i = 0; i < c.k.size(); i += 7) c.k.set(i, 1e30f);
    const Forward f = forward(ctx, sampled_params(c, scope));
    EXPECT_EQ(f.status, SAMPLEATTN_INVALID_ARGUMENT);
    EXPECT_NE(f.message.find("could overflow"), std::string::npos) << f.message;
  }
  {
    Case c = sampled_case(DType::kF32);
    for (int64_t i = 0; i < c.v.size(); i += 3) c.v.set(i, 1e37f);
    const Forward f = forward(ctx, c.params());
    EXPECT_EQ(f.status, SAMPLEATTN_INVALID_ARGUMENT);
    EXPECT_NE(f.message.find("max|v|"), std::string::npos) << f.message;
  }
  sampleattn_context_destroy(ctx);
}

// Large but safe inputs still run and match the oracle: the bound is not a guess about typical
// values. Scores up to ~1e4 in magnitude (q, k of norm 100).
TEST_P(NonFinite, LargeFiniteInputsRun) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  Case c;
  c.d = 64;
  c.hq = 2;
  c.hkv = 1;
  c.add_sequence(70, 90);
  c.materialize(5, 12.f);
  for (int64_t i = 0; i < c.k.size(); ++i) c.k.set(i, c.k.get(i) * 12.f);
  for (int64_t i = 0; i < c.v.size(); ++i) c.v.set(i, c.v.get(i) * 1e30f);
  sampleattn::Params p = c.params();
  ASSERT_EQ(forward(ctx, p).status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = all_rows(problem);
  const auto ref = reference::attention_rows(problem, rows);
  for (size_t r = 0; r < rows.size(); ++r) {
    ASSERT_TRUE(std::isfinite(c.lse[r])) << r;
    EXPECT_NEAR(c.lse[r], ref[r].lse, 1e-3 * std::fabs(ref[r].lse) + 1e-3) << r;
  }
  const Errors e = errors_of(ref, output_rows(c, rows));
  EXPECT_LT(e.rel_l2, 1e-3);
  sampleattn_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(AllTables, NonFinite, ::testing::ValuesIn(kAllIsas),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(isa_name(i.param)); });

// Outputs that overlap an input are rejected (workers would race on that memory); exact aliasing
// of O and Q too (sampled Q rows are read again after O is written).
TEST(Aliasing, OutputOverlappingAnInputRejected) {
  sampleattn_context* ctx = cpu_context(2);
  Case c = sampled_case(DType::kF32);
  const std::vector<uint8_t> k_before = c.k.bytes, v_before = c.v.bytes;
  struct Alias {
    const char* name;
    void* o;
    const char* expect;
  } cases[] = {
      {"o == q", c.q.data(), "o overlaps q"},
      {"o == k", c.k.data(), "o overlaps k"},
      {"o inside v", c.v.bytes.data() + 4 * c.d, "o overlaps v"},
  };
  for (const Alias& a : cases) {
    SCOPED_TRACE(a.name);
    sampleattn::Params p = sampled_params(c, SAMPLEATTN_STRIPES_PER_HEAD);
    p.o.data = a.o;
    p.o.dtype = SAMPLEATTN_DTYPE_F32;
    p.o.token_stride = int64_t{c.hkv} * c.d;  // the size of K/V, so O fits in their buffers
    p.o.head_stride = c.d;
    p.num_q_heads = c.hkv;
    const Forward f = forward(ctx, p);
    EXPECT_EQ(f.status, SAMPLEATTN_INVALID_ARGUMENT);
    EXPECT_NE(f.message.find(a.expect), std::string::npos) << f.message;
  }
  {
    sampleattn::Params p = c.params();
    p.lse = reinterpret_cast<float*>(c.o.data());
    const Forward f = forward(ctx, p);
    EXPECT_EQ(f.status, SAMPLEATTN_INVALID_ARGUMENT);
    EXPECT_NE(f.message.find("lse overlaps o"), std::string::npos) << f.message;
  }
  EXPECT_EQ(c.k.bytes, k_before);
  EXPECT_EQ(c.v.bytes, v_before);
  // plan() sees no data and does not judge aliasing.
  sampleattn::Params p = c.params();
  p.o.data = c.k.data();
  sampleattn_plan_info info;
  sampleattn_plan_info_init(&info);
  EXPECT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_SUCCESS);
  sampleattn_context_destroy(ctx);
}

// Strides whose element offsets fit int64 but whose byte offsets do not are rejected by plan().
TEST(Validation, ByteOffsetOverflowRejected) {
  sampleattn_context* ctx = cpu_context(1);
  Case c;
  c.d = 64;
  c.add_sequence(4, 4);
  c.materialize(1);
  sampleattn::Params p = c.params();
  p.k.token_stride = int64_t{1} << 61;  // 2^63 elements' worth of bytes at 4 bytes each
  sampleattn_plan_info info;
  sampleattn_plan_info_init(&info);
  EXPECT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_INVALID_SHAPE);
  EXPECT_NE(std::string(sampleattn_last_error()).find("overflows int64 byte offsets"), std::string::npos)
      << sampleattn_last_error();
  sampleattn_context_destroy(ctx);
}

// Messages print the value the caller passed, not "0.000000".
TEST(Validation, TinyValuesPrintedAsGiven) {
  sampleattn_context* ctx = cpu_context(1);
  Case c;
  c.add_sequence(4, 4);
  c.materialize(1);
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  p.sample.alpha = -1e-30f;
  sampleattn_plan_info info;
  sampleattn_plan_info_init(&info);
  EXPECT_EQ(sampleattn_plan(ctx, &p, &info), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sampleattn_last_error()).find("got -1e-30"), std::string::npos)
      << sampleattn_last_error();
  sampleattn_context_destroy(ctx);
}

}  // namespace
}  // namespace sampleattn::testing
