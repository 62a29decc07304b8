// The attention variants of a model (sampleattn_params, ABI 1.3: sliding window, logit softcap,
// ALiBi, learned sinks) as the tools carry them: into a call's params and the oracle's Call, into
// the metrics (which measure each row's distribution over the keys the model shows it, on the
// scores the model uses), and the two the program makes itself: the standard ALiBi slopes and the
// benchmark's generated sink logits. Natural-log units throughout, as in the C API.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "reference/oracle.h"
#include "sampleattn/sampleattn.h"
#include "workload/npy.h"

namespace sampleattn::workload {

struct ModelVariants {
  int64_t window_left = -1;         // the query at p sees keys p - window_left .. p; -1: no window
  double softcap = 0;               // s -> softcap * tanh(s / softcap); 0: none
  std::vector<float> alibi_slopes;  // per query head: s -= slope * |p - j| after the cap; empty: none
  std::vector<float> sinks;         // per query head: exp(sink) joins each row's denominator; empty: none

  // Whether the scores change (softcap, ALiBi) or the keys a row sees (the window); the sinks
  // only add to the denominator.
  bool changes_scores() const { return softcap > 0 || !alibi_slopes.empty(); }
  bool any() const { return window_left >= 0 || changes_scores() || !sinks.empty(); }

  // Sets the variant fields of a call (the arrays point into this object, which must outlive it).
  void apply_to(sampleattn_params* params) const;
  // The same for the oracle.
  void apply_to(reference::Call* call) const;
};

// The standard ALiBi slopes of `num_heads` heads (Press et al., as BLOOM builds them): for n a
// power of two, 2^(-8 (h + 1) / n); otherwise the n' = 2^floor(log2 n) slopes of n', then every
// other slope of 2n' (2^(-4 (2i + 1) / n'), i = 0 .. n - n' - 1). Empty for n < 1.
std::vector<float> standard_alibi_slopes(int num_heads);

// One query row's probabilities under the model: the softmax of the model's scores
// (s = scale * q.k, capped, minus head_slope * |p - j|) over the keys it sees, model_lo(p,
// window_left) .. p; probs gets p + 1 values, 0 before model_lo. The sink is left out: this is the
// row's distribution over its keys (what the kept-mass metric shares out). keys: rows of
// head_dim floats, key_stride apart, position j at keys + j * key_stride.
void model_row_probabilities(const float* q, const float* keys, int64_t key_stride, int head_dim, int64_t p,
                             double scale, const ModelVariants& model, double head_slope, std::vector<double>* probs);

// The natural log of the same row's partition, sum over its keys of exp(model score): what the
// row's lse would be without a sink.
double model_row_log_partition(const float* q, const float* keys, int64_t key_stride, int head_dim, int64_t p,
                               double scale, const ModelVariants& model, double head_slope);

// The benchmark's learned sinks, made for the inputs: query head h draws a share u_h uniform in
// [kGeneratedSinkShareMin, kGeneratedSinkShareMax) from `seed`, and its sink logit is the median
// over kGeneratedSinkRows evenly strided rows (the last included) of their log partition under the
// model (window, cap, ALiBi) plus ln(u_h / (1 - u_h)): the sink takes about u_h of such a row's
// mass. A sink logit on the scale of the row's own scores is what makes it matter (generated rows
// have log partitions of 10-30); a fixed distribution would not. q: [seq, Hq, d], k: [seq, Hkv, d];
// single sequence, causal.
inline constexpr double kGeneratedSinkShareMin = 0.05, kGeneratedSinkShareMax = 0.5;
inline constexpr int64_t kGeneratedSinkRows = 8;
Status generated_sinks(const Tensor3& q, const Tensor3& k, double scale, const ModelVariants& model, uint64_t seed,
                       std::vector<float>* sinks);

}  // namespace sampleattn::workload
