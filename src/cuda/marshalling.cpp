#include "cuda/marshalling.h"

#include <cstring>
#include <vector>

#include "core/mask.h"
#include "cuda/cuda_errors.h"

namespace sampleattn::cuda {
namespace {

template <typename T>
void put(std::vector<unsigned char>& host, size_t offset, const std::vector<T>& v) {
  if (!v.empty()) std::memcpy(host.data() + offset, v.data(), sizeof(T) * v.size());
}

// The score variants for the kernels: the softcap, and the per-head arrays uploaded with the
// metadata (CallLayout::head_mods); with_sinks only for the attention's output.
ScoreModParams score_mod_params(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, bool with_sinks) {
  ScoreModParams m{};
  m.softcap_log2 = p.softcap * kLog2e;
  const float* mods = ws.at<float>(cl.o_head_mods);
  if (!p.alibi_slopes.empty()) m.alibi_log2 = mods;
  if (with_sinks && !p.sinks.empty()) m.sink_log2 = mods + p.num_q_heads;
  return m;
}

}  // namespace

Status upload_metadata(const CallLayout& cl, const DeviceWorkspace& ws, cudaStream_t stream) {
  std::vector<unsigned char> host(cl.meta_bytes);
  put(host, cl.o_seqs - cl.o_meta, cl.seqs);
  put(host, cl.o_blocks - cl.o_meta, cl.blocks);
  put(host, cl.o_rows - cl.o_meta, cl.rows);
  put(host, cl.o_sample_blocks - cl.o_meta, cl.sample_blocks);
  put(host, cl.o_val_tiles - cl.o_meta, cl.val_tiles);
  put(host, cl.o_tiles - cl.o_meta, cl.tiles);
  put(host, cl.o_score_offset - cl.o_meta, cl.score_offset);
  put(host, cl.o_sets - cl.o_meta, cl.sets);
  put(host, cl.o_set_offset - cl.o_meta, cl.set_offset);
  put(host, cl.o_head_mods - cl.o_meta, cl.head_mods);
  SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (metadata)",
                        cudaMemcpyAsync(ws.at<char>(cl.o_meta), host.data(), cl.meta_bytes, cudaMemcpyHostToDevice, stream));
  return Status::ok();
}

Status prepare_inputs(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, cudaStream_t stream,
                      DeviceInputs* in) {
  in->q = p.q.data;
  in->k = p.k.data;
  in->v = p.v.data;
  in->q_token_stride = p.q.token_stride, in->q_head_stride = p.q.head_stride;
  in->k_token_stride = p.k.token_stride, in->k_head_stride = p.k.head_stride;
  in->v_token_stride = p.v.token_stride, in->v_head_stride = p.v.head_stride;
  const int d = p.head_dim;
  if (needs_repack(p.q)) {
    SAMPLEATTN_CUDA_CHECK("repack q", launch_repack(in->q, in->q_token_stride, in->q_head_stride, p.total_q,
                                                    p.num_q_heads, d, ws.at<char>(cl.o_q), stream));
    in->q = ws.at<char>(cl.o_q), in->q_token_stride = int64_t{p.num_q_heads} * d, in->q_head_stride = d;
  }
  if (needs_repack(p.k)) {
    SAMPLEATTN_CUDA_CHECK("repack k", launch_repack(in->k, in->k_token_stride, in->k_head_stride, p.total_k,
                                                    p.num_kv_heads, d, ws.at<char>(cl.o_k), stream));
    in->k = ws.at<char>(cl.o_k), in->k_token_stride = int64_t{p.num_kv_heads} * d, in->k_head_stride = d;
  }
  const int dv = p.head_dim_v;
  if (needs_repack(p.v)) {
    SAMPLEATTN_CUDA_CHECK("repack v", launch_repack(in->v, in->v_token_stride, in->v_head_stride, p.total_k,
                                                    p.num_kv_heads, dv, ws.at<char>(cl.o_v), stream));
    in->v = ws.at<char>(cl.o_v), in->v_token_stride = int64_t{p.num_kv_heads} * dv, in->v_head_stride = dv;
  }
  return Status::ok();
}

AttentionArgs attention_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in) {
  AttentionArgs aa{};
  aa.q = in.q, aa.k = in.k, aa.v = in.v;
  aa.q_token_stride = in.q_token_stride, aa.q_head_stride = in.q_head_stride;
  aa.k_token_stride = in.k_token_stride, aa.k_head_stride = in.k_head_stride;
  aa.v_token_stride = in.v_token_stride, aa.v_head_stride = in.v_head_stride;
  aa.o = p.o.data;
  aa.o_type = static_cast<OutType>(static_cast<int>(p.o.dtype));
  aa.o_token_stride = p.o.token_stride, aa.o_head_stride = p.o.head_stride;
  aa.lse = p.lse;
  aa.num_q_heads = p.num_q_heads;
  aa.group = p.group;
  aa.head_dim = p.head_dim;
  aa.head_dim_v = p.head_dim_v;
  aa.scale_log2 = scale_log2(p.scale);
  aa.causal = p.causal ? 1 : 0;
  aa.window_left = p.window_left;
  aa.mod = score_mod_params(p, cl, ws, /*with_sinks=*/true);
  aa.seqs = ws.at<SeqDesc>(cl.o_seqs);
  aa.per_group = cl.per_group ? 1 : 0;
  if (cl.sampled) {
    aa.stripes = ws.at<int32_t>(cl.o_stripes);
    aa.set_offset = ws.at<int64_t>(cl.o_set_offset);
    aa.set_count = ws.at<int32_t>(cl.o_counts);
    aa.set_dense = ws.at<int32_t>(cl.o_dense);
    aa.rows = ws.at<int32_t>(cl.o_rows);
    aa.total_rows = cl.total_rows;
    aa.row_max = ws.at<float>(cl.o_row_max);
    aa.row_sum = ws.at<float>(cl.o_row_sum);
    aa.kept = ws.at<float>(cl.o_kept);
  }
  return aa;
}

ColumnArgs column_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in) {
  ColumnArgs ca{};
  ca.q = in.q, ca.k = in.k;
  ca.q_token_stride = in.q_token_stride, ca.q_head_stride = in.q_head_stride;
  ca.k_token_stride = in.k_token_stride, ca.k_head_stride = in.k_head_stride;
  ca.num_q_heads = p.num_q_heads;
  ca.group = p.group;
  ca.scale_log2 = scale_log2(p.scale);
  ca.outside_window_only = p.sample.window_mass_counts == 1 ? 1 : 0;
  ca.window_left = p.window_left;
  ca.mod = score_mod_params(p, cl, ws, /*with_sinks=*/false);
  ca.seqs = ws.at<SeqDesc>(cl.o_seqs);
  ca.tiles = ws.at<KeyTile>(cl.o_tiles);
  ca.num_tiles = static_cast<int64_t>(cl.tiles.size());
  ca.rows = ws.at<int32_t>(cl.o_rows);
  ca.total_rows = cl.total_rows;
  ca.row_max = ws.at<float>(cl.o_row_max);
  ca.row_sum = ws.at<float>(cl.o_row_sum);
  ca.scores = ws.at<float>(cl.o_scores);
  ca.score_offset = ws.at<int64_t>(cl.o_score_offset);
  return ca;
}

SelectionArgs selection_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws) {
  SelectionArgs sa{};
  sa.scores = ws.at<float>(cl.o_scores);
  sa.sets = ws.at<SelectionSet>(cl.o_sets);
  sa.num_sets = static_cast<int32_t>(cl.sets.size());
  sa.max_k_len = cl.max_k_len;
  sa.total_columns = cl.total_columns;
  sa.total_items = cl.total_items;
  sa.alpha = p.sample.alpha;
  sa.window_mass_counts = p.sample.window_mass_counts == 1 ? 1 : 0;
  sa.min_stripes = p.sample.min_stripes;
  sa.max_stripes = p.sample.max_stripes;
  sa.set_scores = ws.at<float>(cl.o_set_scores);
  sa.keys_in = ws.at<uint64_t>(cl.o_keys_in);
  sa.keys_out = ws.at<uint64_t>(cl.o_keys_out);
  sa.values_in = ws.at<int32_t>(cl.o_values_in);
  sa.flags = ws.at<uint8_t>(cl.o_flags);
  sa.sort_temp = ws.at<char>(cl.o_sort);
  sa.sort_temp_bytes = cl.sort_bytes;
  sa.values_out = ws.at<int32_t>(cl.o_values_out);
  sa.keep = ws.at<int32_t>(cl.o_keep);
  sa.stripes = ws.at<int32_t>(cl.o_stripes);
  return sa;
}

ValidationArgs validation_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in) {
  ValidationArgs va{};
  va.q = in.q, va.k = in.k;
  va.q_token_stride = in.q_token_stride, va.q_head_stride = in.q_head_stride;
  va.k_token_stride = in.k_token_stride, va.k_head_stride = in.k_head_stride;
  va.num_q_heads = p.num_q_heads;
  va.group = p.group;
  va.scale_log2 = scale_log2(p.scale);
  va.per_group = cl.per_group ? 1 : 0;
  va.window_left = p.window_left;
  va.mod = score_mod_params(p, cl, ws, /*with_sinks=*/false);
  va.seqs = ws.at<SeqDesc>(cl.o_seqs);
  va.tiles = ws.at<ValTile>(cl.o_val_tiles);
  va.num_tiles = static_cast<int64_t>(cl.val_tiles.size());
  va.rows = ws.at<int32_t>(cl.o_rows);
  va.total_rows = cl.total_rows;
  va.row_max = ws.at<float>(cl.o_row_max);
  va.row_sum = ws.at<float>(cl.o_row_sum);
  va.buckets = ws.at<uint8_t>(cl.o_buckets);
  va.set_offset = ws.at<int64_t>(cl.o_set_offset);
  va.set_active = ws.at<int32_t>(cl.o_set_active);
  va.masses = ws.at<uint32_t>(cl.o_masses);
  return va;
}

}  // namespace sampleattn::cuda
