// Stage 2's decision on the CUDA backend (core/validation.h, docs/ALGORITHM.md "Validation"): one
// host round trip between the device's ranking (launch_ranking) and its stripe lists
// (launch_stripes). The host reads each set's ranking and alpha's count, lays out the cost cap and
// the buckets with the shared plan_validation, has the mass kernel measure the validation rows per
// bucket, decides with the shared decide_validation, and writes the decided counts back: the same
// code as the CPU backend's, so both decide alike on the same rankings and masses.
#pragma once

#include <cuda_runtime_api.h>

#include <vector>

#include "core/problem.h"
#include "core/status.h"
#include "core/validation.h"
#include "cuda/device_workspace.h"
#include "cuda/host_workers.h"
#include "cuda/marshalling.h"

namespace sampleattn::cuda {

// What validation decided, for the statistics (results.h).
struct CallDecisions {
  std::vector<sampleattn_head_decision> decision;  // per set
  std::vector<int64_t> alpha_stripes;              // per set: the sinks and ranked stripes alpha chose
  std::vector<HeadValidation> heads;               // [set][heads_per_set]
  // The look (cl.look; cuda/look.h). Per set, sparse ones only: its stripes, and the stripes the
  // look leaves out (the longer of the validation's passing prefix and kLookAlpha's, as on the
  // CPU, cpu/sampling.cpp).
  std::vector<std::vector<int32_t>> stripes, look_stripes;
  // Per (sequence, query head): the look made the head dense (DENSE_LOOK); its dense rows.
  std::vector<uint8_t> dense_look;
  std::vector<std::vector<int32_t>> dense_rows;
  int64_t dense_blocks = 0;  // blocks of the dense-row pass (kDenseRows)
};

// After launch_ranking on `stream`: decides every set's stripe count or dense (validation masses
// measured on the device) and writes the device's keep (the decided counts), counts and dense
// flags, so that launch_stripes and the attention run the decided masks; with the look, keeps
// every sparse set's stripes and left-out stripes on the host. Synchronizes `stream` twice. The
// per-set layouts and decisions run on `workers` when the call has many columns.
Status decide_stripes(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const HostStaging& hs,
                      const DeviceInputs& in, cudaStream_t stream, HostWorkers& workers, CallDecisions* out);

}  // namespace sampleattn::cuda
