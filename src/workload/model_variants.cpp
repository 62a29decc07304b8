#include "workload/model_variants.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/mask.h"
#include "workload/attention_profile.h"
#include "workload/generator.h"
#include "workload/metrics.h"

namespace sampleattn::workload {
namespace {

// The stream of the generated sink shares (beside the generator's own tags, which stay below 16).
constexpr uint64_t kTagGeneratedSinks = 0x73696e6bu;  // "sink"

// The model's scores of one row over keys lo .. p; returns lo.
int64_t model_scores(const float* q, const float* keys, int64_t key_stride, int head_dim, int64_t p, double scale,
                     const ModelVariants& model, double head_slope, std::vector<double>* scores) {
  const int64_t lo = model_lo(p, model.window_left);
  scores->assign(static_cast<size_t>(std::max<int64_t>(p + 1 - lo, 0)), 0.0);
  for (int64_t j = lo; j <= p; ++j) {
    const float* kj = keys + j * key_stride;
    double s = 0;
    for (int i = 0; i < head_dim; ++i) s += static_cast<double>(q[i]) * kj[i];
    s *= scale;
    if (model.softcap > 0) s = model.softcap * std::tanh(s / model.softcap);
    s -= head_slope * static_cast<double>(p - j);
    (*scores)[static_cast<size_t>(j - lo)] = s;
  }
  return lo;
}

}  // namespace

void ModelVariants::apply_to(sampleattn_params* params) const {
  params->window_left = window_left;
  params->softcap = static_cast<float>(softcap);
  params->alibi_slopes = alibi_slopes.empty() ? nullptr : alibi_slopes.data();
  params->sinks = sinks.empty() ? nullptr : sinks.data();
}

void ModelVariants::apply_to(reference::Call* call) const {
  call->window_left = window_left;
  // The library holds the cap as a float: the oracle restates the call the library sees.
  call->softcap = static_cast<double>(static_cast<float>(softcap));
  call->alibi_slopes = alibi_slopes;
  call->sinks = sinks;
}

std::vector<float> standard_alibi_slopes(int num_heads) {
  std::vector<float> slopes;
  if (num_heads < 1) return slopes;
  int m = 1;
  while (m * 2 <= num_heads) m *= 2;
  for (int h = 0; h < m; ++h) slopes.push_back(static_cast<float>(std::exp2(-8.0 * (h + 1) / m)));
  for (int i = 0; i < num_heads - m; ++i) slopes.push_back(static_cast<float>(std::exp2(-4.0 * (2 * i + 1) / m)));
  return slopes;
}

void model_row_probabilities(const float* q, const float* keys, int64_t key_stride, int head_dim, int64_t p,
                             double scale, const ModelVariants& model, double head_slope,
                             std::vector<double>* probs) {
  std::vector<double> s;
  const int64_t lo = model_scores(q, keys, key_stride, head_dim, p, scale, model, head_slope, &s);
  probs->assign(static_cast<size_t>(std::max<int64_t>(p + 1, 0)), 0.0);
  if (s.empty()) return;
  const double mx = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (double& x : s) {
    x = std::exp(x - mx);
    sum += x;
  }
  for (size_t i = 0; i < s.size(); ++i) (*probs)[static_cast<size_t>(lo) + i] = s[i] / sum;
}

double model_row_log_partition(const float* q, const float* keys, int64_t key_stride, int head_dim, int64_t p,
                               double scale, const ModelVariants& model, double head_slope) {
  std::vector<double> s;
  model_scores(q, keys, key_stride, head_dim, p, scale, model, head_slope, &s);
  if (s.empty()) return -std::numeric_limits<double>::infinity();
  const double mx = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (double x : s) sum += std::exp(x - mx);
  return mx + std::log(sum);
}

Status generated_sinks(const Tensor3& q, const Tensor3& k, double scale, const ModelVariants& model, uint64_t seed,
                       std::vector<float>* sinks) {
  if (sinks == nullptr) return null_pointer("generated_sinks: sinks is null");
  if (q.dim != k.dim || k.heads < 1 || q.heads % k.heads != 0 || q.seq < 1 || q.seq > k.seq) {
    return invalid_shape("generated_sinks: q [" + std::to_string(q.seq) + ", " + std::to_string(q.heads) + ", " +
                         std::to_string(q.dim) + "] and k [" + std::to_string(k.seq) + ", " + std::to_string(k.heads) +
                         ", " + std::to_string(k.dim) + "] are not one causal call");
  }
  if (!model.alibi_slopes.empty() && static_cast<int64_t>(model.alibi_slopes.size()) != q.heads) {
    return invalid_argument("generated_sinks: alibi_slopes needs one slope per query head");
  }
  const int d = static_cast<int>(q.dim);
  const int64_t group = q.heads / k.heads;
  const std::vector<int64_t> rows = strided_rows(q.seq, kGeneratedSinkRows);
  sinks->assign(static_cast<size_t>(q.heads), 0.f);
  std::vector<float> keys;
  for (int64_t h = 0; h < q.heads; ++h) {
    if (h % group == 0) keys = head_to_f32(k, h / group);
    const std::vector<float> queries = head_to_f32(q, h);
    const double slope = model.alibi_slopes.empty() ? 0.0 : model.alibi_slopes[static_cast<size_t>(h)];
    std::vector<double> log_z;
    for (int64_t row : rows) {
      const int64_t p = k.seq - q.seq + row;
      log_z.push_back(model_row_log_partition(queries.data() + row * d, keys.data(), d, d, p, scale, model, slope));
    }
    Rng rng(derive_seed(seed, kTagGeneratedSinks, static_cast<uint64_t>(h)));
    const double share = kGeneratedSinkShareMin + (kGeneratedSinkShareMax - kGeneratedSinkShareMin) * rng.uniform();
    (*sinks)[static_cast<size_t>(h)] = static_cast<float>(quantile(log_z, 0.5) + std::log(share / (1.0 - share)));
  }
  return Status::ok();
}

}  // namespace sampleattn::workload
