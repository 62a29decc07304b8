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

KvType kv_type(DType t) {
  return t == DType::kI8 ? KvType::kI8 : t == DType::kFP8 ? KvType::kFP8 : KvType::kOperand;
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
  put(host, cl.o_block_table - cl.o_meta, cl.block_table);
  put(host, cl.o_decode_groups - cl.o_meta, cl.decode_groups);
  put(host, cl.o_decode_units - cl.o_meta, cl.decode_units);
  SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (metadata)",
                        cudaMemcpyAsync(ws.at<char>(cl.o_meta), host.data(), cl.meta_bytes, cudaMemcpyHostToDevice, stream));
  return Status::ok();
}

Status prepare_inputs(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, cudaStream_t stream,
                      DeviceInputs* in) {
  in->q = p.q.data;
  in->q_token_stride = p.q.token_stride, in->q_head_stride = p.q.head_stride;
  const int d = p.head_dim;
  if (needs_repack(p.q)) {
    SAMPLEATTN_CUDA_CHECK("repack q", launch_repack(in->q, in->q_token_stride, in->q_head_stride, p.total_q,
                                                    p.num_q_heads, d, ws.at<char>(cl.o_q), stream));
    in->q = ws.at<char>(cl.o_q), in->q_token_stride = int64_t{p.num_q_heads} * d, in->q_head_stride = d;
  }
  KvSource& kv = in->kv;
  kv.k = p.k.data;
  kv.v = p.v.data;
  kv.layout = p.kv;
  kv.k_type = kv_type(p.k.dtype);
  kv.v_type = kv_type(p.v.dtype);
  if (p.paged()) {
    kv.layout.block_table = ws.at<int32_t>(cl.o_block_table);
    kv.layout.table_stride = cl.table_stride;
    kv.layout.table_head_stride = cl.table_head_stride;
  }
  if (repacks_kv(p, false)) {
    SAMPLEATTN_CUDA_CHECK("repack k", launch_repack(kv.k, kv.layout.k_token_stride, kv.layout.k_head_stride, p.total_k,
                                                    p.num_kv_heads, d, ws.at<char>(cl.o_k), stream));
    kv.k = ws.at<char>(cl.o_k), kv.layout.k_token_stride = int64_t{p.num_kv_heads} * d, kv.layout.k_head_stride = d;
  }
  const int dv = p.head_dim_v;
  if (repacks_kv(p, true)) {
    SAMPLEATTN_CUDA_CHECK("repack v", launch_repack(kv.v, kv.layout.v_token_stride, kv.layout.v_head_stride, p.total_k,
                                                    p.num_kv_heads, dv, ws.at<char>(cl.o_v), stream));
    kv.v = ws.at<char>(cl.o_v), kv.layout.v_token_stride = int64_t{p.num_kv_heads} * dv, kv.layout.v_head_stride = dv;
  }
  // Operand-type rows on 16-byte boundaries (quantized rows are never copied with cp.async).
  const auto aligned = [&](const void* data, KvType type, int64_t token, int64_t head, int64_t page) {
    return type != KvType::kOperand ||
           (reinterpret_cast<uintptr_t>(data) % 16 == 0 && token % 8 == 0 && head % 8 == 0 && page % 8 == 0);
  };
  kv.aligned = aligned(kv.k, kv.k_type, kv.layout.k_token_stride, kv.layout.k_head_stride, kv.layout.k_page_stride) &&
                       aligned(kv.v, kv.v_type, kv.layout.v_token_stride, kv.layout.v_head_stride, kv.layout.v_page_stride)
                   ? 1
                   : 0;
  return Status::ok();
}

AttentionArgs attention_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in) {
  AttentionArgs aa{};
  aa.q = in.q, aa.kv = in.kv;
  aa.q_token_stride = in.q_token_stride, aa.q_head_stride = in.q_head_stride;
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
  if (cl.look) {
    aa.head_dense = ws.at<int32_t>(cl.o_head_dense);
    aa.block_heads = ws.at<int32_t>(cl.o_dense_heads);
  }
  return aa;
}

DecodeArgs decode_args(const CallLayout& cl, const DeviceWorkspace& ws, const AttentionArgs& aa) {
  DecodeArgs da{};
  da.attn = aa;
  da.attn.mode = AttentionMode::kForward;
  da.groups = ws.at<DecodeGroup>(cl.o_decode_groups);
  da.num_groups = static_cast<int64_t>(cl.decode_groups.size());
  da.units = ws.at<DecodeUnit>(cl.o_decode_units);
  da.num_units = static_cast<int64_t>(cl.decode_units.size());
  da.part_max = ws.at<float>(cl.o_part_max);
  da.part_sum = ws.at<float>(cl.o_part_sum);
  da.part_o = ws.at<float>(cl.o_part_o);
  return da;
}

ColumnArgs column_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in) {
  ColumnArgs ca{};
  ca.q = in.q, ca.kv = in.kv;
  ca.q_token_stride = in.q_token_stride, ca.q_head_stride = in.q_head_stride;
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
  sa.look_keep = cl.look ? ws.at<int32_t>(cl.o_look_keep) : nullptr;
  sa.stripes = ws.at<int32_t>(cl.o_stripes);
  return sa;
}

LookArgs look_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in) {
  LookArgs la{};
  la.q = in.q, la.kv = in.kv;
  la.q_token_stride = in.q_token_stride, la.q_head_stride = in.q_head_stride;
  la.num_q_heads = p.num_q_heads;
  la.num_kv_heads = p.num_kv_heads;
  la.group = p.group;
  la.head_dim = p.head_dim;
  la.row_bytes = cl.look_row_bytes;
  la.scale_log2 = scale_log2(p.scale);
  la.bar = look_bar_log2(p.sample.look);
  la.window_left = p.window_left;
  la.mod = score_mod_params(p, cl, ws, /*with_sinks=*/false);
  la.seqs = ws.at<SeqDesc>(cl.o_seqs);
  la.keys = ws.at<int8_t>(cl.o_look_keys);
  la.key_scales = ws.at<float>(cl.o_look_key_scales);
  la.tiles = ws.at<KeyTile>(cl.o_tiles);
  la.num_tiles = static_cast<int64_t>(cl.tiles.size());
  la.tile_keys = column_tile();
  la.blocks = ws.at<LookBlock>(cl.o_look_blocks);
  la.left_out_bits = ws.at<uint64_t>(cl.o_look_bits);
  la.bits_offset = ws.at<int64_t>(cl.o_look_bit_offsets);
  la.per_group = cl.per_group ? 1 : 0;
  la.flags = ws.at<uint8_t>(cl.o_look_flags);
  return la;
}

ValidationArgs validation_args(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const DeviceInputs& in) {
  ValidationArgs va{};
  va.q = in.q, va.kv = in.kv;
  va.q_token_stride = in.q_token_stride, va.q_head_stride = in.q_head_stride;
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
