#include "cuda/results.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/sparse_plan.h"
#include "cuda/cuda_errors.h"

namespace sampleattn::cuda {

Status collect_results(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const CallDecisions& decided,
                       SparsePlan* plan) {
  const int hq = p.num_q_heads;
  init_dense_plan(p, plan);
  if (!cl.sampled || p.total_q == 0) return Status::ok();
  std::vector<int32_t> counts(cl.sets.size());
  SAMPLEATTN_CUDA_CHECK("cudaMemcpy (stripe counts)",
                        cudaMemcpy(counts.data(), ws.at<int32_t>(cl.o_counts), sizeof(int32_t) * counts.size(),
                                   cudaMemcpyDeviceToHost));
  std::vector<int32_t> dense(cl.sets.size());
  SAMPLEATTN_CUDA_CHECK("cudaMemcpy (dense sets)",
                        cudaMemcpy(dense.data(), ws.at<int32_t>(cl.o_dense), sizeof(int32_t) * dense.size(),
                                   cudaMemcpyDeviceToHost));
  std::vector<float> kept(static_cast<size_t>(hq) * cl.total_rows);
  SAMPLEATTN_CUDA_CHECK("cudaMemcpy (kept mass)",
                        cudaMemcpy(kept.data(), ws.at<float>(cl.o_kept), sizeof(float) * kept.size(), cudaMemcpyDeviceToHost));
  for (int s : cl.sampled_seqs) {
    const SeqDesc& sd = cl.seqs[s];
    for (int h = 0; h < hq; ++h) {
      const int set = sd.set_base + (cl.per_group ? h / p.group : h);
      HeadPlan& hp = plan->heads[static_cast<size_t>(s) * hq + h];
      hp.decision = decided.decision[set];
      hp.alpha_stripes = decided.alpha_stripes[set];
      if (dense[set] != 0) continue;  // ran dense (cost or validation): the defaults describe it
      const size_t i = static_cast<size_t>(s) * hq + h;
      if (cl.look && decided.dense_look[i] != 0) {
        run_dense_look(p.sequences[s], &hp);  // the look made it dense
        continue;
      }
      if (cl.look) hp.dense_rows = decided.dense_rows[i];
      hp.dense = false;
      hp.window = sd.window;
      const HeadValidation& v = decided.heads[static_cast<size_t>(set) * cl.heads_per_set + (cl.per_group ? h % p.group : 0)];
      hp.val_min = v.min;
      hp.val_p1 = v.p1;
      hp.val_p5 = v.p5;
      hp.val_mean = v.mean;
      hp.val_lost_rms = v.rms_lost;
      hp.stripes.resize(counts[set]);
      if (counts[set] > 0) {
        SAMPLEATTN_CUDA_CHECK("cudaMemcpy (stripes)",
                              cudaMemcpy(hp.stripes.data(), ws.at<int32_t>(cl.o_stripes) + cl.set_offset[set],
                                         sizeof(int32_t) * counts[set], cudaMemcpyDeviceToHost));
      }
      set_kept_mass(&hp, kept.data() + static_cast<size_t>(h) * cl.total_rows + sd.row_begin, sd.row_count);
    }
  }
  return Status::ok();
}

}  // namespace sampleattn::cuda
