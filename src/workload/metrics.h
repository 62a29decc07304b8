// Accuracy metrics of a method against exact dense attention on the same inputs, all in double:
// relative L2 error of O, the true kept attention mass (CRA) of a sparse mask, its density, and
// needle recall.
#pragma once

#include <cstdint>
#include <vector>

#include "core/mask.h"
#include "core/status.h"
#include "reference/oracle.h"
#include "workload/generator.h"
#include "workload/model_variants.h"
#include "workload/npy.h"

namespace sampleattn::workload {

using reference::HeadMask;  // window + ascending stripes (docs/ALGORITHM.md)

struct RelErrorResult {
  std::vector<double> per_head;  // ||O_h - R_h|| / ||R_h|| over the rows
  double overall = 0;            // over all heads together
  double median = 0, p90 = 0, max = 0;  // over heads
};

// Relative L2 error of `o` against `reference` (same shape; any dtypes) over the listed tokens
// (empty: all). A head whose reference is all zero counts its error as ||O_h||.
Status rel_l2_error(const Tensor3& o, const Tensor3& reference, const std::vector<int64_t>& tokens,
                    RelErrorResult* result);

struct KeptMassResult {
  // Per query head: exact softmax mass inside the mask over the sampled rows.
  std::vector<double> head_min, head_p1, head_mean;
  double min = 1, p1 = 1, mean = 1;  // over all (head, row) pairs
  int64_t rows = 0;                  // rows per head evaluated
};

// Kept mass (CRA) for one sequence: query i (of q_len, the last q_len of k_len positions) sees
// keys 0..p, p = k_len - q_len + i; the mask of head h keeps max(0, p-w+1)..p plus stripes
// j <= p - w. `rows` are query indices 0..q_len-1 (use strided_rows). masks: one per query head.
// Q/K of any dtype: [q_len, Hq, d] and [k_len, Hkv, d].
// With a model's variants, each row's distribution is the model's (model_row_probabilities: the
// keys its window shows, capped and ALiBi-biased scores, the sink left out: a share of the key
// mass), and a stripe counts only where the model shows it (stripe_visible with window_left).
Status kept_mass(const Tensor3& q, const Tensor3& k, double scale, const std::vector<HeadMask>& masks,
                 const std::vector<int64_t>& rows, KeptMassResult* result, const ModelVariants& model = {});

// Computed query-key pairs over the pairs the model computes (causal, within its window when
// window_left >= 0) for one head (q_len queries, the last of k_len).
double mask_density(const HeadMask& mask, int64_t q_len, int64_t k_len, int64_t window_left = kNoModelWindow);
// The same over all heads (pairs summed).
double mask_density(const std::vector<HeadMask>& masks, int64_t q_len, int64_t k_len,
                    int64_t window_left = kNoModelWindow);

// Masks from the C API's statistics (one sequence, heads in order): a dense head gets a window
// of everything the model shows (k_len, or window_left + 1 keys). stripe_offsets has num_heads + 1
// entries; so has dense_row_offsets when given (the look's dense rows, query indices, at
// positions q_offset + index).
std::vector<HeadMask> masks_from_stats(const sampleattn_head_stats* head_stats, const int32_t* stripe_offsets,
                                       const int32_t* stripes, int num_heads, int64_t k_len,
                                       int64_t window_left = kNoModelWindow, const int32_t* dense_row_offsets = nullptr,
                                       const int32_t* dense_row_indices = nullptr, int64_t q_offset = 0);

struct NeedleResult {
  std::vector<double> cosine;   // per needle: cos(O row, planted value direction)
  std::vector<char> retrieved;  // cosine > threshold
  std::vector<char> visible;    // the model shows the needle's key to its query
  int64_t counted = 0;          // visible needles: the ones recall counts
  double recall = 0;            // fraction of the visible ones retrieved (1 when none is visible)
};

// A needle counts as retrieved when the output row of its query points along its value
// direction: cosine > threshold (default 0.5). Why 0.5: the generator gives the needle about 75%
// of its query's attention and a value of the norm of a typical value row, so a retrieved needle
// gives a cosine near 0.9; a missed one leaves a mix of random Gaussian values whose cosine with
// a fixed direction is about N(0, 1/d) (|cos| < 0.5 at 4 sigma for d = 64). Half the mass on the
// needle is needed to pass.
// With a model window (window_left >= 0), a needle whose key is older than its query's window
// (key < query_token - window_left; one full sequence, so a token is its position) is invisible
// to the model: no attention can recall it, and recall counts only the visible ones.
// `o` holds the positions from q_offset on (a chunk of a prefill: its queries are the last o.seq of
// the sequence); needles asked at earlier positions are skipped (not counted, not listed).
Status needle_recall(const Tensor3& o, const std::vector<PlantedNeedle>& needles, double threshold,
                     NeedleResult* result, int64_t window_left = kNoModelWindow, int64_t q_offset = 0);

// Quantile (linear interpolation, q in [0, 1]) of values; 0 when empty.
double quantile(std::vector<double> values, double q);

}  // namespace sampleattn::workload
