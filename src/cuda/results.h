// After a call's stream is idle: the stripes the device chose, the kept mass of the sampled rows
// and what validation decided (validation.h), back to the host as the same SparsePlan the CPU
// backend builds (for fill_stats).
#pragma once

#include "core/problem.h"
#include "core/sparse_plan.h"
#include "core/status.h"
#include "cuda/device_workspace.h"
#include "cuda/validation.h"

namespace sampleattn::cuda {

Status collect_results(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const CallDecisions& decided,
                       SparsePlan* plan);

}  // namespace sampleattn::cuda
