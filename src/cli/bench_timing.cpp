#include "cli/bench_timing.h"

#include <algorithm>
#include <chrono>

#include "cli/bench_peak.h"
#include "cli/bench_report.h"
#include "cli/common.h"
#include "cli/device_memory.h"

namespace sampleattn::cli {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

bool measure(sampleattn_context* ctx, sampleattn_backend backend, const BenchInputs& in, sampleattn_method method,
             const sampleattn::Params& method_params, const TimedRuns& runs, Measured* out, std::string* error) {
  using Clock = std::chrono::steady_clock;
  BackendMemory mem(backend);
  const KvStorage& kv = in.kv;
  const bool cache = kv.uses_cache();
  void* q = mem.upload(in.q.data(), in.q.bytes.size(), error);
  void* k = q ? (cache ? mem.upload(kv.k.data(), kv.k.size(), error) : mem.upload(in.k.data(), in.k.bytes.size(), error))
              : nullptr;
  void* v = k ? (cache ? mem.upload(kv.v.data(), kv.v.size(), error) : mem.upload(in.v.data(), in.v.bytes.size(), error))
              : nullptr;
  // The scales live where K and V do (device memory for CUDA).
  void* k_scale = v;
  void* v_scale = v;
  if (v != nullptr && !kv.k_scale.empty()) {
    k_scale = mem.upload(kv.k_scale.data(), kv.k_scale.size() * sizeof(float), error);
    v_scale = k_scale ? mem.upload(kv.v_scale.data(), kv.v_scale.size() * sizeof(float), error) : nullptr;
  }
  const size_t o_bytes = static_cast<size_t>(in.q.seq * in.q.heads * in.v.dim) * sizeof(float);
  void* o = v_scale ? mem.allocate(o_bytes, error) : nullptr;
  if (o == nullptr) return false;
  sampleattn_params p = tensor_params(in.q, in.k, in.v, q, k, v, o, DType::kF32);
  sampleattn_kv_cache kv_cache;
  if (cache) {
    kv_cache = kv.cache(kv.k_scale.empty() ? nullptr : static_cast<const float*>(k_scale),
                        kv.v_scale.empty() ? nullptr : static_cast<const float*>(v_scale));
    p.k = {k, kv.dtype, kv.heads * kv.k_dim, kv.k_dim};
    p.v = {v, kv.dtype, kv.heads * kv.v_dim, kv.v_dim};
    p.kv_cache = &kv_cache;
  }
  p.method = method;
  p.precision = method_params.precision;
  p.sample = &method_params.sample;
  in.model.apply_to(&p);
  sampleattn_plan_info plan;
  sampleattn_plan_info_init(&plan);
  if (sampleattn_plan(ctx, &p, &plan) == SAMPLEATTN_SUCCESS) {
    out->workspace_bytes = plan.workspace_bytes;
    out->dense_flops = plan.dense_flops;
  }
  const int nheads = static_cast<int>(in.q.heads);
  out->heads.assign(static_cast<size_t>(nheads), {});
  out->stripe_offsets.assign(static_cast<size_t>(nheads) + 1, 0);
  out->stripes.assign(static_cast<size_t>(nheads) * static_cast<size_t>(in.k.seq), 0);  // always enough
  out->dense_row_offsets.assign(static_cast<size_t>(nheads) + 1, 0);
  out->dense_row_indices.assign(static_cast<size_t>(nheads) * static_cast<size_t>(in.q.seq), 0);  // likewise
  // One untimed run collects the statistics (and warms caches and pages); the timed runs ask
  // for none, as a serving engine would, so they include no statistics work.
  sampleattn_stats_init(&out->stats);
  out->stats.head_stats = out->heads.data();
  out->stats.stripe_offsets = out->stripe_offsets.data();
  out->stats.stripes = out->stripes.data();
  out->stats.stripe_capacity = static_cast<int64_t>(out->stripes.size());
  out->stats.dense_row_offsets = out->dense_row_offsets.data();
  out->stats.dense_row_indices = out->dense_row_indices.data();
  out->stats.dense_row_capacity = static_cast<int64_t>(out->dense_row_indices.size());
  std::vector<double> times, read_times;
  for (int64_t r = -1; r < runs.warmup + runs.repeat; ++r) {
    const auto t0 = Clock::now();
    const sampleattn_status s = sampleattn_forward(ctx, &p, r < 0 ? &out->stats : nullptr);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s != SAMPLEATTN_SUCCESS) {
      *error = std::string(sampleattn_status_string(s)) + ": " + sampleattn_last_error();
      return false;
    }
    if (r >= runs.warmup) {
      times.push_back(dt);
      if (runs.read != nullptr) read_times.push_back(runs.read->pass());
    }
    progress(runs.quiet, std::string(method == SAMPLEATTN_METHOD_DENSE ? "dense" : "sample") + " N=" +
                             std::to_string(in.q.seq) +
                             (r < 0 ? " statistics run" : r < runs.warmup ? " warmup " : " run ") +
                             (r < 0 ? std::string() : std::to_string(r + 1)) + ": " + std::to_string(dt) + " s");
  }
  out->time_s = median(times);
  if (!read_times.empty()) out->read_gbs = static_cast<double>(runs.read->bytes()) / median(read_times) / 1e9;
  const Status made = workload::make_tensor(in.q.seq, in.q.heads, in.v.dim, DType::kF32, &out->o);
  if (!made.is_ok()) {
    *error = made.message();
    return false;
  }
  return mem.download(o, o_bytes, out->o.data(), error);
}

}  // namespace sampleattn::cli
