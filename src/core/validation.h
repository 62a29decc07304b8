// Validation of a SampleAttention mask on rows that did not choose it (docs/ALGORITHM.md,
// "Validation"), the part shared by every backend. A backend ranks a selection set's columns
// (score descending, index ascending), calls plan_validation for the set's layout (the cost cap
// and the buckets of ranked columns), measures each validation row's mass per bucket with its own
// kernels (ValidationLayout::row_masses), and calls decide_validation, which picks the stripe
// count or dense. The rules (grid, quantile, rows) are core/mask.h's.
#pragma once

#include <cstdint>
#include <vector>

#include "core/mask.h"
#include "core/problem.h"
#include "sampleattn/sampleattn.h"

namespace sampleattn {

// The validation rows of a sequence (local query indices, ascending, none in a sampled block):
// validation_row_count / validation_rank of core/mask.h over the rows outside `sampled` (the
// ascending sampled rows, sampled_rows of core/sparse_plan.h).
std::vector<int64_t> validation_rows(const sampleattn_sample_params& params, int64_t q_len,
                                     const std::vector<int64_t>& sampled);

// One selection set's layout for validation.
struct ValidationLayout {
  int64_t sinks = 0;          // sink columns kept (0 .. sinks - 1), after the stripe-count clamp
  int64_t alpha_ranked = 0;   // ranked stripes alpha chose, after the clamp
  int64_t num_ranked = 0;     // the set's ranked columns (k_len minus the sinks)
  int64_t cap = 0;            // the most ranked stripes within max_density and max_stripes
  bool over_budget = false;   // alpha's own mask already passes max_density: the set runs dense
  // Ranked-stripe counts that bound the buckets, ascending and distinct: bounds[0] = 0, the grid
  // points validation_grid_point(g, num_ranked) up to the cap, and alpha_ranked; bucket b
  // (1-based) holds the ranked columns of rank [bounds[b - 1], bounds[b]).
  std::vector<int64_t> bounds;
  // Per column of the sequence: kBucketKept (a kept sink), its bucket 1 .. buckets(), or
  // kBucketUnused (ranked at or beyond the cap).
  std::vector<uint8_t> bucket;

  int buckets() const { return static_cast<int>(bounds.size()) - 1; }
  // Floats per validation row: [0] the mass always kept (the row's window band and the sinks it
  // sees), [b] the mass of the bucket-b columns the row sees as stripes (j <= p - window).
  int row_masses() const { return buckets() + 1; }
};

// The layout of a set: `ranked` are its non-sink columns in rank order (all k_len - sink_tokens
// of them), `kept` the count stage 2 chose (sinks and ranked, after clamp_stripe_count). The
// buckets are laid out only when the sequence has validation rows (with_rows).
ValidationLayout plan_validation(const Problem& problem, const Sequence& seq, int64_t window, const int32_t* ranked,
                                 int64_t num_ranked, StripeCount kept, bool with_rows);

// The parts of plan_validation that do not read the ranking, shared with the sharded selection
// (core/sharded_selection.h): the pairs of the window band and the kept sinks, the most ranked
// stripes max_stripes allows, and the bucket bounds of a layout whose num_ranked, cap and
// alpha_ranked are set.
int64_t mask_base_pairs(const Problem& problem, const Sequence& seq, int64_t window, int64_t sinks);
int64_t most_ranked_stripes(const sampleattn_sample_params& s, int64_t sinks, int64_t num_ranked);
void set_validation_bounds(ValidationLayout* layout);

// The validation figures of one head at the chosen count.
struct HeadValidation {
  float min = -1.f, p1 = -1.f, p5 = -1.f, mean = -1.f;  // -1: no validation rows
  float rms_lost = -1.f;                                  // sqrt(mean (1 - kept)^2)
};

// What the validation rows must show at a stripe count, per head: 5th percentile of kept mass
// >= min_kept and root-mean-square lost mass <= max_lost.
struct ValidationBar {
  float min_kept = 0.f;
  float max_lost = 1.f;
};

struct ValidationDecision {
  sampleattn_head_decision decision = SAMPLEATTN_DECISION_SPARSE;
  int64_t ranked = 0;  // ranked stripes to keep (sparse decisions)
  // The smallest grid count within the cap that passes the bar (alpha plays no part in it); -1
  // when the set had no validation rows or none passed.
  int64_t passing = -1;
  bool dense() const {
    return decision != SAMPLEATTN_DECISION_SPARSE && decision != SAMPLEATTN_DECISION_SPARSE_WIDENED;
  }
};

// Picks the set's stripe count from its validation rows' masses, `masses` being
// [head][row][row_stride] in fixed point (core/validation_units.h, kValidationMassOne; the first
// layout.row_masses() of each row's used) for the set's
// `heads` query heads and `rows` rows, and fills
// per_head[heads] with the figures at that count (left at -1 when dense or without rows). The
// smallest grid count at which every head passes the bar, or alpha's count when larger; dense
// when no grid count within the cap passes.
ValidationDecision decide_validation(const ValidationLayout& layout, const uint32_t* masses, int64_t row_stride,
                                     int heads, int64_t rows, ValidationBar bar, HeadValidation* per_head);

// The ascending stripe list of a sparse decision: the kept sinks and the first `ranked` ranked.
std::vector<int32_t> decided_stripes(const ValidationLayout& layout, const int32_t* ranked_columns,
                                     int64_t ranked);

}  // namespace sampleattn
