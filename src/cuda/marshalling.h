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
// K and V keep the call's KvLayout (packed or paged, quantized or not) with the block table
// replaced by its device copy; a repacked K or V gets the packed copy's strides.
struct DeviceInputs {
  const void* q = nullptr;
  int64_t q_token_stride = 0, q_head_stride = 0;
  KvSource kv{};
};

// All per-call metadata (sequence descriptors, query blocks, sampled and validation rows, key
// tiles, validation tiles, selection sets) in one copy on `stream`.
Status upload_metadata(const CallLayout& cl, const DeviceWorkspace& ws, cudaStream_t stream);

// Repacks the inputs whose rows are not 16-byte aligned into the workspace (on `stream`; packed
// K/V of the operand type only) and describes K/V for the kernels (the uploaded block table).
Status prepare_inputs(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, cudaStream_t stream,
                      DeviceInputs* in);

// The attention kernel's arguments, without mode and blocks; with the sample buffers when the
// call samples.
AttentionArgs attention_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in);
// Stage 1's column-score kernel.
ColumnArgs column_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in);
// Stage 2, the stripe selection.
SelectionArgs selection_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws);
// The decode kernels' arguments (cl.decode_groups non-empty).
DecodeArgs decode_args(const CallLayout& cl, const DeviceWorkspace& ws, const AttentionArgs& aa);
// The look (cl.look): without its blocks, which cuda/look.cpp fills in.
LookArgs look_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in);
// Stage 2, the validation rows' masses.
ValidationArgs validation_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in);

}  // namespace sampleattn::cuda
