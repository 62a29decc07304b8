// The mask SampleAttention chose for one call: per (sequence, query head), dense or a local
// window plus stripe columns (docs/ALGORITHM.md). Produced by a backend's stages 1 and 2, read by
// its sparse attention and by the statistics. The rules themselves live in core/mask.h; this is
// their form over a Problem and its sequences, shared by every backend.
#pragma once

#include <cstdint>
#include <vector>

#include "core/mask.h"
#include "core/problem.h"

namespace sampleattn {

struct HeadPlan {
  bool dense = true;
  int64_t window = 0;            // keys; k_len when dense
  std::vector<int32_t> stripes;  // ascending key positions (relative to the sequence)
  // Query rows (indices within the sequence's queries, ascending) that attend over every key they
  // see, as a dense head's rows do: rows whose far keys the window and stripes would miss.
  std::vector<int32_t> dense_rows;
  // The stripes the look leaves out of a row's outside keys (has_look_stripes; else `stripes`):
  // a prefix of the ranking that alpha plays no part in (kLookAlpha's or the validation's, the
  // longer), so the rows the look sends dense do not change with alpha while the stripes grow
  // with it (docs/ALGORITHM.md, step 5).
  std::vector<int32_t> look_stripes;
  bool has_look_stripes = false;
  float cra_min = 1.f;           // kept mass of the sampled rows (1 for dense heads)
  float cra_mean = 1.f;
  // Why the head runs as it does, the stripes alpha alone chose, and the validation rows' kept
  // mass (core/validation.h; 1 for dense heads, -1 for a sparse head without validation rows).
  sampleattn_head_decision decision = SAMPLEATTN_DECISION_DENSE_METHOD;
  int64_t alpha_stripes = 0;
  float val_min = 1.f, val_p1 = 1.f, val_p5 = 1.f, val_mean = 1.f, val_lost_rms = 0.f;
};

struct SparsePlan {
  std::vector<HeadPlan> heads;  // [sequence * num_q_heads + head]
  double time_sampling_s = 0;
  double time_selection_s = 0;

  const HeadPlan& head(int sequence, int q_head, int num_q_heads) const {
    return heads[static_cast<size_t>(sequence) * num_q_heads + q_head];
  }
};

// Query-key pairs the model computes for a causal sequence (model_pairs of core/mask.h: causal,
// within the model's window).
inline int64_t model_pairs(const Problem& problem, const Sequence& s) {
  return model_pairs(s.q_len, s.k_len, problem.window_left);
}

// Every head dense (window = k_len): the plan of a call before, or without, stages 1 and 2.
void init_dense_plan(const Problem& problem, SparsePlan* plan);

// Sets a sparse head's cra_min and cra_mean from the kept mass of its n sampled rows (each
// capped at 1).
void set_kept_mass(HeadPlan* head, const float* kept, int64_t n);

// Whether a sequence of a sample-method problem runs sparse (else it falls back to dense): not
// empty, not shorter than dense_below, and its model window (if any) wider than the local window.
bool sequence_is_sampled(const Problem& problem, const Sequence& seq);
// Why a sequence that is not sampled runs dense (DENSE_METHOD, DENSE_SHORT or DENSE_WINDOW).
sampleattn_head_decision dense_reason(const Problem& problem, const Sequence& seq);

// The sampled query rows of a sequence (local indices, ascending): the rows of the blocks
// sampled_block(t, nb, ns) of core/mask.h.
std::vector<int64_t> sampled_rows(const sampleattn_sample_params& params, int64_t q_len);

// The local window of a sampled sequence (window_size of core/mask.h over the model's span).
int64_t window_size(const Problem& problem, const Sequence& seq);

// The stripes visible to the query at position p: list indices [begin, end) of the stripes
// stripe_first(p, window_left) <= j <= p - window (core/mask.h).
struct StripeRun {
  int64_t begin = 0, end = 0;
};
StripeRun visible_stripes(const HeadPlan& plan, int64_t p, int64_t window_left);

// Query-key pairs the mask computes for sequence `seq` (all its queries, one head).
double computed_pairs(const Problem& problem, const Sequence& seq, const HeadPlan& plan);

// The parts of that count for a sampled (causal) sequence, exact integers (core/mask.h): the
// window band (window_band_pairs) and the stripes (stripe_pairs_of, within the model's window).
// Both backends decide max_density (mask_runs_dense) with these against model_pairs.
int64_t window_pairs(const Sequence& seq, int64_t window);
int64_t stripe_pairs(const Problem& problem, const Sequence& seq, int64_t window, const int32_t* stripes,
                     int64_t count);

// The look at every row (docs/ALGORITHM.md, step 5), the part both backends share. Whether a
// sparse head's mask (its dense rows included) with the look's own cost (look_cost_pairs) passes
// max_density (max_density 1: never): checked before the look, then with its dense rows.
bool look_runs_dense(const Problem& problem, const Sequence& seq, const HeadPlan& plan);
// A block of rows the look takes at once: `count` (<= kLookBlockRows) rows of one head, first,
// first + stride, ... (local query indices).
struct LookRowBlock {
  int64_t first;
  int32_t stride;
  int32_t count;
};
// The blocks of a head whose rows first .. end - 1 are looked at (core/mask.h, the probe): the
// probe's rows (look_probe_row) into `probe`, the others into `rest`, in blocks of rows of one
// stride (look_probe_stride: every row of a block is the stride-th after the one before).
void look_row_blocks(int64_t first, int64_t end, std::vector<LookRowBlock>* probe, std::vector<LookRowBlock>* rest);
// Makes a sparse head the look takes past max_density dense (SAMPLEATTN_DECISION_DENSE_LOOK), as a
// dense head reports itself, with the stripes alpha chose kept for the statistics.
void run_dense_look(const Sequence& seq, HeadPlan* plan);

// Fills the caller's stats (totals, per-head arrays, stripes) from a plan. plan may be null
// (everything dense).
void fill_stats(const Problem& problem, const SparsePlan* plan, sampleattn_stats* stats);

}  // namespace sampleattn
