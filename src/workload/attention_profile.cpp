#include "workload/attention_profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "core/mask.h"

namespace sampleattn::workload {

void row_probabilities(const float* q, const float* keys, int64_t key_stride, int head_dim,
                       int64_t visible, double scale, std::vector<double>* probs) {
  probs->assign(static_cast<size_t>(std::max<int64_t>(visible, 0)), 0.0);
  if (visible <= 0) return;
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < visible; ++j) {
    const float* kj = keys + j * key_stride;
    double s = 0;
    for (int i = 0; i < head_dim; ++i) s += static_cast<double>(q[i]) * kj[i];
    s *= scale;
    (*probs)[j] = s;
    mx = std::max(mx, s);
  }
  double sum = 0;
  for (double& p : *probs) {
    p = std::exp(p - mx);
    sum += p;
  }
  for (double& p : *probs) p /= sum;
}

std::vector<int64_t> strided_rows(int64_t q_len, int64_t count) {
  std::vector<int64_t> rows;
  if (q_len <= 0 || count <= 0) return rows;
  if (count >= q_len) {
    rows.resize(static_cast<size_t>(q_len));
    std::iota(rows.begin(), rows.end(), 0);
    return rows;
  }
  for (int64_t i = 0; i < count; ++i) {
    // i = 0 is the last row; the rest evenly spread towards the first.
    rows.push_back(q_len - 1 - static_cast<int64_t>((static_cast<double>(i) * q_len) / count));
  }
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

Status profile_attention(const Tensor3& q, const Tensor3& k, const ProfileOptions& o,
                         std::vector<HeadProfile>* profiles) {
  if (profiles == nullptr) return null_pointer("profile_attention: profiles is null");
  if (q.dim != k.dim || q.dim <= 0) return invalid_shape("profile_attention: q and k head_dim differ");
  if (k.heads <= 0 || q.heads % k.heads != 0) {
    return invalid_shape("profile_attention: query heads must be a multiple of kv heads");
  }
  if (q.seq > k.seq) return invalid_shape("profile_attention: more queries than keys (causal)");
  if (o.rows < 1 || o.sink_tokens < 0 || !(o.window_fraction >= 0 && o.window_fraction <= 1) ||
      !(o.top_column_fraction >= 0 && o.top_column_fraction <= 1)) {
    return invalid_argument("profile_attention: bad options");
  }
  const int64_t q_len = q.seq, k_len = k.seq, offset = k_len - q_len;
  const int d = static_cast<int>(q.dim);
  const int group = static_cast<int>(q.heads / k.heads);
  const double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(d));
  const int64_t window = window_size(o.window_fraction, 1, k_len);  // SampleAttention's rule, min_window 1
  const int64_t top = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(o.top_column_fraction * k_len)));
  const std::vector<int64_t> rows = strided_rows(q_len, o.rows);
  profiles->assign(static_cast<size_t>(q.heads), HeadProfile{});

  for (int64_t h = 0; h < q.heads; ++h) {
    const std::vector<float> keys = head_to_f32(k, h / group);
    const std::vector<float> queries = head_to_f32(q, h);
    const size_t nr = rows.size();
    std::vector<std::vector<double>> P(nr);
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t r = 0; r < nr; ++r) {
      const int64_t p = offset + rows[r];
      row_probabilities(queries.data() + rows[r] * d, keys.data(), d, d, causal_end(p), scale, &P[r]);
    }
    std::vector<double> colsum(static_cast<size_t>(k_len), 0.0);
    for (size_t r = 0; r < nr; ++r)
      for (size_t j = 0; j < P[r].size(); ++j) colsum[j] += P[r][j];
    std::vector<int64_t> order(static_cast<size_t>(k_len));
    std::iota(order.begin(), order.end(), 0);
    const int64_t ntop = std::min(top, k_len);
    std::partial_sort(order.begin(), order.begin() + ntop, order.end(), [&](int64_t a, int64_t b) {
      return colsum[a] != colsum[b] ? colsum[a] > colsum[b] : a < b;
    });
    std::vector<char> is_top(static_cast<size_t>(k_len), 0);
    for (int64_t t = 0; t < ntop; ++t) is_top[order[t]] = 1;

    HeadProfile hp;
    hp.covered_min = 1.0;
    for (size_t r = 0; r < nr; ++r) {
      const int64_t p = offset + rows[r];
      const std::vector<double>& pr = P[r];
      double sink = 0, win = 0, topm = 0, cov = 0, ent = 0;
      for (int64_t j = 0; j <= p; ++j) {
        const double v = pr[j];
        const bool windowed = in_window(j, p, window);
        if (j < o.sink_tokens) sink += v;
        if (windowed) win += v;
        if (is_top[j]) topm += v;
        if (windowed || is_top[j]) cov += v;
        if (v > 0) ent -= v * std::log(v);
      }
      hp.sink_mass += sink;
      hp.window_mass += win;
      hp.top_columns_mass += topm;
      hp.covered_mass += cov;
      hp.covered_min = std::min(hp.covered_min, cov);
      hp.entropy += ent;
    }
    const double inv = nr ? 1.0 / static_cast<double>(nr) : 0.0;
    hp.sink_mass *= inv;
    hp.window_mass *= inv;
    hp.top_columns_mass *= inv;
    hp.covered_mass *= inv;
    hp.entropy *= inv;
    (*profiles)[h] = hp;
  }
  return Status::ok();
}

HeadProfile median_profile(const std::vector<HeadProfile>& ps) {
  HeadProfile m;
  if (ps.empty()) return m;
  auto med = [&](double HeadProfile::*f) {
    std::vector<double> v;
    for (const auto& p : ps) v.push_back(p.*f);
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  };
  m.sink_mass = med(&HeadProfile::sink_mass);
  m.window_mass = med(&HeadProfile::window_mass);
  m.top_columns_mass = med(&HeadProfile::top_columns_mass);
  m.covered_mass = med(&HeadProfile::covered_mass);
  m.covered_min = med(&HeadProfile::covered_min);
  m.entropy = med(&HeadProfile::entropy);
  return m;
}

std::string format_profile_table(const std::string& title, const std::vector<HeadProfile>& ps,
                                 const std::vector<std::string>& labels) {
  std::string s = title + "\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-6s %-8s %7s %7s %7s %8s %8s %8s\n", "head", "type", "sink",
                "win8%", "top1%", "covered", "cov_min", "entropy");
  s += line;
  for (size_t h = 0; h < ps.size(); ++h) {
    const HeadProfile& p = ps[h];
    std::snprintf(line, sizeof line, "%-6zu %-8s %7.3f %7.3f %7.3f %8.3f %8.3f %8.2f\n", h,
                  h < labels.size() ? labels[h].c_str() : "-", p.sink_mass, p.window_mass,
                  p.top_columns_mass, p.covered_mass, p.covered_min, p.entropy);
    s += line;
  }
  const HeadProfile m = median_profile(ps);
  std::snprintf(line, sizeof line, "%-6s %-8s %7.3f %7.3f %7.3f %8.3f %8.3f %8.2f\n", "median", "",
                m.sink_mass, m.window_mass, m.top_columns_mass, m.covered_mass, m.covered_min, m.entropy);
  s += line;
  return s;
}

}  // namespace sampleattn::workload
