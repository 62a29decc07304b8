#include "cli/bench_peak.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "cli/bench_timing.h"
#include "cli/host_pool.h"
#include "simd/dispatch.h"
#include "simd/flash/entry_points.h"

namespace sampleattn::cli {

double sgemm_gflops(int threads) {
  using Clock = std::chrono::steady_clock;
  const int n = 4096;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  openblas_set_num_threads(threads);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
  std::vector<double> times;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 2.0 * n * n * static_cast<double>(n) / median(times) / 1e9;
}

void ReadLoop::read_share(void* context, int64_t share) {
  Job& job = *static_cast<Job*>(context);
  const int64_t begin = job.count * share / job.shares, end = job.count * (share + 1) / job.shares;
  // Four independent sums, so the loop is bound by the loads, not by one chain of additions.
  uint64_t a = 0, b = 0, c = 0, d = 0;
  int64_t i = begin;
  for (; i + 4 <= end; i += 4) {
    a += job.words[i];
    b += job.words[i + 1];
    c += job.words[i + 2];
    d += job.words[i + 3];
  }
  for (; i < end; ++i) a += job.words[i];
  job.sums[static_cast<size_t>(share)].value = a + b + c + d;
}

ReadLoop::ReadLoop(uint64_t bytes, int threads)
    : buffer_(std::max<size_t>(1, static_cast<size_t>((bytes + 7) / 8)), 0x0101010101010101ull),
      pool_(threads, /*yield=*/true) {
  job_.words = buffer_.data();
  job_.count = static_cast<int64_t>(buffer_.size());
  job_.shares = std::max(threads, 1);
  job_.sums.resize(static_cast<size_t>(job_.shares));
  pass();  // untimed by its caller: the pages' first touch
}

double ReadLoop::pass() {
  using Clock = std::chrono::steady_clock;
  pool_.start();
  const auto t0 = Clock::now();
  pool_.run(read_share, &job_, job_.shares);
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  pool_.stop();
  return dt;
}

namespace {

struct TileJob {
  int64_t steps = 0;
  struct alignas(64) Sink {
    float value = 0;
  };
  std::vector<Sink> sinks;
};

void tile_share(void* context, int64_t share) {
  TileJob& job = *static_cast<TileJob*>(context);
  amx::tile_product_loop(job.steps, &job.sinks[static_cast<size_t>(share)].value);
}

}  // namespace

double amx_gflops(int threads) {
  using Clock = std::chrono::steady_clock;
  if (kernel_table_for(Isa::kAmx) == nullptr || amx::tiles_emulated()) return 0;
  TileJob job;
  job.steps = 1 << 20;  // 64 GFLOP a thread, ~20 ms at 3.3 TFLOP/s
  job.sinks.resize(static_cast<size_t>(std::max(threads, 1)));
  const double flops_per_share = static_cast<double>(job.steps) * 4 * 2 * 16 * 16 * 32;
  SpinPool pool(threads, /*yield=*/true);
  pool.start();
  std::vector<double> times;
  for (int r = -1; r < 5; ++r) {
    const auto t0 = Clock::now();
    pool.run(tile_share, &job, static_cast<int64_t>(job.sinks.size()));
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r >= 0) times.push_back(dt);
  }
  pool.stop();
  return flops_per_share * static_cast<double>(job.sinks.size()) / median(times) / 1e9;
}

}  // namespace sampleattn::cli
