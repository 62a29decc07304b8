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

// The far mix's rare rows among the queries (generator.h): whether each row's mask keeps its far
// key (the oracle's visibility rule: the window band, or a stripe the row sees), and the sparse
// output's error over them.
void add_far_rows(const BenchInputs& in, const Measured& sparse, const Measured& dense, BenchRow* row) {
  const int heads = static_cast<int>(in.q.heads);
  if (static_cast<int>(in.far_rows.size()) != heads) return;
  const int64_t q_len = in.q.seq, k_len = in.k.seq, first = k_len - q_len;
  const std::vector<workload::HeadMask> masks =
      workload::masks_from_stats(sparse.heads.data(), sparse.stripe_offsets.data(), sparse.stripes.data(), heads, k_len,
                                 in.model.window_left, sparse.dense_row_offsets.data(),
                                 sparse.dense_row_indices.data(), first);
  const int64_t dv = in.v.dim;
  const auto* os = static_cast<const float*>(sparse.o.data());
  const auto* od = static_cast<const float*>(dense.o.data());
  int64_t count = 0, kept = 0;
  double num = 0, den = 0;
  row->head_far_rel_l2.assign(static_cast<size_t>(heads), -1.0);
  for (int h = 0; h < heads; ++h) {
    const workload::HeadMask& m = masks[static_cast<size_t>(h)];
    double hn = 0, hd = 0;
    for (const workload::FarRow& f : in.far_rows[static_cast<size_t>(h)]) {
      // Rows before this chunk's queries, and far keys outside the model's window, do not count.
      if (f.row < first || (in.model.window_left >= 0 && f.row - f.key > in.model.window_left)) continue;
      ++count;
      kept += reference::visible(true, &m, f.row, f.key, in.model.window_left);
      const int64_t at = ((f.row - first) * heads + h) * dv;
      for (int64_t c = 0; c < dv; ++c) {
        const double e = static_cast<double>(os[at + c]) - od[at + c];
        hn += e * e;
        hd += static_cast<double>(od[at + c]) * od[at + c];
      }
    }
    if (hd > 0) row->head_far_rel_l2[static_cast<size_t>(h)] = std::sqrt(hn / hd);
    num += hn;
    den += hd;
  }
  if (count == 0) {
    row->head_far_rel_l2.clear();
    return;
  }
  row->far_rows = count;
  row->far_kept = static_cast<double>(kept) / static_cast<double>(count);
  row->far_rel_l2 = std::sqrt(num / std::max(den, 1e-300));
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
  const int64_t seq = in.q.seq;  // the queries: the last seq of the in.k.seq positions
  const std::vector<workload::HeadMask> masks =
      workload::masks_from_stats(sparse.heads.data(), sparse.stripe_offsets.data(), sparse.stripes.data(), heads,
                                 in.k.seq, in.model.window_left, sparse.dense_row_offsets.data(),
                                 sparse.dense_row_indices.data(), in.k.seq - seq);
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
    // A chunk's output holds the last q.seq positions: needles asked before them do not count.
    const int64_t left = in.model.window_left, first = in.k.seq - in.q.seq;
    if (workload::needle_recall(sparse.o, in.needles, 0.5, &ns, left, first).is_ok() &&
        workload::needle_recall(dense.o, in.needles, 0.5, &nd, left, first).is_ok() && ns.counted > 0) {
      row->needle_recall = ns.recall;
      row->needle_recall_dense = nd.recall;
      row->needles_visible = ns.counted;
    }
  }
  add_far_rows(in, sparse, dense, row);
  return Status::ok();
}

}  // namespace sampleattn::cli
