#include "reference/attention_reference.h"

namespace sampleattn::reference {
namespace {

TensorRef tensor_of(const TensorView& t) { return {t.data, t.dtype, t.token_stride, t.head_stride}; }

}  // namespace

Call call_of(const Problem& problem) {
  Call call;
  call.q = tensor_of(problem.q);
  call.k = tensor_of(problem.k);
  call.v = tensor_of(problem.v);
  call.head_dim = problem.head_dim;
  call.num_q_heads = problem.num_q_heads;
  call.num_kv_heads = problem.num_kv_heads;
  call.sequences.reserve(problem.sequences.size());
  for (const Sequence& s : problem.sequences) call.sequences.push_back({s.q_begin, s.q_len, s.k_begin, s.k_len});
  call.scale = problem.scale;
  call.causal = problem.causal;
  call.head_dim_v = problem.head_dim_v;
  call.window_left = problem.window_left;
  call.softcap = problem.softcap;
  call.alibi_slopes = problem.alibi_slopes;
  call.sinks = problem.sinks;
  return call;
}

std::vector<RowResult> attention_rows(const Problem& problem, const std::vector<std::pair<int64_t, int>>& rows,
                                      const MaskLookup& mask) {
  return attention_rows(call_of(problem), rows, mask);
}

std::vector<RowResult> naive_attention_rows(const Problem& problem, const std::vector<std::pair<int64_t, int>>& rows,
                                            bool bf16_products, const MaskLookup& mask) {
  return naive_attention_rows(call_of(problem), rows, bf16_products, mask);
}

}  // namespace sampleattn::reference
