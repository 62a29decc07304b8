#include "workload/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dtype_convert.h"
#include "core/mask.h"
#include "workload/attention_profile.h"

namespace sampleattn::workload {
namespace {

struct StridedView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  int64_t first_token = 0;
};

// Rows first..first+count of head `head` as f32 [count, d].
std::vector<float> gather_head(const StridedView& v, int head, int64_t count, int d) {
  std::vector<float> out(static_cast<size_t>(count) * d);
  for (int64_t t = 0; t < count; ++t) {
    const int64_t base = (v.first_token + t) * v.token_stride + head * v.head_stride;
    for (int i = 0; i < d; ++i) out[t * d + i] = load_scalar(v.data, v.dtype, base + i);
  }
  return out;
}

Status kept_mass_views(const StridedView& qv, const StridedView& kv, int64_t q_len, int64_t k_len,
                       int num_q_heads, int num_kv_heads, int d, double scale,
                       const std::vector<HeadMask>& masks, const std::vector<int64_t>& rows,
                       const ModelVariants& model, KeptMassResult* r) {
  if (r == nullptr) return null_pointer("kept_mass: result is null");
  if (num_kv_heads <= 0 || num_q_heads % num_kv_heads != 0) {
    return invalid_shape("kept_mass: query heads must be a multiple of kv heads");
  }
  if (q_len > k_len) return invalid_shape("kept_mass: more queries than keys (causal)");
  if (static_cast<int>(masks.size()) != num_q_heads) {
    return invalid_argument("kept_mass: need one mask per query head (" + std::to_string(num_q_heads) + ")");
  }
  if (!(scale > 0) || !std::isfinite(scale)) return invalid_argument("kept_mass: scale must be > 0");
  if (!model.alibi_slopes.empty() && static_cast<int>(model.alibi_slopes.size()) != num_q_heads) {
    return invalid_argument("kept_mass: need one ALiBi slope per query head (" + std::to_string(num_q_heads) + ")");
  }
  for (int64_t row : rows)
    if (row < 0 || row >= q_len) return invalid_argument("kept_mass: row out of range");
  for (const HeadMask& m : masks) {
    if (m.window < 0) return invalid_argument("kept_mass: negative window");
    for (size_t s = 0; s < m.stripes.size(); ++s) {
      if (m.stripes[s] < 0 || m.stripes[s] >= k_len || (s > 0 && m.stripes[s] <= m.stripes[s - 1])) {
        return invalid_argument("kept_mass: stripes must be ascending key positions");
      }
    }
  }
  const int group = num_q_heads / num_kv_heads;
  const int64_t offset = k_len - q_len;
  const size_t nr = rows.size();
  r->head_min.assign(num_q_heads, 1.0);
  r->head_p1.assign(num_q_heads, 1.0);
  r->head_mean.assign(num_q_heads, 1.0);
  r->rows = static_cast<int64_t>(nr);
  std::vector<double> all;
  all.reserve(nr * num_q_heads);
  std::vector<float> keys;
  int loaded_kv = -1;
  for (int h = 0; h < num_q_heads; ++h) {
    if (h / group != loaded_kv) {
      loaded_kv = h / group;
      keys = gather_head(kv, loaded_kv, k_len, d);
    }
    const HeadMask& m = masks[h];
    const double slope = model.alibi_slopes.empty() ? 0.0 : model.alibi_slopes[static_cast<size_t>(h)];
    std::vector<double> kept(nr, 0.0);
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < nr; ++i) {
      const int64_t p = offset + rows[i];
      std::vector<float> qrow(d);
      const int64_t base = (qv.first_token + rows[i]) * qv.token_stride + h * qv.head_stride;
      for (int e = 0; e < d; ++e) qrow[e] = load_scalar(qv.data, qv.dtype, base + e);
      std::vector<double> P;  // p + 1 values; 0 for the keys the model hides
      if (model.window_left >= 0 || model.changes_scores()) {
        model_row_probabilities(qrow.data(), keys.data(), d, d, p, scale, model, slope, &P);
      } else {
        row_probabilities(qrow.data(), keys.data(), d, d, causal_end(p), scale, &P);
      }
      if (std::binary_search(m.dense_rows.begin(), m.dense_rows.end(), p)) {  // sees every key
        kept[i] = 1.0;
        continue;
      }
      double s = 0;
      for (int64_t j = window_lo(p, m.window); j < window_hi(p); ++j) s += P[j];
      for (int32_t j : m.stripes) {
        if (j > stripe_limit(p, m.window)) break;  // ascending: none after it is visible either
        if (stripe_visible(j, p, m.window, model.window_left)) s += P[j];
      }
      kept[i] = std::min(1.0, s);
    }
    if (nr == 0) continue;
    double sum = 0;
    for (double v : kept) sum += v;
    r->head_mean[h] = sum / static_cast<double>(nr);
    r->head_min[h] = *std::min_element(kept.begin(), kept.end());
    r->head_p1[h] = quantile(kept, 0.01);
    all.insert(all.end(), kept.begin(), kept.end());
  }
  if (!all.empty()) {
    double sum = 0;
    for (double v : all) sum += v;
    r->mean = sum / static_cast<double>(all.size());
    r->min = *std::min_element(all.begin(), all.end());
    r->p1 = quantile(all, 0.01);
  }
  return Status::ok();
}

}  // namespace

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

Status rel_l2_error(const Tensor3& o, const Tensor3& ref, const std::vector<int64_t>& tokens,
                    RelErrorResult* r) {
  if (r == nullptr) return null_pointer("rel_l2_error: result is null");
  if (o.seq != ref.seq || o.heads != ref.heads || o.dim != ref.dim) {
    return invalid_shape("rel_l2_error: output and reference shapes differ");
  }
  for (int64_t t : tokens)
    if (t < 0 || t >= o.seq) return invalid_argument("rel_l2_error: token out of range");
  std::vector<double> num(static_cast<size_t>(o.heads), 0.0), den(static_cast<size_t>(o.heads), 0.0);
  auto accumulate = [&](int64_t t) {
    for (int64_t h = 0; h < o.heads; ++h) {
      for (int64_t i = 0; i < o.dim; ++i) {
        const double a = o.at(t, h, i), b = ref.at(t, h, i);
        num[h] += (a - b) * (a - b);
        den[h] += b * b;
      }
    }
  };
  if (tokens.empty()) {
    for (int64_t t = 0; t < o.seq; ++t) accumulate(t);
  } else {
    for (int64_t t : tokens) accumulate(t);
  }
  r->per_head.assign(static_cast<size_t>(o.heads), 0.0);
  double tn = 0, td = 0;
  for (int64_t h = 0; h < o.heads; ++h) {
    r->per_head[h] = den[h] > 0 ? std::sqrt(num[h] / den[h]) : std::sqrt(num[h]);
    tn += num[h];
    td += den[h];
  }
  r->overall = td > 0 ? std::sqrt(tn / td) : std::sqrt(tn);
  r->median = quantile(r->per_head, 0.5);
  r->p90 = quantile(r->per_head, 0.9);
  r->max = r->per_head.empty() ? 0 : *std::max_element(r->per_head.begin(), r->per_head.end());
  return Status::ok();
}

Status kept_mass(const Tensor3& q, const Tensor3& k, double scale, const std::vector<HeadMask>& masks,
                 const std::vector<int64_t>& rows, KeptMassResult* result, const ModelVariants& model) {
  if (q.dim != k.dim || q.dim <= 0) return invalid_shape("kept_mass: q and k head_dim differ");
  if (k.heads <= 0 || q.heads > std::numeric_limits<int>::max()) return invalid_shape("kept_mass: bad head count");
  const StridedView qv{q.data(), q.dtype, q.token_stride(), q.head_stride(), 0};
  const StridedView kv{k.data(), k.dtype, k.token_stride(), k.head_stride(), 0};
  return kept_mass_views(qv, kv, q.seq, k.seq, static_cast<int>(q.heads), static_cast<int>(k.heads),
                         static_cast<int>(q.dim), scale, masks, rows, model, result);
}

double mask_density(const HeadMask& m, int64_t q_len, int64_t k_len, int64_t window_left) {
  // The band of a window no wider than the model's lies inside it; a wider one (a dense head's)
  // computes what the model does.
  const int64_t band = std::min(m.window, model_span(k_len, window_left));
  int64_t computed = window_band_pairs(q_len, k_len, band);
  for (int32_t j : m.stripes) computed += stripe_pairs_of(k_len, k_len - q_len, m.window, window_left, j);
  // A dense row computes every key it sees instead of its band and visible stripes.
  for (const int64_t p : m.dense_rows) {
    const auto first = std::lower_bound(m.stripes.begin(), m.stripes.end(), stripe_first(p, window_left));
    const auto last = std::upper_bound(m.stripes.begin(), m.stripes.end(), stripe_limit(p, m.window));
    computed += dense_row_added_pairs(p, window_left, m.window, last > first ? last - first : 0);
  }
  const auto model = static_cast<double>(model_pairs(q_len, k_len, window_left));
  return model > 0 ? static_cast<double>(computed) / model : 0.0;
}

double mask_density(const std::vector<HeadMask>& masks, int64_t q_len, int64_t k_len, int64_t window_left) {
  const auto model = static_cast<double>(model_pairs(q_len, k_len, window_left));
  if (model <= 0 || masks.empty()) return 0.0;
  double computed = 0;
  for (const HeadMask& m : masks) computed += mask_density(m, q_len, k_len, window_left) * model;
  return computed / (model * static_cast<double>(masks.size()));
}

std::vector<HeadMask> masks_from_stats(const sampleattn_head_stats* head_stats, const int32_t* offsets,
                                       const int32_t* stripes, int num_heads, int64_t k_len, int64_t window_left,
                                       const int32_t* row_offsets, const int32_t* row_indices, int64_t q_offset) {
  std::vector<HeadMask> masks(static_cast<size_t>(std::max(num_heads, 0)));
  for (int h = 0; h < num_heads; ++h) {
    HeadMask& m = masks[h];
    if (head_stats == nullptr || head_stats[h].dense) {
      m.window = model_span(k_len, window_left);
      continue;
    }
    m.window = head_stats[h].window;
    if (offsets != nullptr && stripes != nullptr) m.stripes.assign(stripes + offsets[h], stripes + offsets[h + 1]);
    if (row_offsets != nullptr && row_indices != nullptr) {
      for (int32_t r = row_offsets[h]; r < row_offsets[h + 1]; ++r) m.dense_rows.push_back(q_offset + row_indices[r]);
    }
  }
  return masks;
}

Status needle_recall(const Tensor3& o, const std::vector<PlantedNeedle>& needles, double threshold,
                     NeedleResult* r, int64_t window_left, int64_t q_offset) {
  if (r == nullptr) return null_pointer("needle_recall: result is null");
  r->cosine.clear();
  r->retrieved.clear();
  r->visible.clear();
  r->counted = 0;
  r->recall = 1.0;
  if (q_offset < 0) return invalid_argument("needle_recall: negative q_offset");
  if (needles.empty()) return Status::ok();
  int64_t hits = 0;
  for (const PlantedNeedle& n : needles) {
    if (n.query_token < q_offset) continue;  // before the chunk's queries
    const int64_t row = n.query_token - q_offset;
    if (row >= o.seq || n.query_head < 0 || n.query_head >= o.heads ||
        static_cast<int64_t>(n.value_direction.size()) != o.dim) {
      return invalid_argument("needle_recall: needle does not fit the output's shape");
    }
    double dotp = 0, on = 0, un = 0;
    for (int64_t i = 0; i < o.dim; ++i) {
      const double a = o.at(row, n.query_head, i), u = n.value_direction[i];
      dotp += a * u;
      on += a * a;
      un += u * u;
    }
    const double c = (on > 0 && un > 0) ? dotp / std::sqrt(on * un) : 0.0;
    const bool visible = n.key_position >= model_lo(n.query_token, window_left);
    r->cosine.push_back(c);
    r->retrieved.push_back(c > threshold ? 1 : 0);
    r->visible.push_back(visible ? 1 : 0);
    if (!visible) continue;
    ++r->counted;
    hits += c > threshold;
  }
  r->recall = r->counted > 0 ? static_cast<double>(hits) / static_cast<double>(r->counted) : 1.0;
  return Status::ok();
}

}  // namespace sampleattn::workload
