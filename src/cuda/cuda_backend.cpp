// The CUDA backend: validated problems run on one device, on the caller's stream. Stage 1
// (sampled rows' statistics and column scores), stage 2 (selection) and the attention are kernels
// (launch.h); this file lays out the device workspace, uploads the per-call metadata in one copy,
// launches, and turns the result into the same SparsePlan and statistics as the CPU backend.
// Every CUDA call is checked; errors become SAMPLEATTN_DEVICE_ERROR with the runtime's message.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/sparse_plan.h"
#include "core/timing.h"
#include "cpu/sampling.h"
#include "cuda/kernel_params.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {
namespace {

Status device_error(const std::string& what, cudaError_t err) {
  return {SAMPLEATTN_DEVICE_ERROR,
          what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")"};
}

#define SAMPLEATTN_CUDA_CHECK(what, expr)                        \
  do {                                                           \
    const cudaError_t cuda_status_ = (expr);                     \
    if (cuda_status_ != cudaSuccess) return device_error((what), cuda_status_); \
  } while (0)

// Makes `device` current for the scope and restores the caller's device afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    status_ = previous_ == device ? cudaSuccess : cudaSetDevice(device);
    changed_ = previous_ != device && status_ == cudaSuccess && previous_ >= 0;
  }
  ~DeviceScope() {
    if (changed_) (void)cudaSetDevice(previous_);
  }
  cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  bool changed_ = false;
  cudaError_t status_ = cudaSuccess;
};

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

// 16-byte copies need aligned rows: otherwise the tensor is repacked first.
bool needs_repack(const TensorView& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 != 0 || t.token_stride % 8 != 0 || t.head_stride % 8 != 0;
}

constexpr size_t kAlign = 256;
size_t round_up(size_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

// Everything a call needs that is known on the host before any kernel runs, and the layout of
// its device workspace.
struct CallPlan {
  int block_rows = 0;
  bool bf16 = false;
  bool per_group = false;
  bool sampled = false;
  int heads_per_set = 1;
  int sets_per_seq = 0;

  std::vector<SeqDesc> seqs;
  std::vector<RowBlock> blocks;         // forward
  std::vector<int32_t> rows;            // sampled rows, concatenated
  std::vector<RowBlock> sample_blocks;  // over `rows`
  std::vector<KeyTile> tiles;           // column tiles
  std::vector<int64_t> score_offset;    // per sequence
  std::vector<SelectionSet> sets;
  std::vector<int64_t> set_offset;      // per set, into stripes
  std::vector<int> sampled_seqs;
  int64_t total_rows = 0, total_scores = 0, total_columns = 0, total_items = 0;
  int32_t max_k_len = 0;
  size_t sort_bytes = 0;

  // Workspace offsets (bytes).
  size_t o_meta = 0, meta_bytes = 0;
  size_t o_seqs = 0, o_blocks = 0, o_rows = 0, o_sample_blocks = 0, o_tiles = 0, o_score_offset = 0, o_sets = 0,
         o_set_offset = 0;
  size_t o_q = 0, o_k = 0, o_v = 0;
  size_t o_row_max = 0, o_row_sum = 0, o_kept = 0, o_scores = 0, o_set_scores = 0, o_keys_in = 0, o_keys_out = 0,
         o_values_in = 0, o_values_out = 0, o_flags = 0, o_keep = 0, o_stripes = 0, o_counts = 0, o_dense = 0, o_sort = 0;
  size_t bytes = 0;
};

Status make_call_plan(const Problem& p, CallPlan* cp) {
  cp->block_rows = attention_block_rows(p.head_dim);
  cp->bf16 = p.q.dtype == DType::kBF16;
  cp->per_group = p.sample.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP;
  cp->heads_per_set = cp->per_group ? p.group : 1;
  cp->sets_per_seq = cp->per_group ? p.num_kv_heads : p.num_q_heads;
  const int hq = p.num_q_heads;
  const int nseq = static_cast<int>(p.sequences.size());
  cp->seqs.resize(nseq);
  cp->score_offset.assign(nseq, 0);
  struct Costed { RowBlock block; int64_t cost; };
  std::vector<Costed> costed;
  for (int s = 0; s < nseq; ++s) {
    const Sequence& seq = p.sequences[s];
    if (seq.k_len > std::numeric_limits<int32_t>::max()) return invalid_shape("the CUDA backend takes at most 2^31-1 keys per sequence");
    SeqDesc& d = cp->seqs[s];
    d = SeqDesc{seq.q_begin, seq.q_len, seq.k_begin, seq.k_len, 0, 0, 0, 0, 0};
    for (int64_t q0 = 0; q0 < seq.q_len; q0 += cp->block_rows) {
      const int count = static_cast<int>(std::min<int64_t>(cp->block_rows, seq.q_len - q0));
      const int64_t cost = p.causal ? seq.q_offset() + q0 + count : seq.k_len;
      costed.push_back({RowBlock{s, count, q0}, cost});
    }
    if (!cpu::sequence_is_sampled(p, seq)) continue;
    cp->sampled = true;
    cp->sampled_seqs.push_back(s);
    d.sparse = 1;
    d.window = window_size(p.sample, seq.k_len);
    d.set_base = static_cast<int32_t>(cp->sets.size());
    const std::vector<int64_t> rows = cpu::sampled_rows(p.sample, seq.q_len);
    d.row_begin = cp->total_rows;
    d.row_count = static_cast<int64_t>(rows.size());
    for (int64_t c0 = 0; c0 < d.row_count; c0 += cp->block_rows) {
      const int count = static_cast<int>(std::min<int64_t>(cp->block_rows, d.row_count - c0));
      cp->sample_blocks.push_back(RowBlock{s, count, d.row_begin + c0});
    }
    for (int64_t r : rows) cp->rows.push_back(static_cast<int32_t>(r));
    cp->total_rows += d.row_count;
    for (int64_t t0 = 0; t0 < seq.k_len; t0 += column_tile()) cp->tiles.push_back(KeyTile{s, 0, t0});
    cp->score_offset[s] = cp->total_scores;
    cp->total_scores += static_cast<int64_t>(hq) * seq.k_len;
    const int32_t sinks = static_cast<int32_t>(std::min<int64_t>(std::max(p.sample.sink_tokens, 0), seq.k_len));
    for (int set = 0; set < cp->sets_per_seq; ++set) {
      SelectionSet ss{};
      ss.score_base = cp->score_offset[s] + static_cast<int64_t>(set) * cp->heads_per_set * seq.k_len;
      ss.offset = cp->total_columns;
      ss.key_begin = cp->total_items;
      ss.heads = cp->heads_per_set;
      ss.k_len = static_cast<int32_t>(seq.k_len);
      ss.sinks = sinks;
      ss.window = static_cast<int32_t>(d.window);
      ss.q_offset = seq.q_offset();
      ss.window_pairs = window_pairs(seq, d.window);
      ss.causal_pairs = causal_pairs(seq);
      ss.total = static_cast<double>(rows.size()) * cp->heads_per_set;
      cp->sets.push_back(ss);
      cp->set_offset.push_back(cp->total_columns);
      cp->total_columns += seq.k_len;
      cp->total_items += seq.k_len - sinks;
    }
    cp->max_k_len = std::max<int32_t>(cp->max_k_len, static_cast<int32_t>(seq.k_len));
  }
  // Most expensive query blocks first: the causal tail then holds the cheap ones.
  std::stable_sort(costed.begin(), costed.end(), [](const Costed& a, const Costed& b) { return a.cost > b.cost; });
  for (const Costed& c : costed) cp->blocks.push_back(c.block);
  std::stable_sort(cp->tiles.begin(), cp->tiles.end(), [](const KeyTile& a, const KeyTile& b) { return a.t0 < b.t0; });
  const int64_t max_grid = std::numeric_limits<int32_t>::max();
  if (static_cast<int64_t>(cp->blocks.size()) * hq > max_grid ||
      static_cast<int64_t>(cp->tiles.size()) * hq > max_grid || static_cast<int64_t>(cp->sets.size()) > 65535) {
    return invalid_shape("the call is too large for one CUDA launch");
  }
  if (cp->sampled) cp->sort_bytes = selection_sort_bytes(cp->total_items, static_cast<int>(cp->sets.size()));

  // Layout: metadata first (one upload), then the rest.
  size_t at = 0;
  auto take = [&at](size_t b) { const size_t here = at; at += round_up(b); return here; };
  cp->o_meta = at;
  cp->o_seqs = take(sizeof(SeqDesc) * cp->seqs.size());
  cp->o_blocks = take(sizeof(RowBlock) * cp->blocks.size());
  cp->o_rows = take(sizeof(int32_t) * cp->rows.size());
  cp->o_sample_blocks = take(sizeof(RowBlock) * cp->sample_blocks.size());
  cp->o_tiles = take(sizeof(KeyTile) * cp->tiles.size());
  cp->o_score_offset = take(sizeof(int64_t) * cp->score_offset.size());
  cp->o_sets = take(sizeof(SelectionSet) * cp->sets.size());
  cp->o_set_offset = take(sizeof(int64_t) * cp->set_offset.size());
  cp->meta_bytes = at - cp->o_meta;
  const size_t elem = 2;
  if (needs_repack(p.q)) cp->o_q = take(elem * p.total_q * p.num_q_heads * p.head_dim);
  if (needs_repack(p.k)) cp->o_k = take(elem * p.total_k * p.num_kv_heads * p.head_dim);
  if (needs_repack(p.v)) cp->o_v = take(elem * p.total_k * p.num_kv_heads * p.head_dim);
  if (cp->sampled) {
    const size_t per_row = sizeof(float) * hq * cp->total_rows;
    cp->o_row_max = take(per_row);
    cp->o_row_sum = take(per_row);
    cp->o_kept = take(per_row);
    cp->o_scores = take(sizeof(float) * cp->total_scores);
    cp->o_set_scores = take(sizeof(float) * cp->total_columns);
    cp->o_keys_in = take(sizeof(uint64_t) * cp->total_items);
    cp->o_keys_out = take(sizeof(uint64_t) * cp->total_items);
    cp->o_values_in = take(sizeof(int32_t) * cp->total_items);
    cp->o_values_out = take(sizeof(int32_t) * cp->total_items);
    cp->o_flags = take(cp->total_columns);
    cp->o_keep = take(sizeof(int32_t) * 2 * cp->sets.size());
    cp->o_stripes = take(sizeof(int32_t) * cp->total_columns);
    cp->o_counts = take(sizeof(int32_t) * cp->sets.size());
    cp->o_dense = take(sizeof(int32_t) * cp->sets.size());
    cp->o_sort = take(cp->sort_bytes);
  }
  cp->bytes = at;
  return Status::ok();
}

template <typename T>
void put(std::vector<unsigned char>& host, size_t offset, const std::vector<T>& v) {
  if (!v.empty()) std::memcpy(host.data() + offset, v.data(), sizeof(T) * v.size());
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::string name, uint64_t limit) : device_(device), name_(std::move(name)), limit_(limit) {}

  ~CudaBackend() override {
    DeviceScope scope(device_);
    for (cudaEvent_t& e : events_) {
      if (e != nullptr) (void)cudaEventDestroy(e);
    }
    if (workspace_ != nullptr) (void)cudaFree(workspace_);
  }

  Status init() {
    DeviceScope scope(device_);
    SAMPLEATTN_CUDA_CHECK("cudaSetDevice", scope.status());
    for (cudaEvent_t& e : events_) SAMPLEATTN_CUDA_CHECK("cudaEventCreate", cudaEventCreate(&e));
    return Status::ok();
  }

  Status plan(const Problem& problem, sampleattn_plan_info* info) override {
    SAMPLEATTN_RETURN_IF_ERROR(check_dtypes(problem));
    CallPlan cp;
    SAMPLEATTN_RETURN_IF_ERROR(make_call_plan(problem, &cp));
    SAMPLEATTN_RETURN_IF_ERROR(check_limit(cp.bytes));
    if (info != nullptr) info->workspace_bytes = cp.bytes;
    return Status::ok();
  }

  Status forward(const Problem& problem, sampleattn_stats* stats) override {
    const auto t_start = std::chrono::steady_clock::now();
    SAMPLEATTN_RETURN_IF_ERROR(check_dtypes(problem));
    std::lock_guard<std::mutex> lock(mutex_);  // one workspace: calls on a context run one after another
    DeviceScope scope(device_);
    SAMPLEATTN_CUDA_CHECK("cudaSetDevice", scope.status());
    CallPlan cp;
    SAMPLEATTN_RETURN_IF_ERROR(make_call_plan(problem, &cp));
    SAMPLEATTN_RETURN_IF_ERROR(check_limit(cp.bytes));
    SAMPLEATTN_RETURN_IF_ERROR(reserve(cp.bytes));
    cudaStream_t stream = static_cast<cudaStream_t>(problem.stream);
    SparsePlan plan;
    Status status = run(problem, cp, stream, stats != nullptr, &plan);
    // Whatever happened, the stream must be idle before the workspace or the host arrays go.
    const cudaError_t sync = cudaStreamSynchronize(stream);
    SAMPLEATTN_RETURN_IF_ERROR(status);
    SAMPLEATTN_CUDA_CHECK("cudaStreamSynchronize (a kernel failed)", sync);
    if (stats != nullptr) {
      SAMPLEATTN_RETURN_IF_ERROR(collect(problem, cp, stream, &plan));
      float ms[3] = {0, 0, 0};
      for (int i = 0; i < 3; ++i) {
        SAMPLEATTN_CUDA_CHECK("cudaEventElapsedTime", cudaEventElapsedTime(&ms[i], events_[i], events_[i + 1]));
      }
      plan.time_sampling_s = ms[0] * 1e-3;
      plan.time_selection_s = ms[1] * 1e-3;
      fill_stats(problem, cp.sampled ? &plan : nullptr, stats);
      stats->time_attention_s = ms[2] * 1e-3;
      stats->time_total_s = seconds_since(t_start);
      stats->isa = "cuda";
    }
    return Status::ok();
  }

  void describe(sampleattn_context_info* info) const override {
    info->backend = SAMPLEATTN_BACKEND_CUDA;
    info->num_threads = 0;
    info->num_numa_nodes = 0;
    info->isa = "cuda";
    info->device_name = name_.c_str();
  }

 private:
  Status check_limit(size_t bytes) const {
    if (limit_ != 0 && bytes > limit_) {
      return out_of_memory("the call needs " + std::to_string(bytes) +
                           " bytes of device workspace, over the context's limit of " + std::to_string(limit_));
    }
    return Status::ok();
  }

  Status reserve(size_t bytes) {
    if (bytes <= capacity_) return Status::ok();
    if (workspace_ != nullptr) {
      SAMPLEATTN_CUDA_CHECK("cudaFree", cudaFree(workspace_));
      workspace_ = nullptr;
      capacity_ = 0;
    }
    const cudaError_t err = cudaMalloc(&workspace_, bytes);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      workspace_ = nullptr;
      if (err == cudaErrorMemoryAllocation) {
        return out_of_memory("cannot allocate " + std::to_string(bytes) + " bytes of device workspace");
      }
      return device_error("cudaMalloc", err);
    }
    capacity_ = bytes;
    return Status::ok();
  }

  template <typename T>
  T* at(size_t offset) const { return reinterpret_cast<T*>(static_cast<char*>(workspace_) + offset); }

  Status run(const Problem& p, const CallPlan& cp, cudaStream_t stream, bool want_stats, SparsePlan* plan) {
    SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[0], stream));
    if (p.total_q == 0) {
      for (int i = 1; i < 4; ++i) SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[i], stream));
      return Status::ok();
    }
    // Metadata: one upload.
    std::vector<unsigned char> host(cp.meta_bytes);
    put(host, cp.o_seqs - cp.o_meta, cp.seqs);
    put(host, cp.o_blocks - cp.o_meta, cp.blocks);
    put(host, cp.o_rows - cp.o_meta, cp.rows);
    put(host, cp.o_sample_blocks - cp.o_meta, cp.sample_blocks);
    put(host, cp.o_tiles - cp.o_meta, cp.tiles);
    put(host, cp.o_score_offset - cp.o_meta, cp.score_offset);
    put(host, cp.o_sets - cp.o_meta, cp.sets);
    put(host, cp.o_set_offset - cp.o_meta, cp.set_offset);
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (metadata)",
                          cudaMemcpyAsync(at<char>(cp.o_meta), host.data(), cp.meta_bytes, cudaMemcpyHostToDevice, stream));

    // Inputs whose rows are not 16-byte aligned are repacked.
    const void* q = p.q.data;
    const void* k = p.k.data;
    const void* v = p.v.data;
    int64_t qts = p.q.token_stride, qhs = p.q.head_stride, kts = p.k.token_stride, khs = p.k.head_stride,
            vts = p.v.token_stride, vhs = p.v.head_stride;
    const int d = p.head_dim;
    if (needs_repack(p.q)) {
      SAMPLEATTN_CUDA_CHECK("repack q", launch_repack(q, qts, qhs, p.total_q, p.num_q_heads, d, at<char>(cp.o_q), stream));
      q = at<char>(cp.o_q), qts = int64_t{p.num_q_heads} * d, qhs = d;
    }
    if (needs_repack(p.k)) {
      SAMPLEATTN_CUDA_CHECK("repack k", launch_repack(k, kts, khs, p.total_k, p.num_kv_heads, d, at<char>(cp.o_k), stream));
      k = at<char>(cp.o_k), kts = int64_t{p.num_kv_heads} * d, khs = d;
    }
    if (needs_repack(p.v)) {
      SAMPLEATTN_CUDA_CHECK("repack v", launch_repack(v, vts, vhs, p.total_k, p.num_kv_heads, d, at<char>(cp.o_v), stream));
      v = at<char>(cp.o_v), vts = int64_t{p.num_kv_heads} * d, vhs = d;
    }

    AttentionArgs aa{};
    aa.q = q, aa.k = k, aa.v = v;
    aa.q_token_stride = qts, aa.q_head_stride = qhs, aa.k_token_stride = kts, aa.k_head_stride = khs;
    aa.v_token_stride = vts, aa.v_head_stride = vhs;
    aa.o = p.o.data;
    aa.o_type = static_cast<OutType>(static_cast<int>(p.o.dtype));
    aa.o_token_stride = p.o.token_stride, aa.o_head_stride = p.o.head_stride;
    aa.lse = p.lse;
    aa.num_q_heads = p.num_q_heads;
    aa.group = p.group;
    aa.scale_log2 = p.scale * 1.4426950408889634f;
    aa.causal = p.causal ? 1 : 0;
    aa.seqs = at<SeqDesc>(cp.o_seqs);
    aa.per_group = cp.per_group ? 1 : 0;

    if (cp.sampled) {
      aa.stripes = at<int32_t>(cp.o_stripes);
      aa.set_offset = at<int64_t>(cp.o_set_offset);
      aa.set_count = at<int32_t>(cp.o_counts);
      aa.set_dense = at<int32_t>(cp.o_dense);
      aa.rows = at<int32_t>(cp.o_rows);
      aa.total_rows = cp.total_rows;
      aa.row_max = at<float>(cp.o_row_max);
      aa.row_sum = at<float>(cp.o_row_sum);
      aa.kept = at<float>(cp.o_kept);

      // Stage 1: exact row statistics of the sampled rows, then their column scores.
      AttentionArgs stats_args = aa;
      stats_args.mode = AttentionMode::kRowStats;
      stats_args.blocks = at<RowBlock>(cp.o_sample_blocks);
      stats_args.num_blocks = static_cast<int64_t>(cp.sample_blocks.size());
      SAMPLEATTN_CUDA_CHECK("row statistics kernel", launch_attention(d, cp.bf16, stats_args, stream));
      ColumnArgs ca{};
      ca.q = q, ca.k = k;
      ca.q_token_stride = qts, ca.q_head_stride = qhs, ca.k_token_stride = kts, ca.k_head_stride = khs;
      ca.num_q_heads = p.num_q_heads;
      ca.group = p.group;
      ca.scale_log2 = aa.scale_log2;
      ca.outside_window_only = p.sample.window_mass_counts == 1 ? 1 : 0;
      ca.seqs = aa.seqs;
      ca.tiles = at<KeyTile>(cp.o_tiles);
      ca.num_tiles = static_cast<int64_t>(cp.tiles.size());
      ca.rows = aa.rows;
      ca.total_rows = cp.total_rows;
      ca.row_max = aa.row_max;
      ca.row_sum = aa.row_sum;
      ca.scores = at<float>(cp.o_scores);
      ca.score_offset = at<int64_t>(cp.o_score_offset);
      SAMPLEATTN_CUDA_CHECK("column score kernel", launch_columns(d, cp.bf16, ca, stream));
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[1], stream));

      // Stage 2.
      SelectionArgs sa{};
      sa.scores = ca.scores;
      sa.sets = at<SelectionSet>(cp.o_sets);
      sa.num_sets = static_cast<int32_t>(cp.sets.size());
      sa.max_k_len = cp.max_k_len;
      sa.total_columns = cp.total_columns;
      sa.total_items = cp.total_items;
      sa.alpha = p.sample.alpha;
      sa.window_mass_counts = p.sample.window_mass_counts == 1 ? 1 : 0;
      sa.min_stripes = p.sample.min_stripes;
      sa.max_stripes = p.sample.max_stripes;
      sa.max_density = p.sample.max_density;
      sa.set_scores = at<float>(cp.o_set_scores);
      sa.keys_in = at<uint64_t>(cp.o_keys_in);
      sa.keys_out = at<uint64_t>(cp.o_keys_out);
      sa.values_in = at<int32_t>(cp.o_values_in);
      sa.values_out = at<int32_t>(cp.o_values_out);
      sa.flags = at<uint8_t>(cp.o_flags);
      sa.keep = at<int32_t>(cp.o_keep);
      sa.sort_temp = at<char>(cp.o_sort);
      sa.sort_temp_bytes = cp.sort_bytes;
      sa.stripes = at<int32_t>(cp.o_stripes);
      sa.counts = at<int32_t>(cp.o_counts);
      sa.dense = at<int32_t>(cp.o_dense);
      SAMPLEATTN_CUDA_CHECK("stripe selection", launch_selection(sa, stream));
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[2], stream));
    } else {
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[1], stream));
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[2], stream));
    }

    AttentionArgs fa = aa;
    fa.mode = AttentionMode::kForward;
    fa.blocks = at<RowBlock>(cp.o_blocks);
    fa.num_blocks = static_cast<int64_t>(cp.blocks.size());
    SAMPLEATTN_CUDA_CHECK("attention kernel", launch_attention(d, cp.bf16, fa, stream));
    SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[3], stream));

    if (cp.sampled && want_stats) {
      // Kept mass (CRA) of the sampled rows under the chosen mask, for the statistics.
      AttentionArgs ka = aa;
      ka.mode = AttentionMode::kKeptMass;
      ka.blocks = at<RowBlock>(cp.o_sample_blocks);
      ka.num_blocks = static_cast<int64_t>(cp.sample_blocks.size());
      SAMPLEATTN_CUDA_CHECK("kept mass kernel", launch_attention(d, cp.bf16, ka, stream));
    }
    (void)plan;
    return Status::ok();
  }

  // After the stream is idle: the chosen stripes and the kept mass, back to the host.
  Status collect(const Problem& p, const CallPlan& cp, cudaStream_t stream, SparsePlan* plan) {
    const int hq = p.num_q_heads;
    plan->heads.assign(p.sequences.size() * hq, HeadPlan{});
    for (size_t s = 0; s < p.sequences.size(); ++s) {
      for (int h = 0; h < hq; ++h) plan->heads[s * hq + h].window = p.sequences[s].k_len;
    }
    if (!cp.sampled || p.total_q == 0) return Status::ok();
    std::vector<int32_t> counts(cp.sets.size());
    SAMPLEATTN_CUDA_CHECK("cudaMemcpy (stripe counts)",
                          cudaMemcpy(counts.data(), at<int32_t>(cp.o_counts), sizeof(int32_t) * counts.size(),
                                     cudaMemcpyDeviceToHost));
    std::vector<int32_t> dense(cp.sets.size());
    SAMPLEATTN_CUDA_CHECK("cudaMemcpy (dense sets)",
                          cudaMemcpy(dense.data(), at<int32_t>(cp.o_dense), sizeof(int32_t) * dense.size(),
                                     cudaMemcpyDeviceToHost));
    std::vector<float> kept(static_cast<size_t>(hq) * cp.total_rows);
    SAMPLEATTN_CUDA_CHECK("cudaMemcpy (kept mass)",
                          cudaMemcpy(kept.data(), at<float>(cp.o_kept), sizeof(float) * kept.size(), cudaMemcpyDeviceToHost));
    for (int s : cp.sampled_seqs) {
      const SeqDesc& sd = cp.seqs[s];
      for (int h = 0; h < hq; ++h) {
        const int set = sd.set_base + (cp.per_group ? h / p.group : h);
        HeadPlan& hp = plan->heads[static_cast<size_t>(s) * hq + h];
        if (dense[set] != 0) continue;  // ran dense (max_density): the defaults describe it
        hp.dense = false;
        hp.window = sd.window;
        hp.stripes.resize(counts[set]);
        if (counts[set] > 0) {
          SAMPLEATTN_CUDA_CHECK("cudaMemcpy (stripes)",
                                cudaMemcpy(hp.stripes.data(), at<int32_t>(cp.o_stripes) + cp.set_offset[set],
                                           sizeof(int32_t) * counts[set], cudaMemcpyDeviceToHost));
        }
        float lo = 1.f;
        double sum = 0;
        for (int64_t i = 0; i < sd.row_count; ++i) {
          const float k = std::min(1.f, kept[static_cast<size_t>(h) * cp.total_rows + sd.row_begin + i]);
          lo = std::min(lo, k);
          sum += k;
        }
        hp.cra_min = lo;
        hp.cra_mean = sd.row_count > 0 ? static_cast<float>(sum / sd.row_count) : 1.f;
      }
    }
    (void)stream;
    return Status::ok();
  }

  int device_;
  std::string name_;
  uint64_t limit_;
  std::mutex mutex_;
  void* workspace_ = nullptr;
  size_t capacity_ = 0;
  cudaEvent_t events_[4] = {nullptr, nullptr, nullptr, nullptr};
};

}  // namespace

Status create_backend(const BackendOptions& options, std::unique_ptr<Backend>* backend) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    const char* why = err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice
                          ? "no NVIDIA driver or device, or a driver older than the CUDA runtime"
                          : "the CUDA runtime cannot start";
    return unsupported_backend(std::string("no usable CUDA device (") + why + "): cudaGetDeviceCount reported " +
                               cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
  if (count == 0) return unsupported_backend("no CUDA device found");
  if (options.cuda_device >= count) {
    return unsupported_backend("cuda_device " + std::to_string(options.cuda_device) + " requested but only " +
                               std::to_string(count) + " CUDA device(s) found");
  }
  cudaDeviceProp prop{};
  SAMPLEATTN_CUDA_CHECK("cudaGetDeviceProperties", cudaGetDeviceProperties(&prop, options.cuda_device));
  if (prop.major < 8) {
    return unsupported_backend(std::string("CUDA device ") + prop.name + " has compute capability " +
                               std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                               "; the CUDA backend needs 8.0 or newer (mma.sync bf16, cp.async)");
  }
  auto b = std::make_unique<CudaBackend>(options.cuda_device, prop.name, options.max_workspace_bytes);
  SAMPLEATTN_RETURN_IF_ERROR(b->init());
  *backend = std::move(b);
  return Status::ok();
}

}  // namespace sampleattn::cuda
