// The dispatch table: CPU detection, the descending chain, the SAMPLEATTN_ISA cap, the test hook
// (and that the forced table really runs), and the CUDA slot's behaviour without a device.
#include <gtest/gtest.h>

#include "simd/cpu_features.h"
#include "simd/dispatch.h"
#include "test_util.h"

namespace sampleattn::testing {
namespace {

TEST(Dispatch, NamesRoundTrip) {
  for (Isa isa : kAllIsas) {
    Isa parsed = Isa::kScalar;
    EXPECT_TRUE(parse_isa(isa_name(isa), &parsed)) << isa_name(isa);
    EXPECT_EQ(parsed, isa);
  }
  Isa unchanged = Isa::kScalar;
  EXPECT_FALSE(parse_isa("bogus", &unchanged));
  EXPECT_FALSE(parse_isa(nullptr, &unchanged));
}

TEST(Dispatch, ScalarAlwaysPresentAndChainDescends) {
  ASSERT_NE(kernel_table_for(Isa::kScalar), nullptr);
  EXPECT_STREQ(automatic_kernel_table(nullptr).name, isa_name(best_supported_isa()));
  EXPECT_TRUE(cpu_supports(best_supported_isa()));
  for (Isa isa : kAllIsas) {
    // A table exists exactly for the ISAs this CPU runs, and every ISA is compiled in.
    EXPECT_EQ(kernel_table_for(isa) != nullptr, cpu_supports(isa)) << isa_name(isa);
    ASSERT_NE(compiled_kernel_table(isa), nullptr) << isa_name(isa);
    EXPECT_EQ(compiled_kernel_table(isa)->isa, isa);
    if (isa > best_supported_isa()) {
      EXPECT_FALSE(cpu_supports(isa)) << isa_name(isa);
    }
  }
}

TEST(Dispatch, EnvironmentCapLowersButNeverRaises) {
  for (Isa cap : kAllIsas) {
    // The cap itself when the CPU runs it, else the best below it: never above the cap or the CPU.
    const Isa got = automatic_kernel_table(isa_name(cap)).isa;
    EXPECT_LE(got, cap) << isa_name(cap);
    EXPECT_LE(got, best_supported_isa()) << isa_name(cap);
    if (cpu_supports(cap)) {
      EXPECT_EQ(got, cap) << isa_name(cap);
    }
  }
  EXPECT_STREQ(automatic_kernel_table("scalar").name, "scalar");
  EXPECT_STREQ(automatic_kernel_table("bogus").name, isa_name(best_supported_isa()));
}

TEST(Dispatch, ForcedIsaRunsAndIsReported) {
  for (Isa isa : kAllIsas) {
    ScopedIsa forced(isa);
    if (!forced.ok()) {
      EXPECT_EQ(kernel_table_for(isa), nullptr);
      continue;
    }
    EXPECT_STREQ(active_kernel_table().name, isa_name(isa));
    Case c;
    c.add_sequence(20, 20);
    c.materialize(9);
    sampleattn::Params p = c.params();
    sampleattn_context* ctx = cpu_context(1);
    sampleattn_stats stats;
    sampleattn_stats_init(&stats);
    ASSERT_EQ(sampleattn_forward(ctx, &p, &stats), SAMPLEATTN_SUCCESS);
    EXPECT_STREQ(stats.isa, isa_name(isa));
    sampleattn_context_info info;
    sampleattn_context_info_init(&info);
    ASSERT_EQ(sampleattn_context_get_info(ctx, &info), SAMPLEATTN_SUCCESS);
    EXPECT_STREQ(info.isa, isa_name(isa));
    sampleattn_context_destroy(ctx);
  }
  EXPECT_STREQ(active_kernel_table().name, automatic_kernel_table(std::getenv("SAMPLEATTN_ISA")).name);
}

TEST(Dispatch, CudaSlotWithoutDeviceFallsBackOnlyForAuto) {
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.backend = SAMPLEATTN_BACKEND_AUTO;
  sampleattn_context* ctx = nullptr;
  ASSERT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_SUCCESS);
  sampleattn_context_info info;
  sampleattn_context_info_init(&info);
  ASSERT_EQ(sampleattn_context_get_info(ctx, &info), SAMPLEATTN_SUCCESS);
  const bool got_cuda = info.backend == SAMPLEATTN_BACKEND_CUDA;
  if (!got_cuda) {
    EXPECT_EQ(info.backend, SAMPLEATTN_BACKEND_CPU);
    EXPECT_NE(std::string(info.note).find("CPU chosen"), std::string::npos) << info.note;
  }
  sampleattn_context_destroy(ctx);
  o.backend = SAMPLEATTN_BACKEND_CUDA;
  ctx = nullptr;
  const sampleattn_status s = sampleattn_context_create(&o, &ctx);
  if (got_cuda) {
    EXPECT_EQ(s, SAMPLEATTN_SUCCESS);
  } else {
    EXPECT_EQ(s, SAMPLEATTN_UNSUPPORTED_BACKEND);
    EXPECT_EQ(ctx, nullptr);
    EXPECT_GT(std::strlen(sampleattn_last_error()), 0u);
  }
  sampleattn_context_destroy(ctx);
}

}  // namespace
}  // namespace sampleattn::testing
