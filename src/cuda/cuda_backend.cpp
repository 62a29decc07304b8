// The CUDA backend: validated problems run on one device, on the caller's stream. Stage 1
// (sampled and validation rows' statistics, column scores), stage 2 (ranking, the validation
// masses, stripe lists), the look at every row and the attention are kernels (launch.h), with
// stage 2's decision and the look's on the host between them (validation.h, look.h); this file
// runs one call: lay out the workspace (device_workspace.h), upload the metadata and build the
// kernels' arguments (marshalling.h), launch, and turn the result into the same SparsePlan and
// statistics as the CPU backend (results.h).
// Every CUDA call is checked; errors become SAMPLEATTN_DEVICE_ERROR with the runtime's message
// (cuda_errors.h).
#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "core/backend.h"
#include "core/input_scan.h"
#include "core/sparse_plan.h"
#include "core/timing.h"
#include "cuda/cuda_errors.h"
#include "cuda/device_workspace.h"
#include "cuda/input_scan.h"
#include "cuda/launch.h"
#include "cuda/look.h"
#include "cuda/marshalling.h"
#include "cuda/results.h"
#include "cuda/validation.h"

namespace sampleattn::cuda {
namespace {

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::string name, uint64_t limit) : device_(device), name_(std::move(name)), limit_(limit) {}

  ~CudaBackend() override {
    DeviceScope scope(device_);
    for (cudaEvent_t& e : events_) {
      if (e != nullptr) (void)cudaEventDestroy(e);
    }
    workspace_.release();
    staging_.release();
    if (scans_ != nullptr) (void)cudaFree(scans_);
  }

  Status init() {
    DeviceScope scope(device_);
    SAMPLEATTN_CUDA_CHECK("cudaSetDevice", scope.status());
    for (cudaEvent_t& e : events_) SAMPLEATTN_CUDA_CHECK("cudaEventCreate", cudaEventCreate(&e));
    SAMPLEATTN_CUDA_CHECK("cudaMalloc (input scan)", cudaMalloc(reinterpret_cast<void**>(&scans_), 3 * sizeof(DeviceInputScan)));
    return Status::ok();
  }

  Status plan(const Problem& problem, sampleattn_plan_info* info) override {
    SAMPLEATTN_RETURN_IF_ERROR(check_dtypes(problem));
    CallLayout cl;
    SAMPLEATTN_RETURN_IF_ERROR(lay_out_call(problem, &cl));
    SAMPLEATTN_RETURN_IF_ERROR(check_limit(cl.bytes));
    if (info != nullptr) info->workspace_bytes = cl.bytes;
    return Status::ok();
  }

  Status forward(const Problem& problem, sampleattn_stats* stats) override {
    const auto t_start = std::chrono::steady_clock::now();
    SAMPLEATTN_RETURN_IF_ERROR(check_dtypes(problem));
    std::lock_guard<std::mutex> lock(mutex_);  // one workspace: calls on a context run one after another
    DeviceScope scope(device_);
    SAMPLEATTN_CUDA_CHECK("cudaSetDevice", scope.status());
    CallLayout cl;
    SAMPLEATTN_RETURN_IF_ERROR(lay_out_call(problem, &cl));
    SAMPLEATTN_RETURN_IF_ERROR(check_limit(cl.bytes));
    SAMPLEATTN_RETURN_IF_ERROR(workspace_.reserve(cl.bytes));
    SAMPLEATTN_RETURN_IF_ERROR(staging_.reserve(cl.host_bytes));
    cudaStream_t stream = static_cast<cudaStream_t>(problem.stream);
    // The metadata (sequences, block table) and K/V as the kernels read them, before the input
    // scan: it reads K and V through the same rows.
    DeviceInputs in;
    Status status = upload_metadata(cl, workspace_, stream);
    if (status.is_ok()) status = prepare_inputs(problem, cl, workspace_, stream, &in);
    if (status.is_ok()) status = check_inputs(problem, cl, in, stream);
    if (status.is_ok()) status = run(problem, cl, in, stream, stats != nullptr);
    // Whatever happened, the stream must be idle before the workspace or the host arrays go.
    const cudaError_t sync = cudaStreamSynchronize(stream);
    SAMPLEATTN_RETURN_IF_ERROR(status);
    SAMPLEATTN_CUDA_CHECK("cudaStreamSynchronize (a kernel failed)", sync);
    if (stats != nullptr) {
      SparsePlan plan;
      SAMPLEATTN_RETURN_IF_ERROR(collect_results(problem, cl, workspace_, decided_, &plan));
      float ms[3] = {0, 0, 0};
      for (int i = 0; i < 3; ++i) {
        SAMPLEATTN_CUDA_CHECK("cudaEventElapsedTime", cudaEventElapsedTime(&ms[i], events_[i], events_[i + 1]));
      }
      plan.time_sampling_s = ms[0] * 1e-3;
      plan.time_selection_s = ms[1] * 1e-3;
      // Always the plan: without a sampled sequence it still says why each head ran dense
      // (DENSE_SHORT, DENSE_WINDOW; init_dense_plan), where a null plan would say DENSE_METHOD.
      fill_stats(problem, &plan, stats);
      stats->time_attention_s = ms[2] * 1e-3;
      stats->time_total_s = seconds_since(t_start);
      stats->isa = "cuda";
      stats->precision = problem.q.dtype == DType::kBF16 ? "bf16" : "f16";  // the tensor cores' operands
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

  // The input policy (core/input_scan.h): one scan of Q, K and V on the device, the verdict on
  // the host, before anything is written. Q by tokens; K and V by each sequence's keys, read
  // through the cache's rows (core/input_scan.cpp's scan_kv_rows), so a paged or quantized cache
  // is judged, and a bad value named, exactly as on the CPU.
  Status check_inputs(const Problem& p, const CallLayout& cl, const DeviceInputs& in, cudaStream_t stream) {
    const DeviceInputScan empty[3] = {kEmptyInputScan, kEmptyInputScan, kEmptyInputScan};
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (input scan)",
                          cudaMemcpyAsync(scans_, empty, sizeof empty, cudaMemcpyHostToDevice, stream));
    SAMPLEATTN_CUDA_CHECK("input scan kernel",
                          launch_input_scan(p.q.data, static_cast<int>(p.q.dtype), p.q.token_stride, p.q.head_stride,
                                            p.total_q, p.num_q_heads, p.head_dim, scans_, stream));
    int64_t keys = 0;
    for (const Sequence& s : p.sequences) keys += s.k_len;
    const SeqDesc* seqs = workspace_.at<SeqDesc>(cl.o_seqs);
    const int nseq = static_cast<int>(p.sequences.size());
    SAMPLEATTN_CUDA_CHECK("input scan kernel (k)",
                          launch_kv_scan(in.kv, false, static_cast<int>(p.k.dtype), seqs, nseq, keys, p.num_kv_heads,
                                         p.head_dim, scans_ + 1, stream));
    SAMPLEATTN_CUDA_CHECK("input scan kernel (v)",
                          launch_kv_scan(in.kv, true, static_cast<int>(p.v.dtype), seqs, nseq, keys, p.num_kv_heads,
                                         p.head_dim_v, scans_ + 2, stream));
    DeviceInputScan found[3];
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (input scan)",
                          cudaMemcpyAsync(found, scans_, sizeof found, cudaMemcpyDeviceToHost, stream));
    SAMPLEATTN_CUDA_CHECK("cudaStreamSynchronize (input scan)", cudaStreamSynchronize(stream));
    InputScan host[3];
    for (int t = 0; t < 3; ++t) {
      if (found[t].first_bad != kEmptyInputScan.first_bad) {
        const uint64_t row = found[t].first_bad >> 16;
        const int low = static_cast<int>(found[t].first_bad & 0xffffu);
        const int heads = t == 0 ? p.num_q_heads : p.num_kv_heads;
        host[t].bad_head = static_cast<int>(row % static_cast<uint64_t>(heads));
        const int64_t r = static_cast<int64_t>(row / static_cast<uint64_t>(heads));
        if (t == 0) {
          host[t].bad_token = r;
          host[t].bad_dim = low;
        } else {
          // Global key r: the last sequence whose keys start at or before it.
          int seq = 0;
          for (int s = 0; s < nseq; ++s) {
            if (cl.seqs[s].key_prefix <= r) seq = s;
          }
          const int64_t j = r - cl.seqs[seq].key_prefix;
          // Packed K/V name the token (as Q does); paged ones the sequence and key position.
          host[t].bad_sequence = p.paged() ? seq : -1;
          host[t].bad_token = p.paged() ? j : p.sequences[seq].k_begin + j;
          host[t].bad_dim = low - 1;  // -1: the row's scale
        }
      }
      float sumsq, max_abs;
      std::memcpy(&sumsq, &found[t].max_sumsq_bits, sizeof sumsq);
      std::memcpy(&max_abs, &found[t].max_abs_bits, sizeof max_abs);
      host[t].max_row_norm = std::sqrt(sumsq);
      host[t].max_abs = max_abs;
    }
    return input_scan_status(p, host[0], host[1], host[2]);
  }

  // Queues the call's kernels on `stream`, with events 0..3 around stage 1, stage 2 and the
  // attention. Stage 2 waits for the host's decision (decide_stripes) in the middle.
  Status run(const Problem& p, const CallLayout& cl, const DeviceInputs& in, cudaStream_t stream, bool want_stats) {
    SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[0], stream));
    if (p.total_q == 0) {
      for (int i = 1; i < 4; ++i) SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[i], stream));
      return Status::ok();
    }
    const AttentionArgs aa = attention_args(p, cl, workspace_, in);
    const int d = p.head_dim, dim = attention_dim(p);  // columns and validation on d, attention on dim

    if (cl.sampled) {
      // Stage 1: exact row statistics of the sampled and the validation rows, then the sampled
      // rows' column scores.
      AttentionArgs stats_args = aa;
      stats_args.mode = AttentionMode::kRowStats;
      stats_args.blocks = workspace_.at<RowBlock>(cl.o_sample_blocks);
      stats_args.num_blocks = static_cast<int64_t>(cl.sample_blocks.size());
      SAMPLEATTN_CUDA_CHECK("row statistics kernel", launch_attention(dim, cl.bf16, stats_args, stream));
      SAMPLEATTN_CUDA_CHECK("column score kernel",
                            launch_columns(d, cl.bf16, column_args(p, cl, workspace_, in), stream));
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[1], stream));

      // Stage 2: the rankings, the host's decision (validation), the stripe lists.
      const SelectionArgs sa = selection_args(p, cl, workspace_);
      SAMPLEATTN_CUDA_CHECK("stripe ranking", launch_ranking(sa, stream));
      SAMPLEATTN_RETURN_IF_ERROR(decide_stripes(p, cl, workspace_, staging_, in, stream, workers_, &decided_));
      SAMPLEATTN_CUDA_CHECK("stripe lists", launch_stripes(sa, stream));
      // The look at every row: its dense rows and the heads it makes dense.
      if (cl.look) SAMPLEATTN_RETURN_IF_ERROR(find_dense_rows(p, cl, workspace_, staging_, in, stream, &decided_));
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[2], stream));
    } else {
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[1], stream));
      SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[2], stream));
    }

    AttentionArgs fa = aa;
    fa.mode = AttentionMode::kForward;
    fa.blocks = workspace_.at<RowBlock>(cl.o_blocks);
    fa.num_blocks = static_cast<int64_t>(cl.blocks.size());
    SAMPLEATTN_CUDA_CHECK("attention kernel", launch_attention(dim, cl.bf16, fa, stream));
    if (!cl.decode_groups.empty()) {
      // Short query runs over many keys: split-KV partials, then their merge into O and lse.
      const DecodeArgs da = decode_args(cl, workspace_, fa);
      SAMPLEATTN_CUDA_CHECK("decode kernel", launch_decode(dim, cl.bf16, da, stream));
      SAMPLEATTN_CUDA_CHECK("decode merge kernel", launch_decode_merge(da, stream));
    }
    if (cl.look && decided_.dense_blocks > 0) {
      // The look's dense rows over every key they see, written over the forward pass's.
      AttentionArgs ra = aa;
      ra.mode = AttentionMode::kDenseRows;
      ra.blocks = workspace_.at<RowBlock>(cl.o_dense_blocks);
      ra.num_blocks = decided_.dense_blocks;
      ra.rows = workspace_.at<int32_t>(cl.o_dense_rows);
      SAMPLEATTN_CUDA_CHECK("dense rows kernel", launch_attention(dim, cl.bf16, ra, stream));
    }
    SAMPLEATTN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(events_[3], stream));

    if (cl.sampled && want_stats) {
      // Kept mass (CRA) of the sampled rows under the chosen mask, for the statistics.
      AttentionArgs ka = aa;
      ka.mode = AttentionMode::kKeptMass;
      ka.blocks = workspace_.at<RowBlock>(cl.o_sample_blocks);
      ka.num_blocks = static_cast<int64_t>(cl.kept_blocks);
      SAMPLEATTN_CUDA_CHECK("kept mass kernel", launch_attention(dim, cl.bf16, ka, stream));
    }
    return Status::ok();
  }

  int device_;
  std::string name_;
  uint64_t limit_;
  std::mutex mutex_;
  DeviceWorkspace workspace_;
  HostStaging staging_;
  CallDecisions decided_;  // the last call's validation decisions, for its statistics
  HostWorkers workers_{16};  // stage 2's host steps (cuda/validation.h), kept between calls
  cudaEvent_t events_[4] = {nullptr, nullptr, nullptr, nullptr};
  DeviceInputScan* scans_ = nullptr;  // [3]: Q, K, V
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
