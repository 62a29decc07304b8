#include "core/sparse_plan.h"

#include <algorithm>
#include <cstring>

namespace sampleattn {

void init_dense_plan(const Problem& problem, SparsePlan* plan) {
  const int hq = problem.num_q_heads;
  plan->heads.assign(problem.sequences.size() * hq, HeadPlan{});
  for (size_t s = 0; s < problem.sequences.size(); ++s) {
    const sampleattn_head_decision why = dense_reason(problem, problem.sequences[s]);
    for (int h = 0; h < hq; ++h) {
      plan->heads[s * hq + h].window = problem.sequences[s].k_len;
      plan->heads[s * hq + h].decision = why;
    }
  }
}

void set_kept_mass(HeadPlan* head, const float* kept, int64_t n) {
  float lo = 1.f;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float k = std::min(1.f, kept[i]);
    lo = std::min(lo, k);
    sum += k;
  }
  head->cra_min = lo;
  head->cra_mean = n > 0 ? static_cast<float>(sum / static_cast<double>(n)) : 1.f;
}

bool sequence_is_sampled(const Problem& problem, const Sequence& seq) {
  return sequence_runs_sampled(problem.method == SAMPLEATTN_METHOD_SAMPLE, seq.q_len, seq.k_len,
                               problem.sample.dense_below) &&
         !model_window_covered(problem.window_left, window_size(problem, seq));
}

sampleattn_head_decision dense_reason(const Problem& problem, const Sequence& seq) {
  if (problem.method != SAMPLEATTN_METHOD_SAMPLE) return SAMPLEATTN_DECISION_DENSE_METHOD;
  if (!sequence_runs_sampled(true, seq.q_len, seq.k_len, problem.sample.dense_below)) {
    return SAMPLEATTN_DECISION_DENSE_SHORT;
  }
  return SAMPLEATTN_DECISION_DENSE_WINDOW;
}

std::vector<int64_t> sampled_rows(const sampleattn_sample_params& params, int64_t q_len) {
  std::vector<int64_t> rows;
  if (q_len <= 0) return rows;
  const int64_t b = params.sample_block;
  const int64_t nb = sample_block_count(q_len, b);
  const int64_t ns = sampled_block_count(params.r_row, nb);
  std::vector<int64_t> blocks;
  for (int64_t t = 0; t < ns; ++t) blocks.push_back(sampled_block(t, nb, ns));
  std::sort(blocks.begin(), blocks.end());
  for (int64_t blk : blocks) {
    for (int64_t i = blk * b; i < std::min(q_len, (blk + 1) * b); ++i) rows.push_back(i);
  }
  return rows;
}

int64_t window_size(const Problem& problem, const Sequence& seq) {
  return window_size(static_cast<double>(problem.sample.r_w), problem.sample.min_window, problem.span(seq));
}

StripeRun visible_stripes(const HeadPlan& plan, int64_t p, int64_t window_left) {
  const int64_t first = stripe_first(p, window_left), last = stripe_limit(p, plan.window);
  const auto b = plan.stripes.begin(), e = plan.stripes.end();
  StripeRun run;
  run.end = std::upper_bound(b, e, last, [](int64_t v, int32_t s) { return v < s; }) - b;
  run.begin = first > 0 ? std::lower_bound(b, e, first, [](int32_t s, int64_t v) { return s < v; }) - b : 0;
  if (run.begin > run.end) run.begin = run.end;
  return run;
}

int64_t window_pairs(const Sequence& seq, int64_t window) { return window_band_pairs(seq.q_len, seq.k_len, window); }

int64_t stripe_pairs(const Problem& problem, const Sequence& seq, int64_t window, const int32_t* stripes,
                     int64_t count) {
  const int64_t first = seq.q_offset();
  int64_t pairs = 0;
  for (int64_t i = 0; i < count; ++i) {
    pairs += stripe_pairs_of(seq.k_len, first, window, problem.window_left, stripes[i]);
  }
  return pairs;
}

double computed_pairs(const Problem& problem, const Sequence& seq, const HeadPlan& plan) {
  if (plan.dense) return static_cast<double>(problem.causal ? model_pairs(problem, seq) : seq.q_len * seq.k_len);
  double pairs = static_cast<double>(window_pairs(seq, plan.window) +
                                     stripe_pairs(problem, seq, plan.window, plan.stripes.data(),
                                                  static_cast<int64_t>(plan.stripes.size())));
  // A dense row computes every key it sees instead of its band and visible stripes.
  for (const int32_t i : plan.dense_rows) {
    const int64_t p = seq.q_offset() + i;
    const StripeRun run = visible_stripes(plan, p, problem.window_left);
    pairs += static_cast<double>(dense_row_added_pairs(p, problem.window_left, plan.window, run.end - run.begin));
  }
  return pairs;
}

bool look_runs_dense(const Problem& problem, const Sequence& seq, const HeadPlan& plan) {
  const int64_t model = model_pairs(problem, seq);
  const auto pairs = static_cast<int64_t>(computed_pairs(problem, seq, plan));
  return problem.sample.max_density < 1.f &&
         mask_runs_dense(pairs + look_cost_pairs(model), model, problem.sample.max_density);
}

void look_row_blocks(int64_t first, int64_t end, std::vector<LookRowBlock>* probe, std::vector<LookRowBlock>* rest) {
  const int64_t n = end - first;
  if (n <= 0) return;
  const int64_t stride = look_probe_stride(n);
  // Class c: the rows j with (n - 1 - j) % stride == c, ascending; class 0 is the probe.
  for (int64_t c = 0; c < stride && c < n; ++c) {
    const int64_t j_last = n - 1 - c, j_first = j_last % stride;
    const int64_t rows = (j_last - j_first) / stride + 1;
    for (int64_t k = 0; k < rows; k += kLookBlockRows) {
      (c == 0 ? probe : rest)
          ->push_back({first + j_first + k * stride, static_cast<int32_t>(stride),
                       static_cast<int32_t>(std::min<int64_t>(kLookBlockRows, rows - k))});
    }
  }
}

void run_dense_look(const Sequence& seq, HeadPlan* plan) {
  const int64_t alpha_stripes = plan->alpha_stripes;
  *plan = HeadPlan{};
  plan->window = seq.k_len;
  plan->alpha_stripes = alpha_stripes;
  plan->decision = SAMPLEATTN_DECISION_DENSE_LOOK;
}

void fill_stats(const Problem& problem, const SparsePlan* plan, sampleattn_stats* stats) {
  if (stats == nullptr) return;
  const int hq = problem.num_q_heads;
  const int nseq = static_cast<int>(problem.sequences.size());
  double total_computed = 0, total_causal = 0, stripe_sum = 0;
  int sampled_heads = 0, dense_heads = 0;
  float cra_min = 1.f;
  float val_min = 1.f, val_p5 = 1.f;
  double val_mean_sum = 0;
  int validated = 0, widened = 0;
  bool any_validated_sparse = false;
  int64_t stripes_required = 0, dense_rows = 0;
  const HeadPlan dense_plan;
  for (int s = 0; s < nseq; ++s) {
    const Sequence& seq = problem.sequences[s];
    for (int h = 0; h < hq; ++h) {
      const HeadPlan& hp = plan ? plan->head(s, h, hq) : dense_plan;
      const double causal = computed_pairs(problem, seq, dense_plan);
      const double computed = computed_pairs(problem, seq, hp);
      total_causal += causal;
      total_computed += computed;
      if (hp.dense) {
        ++dense_heads;
      } else {
        ++sampled_heads;
        stripe_sum += static_cast<double>(hp.stripes.size());
        cra_min = std::min(cra_min, hp.cra_min);
        if (hp.decision == SAMPLEATTN_DECISION_SPARSE_WIDENED) ++widened;
      }
      if (hp.dense || hp.val_mean >= 0) {  // dense heads count 1; sparse ones without validation rows are left out
        val_min = std::min(val_min, hp.val_min);
        val_p5 = std::min(val_p5, hp.val_p5);
        val_mean_sum += hp.val_mean;
        ++validated;
        if (!hp.dense) any_validated_sparse = true;
      }
      stripes_required += static_cast<int64_t>(hp.stripes.size());
      dense_rows += static_cast<int64_t>(hp.dense_rows.size());
      if (stats->head_stats) {
        sampleattn_head_stats out{};
        out.window = static_cast<int32_t>(hp.dense ? seq.k_len : hp.window);
        out.num_stripes = static_cast<int32_t>(hp.stripes.size());
        out.dense = hp.dense ? 1 : 0;
        out.density = causal > 0 ? static_cast<float>(computed / causal) : 1.f;
        out.cra_min = hp.cra_min;
        out.cra_mean = hp.cra_mean;
        out.val_cra_min = hp.val_min;
        out.val_cra_p1 = hp.val_p1;
        out.val_cra_p5 = hp.val_p5;
        out.val_cra_mean = hp.val_mean;
        out.val_lost_rms = hp.val_lost_rms;
        out.decision = hp.decision;
        out.alpha_stripes = static_cast<int32_t>(hp.alpha_stripes);
        out.dense_rows = static_cast<int32_t>(hp.dense_rows.size());
        // The caller's array has its own element size (stats.head_stats_size, checked by the API).
        const size_t stride = stats->head_stats_size;
        std::memcpy(reinterpret_cast<char*>(stats->head_stats) + (static_cast<size_t>(s) * hq + h) * stride, &out,
                    std::min(stride, sizeof(out)));
      }
    }
  }
  stats->density = total_causal > 0 ? total_computed / total_causal : 1.0;
  stats->stripes_mean = sampled_heads > 0 ? stripe_sum / sampled_heads : 0.0;
  stats->cra_min = cra_min;
  stats->num_dense_heads = dense_heads;
  stats->num_heads_total = nseq * hq;
  stats->stripes_required = stripes_required;
  // Validation totals: over the heads that have the figure, when a sparse head had it (else -1:
  // nothing was validated, and an all-dense call needs none).
  const bool have = any_validated_sparse || (sampled_heads == 0 && validated > 0);
  stats->val_cra_min = have ? val_min : -1.f;
  stats->val_cra_p5 = have ? val_p5 : -1.f;
  stats->val_cra_mean = have ? static_cast<float>(val_mean_sum / validated) : -1.f;
  stats->num_widened_heads = widened;
  stats->num_dense_rows = dense_rows;
  stats->time_sampling_s = plan ? plan->time_sampling_s : 0;
  stats->time_selection_s = plan ? plan->time_selection_s : 0;
  if (stats->stripe_offsets != nullptr && stats->stripes != nullptr &&
      stats->stripe_capacity >= stripes_required) {
    int64_t at = 0;
    for (int s = 0; s < nseq; ++s) {
      for (int h = 0; h < hq; ++h) {
        stats->stripe_offsets[static_cast<size_t>(s) * hq + h] = static_cast<int32_t>(at);
        if (plan) {
          for (int32_t j : plan->head(s, h, hq).stripes) stats->stripes[at++] = j;
        }
      }
    }
    stats->stripe_offsets[static_cast<size_t>(nseq) * hq] = static_cast<int32_t>(at);
  }
  if (stats->dense_row_offsets != nullptr && stats->dense_row_indices != nullptr &&
      stats->dense_row_capacity >= dense_rows) {
    int64_t at = 0;
    for (int s = 0; s < nseq; ++s) {
      for (int h = 0; h < hq; ++h) {
        stats->dense_row_offsets[static_cast<size_t>(s) * hq + h] = static_cast<int32_t>(at);
        if (plan) {
          for (int32_t i : plan->head(s, h, hq).dense_rows) stats->dense_row_indices[at++] = i;
        }
      }
    }
    stats->dense_row_offsets[static_cast<size_t>(nseq) * hq] = static_cast<int32_t>(at);
  }
}

}  // namespace sampleattn
