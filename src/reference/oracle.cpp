#include "reference/oracle.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dtype_convert.h"

namespace sampleattn::reference {
namespace {

float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// Elements [0, n) of the row of `tensor` for token t, head h, converted to Real.
template <typename Real>
void load_row(const TensorRef& t, int64_t token, int head, int n, Real* out) {
  const int64_t at = token * t.token_stride + head * t.head_stride;
  for (int c = 0; c < n; ++c) out[c] = static_cast<Real>(load_scalar(t.data, t.dtype, at + c));
}

// One (sequence, kv head)'s K and V rows, converted once for every query row that reads them
// (rows [j * d, j * d + d) of k, [j * dv, j * dv + dv) of v for key j), rounded to bf16 with
// kRoundBf16. Converting them per query row made the oracle's conversions O(rows x keys x d), most
// of an oracle-checked test's time under CI's sanitizers.
template <typename Real>
struct HeadKv {
  std::vector<Real> k, v;
};

template <typename Real, bool kRoundBf16>
HeadKv<Real> head_kv(const Call& call, const SequenceSpan& seq, int kv_head) {
  const int d = call.head_dim, dv = call.value_dim();
  HeadKv<Real> kv;
  kv.k.resize(static_cast<size_t>(seq.k_len) * d);
  kv.v.resize(static_cast<size_t>(seq.k_len) * dv);
  for (int64_t j = 0; j < seq.k_len; ++j) {
    load_row(call.k, seq.k_begin + j, kv_head, d, kv.k.data() + j * d);
    load_row(call.v, seq.k_begin + j, kv_head, dv, kv.v.data() + j * dv);
  }
  if constexpr (kRoundBf16) {
    for (Real& x : kv.k) x = static_cast<Real>(round_bf16(static_cast<float>(x)));
    for (Real& x : kv.v) x = static_cast<Real>(round_bf16(static_cast<float>(x)));
  }
  return kv;
}

template <typename Real, bool kRoundBf16>
RowResult compute_row(const Call& call, int64_t token, int head, const MaskLookup& mask_of, const HeadKv<Real>& kv) {
  const int seq_index = sequence_of_token(call, token);
  const SequenceSpan& seq = call.sequences[static_cast<size_t>(seq_index)];
  const int64_t i = token - seq.q_begin;
  const int64_t p = (seq.k_len - seq.q_len) + i;
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
  load_row(call.q, token, head, d, q.data());
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
    const Real* k = kv.k.data() + j * d;
    for (int c = 0; c < d; ++c) dot += q[c] * k[c];
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
    const Real* v = kv.v.data() + keys[n] * dv;
    for (int c = 0; c < dv; ++c) acc[c] += pw * v[c];
  }
  for (int c = 0; c < dv; ++c) r.o[c] = static_cast<double>(acc[c] / sum);
  r.lse = static_cast<double>(max_score) + std::log(static_cast<double>(sum));
  return r;
}

// The rows by (sequence, kv head): each group's K and V converted once (head_kv), its rows in
// parallel.
template <typename Real, bool kRoundBf16>
std::vector<RowResult> compute_rows(const Call& call, const std::vector<std::pair<int64_t, int>>& rows,
                                    const MaskLookup& mask) {
  std::vector<RowResult> out(rows.size());
  const int group = call.num_q_heads / call.num_kv_heads;
  std::vector<std::pair<int64_t, size_t>> order(rows.size());  // (sequence * kv heads + kv head, row)
  for (size_t n = 0; n < rows.size(); ++n) {
    order[n] = {int64_t{sequence_of_token(call, rows[n].first)} * call.num_kv_heads + rows[n].second / group, n};
  }
  std::sort(order.begin(), order.end());
  for (size_t a = 0; a < order.size();) {
    size_t b = a;
    while (b < order.size() && order[b].first == order[a].first) ++b;
    const SequenceSpan& seq = call.sequences[static_cast<size_t>(order[a].first / call.num_kv_heads)];
    const HeadKv<Real> kv = head_kv<Real, kRoundBf16>(call, seq, static_cast<int>(order[a].first % call.num_kv_heads));
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t i = static_cast<int64_t>(a); i < static_cast<int64_t>(b); ++i) {
      const auto& [token, head] = rows[order[static_cast<size_t>(i)].second];
      out[order[static_cast<size_t>(i)].second] = compute_row<Real, kRoundBf16>(call, token, head, mask, kv);
    }
    a = b;
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
