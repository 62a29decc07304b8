// Phases 7-8 of the generator: the query terms that need scores of the finished keys: the needle
// rows' needle and sink shares, and every row's sink component (calibrated on sample rows).
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "workload/generator_model.h"

namespace sampleattn::workload::detail {
namespace {

// Sink amplitude L such that sum_t exp(L * c[t]) = target (c[t] > 0, c[0] the largest).
double solve_sink_logit(const double* c, int count, double log_target) {
  double L = log_target / c[0];
  for (int it = 0; it < 30; ++it) {
    double mx = -1e300;
    for (int t = 0; t < count; ++t) mx = std::max(mx, L * c[t]);
    double sum = 0, dsum = 0;
    for (int t = 0; t < count; ++t) {
      const double e = std::exp(L * c[t] - mx);
      sum += e;
      dsum += e * c[t];
    }
    const double f = mx + std::log(sum) - log_target;
    const double step = f / (dsum / sum);
    L -= step;
    if (std::fabs(step) < 1e-9 * (1 + std::fabs(L))) break;
  }
  return L;
}

// The same under a logit cap: L such that sum_t exp(capped(L * c[t])) = target. The capped
// scores stay below the cap, so a target within 2% of it is reduced to what is reachable (the
// sink then takes a little less than its share). Bisection: the sum grows with L (c[t] > 0).
double solve_capped_sink_logit(const double* c, int count, double log_target, double cap) {
  double c_min = c[0];
  for (int t = 1; t < count; ++t) c_min = std::min(c_min, c[t]);
  const double reach = std::atanh(0.98) * cap / c_min;  // every capped score at 0.98 cap
  auto log_sum = [&](double L) {
    double mx = -1e300;
    for (int t = 0; t < count; ++t) mx = std::max(mx, cap * std::tanh(L * c[t] / cap));
    double sum = 0;
    for (int t = 0; t < count; ++t) sum += std::exp(cap * std::tanh(L * c[t] / cap) - mx);
    return mx + std::log(sum);
  };
  double lo = -reach, hi = reach;
  if (log_target >= log_sum(hi)) return hi;
  if (log_target <= log_sum(lo)) return lo;
  for (int it = 0; it < 60; ++it) {
    const double mid = 0.5 * (lo + hi);
    (log_sum(mid) < log_target ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// The raw score whose capped value is `target` (clamped to 0.98 of the cap, what a raw score can
// still reach), or `target` itself without a cap.
double uncapped(double target, double cap) {
  if (cap <= 0) return target;
  return cap * std::atanh(std::clamp(target / cap, -0.98, 0.98));
}

// The rows the sink calibration computes exactly: kCalibrationRowsPerPoint rows near each of
// kCalibrationGrid positions spaced evenly in log scale, ascending, distinct.
std::vector<int64_t> calibration_rows(int64_t N) {
  std::vector<int64_t> grid_rows;
  if (N <= kSinkTokens) return grid_rows;
  for (int gi = 0; gi < kCalibrationGrid; ++gi) {
    const double f = kCalibrationGrid == 1 ? 1.0 : static_cast<double>(gi) / (kCalibrationGrid - 1);
    const int64_t p = static_cast<int64_t>(std::llround(kSinkTokens * std::pow(static_cast<double>(N - 1) / kSinkTokens, f)));
    for (int r = 0; r < kCalibrationRowsPerPoint; ++r) {
      const int64_t row = std::max<int64_t>(kSinkTokens, p - r * (1 + p / 37));
      grid_rows.push_back(row);
    }
  }
  std::sort(grid_rows.begin(), grid_rows.end());
  grid_rows.erase(std::unique(grid_rows.begin(), grid_rows.end()), grid_rows.end());
  return grid_rows;
}

// Per head: ln Z_far (the partition of keys kSinkTokens .. p - kNearExact) as a piecewise-linear
// function of ln(far keys): points (ln far keys, ln Z_far), from the calibration rows.
using FarCurve = std::vector<std::pair<double, double>>;

std::vector<FarCurve> far_partition_curves(const Dims& dims, const std::vector<int64_t>& grid_rows, const float* Q,
                                           const float* K) {
  const int d = dims.d, Hq = dims.q_heads, Hkv = dims.kv_heads, group = dims.group;
  std::vector<double> grid_logz(grid_rows.size() * Hq, 0.0);
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int h = 0; h < Hq; ++h) {
    for (size_t r = 0; r < grid_rows.size(); ++r) {
      const int64_t p = grid_rows[r];
      const int kv = h / group;
      // The far part only: keys kSinkTokens .. p - kNearExact.
      grid_logz[h * grid_rows.size() + r] =
          log_partition(Q + (p * Hq + h) * d, K + kv * d, static_cast<int64_t>(Hkv) * d, d, dims.scale, kSinkTokens,
                        std::max<int64_t>(kSinkTokens, p + 1 - kNearExact), -1, dims.softcap);
    }
  }
  // The rows of one grid point averaged.
  std::vector<FarCurve> curve(Hq);
  for (int h = 0; h < Hq; ++h) {
    for (size_t r = 0; r < grid_rows.size();) {
      if (!std::isfinite(grid_logz[h * grid_rows.size() + r])) {  // no far part
        ++r;
        continue;
      }
      size_t e = r;
      double sx = 0, sy = 0;
      // Rows closer than 5% in position share a grid point.
      while (e < grid_rows.size() && grid_rows[e] <= grid_rows[r] * 1.05 + 1) {
        sx += std::log(static_cast<double>(grid_rows[e] + 1 - kNearExact - kSinkTokens));
        // The mean of Z (not of ln Z): rows whose far mass varies (stripe topics engaged or
        // not) then keep the sink at its target on average.
        sy += std::exp(grid_logz[h * grid_rows.size() + e] - grid_logz[h * grid_rows.size() + r]);
        ++e;
      }
      curve[h].push_back({sx / (e - r), grid_logz[h * grid_rows.size() + r] + std::log(sy / (e - r))});
      r = e;
    }
  }
  return curve;
}

// ln Z_far of row p, interpolated on the head's curve (extrapolated with slope 1 outside it).
double log_z_far(const FarCurve& cv, int64_t p) {
  if (cv.empty() || p + 1 - kNearExact <= kSinkTokens) return -std::numeric_limits<double>::infinity();
  const double x = std::log(static_cast<double>(p + 1 - kNearExact - kSinkTokens));
  if (cv.size() == 1 || x <= cv.front().first) return cv.front().second + (x - cv.front().first);
  if (x >= cv.back().first) return cv.back().second + (x - cv.back().first);
  size_t i = 1;
  while (cv[i].first < x) ++i;
  const double t = (x - cv[i - 1].first) / (cv[i].first - cv[i - 1].first);
  return cv[i - 1].second + t * (cv[i].second - cv[i - 1].second);
}

}  // namespace

float dot(const float* a, const float* b, int d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= d; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

double log_partition(const float* q, const float* k, int64_t k_stride, int d, float scale, int64_t begin,
                     int64_t end, int64_t skip, float cap) {
  if (end <= begin) return -std::numeric_limits<double>::infinity();
  std::vector<float> s(static_cast<size_t>(end - begin));
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = begin; j < end; ++j) {
    const float v = j == skip ? -std::numeric_limits<float>::infinity()
                              : capped(scale * dot(q, k + j * k_stride, d), cap);
    s[j - begin] = v;
    mx = std::max(mx, v);
  }
  if (!std::isfinite(mx)) return -std::numeric_limits<double>::infinity();
  double sum = 0;
  for (float v : s) sum += std::exp(static_cast<double>(v - mx));
  return mx + std::log(sum);
}

std::vector<double> calibrate_needle_rows(const GeneratorConfig& c, const std::vector<NeedleWork>& needles,
                                          float* Q, const float* K) {
  const Dims dims = Dims::of(c);
  const int d = dims.d, Hq = dims.q_heads, Hkv = dims.kv_heads;
  const float scale = dims.scale, cap = dims.softcap;
  std::vector<double> needle_row_log_sink(needles.size(), 0.0);
  for (size_t n = 0; n < needles.size(); ++n) {
    const NeedleWork& w = needles[n];
    const int kv = w.head / dims.group;
    float* q = Q + (w.query * Hq + w.head) * d;
    const float* kn = K + (w.key * Hkv + kv) * d;
    // The needle content after RoPE at the key's position: adding gamma * nu_post to the
    // post-RoPE query is the same as adding the pre-RoPE term pre-rotated by the distance.
    std::vector<float> nu_post = w.nu;
    apply_rope(nu_post.data(), 1, 1, d, c.rope_base, w.key);
    const double along = scale * dot(nu_post.data(), kn, d);
    double log_other = 0;
    for (int it = 0; it < 4; ++it) {
      log_other =
          log_partition(q, K + kv * d, static_cast<int64_t>(Hkv) * d, d, scale, kSinkTokens, w.query + 1, w.key, cap);
      const double target = log_other + std::log(kNeedleMass / (1.0 - kNeedleMass - kNeedleSinkMass));
      const double current = scale * dot(q, kn, d);
      // Under a cap, the raw score whose capped value is the target.
      const double gamma = (cap > 0 ? uncapped(target, cap) - current : target - current) / along;
      for (int i = 0; i < d; ++i) q[i] += static_cast<float>(gamma * nu_post[i]);
    }
    needle_row_log_sink[n] = log_other + std::log(kNeedleSinkMass / (1.0 - kNeedleMass - kNeedleSinkMass));
  }
  return needle_row_log_sink;
}

void calibrate_sinks(const GeneratorConfig& c, const Layout& L, const std::vector<HeadDesign>& heads,
                     const std::vector<NeedleWork>& needles, const std::vector<double>& needle_row_log_sink,
                     float* Q, const float* K) {
  const Dims dims = Dims::of(c);
  const int64_t N = dims.seq;
  const int d = dims.d, Hq = dims.q_heads, Hkv = dims.kv_heads, group = dims.group;
  const float scale = dims.scale, cap = dims.softcap;
  const std::vector<FarCurve> curve = far_partition_curves(dims, calibration_rows(N), Q, K);
  const double theta_sink = L.theta[L.sink_pair];
  // Rows cost O(p) for copy and retrieval heads: dynamic chunks balance the threads.
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t p = 0; p < N; ++p) {
    for (int h = 0; h < Hq; ++h) {
      float* q = Q + (p * Hq + h) * d;
      if (p < kSinkTokens) continue;  // only sink keys and themselves: nothing to calibrate
      const int kv = h / group;
      double near_max = -std::numeric_limits<double>::infinity();
      double near_s[kNearExact];
      const int64_t near_begin = std::max<int64_t>(kSinkTokens, p + 1 - kNearExact);
      for (int64_t j = near_begin; j <= p; ++j) {
        near_s[j - near_begin] = capped(scale * dot(q, K + (j * Hkv + kv) * d, d), cap);
        near_max = std::max(near_max, near_s[j - near_begin]);
      }
      // Copy and retrieval rows, and the far mix's far rows, differ too much for a curve (each
      // has far keys of its own, or none): their far part is summed exactly, O(p d) a row.
      const HeadType type = heads[h].info.type;
      const bool far_row = far_row_at(heads[h].info, p) != nullptr;
      const double far = type == HeadType::kCopy || type == HeadType::kRetrieval || far_row
                             ? log_partition(q, K + kv * d, static_cast<int64_t>(Hkv) * d, d, scale, kSinkTokens,
                                             near_begin, -1, cap)
                             : log_z_far(curve[h], p);
      const double mx = std::max(near_max, far);
      double z = std::isfinite(far) ? std::exp(far - mx) : 0.0;
      for (int64_t j = near_begin; j <= p; ++j) z += std::exp(near_s[j - near_begin] - mx);
      const double sink = far_row ? kFarRowSink : heads[h].info.sink_target;
      double log_target = std::log(sink / (1.0 - sink)) + mx + std::log(z);
      for (size_t n = 0; n < needles.size(); ++n)
        if (needles[n].query == p && needles[n].head == h) log_target = needle_row_log_sink[n];
      // Scores of the sink keys: L * f_t * cos((p - t) theta) (the slowest pair barely rotates).
      // Where it rotates too far (tiny base, long context), the query pre-rotates instead.
      double cf[kSinkTokens];
      bool prerotate = std::cos(static_cast<double>(p) * theta_sink) < 0.3;
      for (int t = 0; t < kSinkTokens; ++t)
        cf[t] = kSinkKeyFactor[t] * (prerotate ? std::cos(t * theta_sink) : std::cos((p - t) * theta_sink));
      const double Ls =
          cap > 0 ? solve_capped_sink_logit(cf, kSinkTokens, log_target, cap) : solve_sink_logit(cf, kSinkTokens, log_target);
      const double amp = Ls / (scale * kSinkKeyNorm);
      // Pre-RoPE e^{ia}: after RoPE the sink key t scores Ls f_t cos(a + (p - t) theta).
      const double a = prerotate ? -static_cast<double>(p) * theta_sink : 0.0;
      q[L.sink_pair] += static_cast<float>(amp * std::cos(a));
      q[L.sink_pair + L.half] += static_cast<float>(amp * std::sin(a));
    }
  }
}

}  // namespace sampleattn::workload::detail
