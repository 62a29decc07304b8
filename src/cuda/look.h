// The look at every row on the CUDA backend (docs/ALGORITHM.md, step 5; cpu/look.h is the CPU's):
// after the stripe lists, one host round trip. The host builds each sampled head's plan from
// validation's decisions (cuda/validation.h), and the max_density rule with the look's cost
// (core/sparse_plan.h's look_runs_dense, shared with the CPU) sends some heads dense unlooked;
// the device quantizes the keys and flags the other heads' rows (look.cu); the host reads the
// flags, sends dense the heads whose dense rows pass max_density, and writes back the heads made
// dense and the dense-row blocks, which the attention's kDenseRows pass runs after the forward
// pass (it overwrites those rows). The same shared rule on the same integers as the CPU: the
// same rows from the same stripes.
#pragma once

#include <cuda_runtime_api.h>

#include "core/problem.h"
#include "core/status.h"
#include "cuda/device_workspace.h"
#include "cuda/marshalling.h"
#include "cuda/validation.h"

namespace sampleattn::cuda {

// After launch_stripes on `stream` (cl.look): fills decided->dense_look, dense_rows and
// dense_blocks, and the device's head_dense and dense-row blocks. Synchronizes `stream` once when
// any head is looked at.
Status find_dense_rows(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const HostStaging& hs,
                       const DeviceInputs& in, cudaStream_t stream, CallDecisions* decided);

}  // namespace sampleattn::cuda
