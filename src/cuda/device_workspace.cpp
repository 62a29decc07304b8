#include "cuda/device_workspace.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <limits>
#include <string>

#include "core/mask.h"
#include "core/sparse_plan.h"
#include "core/validation.h"
#include "cuda/cuda_errors.h"

namespace sampleattn::cuda {
namespace {

constexpr size_t kAlign = 256;
size_t round_up(size_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

}  // namespace

Status check_dtypes(const Problem& p) {
  const bool same = p.q.dtype == p.k.dtype && p.k.dtype == p.v.dtype;
  if (!same || p.q.dtype == DType::kF32) {
    return {SAMPLEATTN_UNSUPPORTED_DTYPE,
            std::string("the CUDA backend reads Q, K and V as f16 or bf16, all three the same (tensor-core "
                        "operands); got q=") + dtype_name(p.q.dtype) + ", k=" + dtype_name(p.k.dtype) +
                ", v=" + dtype_name(p.v.dtype) + ": convert the inputs or use the CPU backend"};
  }
  return Status::ok();
}

bool needs_repack(const TensorView& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 != 0 || t.token_stride % 8 != 0 || t.head_stride % 8 != 0;
}

Status lay_out_call(const Problem& p, CallLayout* cl) {
  cl->block_rows = attention_block_rows(attention_dim(p));
  if (cl->block_rows <= 0) return internal_error("the CUDA backend has no attention kernel for this head dim");
  cl->bf16 = p.q.dtype == DType::kBF16;
  cl->per_group = p.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP;
  cl->heads_per_set = cl->per_group ? p.group : 1;
  cl->sets_per_seq = cl->per_group ? p.num_kv_heads : p.num_q_heads;
  const int hq = p.num_q_heads;
  const int nseq = static_cast<int>(p.sequences.size());
  cl->seqs.resize(nseq);
  cl->score_offset.assign(nseq, 0);
  struct Costed { RowBlock block; int64_t cost; };
  std::vector<Costed> costed;
  std::vector<std::vector<int64_t>> val_rows(nseq);
  for (int s = 0; s < nseq; ++s) {
    const Sequence& seq = p.sequences[s];
    if (seq.k_len > std::numeric_limits<int32_t>::max()) return invalid_shape("the CUDA backend takes at most 2^31-1 keys per sequence");
    SeqDesc& d = cl->seqs[s];
    d = SeqDesc{seq.q_begin, seq.q_len, seq.k_begin, seq.k_len, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t q0 = 0; q0 < seq.q_len; q0 += cl->block_rows) {
      const int count = static_cast<int>(std::min<int64_t>(cl->block_rows, seq.q_len - q0));
      // The keys the block's rows see together: causal within the model's window, or all.
      const int64_t p_first = seq.q_offset() + q0, p_last = p_first + count - 1;
      const int64_t cost = p.causal ? causal_end(p_last) - model_lo(p_first, p.window_left) : seq.k_len;
      costed.push_back({RowBlock{s, count, q0}, cost});
    }
    if (!sequence_is_sampled(p, seq)) continue;
    cl->sampled = true;
    cl->sampled_seqs.push_back(s);
    d.sparse = 1;
    d.window = window_size(p, seq);
    d.set_base = static_cast<int32_t>(cl->sets.size());
    const std::vector<int64_t> rows = sampled_rows(p.sample, seq.q_len);
    d.row_begin = cl->total_rows;
    d.row_count = static_cast<int64_t>(rows.size());
    for (int64_t c0 = 0; c0 < d.row_count; c0 += cl->block_rows) {
      const int count = static_cast<int>(std::min<int64_t>(cl->block_rows, d.row_count - c0));
      cl->sample_blocks.push_back(RowBlock{s, count, d.row_begin + c0});
    }
    for (int64_t r : rows) cl->rows.push_back(static_cast<int32_t>(r));
    cl->total_rows += d.row_count;
    val_rows[s] = validation_rows(p.sample, seq.q_len, rows);
    for (int64_t t0 = 0; t0 < seq.k_len; t0 += column_tile()) cl->tiles.push_back(KeyTile{s, 0, t0});
    cl->score_offset[s] = cl->total_scores;
    cl->total_scores += static_cast<int64_t>(hq) * seq.k_len;
    const int32_t sinks = static_cast<int32_t>(sink_count(p.sample.sink_tokens, seq.k_len));
    for (int set = 0; set < cl->sets_per_seq; ++set) {
      SelectionSet ss{};
      ss.score_base = cl->score_offset[s] + static_cast<int64_t>(set) * cl->heads_per_set * seq.k_len;
      ss.offset = cl->total_columns;
      ss.key_begin = cl->total_items;
      ss.heads = cl->heads_per_set;
      ss.k_len = static_cast<int32_t>(seq.k_len);
      ss.sinks = sinks;
      ss.total = static_cast<double>(rows.size()) * cl->heads_per_set;
      cl->sets.push_back(ss);
      cl->set_offset.push_back(cl->total_columns);
      cl->total_columns += seq.k_len;
      cl->total_items += seq.k_len - sinks;
    }
    cl->max_k_len = std::max<int32_t>(cl->max_k_len, static_cast<int32_t>(seq.k_len));
  }
  // Validation rows after all the sampled rows: row-statistics blocks of block_rows, and the mass
  // kernel's tiles of kValidationRows rows x kValidationKeys keys (up to the keys the tile's last
  // row sees).
  cl->kept_blocks = cl->sample_blocks.size();
  for (int s : cl->sampled_seqs) {
    SeqDesc& d = cl->seqs[s];
    const std::vector<int64_t>& vr = val_rows[s];
    d.val_begin = cl->total_rows;
    d.val_count = static_cast<int64_t>(vr.size());
    d.mass_offset = cl->total_masses;
    for (int64_t c0 = 0; c0 < d.val_count; c0 += cl->block_rows) {
      const int count = static_cast<int>(std::min<int64_t>(cl->block_rows, d.val_count - c0));
      cl->sample_blocks.push_back(RowBlock{s, count, d.val_begin + c0});
    }
    for (int64_t c0 = 0; c0 < d.val_count; c0 += kValidationRows) {
      // The keys the rows see: from the first row's model_lo to the last row's position.
      const int count = static_cast<int>(std::min<int64_t>(kValidationRows, d.val_count - c0));
      const int64_t first = model_lo(d.k_len - d.q_len + vr[c0], p.window_left);
      const int64_t keys = causal_end(d.k_len - d.q_len + vr[c0 + count - 1]);
      for (int64_t k0 = first; k0 < keys; k0 += kValidationKeys) {
        cl->val_tiles.push_back(ValTile{s, count, d.val_begin + c0, k0, std::min(keys, k0 + kValidationKeys)});
      }
    }
    for (int64_t r : vr) cl->rows.push_back(static_cast<int32_t>(r));
    cl->total_rows += d.val_count;
    cl->total_val_rows += d.val_count;
    cl->total_masses += static_cast<int64_t>(hq) * d.val_count * kValidationMassStride;
  }
  // Longest key ranges first (the tiles of a sequence's last rows).
  std::stable_sort(cl->val_tiles.begin(), cl->val_tiles.end(),
                   [](const ValTile& a, const ValTile& b) { return a.k1 - a.k0 > b.k1 - b.k0; });
  // Most expensive query blocks first: the causal tail then holds the cheap ones.
  std::stable_sort(costed.begin(), costed.end(), [](const Costed& a, const Costed& b) { return a.cost > b.cost; });
  for (const Costed& c : costed) cl->blocks.push_back(c.block);
  std::stable_sort(cl->tiles.begin(), cl->tiles.end(), [](const KeyTile& a, const KeyTile& b) { return a.t0 < b.t0; });
  const int64_t max_grid = std::numeric_limits<int32_t>::max();
  if (static_cast<int64_t>(cl->blocks.size()) * hq > max_grid ||
      static_cast<int64_t>(cl->tiles.size()) * hq > max_grid || static_cast<int64_t>(cl->val_tiles.size()) * hq > max_grid ||
      static_cast<int64_t>(cl->sets.size()) > 65535) {
    return invalid_shape("the call is too large for one CUDA launch");
  }
  if (cl->sampled) cl->sort_bytes = selection_sort_bytes(cl->total_items, static_cast<int>(cl->sets.size()));
  if (!p.alibi_slopes.empty() || !p.sinks.empty()) {
    cl->head_mods.resize(2 * static_cast<size_t>(hq));
    for (int h = 0; h < hq; ++h) {
      const ScoreMod m = p.score_mod(h);
      cl->head_mods[h] = m.alibi_log2;
      cl->head_mods[hq + h] = m.sink_log2;
    }
  }

  // Layout: metadata first (one upload), then the rest.
  size_t at = 0;
  auto take = [&at](size_t b) { const size_t here = at; at += round_up(b); return here; };
  cl->o_meta = at;
  cl->o_seqs = take(sizeof(SeqDesc) * cl->seqs.size());
  cl->o_blocks = take(sizeof(RowBlock) * cl->blocks.size());
  cl->o_rows = take(sizeof(int32_t) * cl->rows.size());
  cl->o_sample_blocks = take(sizeof(RowBlock) * cl->sample_blocks.size());
  cl->o_val_tiles = take(sizeof(ValTile) * cl->val_tiles.size());
  cl->o_tiles = take(sizeof(KeyTile) * cl->tiles.size());
  cl->o_score_offset = take(sizeof(int64_t) * cl->score_offset.size());
  cl->o_sets = take(sizeof(SelectionSet) * cl->sets.size());
  cl->o_set_offset = take(sizeof(int64_t) * cl->set_offset.size());
  cl->o_head_mods = take(sizeof(float) * cl->head_mods.size());
  cl->meta_bytes = at - cl->o_meta;
  const size_t elem = 2;
  if (needs_repack(p.q)) cl->o_q = take(elem * p.total_q * p.num_q_heads * p.head_dim);
  if (needs_repack(p.k)) cl->o_k = take(elem * p.total_k * p.num_kv_heads * p.head_dim);
  if (needs_repack(p.v)) cl->o_v = take(elem * p.total_k * p.num_kv_heads * p.head_dim_v);
  if (cl->sampled) {
    const size_t per_row = sizeof(float) * hq * cl->total_rows;
    cl->o_row_max = take(per_row);
    cl->o_row_sum = take(per_row);
    cl->o_kept = take(per_row);
    cl->o_scores = take(sizeof(float) * cl->total_scores);
    cl->o_set_scores = take(sizeof(float) * cl->total_columns);
    cl->o_keys_in = take(sizeof(uint64_t) * cl->total_items);
    cl->o_keys_out = take(sizeof(uint64_t) * cl->total_items);
    cl->o_values_in = take(sizeof(int32_t) * cl->total_items);
    cl->o_values_out = take(sizeof(int32_t) * cl->total_items);
    cl->o_flags = take(cl->total_columns);
    cl->o_keep = take(sizeof(int32_t) * 2 * cl->sets.size());
    cl->o_stripes = take(sizeof(int32_t) * cl->total_columns);
    cl->o_counts = take(sizeof(int32_t) * cl->sets.size());
    cl->o_dense = take(sizeof(int32_t) * cl->sets.size());
    cl->o_sort = take(cl->sort_bytes);
    cl->o_buckets = take(cl->total_columns);
    cl->o_set_active = take(sizeof(int32_t) * cl->sets.size());
    cl->o_masses = take(sizeof(uint32_t) * cl->total_masses);
  }
  cl->bytes = at;

  size_t host = 0;
  auto stage = [&host](size_t b) { const size_t here = host; host += round_up(b); return here; };
  if (cl->sampled) {
    cl->h_keep = stage(sizeof(int32_t) * 2 * cl->sets.size());
    cl->h_ranked = stage(sizeof(int32_t) * cl->total_items);
    cl->h_buckets = stage(cl->total_columns);
    cl->h_set_active = stage(sizeof(int32_t) * cl->sets.size());
    cl->h_masses = stage(sizeof(uint32_t) * cl->total_masses);
    cl->h_counts = stage(sizeof(int32_t) * cl->sets.size());
    cl->h_dense = stage(sizeof(int32_t) * cl->sets.size());
  }
  cl->host_bytes = host;
  return Status::ok();
}

void DeviceWorkspace::release() {
  if (base_ != nullptr) (void)cudaFree(base_);
  base_ = nullptr;
  capacity_ = 0;
}

Status DeviceWorkspace::reserve(size_t bytes) {
  if (bytes <= capacity_) return Status::ok();
  if (base_ != nullptr) {
    SAMPLEATTN_CUDA_CHECK("cudaFree", cudaFree(base_));
    base_ = nullptr;
    capacity_ = 0;
  }
  const cudaError_t err = cudaMalloc(&base_, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    base_ = nullptr;
    if (err == cudaErrorMemoryAllocation) {
      return out_of_memory("cannot allocate " + std::to_string(bytes) + " bytes of device workspace");
    }
    return device_error("cudaMalloc", err);
  }
  capacity_ = bytes;
  return Status::ok();
}

void HostStaging::release() {
  if (base_ != nullptr) (void)cudaFreeHost(base_);
  base_ = nullptr;
  capacity_ = 0;
}

Status HostStaging::reserve(size_t bytes) {
  if (bytes <= capacity_) return Status::ok();
  release();
  const cudaError_t err = cudaMallocHost(&base_, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    base_ = nullptr;
    if (err == cudaErrorMemoryAllocation) {
      return out_of_memory("cannot allocate " + std::to_string(bytes) + " bytes of pinned host staging");
    }
    return device_error("cudaMallocHost", err);
  }
  capacity_ = bytes;
  return Status::ok();
}

}  // namespace sampleattn::cuda
