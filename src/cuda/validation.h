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
#include "cuda/marshalling.h"

namespace sampleattn::cuda {

// What validation decided, for the statistics (results.h).
struct CallDecisions {
  std::vector<sampleattn_head_decision> decision;  // per set
  std::vector<int64_t> alpha_stripes;              // per set: the sinks and ranked stripes alpha chose
  std::vector<HeadValidation> heads;               // [set][heads_per_set]
};

// After launch_ranking on `stream`: decides every set's stripe count or dense (validation masses
// measured on the device) and writes the device's keep (the decided counts), counts and dense
// flags, so that launch_stripes and the attention run the decided masks. Synchronizes `stream`
// twice.
Status decide_stripes(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const HostStaging& hs,
                      const DeviceInputs& in, cudaStream_t stream, CallDecisions* out);

}  // namespace sampleattn::cuda
