#include "cli/bench_accuracy.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "reference/oracle.h"
#include "workload/attention_profile.h"
#include "workload/metrics.h"

namespace sampleattn::cli {
namespace {

reference::TensorRef tensor_ref(const workload::Tensor3& t) {
  return {t.data(), t.dtype, t.token_stride(), t.head_stride()};
}

}  // namespace

double rel_l2_against_oracle(const BenchInputs& in, const workload::Tensor3& o, int per_head) {
  reference::Call call;
  call.q = tensor_ref(in.q);
  call.k = tensor_ref(in.k);
  call.v = tensor_ref(in.v);
  call.head_dim = static_cast<int>(in.q.dim);
  call.num_q_heads = static_cast<int>(in.q.heads);
  call.num_kv_heads = static_cast<int>(in.k.heads);
  call.sequences = {{0, in.q.seq, 0, in.k.seq}};  // q: the last q.seq of the k.seq positions
  call.scale = 1.0f / std::sqrt(static_cast<float>(call.head_dim));  // the library's default
  call.causal = true;
  call.head_dim_v = static_cast<int>(in.v.dim);
  in.model.apply_to(&call);
  std::vector<std::pair<int64_t, int>> rows;
  const int64_t n = in.q.seq;
  for (int h = 0; h < call.num_q_heads; ++h) {
    for (int i = 0; i < per_head; ++i) {
      const int64_t row = (n - 1) - (n - 1) * i / per_head;
      if (rows.empty() || rows.back() != std::make_pair(row, h)) rows.emplace_back(row, h);
    }
  }
  const auto oracle = reference::attention_rows(call, rows);
  double num = 0, den = 0;
  const int64_t dv = in.v.dim;
  for (size_t r = 0; r < rows.size(); ++r) {
    const float* got = static_cast<const float*>(o.data()) + (rows[r].first * in.q.heads + rows[r].second) * dv;
    for (int64_t c = 0; c < dv; ++c) {
      const double d = got[c] - oracle[r].o[c];
      num += d * d;
      den += oracle[r].o[c] * oracle[r].o[c];
    }
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

Status add_kept_mass(const BenchInputs& in, const Measured& sparse, BenchRow* row) {
  const int heads = static_cast<int>(in.q.heads);
  const int64_t seq = in.q.seq;
  const std::vector<workload::HeadMask> masks =
      workload::masks_from_stats(sparse.heads.data(), sparse.stripe_offsets.data(), sparse.stripes.data(), heads, seq,
                                 in.model.window_left);
  workload::KeptMassResult kept;
  SAMPLEATTN_RETURN_IF_ERROR(workload::kept_mass(in.q, in.k, 1.0 / std::sqrt(static_cast<double>(in.q.dim)), masks,
                                                 workload::strided_rows(seq, 128), &kept, in.model));
  row->min_cra = kept.min;
  row->head_cra_min = kept.head_min;
  row->cra_p1 = kept.p1;
  row->cra_mean = kept.mean;
  return Status::ok();
}

Status add_error_against_dense(const BenchInputs& in, const Measured& sparse, const Measured& dense, BenchRow* row) {
  workload::RelErrorResult e;
  SAMPLEATTN_RETURN_IF_ERROR(workload::rel_l2_error(sparse.o, dense.o, {}, &e));
  row->rel_l2 = e.overall;
  row->rel_l2_median = e.median;
  row->rel_l2_p90 = e.p90;
  row->rel_l2_max = e.max;
  row->head_rel_l2 = e.per_head;
  if (!in.needles.empty()) {
    workload::NeedleResult ns, nd;
    // Only the needles the model's window shows its queries count (all, without a window).
    const int64_t left = in.model.window_left;
    if (workload::needle_recall(sparse.o, in.needles, 0.5, &ns, left).is_ok() &&
        workload::needle_recall(dense.o, in.needles, 0.5, &nd, left).is_ok() && ns.counted > 0) {
      row->needle_recall = ns.recall;
      row->needle_recall_dense = nd.recall;
      row->needles_visible = ns.counted;
    }
  }
  return Status::ok();
}

}  // namespace sampleattn::cli
