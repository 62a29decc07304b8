#include "reference/oracle.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dtype_convert.h"

namespace sampleattn::reference {
namespace {

float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// Element c of the row of `tensor` for token t, head h.
double element(const TensorRef& t, int64_t token, int head, int c) {
  return load_scalar(t.data, t.dtype, token * t.token_stride + head * t.head_stride + c);
}

template <typename Real, bool kRoundBf16>
RowResult compute_row(const Call& call, int64_t token, int head, const MaskLookup& mask_of) {
  const int seq_index = sequence_of_token(call, token);
  const SequenceSpan& seq = call.sequences[static_cast<size_t>(seq_index)];
  const int64_t i = token - seq.q_begin;
  const int64_t p = (seq.k_len - seq.q_len) + i;
  const int kv_head = head / (call.num_q_heads / call.num_kv_heads);
  const int d = call.head_dim;
  const int dv = call.value_dim();
  const Real slope = call.alibi_slopes.empty() ? Real(0) : static_cast<Real>(call.alibi_slopes[head]);
  const bool has_sink = !call.sinks.empty() && call.sinks[head] > -std::numeric_limits<float>::infinity();
  const Real sink = has_sink ? static_cast<Real>(call.sinks[head]) : Real(0);
  const Real cap = static_cast<Real>(call.softcap);
  const HeadMask* mask = mask_of ? mask_of(seq_index, head) : nullptr;

  auto maybe_round = [](Real x) -> Real {
    if constexpr (kRoundBf16) return static_cast<Real>(round_bf16(static_cast<float>(x)));
    return x;
  };

  std::vector<Real> q(d);
  for (int c = 0; c < d; ++c) q[c] = static_cast<Real>(element(call.q, token, head, c));
  if constexpr (kRoundBf16) {
    // The bf16 path rounds the scaled query (scale folded in before rounding).
    for (int c = 0; c < d; ++c) q[c] = maybe_round(q[c] * static_cast<Real>(call.scale));
  }

  std::vector<int64_t> keys;
  std::vector<Real> scores;
  Real max_score = -std::numeric_limits<Real>::infinity();
  for (int64_t j = 0; j < seq.k_len; ++j) {
    if (!visible(call.causal, mask, p, j, call.window_left)) continue;
    Real dot = 0;
    const int64_t kt = seq.k_begin + j;
    for (int c = 0; c < d; ++c) {
      dot += q[c] * maybe_round(static_cast<Real>(element(call.k, kt, kv_head, c)));
    }
    Real s = kRoundBf16 ? dot : dot * static_cast<Real>(call.scale);
    if (cap > 0) s = cap * std::tanh(s / cap);
    s -= slope * static_cast<Real>(p >= j ? p - j : j - p);
    keys.push_back(j);
    scores.push_back(s);
    max_score = std::max(max_score, s);
  }

  RowResult r;
  r.token = token;
  r.head = head;
  r.o.assign(dv, 0.0);
  if (keys.empty()) {  // no key: output 0 and lse -inf, sink or not
    r.lse = -std::numeric_limits<double>::infinity();
    return r;
  }
  // The sink joins the denominator only, at its own logit.
  if (has_sink) max_score = std::max(max_score, sink);
  Real sum = has_sink ? std::exp(sink - max_score) : Real(0);
  std::vector<Real> acc(dv, 0);
  for (size_t n = 0; n < keys.size(); ++n) {
    const Real w = std::exp(scores[n] - max_score);
    sum += w;
    const Real pw = maybe_round(w);
    const int64_t kt = seq.k_begin + keys[n];
    for (int c = 0; c < dv; ++c) acc[c] += pw * maybe_round(static_cast<Real>(element(call.v, kt, kv_head, c)));
  }
  for (int c = 0; c < dv; ++c) r.o[c] = static_cast<double>(acc[c] / sum);
  r.lse = static_cast<double>(max_score) + std::log(static_cast<double>(sum));
  return r;
}

template <typename Real, bool kRoundBf16>
std::vector<RowResult> compute_rows(const Call& call, const std::vector<std::pair<int64_t, int>>& rows,
                                    const MaskLookup& mask) {
  std::vector<RowResult> out(rows.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t n = 0; n < static_cast<int64_t>(rows.size()); ++n) {
    out[n] = compute_row<Real, kRoundBf16>(call, rows[n].first, rows[n].second, mask);
  }
  return out;
}

}  // namespace

int sequence_of_token(const Call& call, int64_t token) {
  const auto& seqs = call.sequences;
  // Last sequence whose q_begin <= token and that holds it (empty sequences are skipped).
  int lo = 0, hi = static_cast<int>(seqs.size()) - 1, found = 0;
  while (lo <= hi) {
    const int mid = (lo + hi) / 2;
    if (seqs[mid].q_begin <= token) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  while (found > 0 && seqs[found].q_len == 0) --found;
  return found;
}

bool visible(bool causal, const HeadMask* mask, int64_t p, int64_t j, int64_t window_left) {
  if (causal && j > p) return false;
  if (window_left >= 0 && j < p - window_left) return false;  // older than the model's window
  if (mask == nullptr) return true;
  if (std::binary_search(mask->dense_rows.begin(), mask->dense_rows.end(), p)) return true;  // a dense row
  if (j > p - mask->window) return true;  // inside the window (j <= p already)
  return std::binary_search(mask->stripes.begin(), mask->stripes.end(), static_cast<int32_t>(j));
}

std::vector<RowResult> attention_rows(const Call& call, const std::vector<std::pair<int64_t, int>>& rows,
                                      const MaskLookup& mask) {
  return compute_rows<double, false>(call, rows, mask);
}

std::vector<RowResult> naive_attention_rows(const Call& call, const std::vector<std::pair<int64_t, int>>& rows,
                                            bool bf16_products, const MaskLookup& mask) {
  return bf16_products ? compute_rows<float, true>(call, rows, mask) : compute_rows<float, false>(call, rows, mask);
}

}  // namespace sampleattn::reference
