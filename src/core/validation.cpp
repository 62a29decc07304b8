#include "core/validation.h"

#include <algorithm>
#include <cmath>

#include "core/sparse_plan.h"

namespace sampleattn {

std::vector<int64_t> validation_rows(const sampleattn_sample_params& params, int64_t q_len,
                                     const std::vector<int64_t>& sampled) {
  std::vector<int64_t> rows;
  const int64_t unsampled = q_len - static_cast<int64_t>(sampled.size());
  const int64_t n = validation_row_count(static_cast<double>(params.r_val), params.val_rows, q_len, unsampled);
  rows.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  // Walk the rows and the ascending sampled list together: the rank-r unsampled row is r plus
  // the sampled rows below it.
  size_t below = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t rank = validation_rank(k, n, unsampled);
    int64_t row = rank + static_cast<int64_t>(below);
    while (below < sampled.size() && sampled[below] <= row) {
      ++below;
      ++row;
    }
    rows.push_back(row);
  }
  return rows;
}

int64_t mask_base_pairs(const Problem& problem, const Sequence& seq, int64_t window, int64_t sinks) {
  int64_t pairs = window_pairs(seq, window);
  for (int64_t j = 0; j < sinks; ++j) pairs += stripe_pairs_of(seq.k_len, seq.q_offset(), window, problem.window_left, j);
  return pairs;
}

int64_t most_ranked_stripes(const sampleattn_sample_params& s, int64_t sinks, int64_t num_ranked) {
  int64_t most = num_ranked;
  if (s.max_stripes > 0) most = std::min<int64_t>(most, std::max<int64_t>(0, s.max_stripes - sinks));
  return most;
}

void set_validation_bounds(ValidationLayout* v) {
  v->bounds.clear();
  v->bounds.push_back(0);
  for (int64_t g = 1; g < kValidationGrid; ++g) {
    const int64_t count = validation_grid_point(g, v->num_ranked);
    if (count > v->cap) break;
    v->bounds.push_back(count);
  }
  v->bounds.push_back(v->alpha_ranked);
  std::sort(v->bounds.begin(), v->bounds.end());
  v->bounds.erase(std::unique(v->bounds.begin(), v->bounds.end()), v->bounds.end());
}

ValidationLayout plan_validation(const Problem& problem, const Sequence& seq, int64_t window, const int32_t* ranked,
                                 int64_t num_ranked, StripeCount kept, bool with_rows) {
  const sampleattn_sample_params& s = problem.sample;
  ValidationLayout v;
  v.sinks = kept.sinks;
  v.alpha_ranked = kept.ranked;
  v.num_ranked = num_ranked;
  // The cost cap: the longest ranked prefix whose mask stays within max_density (and
  // max_stripes). Pairs grow with the prefix, so the first count past the budget ends it.
  const int64_t q_offset = seq.q_offset();
  int64_t pairs = mask_base_pairs(problem, seq, window, v.sinks);
  const int64_t left = problem.window_left;
  const int64_t causal = model_pairs(problem, seq);
  const int64_t most = most_ranked_stripes(s, v.sinks, num_ranked);
  int64_t cap = -1;
  if (!mask_runs_dense(pairs, causal, s.max_density)) {
    cap = 0;
    while (cap < most) {
      const int64_t next = pairs + stripe_pairs_of(seq.k_len, q_offset, window, left, ranked[cap]);
      if (mask_runs_dense(next, causal, s.max_density)) break;
      pairs = next;
      ++cap;
    }
  }
  v.over_budget = cap < v.alpha_ranked;
  v.cap = std::max<int64_t>(cap, 0);
  if (v.over_budget || !with_rows) return v;

  set_validation_bounds(&v);
  v.bucket.assign(static_cast<size_t>(seq.k_len), kBucketUnused);
  for (int64_t j = 0; j < v.sinks; ++j) v.bucket[j] = kBucketKept;
  for (int b = 1; b <= v.buckets(); ++b) {
    for (int64_t r = v.bounds[b - 1]; r < v.bounds[b]; ++r) v.bucket[ranked[r]] = static_cast<uint8_t>(b);
  }
  return v;
}

namespace {

// The root-mean-square lost mass of one head's rows, sqrt(mean (1 - kept)^2), summed in the rows'
// order (the same for the decision and the figures reported).
float rms_lost(const std::vector<double>& kept) {
  double lost2 = 0;
  for (double k : kept) lost2 += (1 - k) * (1 - k);
  return static_cast<float>(std::sqrt(lost2 / static_cast<double>(kept.size())));
}

// The validation figures of one head's rows from their kept masses (sorted in place).
HeadValidation summarize(std::vector<double>& kept) {
  HeadValidation h;
  if (kept.empty()) return h;
  h.rms_lost = rms_lost(kept);
  std::sort(kept.begin(), kept.end());
  const int64_t n = static_cast<int64_t>(kept.size());
  double sum = 0;
  for (double k : kept) sum += k;
  h.min = static_cast<float>(kept.front());
  h.p1 = static_cast<float>(kept[quantile_index(0.01, n)]);
  h.p5 = static_cast<float>(kept[quantile_index(kValidationQuantile, n)]);
  h.mean = static_cast<float>(sum / static_cast<double>(n));
  return h;
}

// Whether one head's rows pass the bar, in O(rows): the root-mean-square lost mass by a sum, the
// 5th percentile by a selection (reorders `kept`). The same figures as summarize's.
bool passes(std::vector<double>& kept, ValidationBar bar) {
  const int64_t n = static_cast<int64_t>(kept.size());
  if (rms_lost(kept) > bar.max_lost) return false;
  const auto at = kept.begin() + quantile_index(kValidationQuantile, n);
  std::nth_element(kept.begin(), at, kept.end());
  return static_cast<float>(*at) >= bar.min_kept;
}

}  // namespace

ValidationDecision decide_validation(const ValidationLayout& layout, const uint32_t* masses, int64_t row_stride,
                                     int heads, int64_t rows, ValidationBar bar, HeadValidation* per_head) {
  ValidationDecision d;
  for (int h = 0; h < heads; ++h) per_head[h] = HeadValidation{};
  if (layout.over_budget) {
    d.decision = SAMPLEATTN_DECISION_DENSE_COST;
    return d;
  }
  d.ranked = layout.alpha_ranked;
  if (rows <= 0) return d;

  // kept[h][r][b]: the mass row r of head h keeps with the first bounds[b] ranked stripes (the
  // fixed-point masses added exactly, then in units of 1).
  const int nb = layout.buckets();
  std::vector<double> kept(static_cast<size_t>(heads) * rows * (nb + 1));
  for (int64_t hr = 0; hr < heads * rows; ++hr) {
    const uint32_t* m = masses + hr * row_stride;
    double* k = kept.data() + hr * (nb + 1);
    uint64_t running = m[0];
    k[0] = std::min(1.0, static_cast<double>(running) / kValidationMassOne);
    for (int b = 1; b <= nb; ++b) {
      running += m[b];
      k[b] = std::min(1.0, static_cast<double>(running) / kValidationMassOne);
    }
  }
  auto bound_index = [&](int64_t count) {
    return static_cast<int>(std::lower_bound(layout.bounds.begin(), layout.bounds.end(), count) - layout.bounds.begin());
  };
  std::vector<double> column(static_cast<size_t>(rows));
  auto head_values = [&](int h, int b) {
    for (int64_t r = 0; r < rows; ++r) column[r] = kept[(static_cast<size_t>(h) * rows + r) * (nb + 1) + b];
  };
  // The smallest grid count (independent of alpha, so that the decision is monotone in alpha)
  // at which every head passes the bar.
  int64_t passing = -1;
  for (int64_t g = 0; g < kValidationGrid && passing < 0; ++g) {
    const int64_t count = validation_grid_point(g, layout.num_ranked);
    if (count > layout.cap) break;
    const int b = bound_index(count);
    bool all = true;
    for (int h = 0; h < heads && all; ++h) {
      head_values(h, b);
      all = passes(column, bar);
    }
    if (all) passing = count;
  }
  if (passing < 0) {
    d.decision = SAMPLEATTN_DECISION_DENSE_VALIDATION;
    return d;
  }
  d.passing = passing;
  if (passing > layout.alpha_ranked) {
    d.decision = SAMPLEATTN_DECISION_SPARSE_WIDENED;
    d.ranked = passing;
  }
  const int b = bound_index(d.ranked);
  for (int h = 0; h < heads; ++h) {
    head_values(h, b);
    per_head[h] = summarize(column);
  }
  return d;
}

std::vector<int32_t> decided_stripes(const ValidationLayout& layout, const int32_t* ranked_columns, int64_t ranked) {
  std::vector<int32_t> stripes;
  stripes.reserve(static_cast<size_t>(layout.sinks + ranked));
  for (int64_t j = 0; j < layout.sinks; ++j) stripes.push_back(static_cast<int32_t>(j));
  stripes.insert(stripes.end(), ranked_columns, ranked_columns + ranked);
  std::sort(stripes.begin(), stripes.end());
  return stripes;
}

}  // namespace sampleattn
