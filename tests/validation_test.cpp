// One test per validation rule: bad input gets its status and a message, never a crash, and the
// output is left untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "test_util.h"

namespace sampleattn::testing {
namespace {

class Validation : public ::testing::Test {
 protected:
  void SetUp() override {
    c_.d = 64;
    c_.hq = 4;
    c_.hkv = 2;
    c_.add_sequence(16, 16);
    c_.materialize(1);
    ctx_ = cpu_context(1);
  }
  void TearDown() override { sampleattn_context_destroy(ctx_); }

  // Applies `edit` to valid params and expects `status` with a non-empty message, from both
  // plan (when the rule is not about data pointers) and forward, and O untouched.
  void expect(sampleattn_status status, const std::function<void(sampleattn::Params&)>& edit,
              bool plan_too = true) {
    sampleattn::Params p = c_.params();
    edit(p);
    EXPECT_EQ(sampleattn_forward(ctx_, &p, nullptr), status) << sampleattn_last_error();
    EXPECT_GT(std::strlen(sampleattn_last_error()), 0u);
    if (plan_too) {
      sampleattn_plan_info info;
      sampleattn_plan_info_init(&info);
      EXPECT_EQ(sampleattn_plan(ctx_, &p, &info), status) << sampleattn_last_error();
    }
    for (int64_t i = 0; i < c_.o.size(); ++i) ASSERT_TRUE(std::isnan(c_.o.get(i))) << "output written";
  }

  Case c_;
  sampleattn_context* ctx_ = nullptr;
};

TEST_F(Validation, ValidCallSucceedsAndClearsTheMessage) {
  sampleattn::Params p = c_.params();
  ASSERT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_SUCCESS);
  EXPECT_STREQ(sampleattn_last_error(), "");
}

TEST_F(Validation, NullContextParamsAndStats) {
  sampleattn::Params p = c_.params();
  EXPECT_EQ(sampleattn_forward(nullptr, &p, nullptr), SAMPLEATTN_NULL_POINTER);
  EXPECT_EQ(sampleattn_forward(ctx_, nullptr, nullptr), SAMPLEATTN_NULL_POINTER);
  EXPECT_EQ(sampleattn_plan(nullptr, &p, nullptr), SAMPLEATTN_NULL_POINTER);
  EXPECT_EQ(sampleattn_context_get_info(ctx_, nullptr), SAMPLEATTN_NULL_POINTER);
  sampleattn_stats stats{};  // not initialized: struct_size 0
  EXPECT_EQ(sampleattn_forward(ctx_, &p, &stats), SAMPLEATTN_INVALID_ARGUMENT);
}

TEST_F(Validation, NullDataPointers) {
  expect(SAMPLEATTN_NULL_POINTER, [](auto& p) { p.q.data = nullptr; }, false);
  expect(SAMPLEATTN_NULL_POINTER, [](auto& p) { p.k.data = nullptr; }, false);
  expect(SAMPLEATTN_NULL_POINTER, [](auto& p) { p.v.data = nullptr; }, false);
  expect(SAMPLEATTN_NULL_POINTER, [](auto& p) { p.o.data = nullptr; }, false);
  expect(SAMPLEATTN_NULL_POINTER, [](auto& p) { p.cu_seqlens_k = nullptr; });
}

TEST_F(Validation, UninitializedStructs) {
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.struct_size = 3; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.struct_size = 0; });
}

TEST_F(Validation, UnsupportedHeadDim) {
  for (int d : {0, -64, 24, 72, 100, 272, 512}) {
    expect(SAMPLEATTN_UNSUPPORTED_HEAD_DIM, [d](auto& p) { p.head_dim = d; });
  }
}

TEST_F(Validation, BadHeadCounts) {
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.num_q_heads = 0; });
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.num_kv_heads = -1; });
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.num_kv_heads = 3; });  // 4 % 3 != 0
}

TEST_F(Validation, BadDtypes) {
  expect(SAMPLEATTN_UNSUPPORTED_DTYPE, [](auto& p) { p.q.dtype = static_cast<sampleattn_dtype>(7); });
  expect(SAMPLEATTN_UNSUPPORTED_DTYPE, [](auto& p) { p.o.dtype = static_cast<sampleattn_dtype>(-1); });
}

TEST_F(Validation, BadStrides) {
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.q.token_stride = 0; });
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.k.head_stride = -64; });
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.o.head_stride = 32; });   // rows overlap
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.v.token_stride = 64; });  // tokens overlap heads
}

TEST_F(Validation, BadSequences) {
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) { p.batch = 0; });
  std::vector<int32_t> decreasing = {0, 16, 8};
  std::vector<int32_t> keys = {0, 16, 32};
  expect(SAMPLEATTN_INVALID_SHAPE, [&](auto& p) {
    p.batch = 2;
    p.cu_seqlens_q = decreasing.data();
    p.cu_seqlens_k = keys.data();
  });
  std::vector<int32_t> offset = {4, 16};
  expect(SAMPLEATTN_INVALID_SHAPE, [&](auto& p) { p.cu_seqlens_q = offset.data(); });
  // Causal chunk with more queries than keys.
  std::vector<int32_t> q = {0, 16}, k = {0, 8};
  expect(SAMPLEATTN_INVALID_SHAPE, [&](auto& p) {
    p.cu_seqlens_q = q.data();
    p.cu_seqlens_k = k.data();
  });
  expect(SAMPLEATTN_INVALID_SHAPE, [](auto& p) {
    p.cu_seqlens_q = p.cu_seqlens_k = nullptr;
    p.seqlen_q = -1;
    p.seqlen_k = 16;
  });
  expect(SAMPLEATTN_NULL_POINTER, [](auto& p) {
    p.cu_seqlens_q = p.cu_seqlens_k = nullptr;
    p.batch = 2;
  });
}

TEST_F(Validation, BadScaleAndFlags) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.softmax_scale = nan; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.softmax_scale = inf; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.softmax_scale = -0.5f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.causal = 2; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.method = static_cast<sampleattn_method>(9); });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.precision = static_cast<sampleattn_precision>(9); });
}

TEST_F(Validation, BadSampleParameters) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.sample.alpha = nan; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.alpha = 0.f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.alpha = 1.5f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.sample.r_row = nan; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.r_row = 0.f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.r_w = -0.1f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.min_window = -1; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.sample_block = 0; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.min_stripes = -2; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) {
    p.sample.min_stripes = 10;
    p.sample.max_stripes = 5;
  });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.sink_tokens = -1; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.dense_below = -1; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.scope = static_cast<sampleattn_stripe_scope>(5); });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.window_mass_counts = 2; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.sample.max_density = nan; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.max_density = 0.f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.max_density = 1.01f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.sample.r_val = nan; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.r_val = -0.01f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.r_val = 1.f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.val_rows = -1; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.sample.min_kept = nan; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.min_kept = 1.5f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [&](auto& p) { p.sample.max_lost = nan; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.max_lost = -1.f; });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) { p.sample.max_lost = std::numeric_limits<float>::infinity(); });
  expect(SAMPLEATTN_INVALID_ARGUMENT, [](auto& p) {
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    p.causal = 0;
  });
}

TEST(ValidationContext, BadOptions) {
  sampleattn_context* ctx = nullptr;
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.num_threads = -3;
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_EQ(ctx, nullptr);
  sampleattn_context_options_init(&o);
  o.backend = static_cast<sampleattn_backend>(42);
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_INVALID_ARGUMENT);
  sampleattn_context_options_init(&o);
  o.struct_size = 1;
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_EQ(sampleattn_context_create(nullptr, nullptr), SAMPLEATTN_NULL_POINTER);
}

TEST(ValidationContext, StatusStringsNameEveryStatus) {
  for (int s = SAMPLEATTN_SUCCESS; s <= SAMPLEATTN_INTERNAL_ERROR; ++s) {
    const std::string name = sampleattn_status_string(static_cast<sampleattn_status>(s));
    EXPECT_EQ(name.rfind("SAMPLEATTN_", 0), 0u);
    EXPECT_NE(name, "SAMPLEATTN_UNKNOWN_STATUS");
  }
  EXPECT_STREQ(sampleattn_status_string(static_cast<sampleattn_status>(99)), "SAMPLEATTN_UNKNOWN_STATUS");
}

}  // namespace
}  // namespace sampleattn::testing
