#include "cuda/validation.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <thread>

#include "core/mask.h"
#include "cuda/cuda_errors.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {

static_assert(kValidationMassStride == kValidationGrid + 2, "a row's masses: [0] and at most kValidationGrid + 1 buckets");

namespace {

// Host threads for the per-set steps: up to 16 when the call has many columns (a set's layout
// and decision take 40-60 us at 32K keys on a Zen 4 core; the device waits for them), else the
// caller's thread alone.
int set_threads(int sets, bool large) {
  const unsigned hw = std::thread::hardware_concurrency();
  return large ? std::min<int>(sets, std::clamp<int>(static_cast<int>(hw), 1, 16)) : 1;
}

}  // namespace

Status decide_stripes(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const HostStaging& hs,
                      const DeviceInputs& in, cudaStream_t stream, HostWorkers& workers, CallDecisions* out) {
  const size_t num_sets = cl.sets.size();
  const int hps = cl.heads_per_set;
  out->decision.assign(num_sets, SAMPLEATTN_DECISION_SPARSE);
  out->alpha_stripes.assign(num_sets, 0);
  out->heads.assign(num_sets * hps, HeadValidation{});
  out->stripes.assign(cl.look ? num_sets : 0, {});
  out->look_stripes.assign(cl.look ? num_sets : 0, {});
  out->dense_look.clear();
  out->dense_rows.clear();
  out->dense_blocks = 0;
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
  const int32_t* look_keep = hs.at<int32_t>(cl.h_look_keep);
  if (cl.look) {
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (look counts)",
                          cudaMemcpyAsync(hs.at<int32_t>(cl.h_look_keep), ws.at<int32_t>(cl.o_look_keep),
                                          sizeof(int32_t) * num_sets, cudaMemcpyDeviceToHost, stream));
  }
  SAMPLEATTN_CUDA_CHECK("cudaStreamSynchronize (rankings)", cudaStreamSynchronize(stream));

  // The sequence of each set; the sets run on several host threads when there are many columns.
  std::vector<int> seq_of(num_sets, 0);
  for (int s : cl.sampled_seqs) {
    for (int set = cl.seqs[s].set_base; set < cl.seqs[s].set_base + cl.sets_per_seq; ++set) seq_of[set] = s;
  }
  const bool large = cl.total_columns >= (int64_t{1} << 16);
  std::atomic<bool> out_of_memory_in_set{false};

  // Each set's layout: the cost cap and, with validation rows, the buckets of its ranking.
  std::vector<ValidationLayout> layouts(num_sets);
  uint8_t* buckets = hs.at<uint8_t>(cl.h_buckets);
  int32_t* active = hs.at<int32_t>(cl.h_set_active);
  const int threads = set_threads(static_cast<int>(num_sets), large);
  workers.run(static_cast<int>(num_sets), threads, [&](int set) {
    try {
      const SeqDesc& sd = cl.seqs[seq_of[set]];
      const SelectionSet& ss = cl.sets[set];
      ValidationLayout& layout = layouts[set];
      layout = plan_validation(p, p.sequences[seq_of[set]], sd.window, ranked + ss.key_begin, ss.k_len - ss.sinks,
                               StripeCount{keep[2 * set], keep[2 * set + 1]}, sd.val_count > 0);
      active[set] = layout.bucket.empty() ? 0 : 1;
      if (!layout.bucket.empty()) {
        std::memcpy(buckets + cl.set_offset[set], layout.bucket.data(), layout.bucket.size());
        std::vector<uint8_t>().swap(layout.bucket);  // on the device now; the bounds stay
      }
    } catch (const std::bad_alloc&) {
      out_of_memory_in_set = true;
      active[set] = 0;
    }
  });
  if (out_of_memory_in_set) return out_of_memory("out of memory while laying out the validation buckets");
  const bool any_active = std::any_of(active, active + num_sets, [](int32_t a) { return a != 0; });

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
  workers.run(static_cast<int>(num_sets), threads, [&](int set) {
    try {
      const SeqDesc& sd = cl.seqs[seq_of[set]];
      const int64_t nv = sd.val_count;
      const ValidationLayout& layout = layouts[set];
      // [head][row][stride] of the set's heads, in fixed point.
      const int first_head = (set - sd.set_base) * hps;
      const uint32_t* set_masses = masses + sd.mass_offset + static_cast<int64_t>(first_head) * nv * kValidationMassStride;
      const ValidationDecision d =
          decide_validation(layout, set_masses, kValidationMassStride, hps, active[set] != 0 ? nv : 0, bar,
                            out->heads.data() + static_cast<size_t>(set) * hps);
      if (cl.look && !d.dense()) {
        const int32_t* set_ranked = ranked + cl.sets[set].key_begin;
        out->stripes[set] = decided_stripes(layout, set_ranked, d.ranked);
        const int64_t left_out = std::max<int64_t>(d.passing, look_keep[set]);
        out->look_stripes[set] = left_out == d.ranked ? out->stripes[set] : decided_stripes(layout, set_ranked, left_out);
      }
      out->decision[set] = d.decision;
      out->alpha_stripes[set] = layout.sinks + layout.alpha_ranked;
      keep[2 * set] = d.dense() ? 0 : static_cast<int32_t>(layout.sinks);
      keep[2 * set + 1] = d.dense() ? 0 : static_cast<int32_t>(d.ranked);
      counts[set] = keep[2 * set] + keep[2 * set + 1];
      dense[set] = d.dense() ? 1 : 0;
    } catch (const std::bad_alloc&) {
      out_of_memory_in_set = true;
    }
  });
  if (out_of_memory_in_set) return out_of_memory("out of memory while deciding the stripe counts");
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
