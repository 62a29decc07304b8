#include "cuda/validation.h"

#include <algorithm>
#include <cstring>

#include "core/mask.h"
#include "cuda/cuda_errors.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {

static_assert(kValidationMassStride == kValidationGrid + 2, "a row's masses: [0] and at most kValidationGrid + 1 buckets");

Status decide_stripes(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const HostStaging& hs,
                      const DeviceInputs& in, cudaStream_t stream, CallDecisions* out) {
  const size_t num_sets = cl.sets.size();
  const int hps = cl.heads_per_set;
  out->decision.assign(num_sets, SAMPLEATTN_DECISION_SPARSE);
  out->alpha_stripes.assign(num_sets, 0);
  out->heads.assign(num_sets * hps, HeadValidation{});
  if (num_sets == 0) return Status::ok();

  // The rankings and alpha's counts.
  int32_t* keep = hs.at<int32_t>(cl.h_keep);
  const int32_t* ranked = hs.at<int32_t>(cl.h_ranked);
  SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (stripe counts)",
                        cudaMemcpyAsync(keep, ws.at<int32_t>(cl.o_keep), sizeof(int32_t) * 2 * num_sets,
                                        cudaMemcpyDeviceToHost, stream));
  if (cl.total_items > 0) {
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (column rankings)",
                          cudaMemcpyAsync(hs.at<int32_t>(cl.h_ranked), ws.at<int32_t>(cl.o_values_out),
                                          sizeof(int32_t) * cl.total_items, cudaMemcpyDeviceToHost, stream));
  }
  SAMPLEATTN_CUDA_CHECK("cudaStreamSynchronize (rankings)", cudaStreamSynchronize(stream));

  // Each set's layout: the cost cap and, with validation rows, the buckets of its ranking.
  std::vector<ValidationLayout> layouts(num_sets);
  uint8_t* buckets = hs.at<uint8_t>(cl.h_buckets);
  int32_t* active = hs.at<int32_t>(cl.h_set_active);
  bool any_active = false;
  for (int s : cl.sampled_seqs) {
    const SeqDesc& sd = cl.seqs[s];
    const Sequence& seq = p.sequences[s];
    for (int set = sd.set_base; set < sd.set_base + cl.sets_per_seq; ++set) {
      const SelectionSet& ss = cl.sets[set];
      ValidationLayout& layout = layouts[set];
      layout = plan_validation(p, seq, sd.window, ranked + ss.key_begin, ss.k_len - ss.sinks,
                               StripeCount{keep[2 * set], keep[2 * set + 1]}, sd.val_count > 0);
      active[set] = layout.bucket.empty() ? 0 : 1;
      if (!layout.bucket.empty()) {
        std::memcpy(buckets + cl.set_offset[set], layout.bucket.data(), layout.bucket.size());
        std::vector<uint8_t>().swap(layout.bucket);  // on the device now; the bounds stay
        any_active = true;
      }
    }
  }

  // The validation rows' masses per bucket.
  const uint32_t* masses = hs.at<uint32_t>(cl.h_masses);
  if (any_active) {
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (bucket ids)",
                          cudaMemcpyAsync(ws.at<uint8_t>(cl.o_buckets), buckets, static_cast<size_t>(cl.total_columns),
                                          cudaMemcpyHostToDevice, stream));
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (validated sets)",
                          cudaMemcpyAsync(ws.at<int32_t>(cl.o_set_active), active, sizeof(int32_t) * num_sets,
                                          cudaMemcpyHostToDevice, stream));
    const size_t mass_bytes = sizeof(uint32_t) * static_cast<size_t>(cl.total_masses);
    SAMPLEATTN_CUDA_CHECK("cudaMemsetAsync (validation masses)",
                          cudaMemsetAsync(ws.at<uint32_t>(cl.o_masses), 0, mass_bytes, stream));
    SAMPLEATTN_CUDA_CHECK("validation mass kernel",
                          launch_validation(p.head_dim, cl.bf16, validation_args(p, cl, ws, in), stream));
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (validation masses)",
                          cudaMemcpyAsync(hs.at<uint32_t>(cl.h_masses), ws.at<uint32_t>(cl.o_masses), mass_bytes,
                                          cudaMemcpyDeviceToHost, stream));
    SAMPLEATTN_CUDA_CHECK("cudaStreamSynchronize (validation masses)", cudaStreamSynchronize(stream));
  }

  // The decision per set, and the counts the device's stripe lists and attention follow.
  int32_t* counts = hs.at<int32_t>(cl.h_counts);
  int32_t* dense = hs.at<int32_t>(cl.h_dense);
  const ValidationBar bar{p.sample.min_kept, p.sample.max_lost};
  std::vector<float> set_masses;
  for (int s : cl.sampled_seqs) {
    const SeqDesc& sd = cl.seqs[s];
    const int64_t nv = sd.val_count;
    for (int set = sd.set_base; set < sd.set_base + cl.sets_per_seq; ++set) {
      const ValidationLayout& layout = layouts[set];
      set_masses.clear();
      if (active[set] != 0) {
        // [head][row][stride] of the set's heads, fixed point to float.
        const int first_head = (set - sd.set_base) * hps;
        const uint32_t* m = masses + sd.mass_offset + static_cast<int64_t>(first_head) * nv * kValidationMassStride;
        set_masses.resize(static_cast<size_t>(hps) * nv * kValidationMassStride);
        for (size_t i = 0; i < set_masses.size(); ++i) {
          set_masses[i] = static_cast<float>(static_cast<double>(m[i]) / kValidationMassOne);
        }
      }
      const ValidationDecision d =
          decide_validation(layout, set_masses.data(), kValidationMassStride, hps, active[set] != 0 ? nv : 0, bar,
                            out->heads.data() + static_cast<size_t>(set) * hps);
      out->decision[set] = d.decision;
      out->alpha_stripes[set] = layout.sinks + layout.alpha_ranked;
      keep[2 * set] = d.dense() ? 0 : static_cast<int32_t>(layout.sinks);
      keep[2 * set + 1] = d.dense() ? 0 : static_cast<int32_t>(d.ranked);
      counts[set] = keep[2 * set] + keep[2 * set + 1];
      dense[set] = d.dense() ? 1 : 0;
    }
  }
  SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (decided counts)",
                        cudaMemcpyAsync(ws.at<int32_t>(cl.o_keep), keep, sizeof(int32_t) * 2 * num_sets,
                                        cudaMemcpyHostToDevice, stream));
  SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (stripe counts)",
                        cudaMemcpyAsync(ws.at<int32_t>(cl.o_counts), counts, sizeof(int32_t) * num_sets,
                                        cudaMemcpyHostToDevice, stream));
  SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (dense sets)",
                        cudaMemcpyAsync(ws.at<int32_t>(cl.o_dense), dense, sizeof(int32_t) * num_sets,
                                        cudaMemcpyHostToDevice, stream));
  return Status::ok();
}

}  // namespace sampleattn::cuda
