// From a validated Problem and its CallLayout to what the kernels read: the metadata upload,
// inputs repacked where their rows are not 16-byte aligned, and the kernels' argument records
// (kernel_params.h, launch.h) pointing into the workspace.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/problem.h"
#include "core/status.h"
#include "cuda/device_workspace.h"
#include "cuda/kernel_params.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {

// Q, K and V as the kernels read them: the caller's tensors, or their packed copies.
struct DeviceInputs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t q_token_stride = 0, q_head_stride = 0;
  int64_t k_token_stride = 0, k_head_stride = 0;
  int64_t v_token_stride = 0, v_head_stride = 0;
};

// All per-call metadata (sequence descriptors, query blocks, sampled and validation rows, key
// tiles, validation tiles, selection sets) in one copy on `stream`.
Status upload_metadata(const CallLayout& cl, const DeviceWorkspace& ws, cudaStream_t stream);

// Repacks the inputs whose rows are not 16-byte aligned into the workspace (on `stream`).
Status prepare_inputs(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, cudaStream_t stream,
                      DeviceInputs* in);

// The attention kernel's arguments, without mode and blocks; with the sample buffers when the
// call samples.
AttentionArgs attention_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in);
// Stage 1's column-score kernel.
ColumnArgs column_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in);
// Stage 2, the stripe selection.
SelectionArgs selection_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws);
// Stage 2, the validation rows' masses.
ValidationArgs validation_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in);

}  // namespace sampleattn::cuda
