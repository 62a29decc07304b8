// max_workspace_bytes against what a sampled call really holds: the peak resident memory of the
// process during the call (Linux: reset with /proc/self/clear_refs, read VmHWM) must stay within
// the context's limit plus a small slack, and a limit that fits the scratch but not the stripe
// buffers on top of it must fail before the attention writes anything.
#include <malloc.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SAMPLEATTN_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SAMPLEATTN_TEST_SANITIZED 1
#endif
#endif

namespace sampleattn::testing {
namespace {

// Not the library's: resident memory the call may touch beyond its workspace. Worker stacks
// (two workers, the kernels use well under 1 MiB each), a new malloc arena's first pages per
// worker thread, page rounding of each buffer, and the small per-call objects of O(1) size.
constexpr int64_t kSlackBytes = int64_t{4} << 20;

constexpr int kThreads = 2;
constexpr int kStripes = 8192;  // min = max: the stripe buffers' size is known exactly

// kB fields of /proc/self/status, in bytes; -1 when absent.
int64_t status_bytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) == 0) return std::stoll(line.substr(key.size())) * 1024;
  }
  return -1;
}

// Drops what glibc keeps of freed memory and resets the peak (VmHWM) to the current RSS.
bool reset_peak_rss() {
  malloc_trim(0);
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

class WorkspacePeak : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef SAMPLEATTN_TEST_SANITIZED
    GTEST_SKIP() << "sanitizers change the process's resident memory";
#else
    if (!reset_peak_rss() || status_bytes("VmHWM") < 0 || status_bytes("VmRSS") < 0) {
      GTEST_SKIP() << "cannot reset the peak RSS (/proc/self/clear_refs not writable)";
    }
    // Fixed thresholds (no dynamic growth): buffers above 64 KiB come from mmap and go back to
    // the system when freed, so earlier calls' memory does not hide in the heap.
    mallopt(M_MMAP_THRESHOLD, 64 << 10);
    mallopt(M_TRIM_THRESHOLD, 128 << 10);
#endif
  }

  // 16K tokens, 4 heads of 64: stage 1 (2 x 2 MiB score buffers at 32-row chunks), stage 2 and
  // 4 stripe sets of 8192 packed f32 columns (K and V: 16 MiB) all exist.
  static Case make_case() {
    Case c;
    c.d = 64;
    c.hq = c.hkv = 4;
    c.add_sequence(16384, 16384);
    c.materialize(23, 0.6f);
    return c;
  }
  static void sample_params(sampleattn::Params& p) {
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    p.sample.dense_below = 0;
    p.sample.min_stripes = kStripes;
    p.sample.max_stripes = kStripes;
    // Validation runs (its memory counts) but always passes, so the count stays kStripes.
    p.sample.min_kept = 0.f;
    p.sample.max_lost = 1.f;
    p.sample.max_density = 1.f;
  }
  static uint64_t stripe_buffer_bytes(const Case& c) {
    const KernelTable& kernels = active_kernel_table();
    const uint64_t tiles = (kStripes + kernels.key_tile - 1) / kernels.key_tile;
    const uint64_t tile_bytes = kernels.path(Precision::kF32)->packed_bytes(kernels.key_tile, c.d);
    return static_cast<uint64_t>(c.hq) * 2 * tiles * tile_bytes;
  }
  static uint64_t planned(sampleattn::Params& p, uint64_t limit) {
    sampleattn_context* ctx = cpu_context(kThreads, limit);
    sampleattn_plan_info info;
    sampleattn_plan_info_init(&info);
    const sampleattn_status status = sampleattn_plan(ctx, &p, &info);
    sampleattn_context_destroy(ctx);
    return status == SAMPLEATTN_SUCCESS ? info.workspace_bytes : 0;
  }

  struct Measured {
    sampleattn_status status;
    int64_t growth;  // peak RSS during the call minus RSS before it
  };
  // One call on a fresh context under `limit`, the peak RSS measured around the call alone.
  static Measured measure(sampleattn::Params& p, uint64_t limit) {
    sampleattn_context* ctx = cpu_context(kThreads, limit);
    EXPECT_TRUE(reset_peak_rss());
    const int64_t before = status_bytes("VmRSS");
    const sampleattn_status status = sampleattn_forward(ctx, &p, nullptr);
    const int64_t peak = status_bytes("VmHWM");
    sampleattn_context_destroy(ctx);
    return {status, peak - before};
  }
};

TEST_F(WorkspacePeak, SampledCallStaysWithinTheLimit) {
  Case c = make_case();
  sampleattn::Params p = c.params();
  sample_params(p);

  // The chosen masks: every head sparse with exactly kStripes stripes.
  std::vector<sampleattn_head_stats> heads(c.hq);
  sampleattn_stats stats;
  sampleattn_stats_init(&stats);
  stats.head_stats = heads.data();
  sampleattn_context* ctx = cpu_context(kThreads);
  ASSERT_EQ(sampleattn_forward(ctx, &p, &stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  sampleattn_context_destroy(ctx);  // also a warm-up: code pages and malloc arenas are in
  for (const sampleattn_head_stats& h : heads) {
    ASSERT_EQ(h.dense, 0);
    ASSERT_EQ(h.num_stripes, kStripes);
  }

  // A tight limit: 1.1x what plan reports under it, plus the stripe buffers.
  const uint64_t stripes = stripe_buffer_bytes(c);
  uint64_t limit = planned(p, 0) + stripes;
  for (int i = 0; i < 3; ++i) limit = planned(p, limit) * 11 / 10 + stripes;
  const uint64_t plan_bytes = planned(p, limit);
  ASSERT_GT(plan_bytes, 0u) << sampleattn_last_error();

  c.o.poison();
  const Measured ok = measure(p, limit);
  ASSERT_EQ(ok.status, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  ASSERT_FALSE(std::isnan(c.o.get(0)));
  std::printf("limit %.2f MiB (plan %.2f MiB + stripe buffers %.2f MiB): peak RSS growth %.2f MiB\n",
              limit / 1048576.0, plan_bytes / 1048576.0, stripes / 1048576.0, ok.growth / 1048576.0);
  EXPECT_LE(ok.growth, static_cast<int64_t>(limit) + kSlackBytes);
  // Not vacuous: the call really held most of the limit.
  EXPECT_GE(ok.growth, static_cast<int64_t>(stripes));

  // Between "the scratch fits" and "the scratch and the stripe buffers fit": plan accepts it,
  // forward fails with OUT_OF_MEMORY once the stripes are known, and O stays untouched. From the
  // plan without a limit (a start of stripes / 2 is under what the amx table's scratch needs).
  uint64_t between = planned(p, 0) + stripes / 4;
  for (int i = 0; i < 3; ++i) between = planned(p, between) + stripes / 4;
  ASSERT_GT(planned(p, between), 0u) << sampleattn_last_error();
  c.o.poison();
  const Measured failed = measure(p, between);
  EXPECT_EQ(failed.status, SAMPLEATTN_OUT_OF_MEMORY);
  EXPECT_NE(std::string(sampleattn_last_error()).find("stripe buffers"), std::string::npos)
      << sampleattn_last_error();
  for (int64_t i = 0; i < c.o.size(); ++i) ASSERT_TRUE(std::isnan(c.o.get(i))) << "output written at " << i;
  std::printf("limit %.2f MiB (between): peak RSS growth %.2f MiB\n", between / 1048576.0,
              failed.growth / 1048576.0);
  EXPECT_LE(failed.growth, static_cast<int64_t>(between) + kSlackBytes);
}

}  // namespace
}  // namespace sampleattn::testing
