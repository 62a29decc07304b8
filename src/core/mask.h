// The mask of SampleAttention, once (docs/ALGORITHM.md): every rule about which query sees which
// key, stage 1's row choice and limits, stage 2's target and stripe count, the pair counts and the
// max_density rule, and the constants of the log2-unit softmax. Included by the CPU backend, the
// CUDA kernels (nvcc runs with --expt-relaxed-constexpr, C++17), the statistics and the workload
// tools, so they all decide alike. Only the test oracle (src/reference/) keeps an independent
// restatement, so that the tests still compare two implementations.
//
// Plain constexpr functions on integers and floating-point values: no std::vector, no standard
// headers beyond <cstdint>. Positions: the query at position p (0-based, over the sequence's k_len
// keys) of a causal sequence whose queries are the last q_len positions, p = k_len - q_len + i.
#pragma once

#include <cstdint>

#include "core/validation_units.h"

#if defined(__CUDACC__)
#define SAMPLEATTN_HOST_DEVICE __host__ __device__
#else
#define SAMPLEATTN_HOST_DEVICE
#endif

namespace sampleattn {

// ---- Constants of the log2-unit softmax -------------------------------------------------------

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr double kLn2 = 0.6931471805599453;

// Scores are computed in log2 units: q is scaled by softmax_scale * log2(e).
SAMPLEATTN_HOST_DEVICE constexpr float scale_log2(float softmax_scale) { return softmax_scale * kLog2e; }

// A row's lse (natural log) from its running max (log2 units) and log2 of its sum of
// exp2(s - max); F is the precision the backend computes it in. A row without mass has -inf.
template <typename F>
SAMPLEATTN_HOST_DEVICE constexpr F lse_from_log2(F row_max, F log2_sum) {
  return (row_max + log2_sum) * static_cast<F>(kLn2);
}

// ceil(x) as an integer, for x within int64 (std::ceil is not constexpr before C++23).
SAMPLEATTN_HOST_DEVICE constexpr int64_t ceil_to_int64(double x) {
  const auto t = static_cast<int64_t>(x);
  return static_cast<double>(t) < x ? t + 1 : t;
}

// ---- The model's sliding window (sampleattn_params.window_left) -------------------------------
// The model itself lets the query at p see only the keys model_lo(p, left) .. p, left + 1 at most
// (left < 0: no model window, keys 0 .. p). Every rule below works inside it: SampleAttention's
// window, stripes, sampled scores, validation and pair counts never reach a key the model hides.

inline constexpr int64_t kNoModelWindow = -1;
SAMPLEATTN_HOST_DEVICE constexpr int64_t model_lo(int64_t p, int64_t left) {
  return left < 0 || p <= left ? 0 : p - left;
}
// The keys a causal query sees at most, k_len or left + 1: SampleAttention's ratio r_w applies to
// it, so the local window is r_w of what the model sees.
SAMPLEATTN_HOST_DEVICE constexpr int64_t model_span(int64_t k_len, int64_t left) {
  return left < 0 || left >= k_len ? k_len : left + 1;
}

// ---- Window and stripe visibility -------------------------------------------------------------

// w = min(span, max(min_window, ceil(r_w * span))), r_w as the double of the caller's value and
// span = model_span(k_len, left): k_len without a model window. w <= left + 1, so the window band
// lies inside the model's window.
SAMPLEATTN_HOST_DEVICE constexpr int64_t window_size(double r_w, int64_t min_window, int64_t span) {
  const int64_t by_ratio = ceil_to_int64(r_w * static_cast<double>(span));
  const int64_t at_least = min_window < by_ratio ? by_ratio : min_window;
  return at_least < span ? at_least : span;
}

// Causal: the query at p sees the keys 0 .. p, [0, causal_end(p)).
SAMPLEATTN_HOST_DEVICE constexpr int64_t causal_end(int64_t p) { return p + 1; }

// The window band of the query at p: keys window_lo .. p, [window_lo, window_hi).
SAMPLEATTN_HOST_DEVICE constexpr int64_t window_lo(int64_t p, int64_t w) { return p - w + 1 > 0 ? p - w + 1 : 0; }
SAMPLEATTN_HOST_DEVICE constexpr int64_t window_hi(int64_t p) { return causal_end(p); }
SAMPLEATTN_HOST_DEVICE constexpr bool in_window(int64_t j, int64_t p, int64_t w) { return j > p - w && j <= p; }

// The query at p sees the stripes stripe_first(p, left) <= j <= stripe_limit(p, w), a run of the
// ascending stripe list (a stripe inside the window is counted once, through the window; one
// older than the model's window is hidden from the model).
SAMPLEATTN_HOST_DEVICE constexpr int64_t stripe_limit(int64_t p, int64_t w) { return p - w; }
SAMPLEATTN_HOST_DEVICE constexpr int64_t stripe_first(int64_t p, int64_t left) { return model_lo(p, left); }
SAMPLEATTN_HOST_DEVICE constexpr bool stripe_visible(int64_t j, int64_t p, int64_t w, int64_t left) {
  return j >= stripe_first(p, left) && j <= stripe_limit(p, w);
}

// ---- Key segments -----------------------------------------------------------------------------
// The CPU driver and the CUDA kernels walk each query row over two segments, each seen as one
// contiguous span [lo, hi): segment 0, the sequence's own keys (a dense row's causal range
// model_lo .. p, every key when not causal, or a sparse row's window band), and segment 1, the
// stripe columns (the run of the ascending list between stripe_first and stripe_limit).

SAMPLEATTN_HOST_DEVICE constexpr int64_t own_keys_lo(bool sparse, int64_t p, int64_t w, int64_t left) {
  return sparse ? window_lo(p, w) : model_lo(p, left);
}
SAMPLEATTN_HOST_DEVICE constexpr int64_t own_keys_hi(bool sparse, bool causal, int64_t p, int64_t k_len) {
  return (sparse || causal) ? causal_end(p) : k_len;
}

// ---- Stage 1: which rows are sampled, and which of their columns count ------------------------

// A sequence of a sample-method call runs sparse unless it is empty or shorter than dense_below.
// A query chunk of at most kShortQueryRows rows (a decode step, speculative verification) runs
// dense: sampling it would compute every row's exact scores over all keys, a dense pass already.
inline constexpr int64_t kShortQueryRows = 16;
SAMPLEATTN_HOST_DEVICE constexpr bool sequence_runs_sampled(bool sample_method, int64_t q_len, int64_t k_len,
                                                            int64_t dense_below) {
  return sample_method && q_len > kShortQueryRows && k_len >= dense_below;
}
// ... and unless the model's window is no wider than the local window w (window_size over
// model_span): the band is then all the model sees, and the sequence runs dense (its band).
SAMPLEATTN_HOST_DEVICE constexpr bool model_window_covered(int64_t left, int64_t w) { return left >= 0 && left + 1 <= w; }

// Rows are cut into nb = ceil(q_len / B) blocks of B = sample_block (the last may be short) ...
SAMPLEATTN_HOST_DEVICE constexpr int64_t sample_block_count(int64_t q_len, int64_t block) {
  return (q_len + block - 1) / block;
}
// ... of which ns = min(nb, max(1, ceil(r_row * nb))) are sampled ...
SAMPLEATTN_HOST_DEVICE constexpr int64_t sampled_block_count(double r_row, int64_t nb) {
  const int64_t wanted = ceil_to_int64(r_row * static_cast<double>(nb));
  const int64_t at_least = wanted < 1 ? 1 : wanted;
  return at_least < nb ? at_least : nb;
}
// ... block t = 0 .. ns - 1 being nb - 1 - floor(t * nb / ns) (t = 0: the last block).
SAMPLEATTN_HOST_DEVICE constexpr int64_t sampled_block(int64_t t, int64_t nb, int64_t ns) { return nb - 1 - t * nb / ns; }

// A sampled row at p adds its probabilities (over the keys the model shows it, model_lo .. p) to
// the column scores of the keys sample_column_begin(p, left) <= j < sample_column_end(p, shift):
// all its keys (shift 0) or, with window_mass_counts, only those outside its window (shift w:
// j <= p - w, the stripe limit).
SAMPLEATTN_HOST_DEVICE constexpr int64_t sample_column_shift(int64_t w, bool window_mass_counts) {
  return window_mass_counts ? w : 0;
}
SAMPLEATTN_HOST_DEVICE constexpr int64_t sample_column_begin(int64_t p, int64_t left) { return model_lo(p, left); }
SAMPLEATTN_HOST_DEVICE constexpr int64_t sample_column_end(int64_t p, int64_t shift) { return p - shift + 1; }

// ---- Stage 2: the target and the stripe count -------------------------------------------------

// The score the kept columns must reach: alpha * T, T = sampled rows x heads of the set; with
// window_mass_counts the window mass T - outside (outside = the sum of all column scores, which
// then count only outside the windows) is already covered.
SAMPLEATTN_HOST_DEVICE constexpr double selection_target(float alpha, double total, bool window_mass_counts,
                                                         double outside) {
  double target = static_cast<double>(alpha) * total;
  if (window_mass_counts) target -= total - outside;
  return target;
}

// The first min(sink_tokens, k_len) keys are always kept.
SAMPLEATTN_HOST_DEVICE constexpr int64_t sink_count(int64_t sink_tokens, int64_t k_len) {
  const int64_t s = sink_tokens > 0 ? sink_tokens : 0;
  return s < k_len ? s : k_len;
}

// Kept columns: `sinks` sink keys and the best `ranked` of the others, in score order.
struct StripeCount {
  int64_t sinks;
  int64_t ranked;
};

// Clamps the count (sinks included) to [min_stripes, max_stripes] (max_stripes = 0: no upper
// bound): below the minimum, more ranked columns are taken (at most all `rankable` of them); above
// the maximum, the sinks come first and then the best ranked ones. Never more than k_len.
SAMPLEATTN_HOST_DEVICE constexpr StripeCount clamp_stripe_count(int64_t sinks, int64_t ranked, int64_t rankable,
                                                                int64_t min_stripes, int64_t max_stripes) {
  StripeCount c{sinks, ranked};
  if (c.sinks + c.ranked < min_stripes) c.ranked = min_stripes - c.sinks < rankable ? min_stripes - c.sinks : rankable;
  if (max_stripes > 0 && c.sinks + c.ranked > max_stripes) {
    c.sinks = c.sinks < max_stripes ? c.sinks : max_stripes;
    c.ranked = max_stripes - c.sinks;
  }
  return c;
}

// ---- Pair counts and the dense-head rule ------------------------------------------------------
// Exact integers, so every backend decides max_density alike.

// Query-key pairs of a causal sequence: query i sees q_offset + i + 1 keys.
SAMPLEATTN_HOST_DEVICE constexpr int64_t causal_pairs(int64_t q_len, int64_t k_len) {
  return q_len * (k_len - q_len) + q_len * (q_len + 1) / 2;
}

// Pairs of the window band: the sum over the query positions p of min(w, p + 1).
SAMPLEATTN_HOST_DEVICE constexpr int64_t window_band_pairs(int64_t q_len, int64_t k_len, int64_t w) {
  // Positions p in [first, k_len): p + 1 while p + 1 < w, then w.
  const int64_t first = k_len - q_len, end = k_len;
  const int64_t ramp_end = w - 1 < first ? first : (end < w - 1 ? end : w - 1);  // p < w - 1
  const int64_t ramp = (ramp_end - first) * (first + 1 + ramp_end) / 2;
  return ramp + (end - ramp_end) * w;
}

// Pairs the model computes for a causal sequence: the sum over its query positions p of
// min(p, left) + 1 (causal_pairs without a model window). Densities are shares of it.
SAMPLEATTN_HOST_DEVICE constexpr int64_t model_pairs(int64_t q_len, int64_t k_len, int64_t left) {
  return left < 0 ? causal_pairs(q_len, k_len) : window_band_pairs(q_len, k_len, left + 1);
}

// Pairs of stripe column j: the queries at j + w <= p <= j + left (no upper bound without a model
// window; queries sit at q_offset .. k_len - 1).
SAMPLEATTN_HOST_DEVICE constexpr int64_t stripe_pairs_of(int64_t k_len, int64_t q_offset, int64_t w, int64_t left,
                                                         int64_t j) {
  const int64_t from = j + w > q_offset ? j + w : q_offset;
  const int64_t to = left >= 0 && j + left + 1 < k_len ? j + left + 1 : k_len;  // exclusive
  return to > from ? to - from : 0;
}

// The pairs a dense row at p (docs/ALGORITHM.md, step 5) adds to a mask of window w: every key the
// model shows it, model_lo .. p, less its window band and the `stripes_seen` stripes it sees.
SAMPLEATTN_HOST_DEVICE constexpr int64_t dense_row_added_pairs(int64_t p, int64_t left, int64_t w,
                                                               int64_t stripes_seen) {
  const int64_t lo = model_lo(p, left);
  const int64_t band_lo = window_lo(p, w) > lo ? window_lo(p, w) : lo;
  return (band_lo - lo) - stripes_seen;
}

// The max_density rule: a mask computing more than max_density of the model's pairs runs dense.
SAMPLEATTN_HOST_DEVICE constexpr bool mask_runs_dense(int64_t mask_pairs, int64_t model_pairs, float max_density) {
  return static_cast<double>(mask_pairs) > static_cast<double>(max_density) * static_cast<double>(model_pairs);
}

// The look at every row (docs/ALGORITHM.md, step 5) costs about an eighth of the dense attention
// per pair it reads (int8 products against f32 dense on a VNNI core: 0.65 / 5.1 ns, docs/PERF.md)
// and reads every pair of a sparse head: its cost in the max_density rule, as pairs.
inline constexpr int64_t kLookCostDivisor = 8;
// The stripes the look leaves out of a row's outside keys do not depend on alpha (so the rows it
// sends dense do not either, and the error never rises with alpha): the validation's passing
// prefix or the prefix this alpha keeps (the paper's default), whichever is longer.
inline constexpr float kLookAlpha = 0.95f;
SAMPLEATTN_HOST_DEVICE constexpr int64_t look_cost_pairs(int64_t model_pairs) {
  return model_pairs / kLookCostDivisor;
}
// The look's margin in log2 units (the scores'), one f32 product: both backends compare with it.
SAMPLEATTN_HOST_DEVICE constexpr float look_bar_log2(float look) { return look * kLog2e; }
// The look's probe. A sparse head's rows from its first past the band on (n of them) are looked
// at in two passes: first the probe, every stride-th row counted back from the last (the last
// among them), then the head's other rows, only when the probe flagged at least one of its rows in
// kLookProbeShare (and at least one). The stride is n / kLookProbeRows within [1,
// kLookProbeStride]: a head of fewer than 2,048 such rows is looked at whole, one of 8,192 or
// more through an eighth of its rows. Rows that fetch far keys come in the hundreds where they
// matter (0.5-1.5% of a head's rows on the model of docs/ACCURACY.md, 0.5% in the far mix of the
// generator), 5-15x that share, so the probe meets them; a head without them costs an eighth of
// the look, and keeps the rows the probe flagged. A head whose rows are flagged at a share of 1 in
// 1,000 loses at most about sqrt(0.001) = 3% of its output's norm even if those rows lose
// everything (about 0.5% at their usual loss). Rows, not blocks of rows: such rows come in
// clusters (a copied passage), which a probe of whole blocks meets too seldom (on the model, a
// head with 68 flagged rows showed 2 in its probe blocks, and ran at 2.4% instead of 0.04%).
// Both backends look at the rows in blocks of kLookBlockRows rows of one stride (sparse_plan.h,
// look_row_blocks).
inline constexpr int kLookBlockRows = 64;
inline constexpr int64_t kLookProbeRows = 1024;
inline constexpr int64_t kLookProbeStride = 8;
inline constexpr int64_t kLookProbeShare = 1024;
SAMPLEATTN_HOST_DEVICE constexpr int64_t look_probe_stride(int64_t rows) {
  const int64_t stride = rows / kLookProbeRows;
  return stride < 1 ? 1 : (stride > kLookProbeStride ? kLookProbeStride : stride);
}
// Whether row j (0 = the head's first row past its band) of its n such rows is in the probe.
SAMPLEATTN_HOST_DEVICE constexpr bool look_probe_row(int64_t j, int64_t n) {
  return (n - 1 - j) % look_probe_stride(n) == 0;
}
// Whether a head whose probe looked at `rows` rows and flagged `flagged` of them is looked at whole.
SAMPLEATTN_HOST_DEVICE constexpr bool look_whole_head(int64_t flagged, int64_t rows) {
  return flagged > 0 && flagged * kLookProbeShare >= rows;
}

// ---- Validation (docs/ALGORITHM.md, "Validation") ---------------------------------------------
// A share r_val of the query rows, single rows disjoint from the sampled blocks, checks the mask:
// their kept mass is measured at candidate stripe counts, the ranked prefix lengths of a grid
// over all `ranked` columns, and the head takes the smallest grid count within the cost cap at
// which they pass the bar (or alpha's count, when larger); none within the cap: dense. The grid
// depends on neither alpha nor the cap, so a head's mask never shrinks as alpha grows and does
// not depend on max_density while it stays sparse.

// Candidate stripe counts: grid point g (0 .. kValidationGrid - 1) of `ranked` columns is
// ceil(g * ranked / (kValidationGrid - 1)).
inline constexpr int kValidationGrid = 128;
// Masses a validation row keeps per query head, on both backends: the most
// ValidationLayout::row_masses() can be (core/validation.h: bucket 0, and at most the grid points
// and alpha's count, kValidationGrid + 1 ranked buckets).
inline constexpr int kValidationMassStride = kValidationGrid + 2;
SAMPLEATTN_HOST_DEVICE constexpr int64_t validation_grid_point(int64_t g, int64_t ranked) {
  return (g * ranked + (kValidationGrid - 2)) / (kValidationGrid - 1);
}

// The quantile the validation rows must pass (the 5th percentile), and the index of the q
// quantile among n ascending values: floor(q * (n - 1)).
inline constexpr double kValidationQuantile = 0.05;
SAMPLEATTN_HOST_DEVICE constexpr int64_t quantile_index(double q, int64_t n) {
  return n > 0 ? static_cast<int64_t>(q * static_cast<double>(n - 1)) : 0;
}

// Validation rows of a sequence: n = min(val_rows, ceil(r_val * q_len), unsampled) of its
// `unsampled` rows outside the sampled blocks (none when either bound is 0). The statistic needs a
// number of rows (val_rows), not a share of them; r_val caps what short sequences pay ...
SAMPLEATTN_HOST_DEVICE constexpr int64_t validation_row_count(double r_val, int64_t val_rows, int64_t q_len,
                                                              int64_t unsampled) {
  const int64_t by_ratio = r_val > 0 ? ceil_to_int64(r_val * static_cast<double>(q_len)) : 0;
  int64_t n = val_rows > 0 ? val_rows : 0;
  n = by_ratio < n ? by_ratio : n;
  return unsampled < n ? unsampled : n;
}
// ... row k (0 .. n - 1) being the unsampled row of rank floor((2k + 1) * unsampled / (2n)),
// evenly spread.
SAMPLEATTN_HOST_DEVICE constexpr int64_t validation_rank(int64_t k, int64_t n, int64_t unsampled) {
  return (2 * k + 1) * unsampled / (2 * n);
}

static_assert(kValidationGrid + 1 < kBucketUnused, "bucket ids 1 .. kValidationGrid + 1 must fit below kBucketUnused");

}  // namespace sampleattn
