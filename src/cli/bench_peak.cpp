#include "cli/bench_peak.h"

#include <cblas.h>

#include <chrono>
#include <vector>

#include "cli/bench_timing.h"

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

}  // namespace sampleattn::cli
