// After a call's stream is idle: the stripes the device chose and the kept mass of the sampled
// rows, back to the host as the same SparsePlan the CPU backend builds (for fill_stats).
#pragma once

#include "core/problem.h"
#include "core/sparse_plan.h"
#include "core/status.h"
#include "cuda/device_workspace.h"

namespace sampleattn::cuda {

Status collect_results(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, SparsePlan* plan);

}  // namespace sampleattn::cuda
