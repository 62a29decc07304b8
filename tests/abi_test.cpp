// The struct_size rules of the C ABI (src/core/abi.h, docs/ABI.md), for every struct and every
// size the rules distinguish: *_init writes exactly the caller's size and nothing for sizes it
// does not accept; calls read a struct of any accepted size (the missing tail takes defaults),
// refuse a larger one with SAMPLEATTN_UNSUPPORTED_VERSION and a smaller one than the first layout
// with SAMPLEATTN_INVALID_ARGUMENT, and write back only the caller's size.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "core/abi.h"
#include "core/dtype.h"
#include "simd/dispatch.h"
#include "test_util.h"

namespace sampleattn {
namespace {

using testing::Case;
using testing::cpu_context;

constexpr unsigned char kPoison = 0xA5;

// A struct's storage followed by guard bytes, poisoned.
template <typename T>
struct Guarded {
  alignas(T) unsigned char bytes[sizeof(T) + 64];
  Guarded() { std::memset(bytes, kPoison, sizeof(bytes)); }
  T* get() { return reinterpret_cast<T*>(bytes); }
  // Bytes from `from` on that are still poisoned.
  bool untouched_from(size_t from) const {
    for (size_t i = from; i < sizeof(bytes); ++i) {
      if (bytes[i] != kPoison) return false;
    }
    return true;
  }
};

template <typename T, typename Init>
void expect_init_writes_exactly(Init init) {
  for (size_t size : {size_t{0}, size_t{4}, abi::min_size<T>() - 1, abi::min_size<T>(), sizeof(T) - 1,
                      sizeof(T), sizeof(T) + 8}) {
    Guarded<T> g;
    init(g.get(), size);
    if (abi::size_accepted<T>(size)) {
      EXPECT_EQ(g.get()->struct_size, size);
      EXPECT_TRUE(g.untouched_from(size)) << "size " << size;
    } else {
      EXPECT_TRUE(g.untouched_from(0)) << "wrote for a refused size " << size;
    }
  }
  init(nullptr, sizeof(T));  // no crash
}

TEST(Abi, InitWritesExactlyTheCallersSize) {
  expect_init_writes_exactly<sampleattn_context_options>(sampleattn_context_options_init_sized);
  expect_init_writes_exactly<sampleattn_context_info>(sampleattn_context_info_init_sized);
  expect_init_writes_exactly<sampleattn_sample_params>(sampleattn_sample_params_init_sized);
  expect_init_writes_exactly<sampleattn_params>(sampleattn_params_init_sized);
  expect_init_writes_exactly<sampleattn_stats>(sampleattn_stats_init_sized);
  expect_init_writes_exactly<sampleattn_plan_info>(sampleattn_plan_info_init_sized);
  expect_init_writes_exactly<sampleattn_kv_cache>(sampleattn_kv_cache_init_sized);
}

TEST(Abi, FirstLayoutSizesAreFrozen) {
  // The first ABI 1 layout on LP64 (tests/abi/v1.0): changing these breaks old callers.
  EXPECT_EQ(abi::min_size<sampleattn_context_options>(), 32u);
  EXPECT_EQ(abi::min_size<sampleattn_context_info>(), 40u);
  EXPECT_EQ(abi::min_size<sampleattn_sample_params>(), 52u);
  EXPECT_EQ(abi::min_size<sampleattn_params>(), 224u);
  EXPECT_EQ(abi::min_size<sampleattn_stats>(), 120u);
  EXPECT_EQ(abi::min_size<sampleattn_plan_info>(), 40u);
}

TEST(Abi, Revision13AppendsTheModelVariantsToParams) {
  // ABI 1.3 appended five fields after `stream`, where the layout of 1.0 to 1.2 ends (LP64):
  // moving one breaks callers built against the 1.3 header.
  EXPECT_EQ(offsetof(sampleattn_params, head_dim_v), abi::min_size<sampleattn_params>());
  EXPECT_EQ(offsetof(sampleattn_params, head_dim_v), 224u);
  EXPECT_EQ(offsetof(sampleattn_params, window_left), 232u);
  EXPECT_EQ(offsetof(sampleattn_params, softcap), 240u);
  EXPECT_EQ(offsetof(sampleattn_params, alibi_slopes), 248u);
  EXPECT_EQ(offsetof(sampleattn_params, sinks), 256u);
  EXPECT_EQ(offsetof(sampleattn_params, sinks) + sizeof(sampleattn_params::sinks), 264u);  // the 1.3 layout's end
  EXPECT_EQ(SAMPLEATTN_DECISION_DENSE_WINDOW, 6);  // after DENSE_VALIDATION (5), the 1.2 values unchanged
  EXPECT_EQ(SAMPLEATTN_DECISION_DENSE_VALIDATION, 5);
  // Their defaults: no variant.
  sampleattn_params p;
  std::memset(&p, 0x5A, sizeof p);
  sampleattn_params_init(&p);
  EXPECT_EQ(p.head_dim_v, 0);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_EQ(p.softcap, 0.f);
  EXPECT_EQ(p.alibi_slopes, nullptr);
  EXPECT_EQ(p.sinks, nullptr);
}

TEST(Abi, Revision14AppendsTheKvCacheAndTheHostPool) {
  // ABI 1.4 appended `kv_cache` after `sinks`, where the 1.3 layout ends, and the host's
  // parallel-for after `max_workspace_bytes`, where every earlier context_options ends (LP64).
  EXPECT_EQ(offsetof(sampleattn_params, kv_cache), 264u);
  EXPECT_EQ(sizeof(sampleattn_params), 272u);
  EXPECT_EQ(offsetof(sampleattn_context_options, parallel_for), abi::min_size<sampleattn_context_options>());
  EXPECT_EQ(offsetof(sampleattn_context_options, parallel_for), 32u);
  EXPECT_EQ(offsetof(sampleattn_context_options, host_pool), 40u);
  EXPECT_EQ(sizeof(sampleattn_context_options), 48u);
  // The new struct: its first layout is the whole of it.
  EXPECT_EQ(offsetof(sampleattn_kv_cache, block_table), 8u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, block_table_stride), 16u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, page_size), 24u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, num_pages), 28u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, k_page_stride), 32u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, v_page_stride), 40u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, seqused_k), 48u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, k_scale), 56u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, v_scale), 64u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, scale_token_stride), 72u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, scale_head_stride), 80u);
  EXPECT_EQ(offsetof(sampleattn_kv_cache, scale_page_stride), 88u);
  EXPECT_EQ(sizeof(sampleattn_kv_cache), 96u);
  EXPECT_EQ(abi::min_size<sampleattn_kv_cache>(), 96u);
  // The dtypes: appended, the 1.0 values unchanged.
  EXPECT_EQ(SAMPLEATTN_DTYPE_F32, 0);
  EXPECT_EQ(SAMPLEATTN_DTYPE_F16, 1);
  EXPECT_EQ(SAMPLEATTN_DTYPE_BF16, 2);
  EXPECT_EQ(SAMPLEATTN_DTYPE_I8, 3);
  EXPECT_EQ(SAMPLEATTN_DTYPE_FP8_E4M3, 4);
  // Their defaults: packed K/V, the library's own pool.
  sampleattn_params p;
  std::memset(&p, 0x5A, sizeof p);
  sampleattn_params_init(&p);
  EXPECT_EQ(p.kv_cache, nullptr);
  sampleattn_context_options o;
  std::memset(&o, 0x5A, sizeof o);
  sampleattn_context_options_init(&o);
  EXPECT_EQ(o.struct_size, 48u);
  EXPECT_EQ(o.parallel_for, nullptr);
  EXPECT_EQ(o.host_pool, nullptr);
  sampleattn_kv_cache c;
  std::memset(&c, 0x5A, sizeof c);
  sampleattn_kv_cache_init(&c);
  EXPECT_EQ(c.struct_size, sizeof c);
  EXPECT_EQ(c.block_table, nullptr);
  EXPECT_EQ(c.block_table_stride, 0);
  EXPECT_EQ(c.page_size, 0);
  EXPECT_EQ(c.num_pages, 0);
  EXPECT_EQ(c.k_page_stride, 0);
  EXPECT_EQ(c.v_page_stride, 0);
  EXPECT_EQ(c.seqused_k, nullptr);
  EXPECT_EQ(c.k_scale, nullptr);
  EXPECT_EQ(c.v_scale, nullptr);
  EXPECT_EQ(c.scale_token_stride, 0);
  EXPECT_EQ(c.scale_head_stride, 0);
  EXPECT_EQ(c.scale_page_stride, 0);
}

TEST(Abi, Revision15AppendsThePrecisionThatRanAndMakesAutoTheDefault) {
  // ABI 1.5 appended `precision` to the stats, after `num_widened_heads` where the 1.2-1.4 layout
  // ends, and the enum value AUTO after BF16 (LP64).
  EXPECT_EQ(offsetof(sampleattn_stats, num_widened_heads), 136u);  // the 1.4 layout: 144 bytes
  EXPECT_EQ(offsetof(sampleattn_stats, precision), 144u);  // the 1.5 layout: 152 bytes
  EXPECT_EQ(SAMPLEATTN_PRECISION_F32, 0);
  EXPECT_EQ(SAMPLEATTN_PRECISION_BF16, 1);
  EXPECT_EQ(SAMPLEATTN_PRECISION_AUTO, 2);
  sampleattn_params p;
  std::memset(&p, 0x5A, sizeof p);
  sampleattn_params_init(&p);
  EXPECT_EQ(p.precision, SAMPLEATTN_PRECISION_AUTO);
  sampleattn_stats s;
  std::memset(&s, 0x5A, sizeof s);
  sampleattn_stats_init(&s);
  ASSERT_NE(s.precision, nullptr);
  EXPECT_STREQ(s.precision, "");
}

TEST(Abi, Revision16AppendsTheLook) {
  // ABI 1.6 appended the look to the sample parameters after val_rows, the rows it sent dense to
  // the head stats after alpha_stripes and to the stats after precision, and the decision
  // DENSE_LOOK after DENSE_WINDOW (LP64).
  EXPECT_EQ(offsetof(sampleattn_sample_params, val_rows), 64u);  // the 1.2-1.5 layout: 68 bytes
  EXPECT_EQ(offsetof(sampleattn_sample_params, look), 68u);
  EXPECT_EQ(sizeof(sampleattn_sample_params), 72u);
  EXPECT_EQ(offsetof(sampleattn_head_stats, alpha_stripes), 48u);  // the 1.2-1.5 element: 52 bytes
  EXPECT_EQ(offsetof(sampleattn_head_stats, dense_rows), 52u);
  EXPECT_EQ(sizeof(sampleattn_head_stats), 56u);
  EXPECT_EQ(offsetof(sampleattn_stats, num_dense_rows), 152u);
  EXPECT_EQ(offsetof(sampleattn_stats, dense_row_offsets), 160u);
  EXPECT_EQ(offsetof(sampleattn_stats, dense_row_indices), 168u);
  EXPECT_EQ(offsetof(sampleattn_stats, dense_row_capacity), 176u);
  EXPECT_EQ(sizeof(sampleattn_stats), 184u);
  EXPECT_EQ(SAMPLEATTN_DECISION_DENSE_LOOK, 7);
  EXPECT_EQ(SAMPLEATTN_ABI_REVISION, 6);
  sampleattn_sample_params sp;
  std::memset(&sp, 0x5A, sizeof sp);
  sampleattn_sample_params_init(&sp);
  EXPECT_EQ(sp.look, 0.f);  // off by default
  sampleattn_stats st;
  std::memset(&st, 0x5A, sizeof st);
  sampleattn_stats_init(&st);
  EXPECT_EQ(st.num_dense_rows, 0);
  EXPECT_EQ(st.dense_row_offsets, nullptr);
  EXPECT_EQ(st.dense_row_indices, nullptr);
  EXPECT_EQ(st.dense_row_capacity, 0);
}

class AbiCalls : public ::testing::Test {
 protected:
  void SetUp() override {
    c_.add_sequence(96, 96);
    c_.materialize(1);
    ctx_ = cpu_context(1);
  }
  void TearDown() override { sampleattn_context_destroy(ctx_); }
  Case c_;
  sampleattn_context* ctx_ = nullptr;
};

TEST_F(AbiCalls, ContextInfoOfEveryAcceptedSizeIsWrittenOnlyThatFar) {
  const size_t sizes[] = {abi::min_size<sampleattn_context_info>(),
                          offsetof(sampleattn_context_info, cpu_model), sizeof(sampleattn_context_info)};
  for (size_t size : sizes) {
    Guarded<sampleattn_context_info> g;
    sampleattn_context_info_init_sized(g.get(), size);
    ASSERT_EQ(sampleattn_context_get_info(ctx_, g.get()), SAMPLEATTN_SUCCESS) << size;
    EXPECT_TRUE(g.untouched_from(size)) << size;
    EXPECT_EQ(g.get()->struct_size, size);
    EXPECT_EQ(g.get()->backend, SAMPLEATTN_BACKEND_CPU);
  }
  sampleattn_context_info full;
  sampleattn_context_info_init(&full);
  ASSERT_EQ(sampleattn_context_get_info(ctx_, &full), SAMPLEATTN_SUCCESS);
  EXPECT_EQ(full.binding, SAMPLEATTN_BIND_CORES);
  EXPECT_NE(std::strstr(full.backends, "cpu: in use"), nullptr) << full.backends;
  EXPECT_NE(std::strstr(full.cpu_tables, "scalar"), nullptr) << full.cpu_tables;
}

TEST_F(AbiCalls, LargerThanTheLibraryIsUnsupportedVersionAndSmallerThanTheFirstLayoutInvalid) {
  auto forward_status = [&](auto edit) {
    sampleattn::Params p = c_.params();
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    edit(p);
    return sampleattn_forward(ctx_, &p, nullptr);
  };
  EXPECT_EQ(forward_status([](auto& p) { p.struct_size = sizeof(sampleattn_params) + 8; }),
            SAMPLEATTN_UNSUPPORTED_VERSION);
  EXPECT_EQ(forward_status([](auto& p) { p.sample.struct_size = sizeof(sampleattn_sample_params) + 4; }),
            SAMPLEATTN_UNSUPPORTED_VERSION);
  EXPECT_NE(std::string(sampleattn_last_error()).find("newer sampleattn.h"), std::string::npos);
  EXPECT_EQ(forward_status([](auto& p) { p.struct_size = 16; }), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_EQ(forward_status([](auto& p) { p.sample.struct_size = 0; }), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_EQ(forward_status([](auto& p) { static_cast<sampleattn_params&>(p).sample = nullptr; }), SAMPLEATTN_SUCCESS);  // NULL: defaults

  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.struct_size = sizeof(o) + 8;
  sampleattn_context* ctx = nullptr;
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_UNSUPPORTED_VERSION);
  EXPECT_EQ(ctx, nullptr);

  sampleattn::Params p = c_.params();
  sampleattn_stats stats;
  sampleattn_stats_init(&stats);
  stats.struct_size = sizeof(stats) + 8;
  EXPECT_EQ(sampleattn_forward(ctx_, &p, &stats), SAMPLEATTN_UNSUPPORTED_VERSION);
  sampleattn_plan_info plan;
  sampleattn_plan_info_init(&plan);
  plan.struct_size = sizeof(plan) + 8;
  EXPECT_EQ(sampleattn_plan(ctx_, &p, &plan), SAMPLEATTN_UNSUPPORTED_VERSION);
}

TEST_F(AbiCalls, StatsAreWrittenBackOnlyAsFarAsTheCallersSize) {
  sampleattn::Params p = c_.params();
  Guarded<sampleattn_stats> g;
  const size_t size = abi::min_size<sampleattn_stats>();
  sampleattn_stats_init_sized(g.get(), size);
  ASSERT_EQ(sampleattn_forward(ctx_, &p, g.get()), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_TRUE(g.untouched_from(size));
  EXPECT_EQ(g.get()->struct_size, size);
  EXPECT_EQ(g.get()->num_heads_total, c_.hq);
}

TEST_F(AbiCalls, HeadStatsAreWrittenAtTheCallersStride) {
  sampleattn::Params p = c_.params();
  // A 1.0 caller: no head_stats_size in its stats, 24-byte elements.
  std::vector<unsigned char> old_heads(abi::kFirstHeadStatsSize * c_.hq + 64, kPoison);
  Guarded<sampleattn_stats> g;
  sampleattn_stats_init_sized(g.get(), abi::min_size<sampleattn_stats>());
  g.get()->head_stats = reinterpret_cast<sampleattn_head_stats*>(old_heads.data());
  ASSERT_EQ(sampleattn_forward(ctx_, &p, g.get()), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  for (size_t i = abi::kFirstHeadStatsSize * c_.hq; i < old_heads.size(); ++i) ASSERT_EQ(old_heads[i], kPoison);
  for (int h = 0; h < c_.hq; ++h) {
    sampleattn_head_stats one;
    std::memcpy(&one, old_heads.data() + h * abi::kFirstHeadStatsSize, abi::kFirstHeadStatsSize);
    EXPECT_EQ(one.dense, 1);
    EXPECT_EQ(one.window, 96);
  }
  // Today's caller: the macro records the element size.
  sampleattn_stats stats;
  sampleattn_stats_init(&stats);
  EXPECT_EQ(stats.head_stats_size, sizeof(sampleattn_head_stats));
  std::vector<sampleattn_head_stats> heads(static_cast<size_t>(c_.hq));
  stats.head_stats = heads.data();
  stats.head_stats_size = sizeof(sampleattn_head_stats) + 4;  // a newer header's element
  EXPECT_EQ(sampleattn_forward(ctx_, &p, &stats), SAMPLEATTN_UNSUPPORTED_VERSION);
  stats.head_stats_size = 8;
  EXPECT_EQ(sampleattn_forward(ctx_, &p, &stats), SAMPLEATTN_INVALID_ARGUMENT);
  sampleattn_stats* none = nullptr;
  sampleattn_stats_init(none);  // no crash
}

TEST_F(AbiCalls, ParamsOfARevision12CallerRunWithoutTheVariants) {
  // A caller built against the 1.2 header passes the 224 bytes it knows; what follows them in its
  // memory is not a 1.3 field. Here it is poison (read as head_dim_v, 0xA5A5A5A5 would be
  // refused; as window_left, a negative window): the call must take the variants' defaults.
  sampleattn::Params full = c_.params();
  const sampleattn_params& base = full;
  const size_t old_size = offsetof(sampleattn_params, head_dim_v);
  Guarded<sampleattn_params> g;
  std::memcpy(g.bytes, &base, old_size);
  g.get()->struct_size = static_cast<uint32_t>(old_size);
  sampleattn_plan_info old_plan, full_plan;
  sampleattn_plan_info_init(&old_plan);
  sampleattn_plan_info_init(&full_plan);
  ASSERT_EQ(sampleattn_plan(ctx_, g.get(), &old_plan), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  ASSERT_EQ(sampleattn_plan(ctx_, &base, &full_plan), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(old_plan.dense_flops, full_plan.dense_flops);
  ASSERT_EQ(sampleattn_forward(ctx_, g.get(), nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  const std::vector<uint8_t> old_o = c_.o.bytes;
  c_.o.poison();
  ASSERT_EQ(sampleattn_forward(ctx_, &base, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(c_.o.bytes, old_o);
  EXPECT_TRUE(g.untouched_from(old_size));
  // A 1.3 caller's fields are read: with a model window of 10 keys, fewer pairs.
  full.window_left = 10;
  ASSERT_EQ(sampleattn_plan(ctx_, &base, &full_plan), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  // 96 queries over 96 keys: 4656 causal pairs; min(p, 10) + 1 keys a row: 66 + 85 * 11 = 1001.
  EXPECT_DOUBLE_EQ(full_plan.dense_flops / old_plan.dense_flops, 1001.0 / 4656.0);
  full.window_left = -2;
  EXPECT_EQ(sampleattn_plan(ctx_, &base, &full_plan), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sampleattn_last_error()).find("window_left"), std::string::npos);
}

TEST_F(AbiCalls, KvCacheOfAnotherSizeIsRefusedAndTheDefaultsArePackedKv) {
  sampleattn::Params p = c_.params();
  ASSERT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  const std::vector<uint8_t> packed_o = c_.o.bytes;
  // The init defaults describe packed K/V: the same call as kv_cache NULL.
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  p.kv_cache = &cache;
  c_.o.poison();
  ASSERT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(c_.o.bytes, packed_o);
  // A newer header's kv_cache: UNSUPPORTED_VERSION; below the first layout: INVALID_ARGUMENT.
  cache.struct_size = sizeof(cache) + 8;
  EXPECT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_UNSUPPORTED_VERSION);
  EXPECT_NE(std::string(sampleattn_last_error()).find("kv_cache.struct_size is 104"), std::string::npos)
      << sampleattn_last_error();
  sampleattn_plan_info plan;
  sampleattn_plan_info_init(&plan);
  EXPECT_EQ(sampleattn_plan(ctx_, &p, &plan), SAMPLEATTN_UNSUPPORTED_VERSION);
  for (uint32_t size : {0u, 8u, static_cast<uint32_t>(sizeof(cache) - 1)}) {
    cache.struct_size = size;
    EXPECT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_INVALID_ARGUMENT) << size;
    EXPECT_NE(std::string(sampleattn_last_error()).find("sampleattn_kv_cache_init"), std::string::npos)
        << sampleattn_last_error();
  }
}

TEST_F(AbiCalls, ParamsAndOptionsOfARevision13CallerRunUnchanged) {
  // A 1.3 caller passes 264 bytes of params and 32 of context options; what follows them in its
  // memory is poison, which read as kv_cache or parallel_for would be a wild pointer.
  sampleattn::Params full = c_.params();
  const sampleattn_params& base = full;
  const size_t old_size = offsetof(sampleattn_params, kv_cache);
  ASSERT_EQ(old_size, 264u);
  Guarded<sampleattn_params> g;
  std::memcpy(g.bytes, &base, old_size);
  g.get()->struct_size = static_cast<uint32_t>(old_size);

  Guarded<sampleattn_context_options> options;
  const size_t old_options_size = offsetof(sampleattn_context_options, parallel_for);
  sampleattn_context_options_init_sized(options.get(), old_options_size);
  ASSERT_EQ(options.get()->struct_size, 32u);
  EXPECT_TRUE(options.untouched_from(old_options_size));
  options.get()->backend = SAMPLEATTN_BACKEND_CPU;
  options.get()->num_threads = 2;
  sampleattn_context* old_ctx = nullptr;
  ASSERT_EQ(sampleattn_context_create(options.get(), &old_ctx), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_TRUE(options.untouched_from(old_options_size));

  sampleattn_plan_info old_plan, full_plan;
  sampleattn_plan_info_init(&old_plan);
  sampleattn_plan_info_init(&full_plan);
  ASSERT_EQ(sampleattn_plan(old_ctx, g.get(), &old_plan), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  ASSERT_EQ(sampleattn_plan(ctx_, &base, &full_plan), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(old_plan.dense_flops, full_plan.dense_flops);
  EXPECT_EQ(old_plan.total_k_tokens, full_plan.total_k_tokens);
  ASSERT_EQ(sampleattn_forward(old_ctx, g.get(), nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  const std::vector<uint8_t> old_o = c_.o.bytes;
  c_.o.poison();
  ASSERT_EQ(sampleattn_forward(ctx_, &base, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(c_.o.bytes, old_o);
  EXPECT_TRUE(g.untouched_from(old_size));
  sampleattn_context_destroy(old_ctx);

  // A 1.4 caller's kv_cache is read: its seqused_k is checked against the 96 keys.
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  const int32_t used[] = {96};
  cache.seqused_k = used;
  full.kv_cache = &cache;
  ASSERT_EQ(sampleattn_plan(ctx_, &base, &full_plan), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(full_plan.total_k_tokens, 96);
  const int32_t too_many[] = {97};
  cache.seqused_k = too_many;
  EXPECT_EQ(sampleattn_plan(ctx_, &base, &full_plan), SAMPLEATTN_INVALID_SHAPE);
  EXPECT_NE(std::string(sampleattn_last_error()).find("kv_cache.seqused_k[0] = 97"), std::string::npos)
      << sampleattn_last_error();
}

TEST(Abi, ParamsValueTypeCopiesStaySelfContained) {
  sampleattn::Params a;
  a.sample.alpha = 0.5f;
  sampleattn::Params b = a;
  b.sample.alpha = 0.7f;
  const sampleattn_params& ca = a;
  const sampleattn_params& cb = b;
  EXPECT_EQ(ca.sample->alpha, 0.5f);
  EXPECT_EQ(cb.sample->alpha, 0.7f);
  a = b;
  EXPECT_EQ(ca.sample, &a.sample);
  EXPECT_EQ(ca.sample->alpha, 0.7f);
}

// AUTO resolves per call and stats.precision names what ran: f32 inputs always on f32 products;
// bf16 inputs on bf16 products exactly where the table prefers them (KernelTable::bf16_preferred);
// F32 and BF16 keep their meaning.
TEST(AbiPrecision, AutoRunsWhatTheTableSaysAndStatsNameIt) {
  const KernelTable& table = active_kernel_table();
  const bool bf16_path = table.path(Precision::kBF16) != nullptr;
  struct Expect {
    DType in;
    sampleattn_precision precision;
    const char* ran;
  };
  const char* auto_bf16 = bf16_path && table.bf16_preferred ? "bf16" : "f32";
  const Expect cases[] = {
      {DType::kF32, SAMPLEATTN_PRECISION_AUTO, "f32"},
      {DType::kF16, SAMPLEATTN_PRECISION_AUTO, "f32"},
      {DType::kBF16, SAMPLEATTN_PRECISION_AUTO, auto_bf16},
      {DType::kBF16, SAMPLEATTN_PRECISION_F32, "f32"},
      {DType::kF32, SAMPLEATTN_PRECISION_BF16, bf16_path ? "bf16" : "f32"},
  };
  sampleattn_context* ctx = cpu_context(1);
  for (const Expect& e : cases) {
    Case c;
    c.in = e.in;
    c.add_sequence(64, 64);
    c.materialize(3);
    sampleattn::Params p = c.params();
    p.precision = e.precision;
    sampleattn_stats stats;
    sampleattn_stats_init(&stats);
    ASSERT_EQ(sampleattn_forward(ctx, &p, &stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    EXPECT_STREQ(stats.precision, e.ran) << "dtype " << dtype_name(e.in) << ", precision "
                                         << static_cast<int>(e.precision) << ", table " << table.name;
    EXPECT_STREQ(stats.isa, table.name);
  }
  sampleattn_context_destroy(ctx);
}

}  // namespace
}  // namespace sampleattn
