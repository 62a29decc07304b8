// The double-precision oracle on plain shapes and pointers: what the tools (the CLI's
// `bench --check`, the workload metrics) and the tests reach it through. It knows no core type
// beyond DType, and restates the mask rule itself (visible()), so that tests compare two
// implementations. Slow on purpose: every product and sum in double, inputs read through their
// dtype exactly as the library reads them.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace sampleattn::reference {

// A sparse mask for one (sequence, query head): the query at position p sees keys
// max(0, p - window + 1) .. p plus each stripe j <= p - window (docs/ALGORITHM.md), all within
// the model's window when the call has one.
struct HeadMask {
  int64_t window = 0;
  std::vector<int32_t> stripes;  // ascending
  std::vector<int64_t> dense_rows;  // ascending positions p of rows that see every key (model, causal)
};

// Returns the mask of (sequence, query head), or nullptr for dense.
using MaskLookup = std::function<const HeadMask*(int sequence, int head)>;

// One input tensor [token, head, dim] with element strides.
struct TensorRef {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
};

// One sequence of a batch: its queries are the last q_len of its k_len positions.
struct SequenceSpan {
  int64_t q_begin = 0;  // first query token in the concatenated batch
  int64_t q_len = 0;
  int64_t k_begin = 0;
  int64_t k_len = 0;
};

// One attention call as the oracle reads it.
struct Call {
  TensorRef q, k, v;
  int head_dim = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;  // divides num_q_heads
  std::vector<SequenceSpan> sequences;
  float scale = 0.f;  // the softmax scale, resolved (the library's 0 = 1/sqrt(head_dim) already applied)
  bool causal = true;
  // The model's variants (sampleattn_params, ABI 1.3), restated here in natural-log units:
  int head_dim_v = 0;        // of v and the output; 0 = head_dim
  int64_t window_left = -1;  // the query at p sees keys p - window_left .. p; -1 = none
  double softcap = 0;        // s -> softcap * tanh(s / softcap) on s = scale * q.k; 0 = none
  std::vector<float> alibi_slopes;  // per query head: s -= slope * |p - j| (after the cap); empty = none
  std::vector<float> sinks;         // per query head: exp(sink) joins the denominator; empty = none

  int value_dim() const { return head_dim_v > 0 ? head_dim_v : head_dim; }
};

// One output row: query token `token` (index into the concatenated batch) and query head `head`.
struct RowResult {
  int64_t token = 0;
  int head = 0;
  std::vector<double> o;  // value_dim() values
  double lse = 0;         // natural log, the sink included; -inf when the row sees no key
};

// Whether key j is visible to the query at position p under `mask` (nullptr = dense: causal or
// full) and the model's window (window_left < 0: none).
bool visible(bool causal, const HeadMask* mask, int64_t p, int64_t j, int64_t window_left = -1);

// Exact attention for the listed (token, head) rows.
std::vector<RowResult> attention_rows(const Call& call, const std::vector<std::pair<int64_t, int>>& rows,
                                      const MaskLookup& mask = {});

// The same computation in float (f32 products, f32 sums, f32 exp), or with Q (scaled), K, V and
// the probabilities rounded to bf16 before their products when bf16_products is set: the "naive
// implementation in the same precision" whose error against the oracle bounds the kernels'.
std::vector<RowResult> naive_attention_rows(const Call& call, const std::vector<std::pair<int64_t, int>>& rows,
                                            bool bf16_products, const MaskLookup& mask = {});

// Sequence index holding query token `token`.
int sequence_of_token(const Call& call, int64_t token);

}  // namespace sampleattn::reference
