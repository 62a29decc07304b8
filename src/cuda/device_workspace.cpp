#include "cuda/device_workspace.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
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
  const bool operand = p.q.dtype == DType::kF16 || p.q.dtype == DType::kBF16;
  const auto kv_ok = [&](DType t) { return t == p.q.dtype || t == DType::kI8 || t == DType::kFP8; };
  if (!operand || !kv_ok(p.k.dtype) || !kv_ok(p.v.dtype)) {
    return {SAMPLEATTN_UNSUPPORTED_DTYPE,
            std::string("the CUDA backend reads Q as f16 or bf16 (tensor-core operands) and K and V each as Q's "
                        "type, int8 or fp8 e4m3; got q=") + dtype_name(p.q.dtype) + ", k=" + dtype_name(p.k.dtype) +
                ", v=" + dtype_name(p.v.dtype) + ": convert the inputs or use the CPU backend"};
  }
  return Status::ok();
}

bool needs_repack(const TensorView& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 != 0 || t.token_stride % 8 != 0 || t.head_stride % 8 != 0;
}

bool repacks_kv(const Problem& p, bool values) {
  const TensorView& t = values ? p.v : p.k;
  return !p.paged() && !dtype_quantized(t.dtype) && needs_repack(t);
}

bool decode_enabled() {
  static const bool off = [] {
    const char* v = std::getenv("SAMPLEATTN_CUDA_DECODE");
    return v != nullptr && std::strcmp(v, "0") == 0;
  }();
  return !off;
}

namespace {

// A dense sequence's short query run over many keys goes to the decode kernels.
bool runs_decode(const Problem& p, const Sequence& seq) {
  return decode_enabled() && seq.q_len > 0 && seq.q_len <= kDecodeMaxQueries && seq.k_len > kDecodeMinKeys &&
         !sequence_is_sampled(p, seq);
}

// Splits each decode group's keys into units of about the same size: enough units to fill the
// device (about 512 blocks), none shorter than 256 keys nor longer than 8192.
void plan_decode_units(const Problem& p, CallLayout* cl) {
  struct Range { int64_t lo, hi; };
  std::vector<Range> ranges;
  int64_t work = 0;
  for (const DecodeGroup& g : cl->decode_groups) {
    const Sequence& seq = p.sequences[g.seq];
    // The keys the group's rows see: from its first query's model_lo to its last one's end.
    const int64_t first = seq.q_offset() + g.row0 / p.group, last = seq.q_offset() + (g.row0 + g.rows - 1) / p.group;
    const int64_t lo = own_keys_lo(false, first, 0, p.window_left);
    const int64_t hi = own_keys_hi(false, p.causal, last, seq.k_len);
    ranges.push_back({lo, std::max(lo, hi)});
    work += std::max<int64_t>(hi - lo, 0);
  }
  const int64_t chunk = std::clamp<int64_t>((work / 512 + 63) / 64 * 64, 256, 8192);
  for (size_t gi = 0; gi < cl->decode_groups.size(); ++gi) {
    DecodeGroup& g = cl->decode_groups[gi];
    g.first_unit = static_cast<int64_t>(cl->decode_units.size());
    const Range r = ranges[gi];
    // At least one unit (a group without keys still writes its rows: zeros and lse -inf).
    for (int64_t k0 = r.lo; k0 < r.hi || k0 == r.lo; k0 += chunk) {
      cl->decode_units.push_back(DecodeUnit{static_cast<int64_t>(gi), k0, std::min(r.hi, k0 + chunk), cl->decode_rows});
      cl->decode_rows += g.rows;
      if (k0 + chunk >= r.hi) break;
    }
    g.units = static_cast<int64_t>(cl->decode_units.size()) - g.first_unit;
  }
}

}  // namespace

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
  int64_t key_prefix = 0;
  // Per-head tables (core/kv_cache.h) keep one table per kv head of a sequence.
  const int table_heads = p.paged() && p.kv.table_head_stride != 0 ? p.num_kv_heads : 1;
  if (p.paged()) {
    int64_t pages = 1;
    for (const Sequence& seq : p.sequences) pages = std::max(pages, (seq.k_len + p.kv.page_size - 1) / p.kv.page_size);
    cl->table_head_stride = table_heads > 1 ? pages : 0;
    cl->table_stride = pages * table_heads;
    cl->block_table.assign(static_cast<size_t>(nseq) * cl->table_stride, 0);
  }
  struct Costed { RowBlock block; int64_t cost; };
  std::vector<Costed> costed;
  std::vector<std::vector<int64_t>> val_rows(nseq);
  for (int s = 0; s < nseq; ++s) {
    const Sequence& seq = p.sequences[s];
    if (seq.k_len > std::numeric_limits<int32_t>::max()) return invalid_shape("the CUDA backend takes at most 2^31-1 keys per sequence");
    SeqDesc& d = cl->seqs[s];
    d = SeqDesc{seq.q_begin, seq.q_len, seq.k_begin, seq.k_len, 0, 0, 0, 0, 0, 0, 0, 0, key_prefix};
    key_prefix += seq.k_len;
    if (p.paged()) {
      const int64_t pages = (seq.k_len + p.kv.page_size - 1) / p.kv.page_size;
      for (int h = 0; h < table_heads; ++h) {
        for (int64_t i = 0; i < pages; ++i) {
          cl->block_table[s * cl->table_stride + h * cl->table_head_stride + i] =
              p.kv.block_table[s * p.kv.table_stride + h * p.kv.table_head_stride + i];
        }
      }
    }
    if (runs_decode(p, seq)) {
      const int32_t stacked = static_cast<int32_t>(seq.q_len * p.group);
      for (int kvh = 0; kvh < p.num_kv_heads; ++kvh) {
        for (int32_t r0 = 0; r0 < stacked; r0 += kDecodeRows) {
          cl->decode_groups.push_back(DecodeGroup{s, kvh, r0, std::min<int32_t>(kDecodeRows, stacked - r0), 0, 0});
        }
      }
      continue;  // not sampled (runs_decode), so nothing below applies
    }
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
    if (p.sample.look > 0.f) {
      cl->look_max_blocks += hq * ((seq.q_len + kLookRows - 1) / kLookRows);
      cl->dense_max_rows += hq * seq.q_len;
      cl->dense_max_blocks += hq * ((seq.q_len + cl->block_rows - 1) / cl->block_rows);
      cl->look_bit_words += cl->sets_per_seq * ((seq.k_len + 63) / 64);
    }
  }
  cl->look = cl->sampled && p.sample.look > 0.f;
  cl->look_row_bytes = static_cast<int32_t>((p.head_dim + 31) / 32 * 32);
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
      static_cast<int64_t>(cl->sets.size()) > 65535 || cl->look_max_blocks > max_grid || cl->dense_max_blocks > max_grid) {
    return invalid_shape("the call is too large for one CUDA launch");
  }
  plan_decode_units(p, cl);
  if (static_cast<int64_t>(cl->decode_units.size()) > max_grid) return invalid_shape("the call is too large for one CUDA launch");
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
  cl->o_block_table = take(sizeof(int32_t) * cl->block_table.size());
  cl->o_decode_groups = take(sizeof(DecodeGroup) * cl->decode_groups.size());
  cl->o_decode_units = take(sizeof(DecodeUnit) * cl->decode_units.size());
  cl->meta_bytes = at - cl->o_meta;
  const size_t elem = 2;
  if (needs_repack(p.q)) cl->o_q = take(elem * p.total_q * p.num_q_heads * p.head_dim);
  if (repacks_kv(p, false)) cl->o_k = take(elem * p.total_k * p.num_kv_heads * p.head_dim);
  if (repacks_kv(p, true)) cl->o_v = take(elem * p.total_k * p.num_kv_heads * p.head_dim_v);
  if (cl->decode_rows > 0) {
    cl->o_part_max = take(sizeof(float) * cl->decode_rows);
    cl->o_part_sum = take(sizeof(float) * cl->decode_rows);
    cl->o_part_o = take(sizeof(float) * cl->decode_rows * p.head_dim_v);
  }
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
  if (cl->look) {
    const size_t key_rows = static_cast<size_t>(key_prefix) * p.num_kv_heads;
    cl->o_look_keep = take(sizeof(int32_t) * cl->sets.size());
    cl->o_look_keys = take(key_rows * cl->look_row_bytes);
    cl->o_look_key_scales = take(sizeof(float) * key_rows);
    cl->o_look_bits = take(sizeof(uint64_t) * cl->look_bit_words);
    cl->o_look_bit_offsets = take(sizeof(int64_t) * cl->sets.size());
    cl->o_look_blocks = take(sizeof(LookBlock) * cl->look_max_blocks);
    cl->o_look_flags = take(static_cast<size_t>(p.total_q) * hq);
    cl->o_head_dense = take(sizeof(int32_t) * nseq * hq);
    cl->o_dense_rows = take(sizeof(int32_t) * cl->dense_max_rows);
    cl->o_dense_blocks = take(sizeof(RowBlock) * cl->dense_max_blocks);
    cl->o_dense_heads = take(sizeof(int32_t) * cl->dense_max_blocks);
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
  if (cl->look) {
    cl->h_look_keep = stage(sizeof(int32_t) * cl->sets.size());
    cl->h_look_bits = stage(sizeof(uint64_t) * cl->look_bit_words);
    cl->h_look_bit_offsets = stage(sizeof(int64_t) * cl->sets.size());
    cl->h_look_blocks = stage(sizeof(LookBlock) * cl->look_max_blocks);
    cl->h_look_flags = stage(static_cast<size_t>(p.total_q) * hq);
    cl->h_head_dense = stage(sizeof(int32_t) * nseq * hq);
    cl->h_dense_rows = stage(sizeof(int32_t) * cl->dense_max_rows);
    cl->h_dense_blocks = stage(sizeof(RowBlock) * cl->dense_max_blocks);
    cl->h_dense_heads = stage(sizeof(int32_t) * cl->dense_max_blocks);
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
