// The flow of `sampleattn bench`: options, context, then per sequence length: inputs, dense
// runs, sample runs per alpha, each row printed as it is measured (or one table at the end).
// Each job lives in its own unit: bench_options, bench_inputs, bench_timing, bench_accuracy,
// bench_peak, bench_report.
#include "cli/bench.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/bench_accuracy.h"
#include "cli/bench_inputs.h"
#include "cli/bench_options.h"
#include "cli/bench_peak.h"
#include "cli/bench_report.h"
#include "cli/bench_timing.h"
#include "cli/common.h"
#include "cli/host_pool.h"
#include "cli/options.h"
#include "core/mask.h"

namespace sampleattn::cli {
namespace {

using Clock = std::chrono::steady_clock;

// --host-pool's other two runs of a configuration.
struct PoolTimes {
  double own_time_s = 0;          // the library's own pool, no host thread running
  double spinning_time_s = 0;     // the library's own pool beside the host pool's spinning workers
  double calls_per_forward = 0;   // parallel_for calls the library made per call
};

class Bench {
 public:
  int main(int argc, char** argv, int first) {
    declare_bench_options(o_);
    std::string error;
    for (int i = first; i < argc; ++i) {
      if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
        std::printf("usage: sampleattn bench [options]\n"
                    "Results on stdout (a table, or --json or --csv); progress on stderr (--quiet: none).\n%s",
                    o_.usage().c_str());
        return kExitOk;
      }
    }
    // Every option is checked before any input is generated or read.
    if (!o_.parse(argc, argv, first, &error) || !read_bench_options(o_, &b_, &error)) {
      return usage_error("bench", error);
    }
    sampleattn_context_options context_options;
    if (!read_context_options(o_, &context_options, &error)) return usage_error("bench", error);
    if (!create_context(context_options, &ctx_, &error)) return fail(error);
    const sampleattn_context_info info = context_info(ctx_.get());
    backend_ = info.backend;
    threads_ = info.num_threads;
    backend_name_ = backend_ == SAMPLEATTN_BACKEND_CUDA ? "cuda" : "cpu";
    device_name_ = info.device_name;
    if (b_.host_pool) {
      if (backend_ != SAMPLEATTN_BACKEND_CPU) return usage_error("bench", "--host-pool needs the CPU backend");
      // The engine's pool has as many threads as the library's own (--threads, or its default).
      pool_ = std::make_unique<SpinPool>(threads_);
      sampleattn_context_options host = context_options;
      host.num_threads = threads_;
      host.parallel_for = SpinPool::parallel_for;
      host.host_pool = pool_.get();
      if (!create_context(host, &host_ctx_, &error)) return fail("a context on the host pool's parallel_for: " + error);
    }
    return run_all();
  }

 private:
  BenchSetting setting() const {
    BenchSetting s;
    s.heads = b_.heads;
    s.kv_heads = b_.kv_heads;
    s.head_dim = b_.head_dim;
    s.head_dim_v = head_dim_v_;
    s.window_left = model_.window_left;
    s.softcap = model_.softcap;
    s.alibi = !model_.alibi_slopes.empty();
    s.sinks = model_.sinks;
    s.dtype = b_.dtype;
    s.kv_layout = kv_layout_;
    s.kv_dtype = kv_dtype_name(b_.kv_dtype);
    s.host_pool = b_.host_pool;
    s.precision = precision_;
    s.threads = threads_;
    s.isa = isa_;
    s.backend_name = backend_name_;
    s.device_name = device_name_;
    s.data = b_.data;
    s.cuda = backend_ == SAMPLEATTN_BACKEND_CUDA;
    s.amx_gflops = amx_peak_;
    return s;
  }

  void emit(const BenchRow& r, double peak) const { emit_row(setting(), r, peak, b_.json, b_.csv); }

  bool measure_on(sampleattn_context* ctx, const BenchInputs& in, sampleattn_method method, Measured* out,
                  std::string* error, ReadLoop* read = nullptr) const {
    return measure(ctx, backend_, in, method, b_.method_params, TimedRuns{b_.warmup, b_.repeat, b_.quiet, read}, out,
                   error);
  }

  // The row's run. With --host-pool, three in a row: (a) the library's own pool, no host thread
  // running; (b) the host pool's parallel_for (the row's time); (c) the own pool again while the
  // host pool's workers spin idle beside it (an engine that keeps its threads hot between ops).
  // `read` (--peak): its passes go between the timed runs of (a), where no host thread runs.
  bool measure_method(const BenchInputs& in, sampleattn_method method, Measured* out, PoolTimes* pool,
                      std::string* error, ReadLoop* read) const {
    if (!b_.host_pool) return measure_on(ctx_.get(), in, method, out, error, read);
    Measured own, spinning;
    if (!measure_on(ctx_.get(), in, method, &own, error, read)) return false;
    pool_->start();
    const int64_t jobs = pool_->jobs();
    bool ok = measure_on(host_ctx_.get(), in, method, out, error);
    const double calls = static_cast<double>(pool_->jobs() - jobs) / static_cast<double>(1 + b_.warmup + b_.repeat);
    if (ok) ok = measure_on(ctx_.get(), in, method, &spinning, error);
    pool_->stop();
    if (!ok) return false;
    pool->own_time_s = own.time_s;
    out->read_gbs = own.read_gbs;
    pool->spinning_time_s = spinning.time_s;
    pool->calls_per_forward = calls;
    if (calls == 0 && threads_ > 1) {
      *error = "the library never called the host pool's parallel_for (context options, ABI 1.4) on " +
               std::to_string(threads_) + " threads: it ran on threads of its own, so the host pool was not measured";
      return false;
    }
    return true;
  }

  // A paged or quantized run's output against the oracle on the stored K/V's values, on 4 query
  // rows of every head (the last first): a library that misreads the cache fails here. The limit
  // is far above a kernel's error (about 1e-6 with f32 products, 1e-2 with bf16 ones) and far
  // below a misread's (a decoy page, a wrong scale).
  bool check_cache_read(const BenchInputs& in, const Measured& m, BenchRow* r, std::string* error) const {
    if (!in.kv.uses_cache()) return true;
    r->cache_check = rel_l2_against_oracle(in, m.o, 4);
    const double limit = m.stats.precision != nullptr && std::string(m.stats.precision) == "f32" ? 1e-3 : 5e-2;
    if (r->cache_check <= limit) return true;
    *error = "the output does not match the K/V the cache holds (rel_l2 " + std::to_string(r->cache_check) +
             " against the oracle on 4 query rows of each head, above " + std::to_string(limit) +
             "): the library did not read params.kv_cache (" + in.kv.layout_name() + ", kv dtype " +
             kv_dtype_name(in.kv.kv_dtype) + ") as sampleattn.h describes it";
    return false;
  }

  void fill_common(const BenchInputs& in, const Measured& m, const PoolTimes& pool, double cli_flops,
                   BenchRow* r) const {
    r->seq = in.k.seq;
    r->q_len = in.q.seq;
    r->time_s = m.time_s;
    r->workspace_bytes = m.workspace_bytes;
    r->dense_flops = m.dense_flops > 0 ? m.dense_flops : cli_flops;  // the library's count is authoritative
    r->gflops = r->dense_flops / m.time_s / 1e9;
    r->kv_bytes = in.kv.bytes;
    r->kv_gbs = static_cast<double>(in.kv.bytes) / m.time_s / 1e9;
    r->read_gbs = m.read_gbs;
    if (b_.host_pool) {
      r->own_pool_time_s = pool.own_time_s;
      r->host_pool_ratio = m.time_s / pool.own_time_s;
      r->spinning_host_time_s = pool.spinning_time_s;
      r->spinning_host_ratio = pool.spinning_time_s / pool.own_time_s;
      r->host_pool_calls = pool.calls_per_forward;
    }
  }

  int fail(const std::string& message) const { return cli::fail("bench", message); }

  int run_all() {
    const double peak = b_.peak ? sgemm_gflops(threads_) : 0;
    if (peak > 0) progress(b_.quiet, "OpenBLAS SGEMM 4096^3: " + std::to_string(peak) + " GFLOP/s");
    amx_peak_ = b_.peak && backend_ == SAMPLEATTN_BACKEND_CPU ? amx_gflops(threads_) : 0;
    if (amx_peak_ > 0) progress(b_.quiet, "AMX tile products: " + std::to_string(amx_peak_) + " GFLOP/s");
    std::vector<BenchRow> rows;
    if (b_.csv) print_csv_header();
    for (int64_t seq : b_.seqs) {
      BenchInputs in;
      const auto t_gen = Clock::now();
      Status st = load_bench_inputs(b_, seq, &in);
      if (!st.is_ok()) return fail(describe(st));
      progress(b_.quiet, "inputs " + in.source + " N=" + std::to_string(in.q.seq) + " ready in " +
                             std::to_string(std::chrono::duration<double>(Clock::now() - t_gen).count()) + " s");
      seq = in.k.seq;
      const int64_t q_len = in.q.seq;
      kv_layout_ = in.kv.layout_name();
      b_.heads = static_cast<int>(in.q.heads);
      b_.kv_heads = static_cast<int>(in.k.heads);
      b_.head_dim = static_cast<int>(in.q.dim);
      head_dim_v_ = static_cast<int>(in.v.dim);
      model_ = in.model;
      b_.dtype = in.dtype;
      // The plan's dense_flops is what the rows report; this restatement stands in only when a
      // library reports none: 2 (d + d_v) per computed query-key pair (the last q_len queries,
      // causal within the model's window).
      const double flops = 2.0 * static_cast<double>(b_.head_dim + head_dim_v_) * b_.heads *
                           static_cast<double>(model_pairs(q_len, seq, model_.window_left));
      // The K/V's bytes read by as many threads, a pass after each timed call (ReadLoop).
      std::optional<ReadLoop> read;
      if (b_.peak && backend_ == SAMPLEATTN_BACKEND_CPU) read.emplace(in.kv.bytes, threads_);
      ReadLoop* reader = read ? &*read : nullptr;
      std::string error;
      Measured dense, sparse;
      PoolTimes dense_pool, sparse_pool;
      const bool want_dense = b_.method != "sample" || b_.check;
      if (want_dense) {
        if (!measure_method(in, SAMPLEATTN_METHOD_DENSE, &dense, &dense_pool, &error, reader)) {
          return fail("dense N=" + std::to_string(seq) + ": " + error);
        }
        isa_ = dense.stats.isa ? dense.stats.isa : "";
        precision_ = dense.stats.precision ? dense.stats.precision : "";
      }
      if (b_.method != "sample") {
        BenchRow r;
        r.method = "dense";
        fill_common(in, dense, dense_pool, flops, &r);
        if (!check_cache_read(in, dense, &r, &error)) return fail("dense N=" + std::to_string(seq) + ": " + error);
        if (b_.check) r.check = rel_l2_against_oracle(in, dense.o);
        emit(r, peak);
        rows.push_back(r);
      }
      if (b_.method == "dense") continue;
      for (float alpha : b_.alphas) {
        b_.method_params.sample.alpha = alpha;
        if (!measure_method(in, SAMPLEATTN_METHOD_SAMPLE, &sparse, &sparse_pool, &error, reader)) {
          return fail("sample N=" + std::to_string(seq) + ": " + error);
        }
        isa_ = sparse.stats.isa ? sparse.stats.isa : "";
        precision_ = sparse.stats.precision ? sparse.stats.precision : "";
        BenchRow r;
        r.alpha = alpha;
        r.method = "sample";
        r.sample = true;
        fill_common(in, sparse, sparse_pool, flops, &r);
        r.density = sparse.stats.density;
        r.stripes_mean = sparse.stats.stripes_mean;
        r.overhead_s = sparse.stats.time_sampling_s + sparse.stats.time_selection_s;
        r.sampling_s = sparse.stats.time_sampling_s;
        r.selection_s = sparse.stats.time_selection_s;
        r.dense_heads = sparse.stats.num_dense_heads;
        r.sampled_cra = sparse.stats.cra_min;
        r.val_cra_min = sparse.stats.val_cra_min;
        r.val_cra_p5 = sparse.stats.val_cra_p5;
        r.val_cra_mean = sparse.stats.val_cra_mean;
        r.widened_heads = sparse.stats.num_widened_heads;
        r.dense_rows = sparse.stats.num_dense_rows;
        // The true kept mass of the chosen masks on a large sample of rows (not only the sampled ones).
        st = add_kept_mass(in, sparse, &r);
        if (!st.is_ok()) return fail(describe(st));
        for (const sampleattn_head_stats& h : sparse.heads) {
          r.head_stripes.push_back(h.num_stripes);
          r.head_dense.push_back(h.dense);
          r.head_density.push_back(h.density);
          r.head_val_cra_p5.push_back(h.val_cra_p5);
          r.head_alpha_stripes.push_back(h.alpha_stripes);
          r.head_dense_rows.push_back(h.dense_rows);
          r.head_decision.push_back(decision_name(h.decision));
        }
        if (want_dense) {
          r.dense_time_s = dense.time_s;
          r.speedup = dense.time_s / sparse.time_s;
          st = add_error_against_dense(in, sparse, dense, &r);
          if (!st.is_ok()) return fail(describe(st));
        }
        emit(r, peak);
        rows.push_back(r);
      }
    }
    if (!b_.json && !b_.csv) print_table(setting(), b_.method, rows, peak);
    return kExitOk;
  }

  Options o_;
  BenchOptions b_;
  std::string kv_layout_ = "packed";  // of the current inputs
  std::unique_ptr<SpinPool> pool_;   // --host-pool: the engine's pool and a context on it
  ContextHandle host_ctx_;
  int head_dim_v_ = 0;            // of the current inputs
  workload::ModelVariants model_;  // of the current inputs (sinks generated for them)
  ContextHandle ctx_;
  sampleattn_backend backend_ = SAMPLEATTN_BACKEND_CPU;
  std::string backend_name_, device_name_, isa_;
  double amx_peak_ = 0;     // --peak: amx_gflops (0: no amx table)
  std::string precision_;  // the products that ran (stats.precision): what --precision auto resolved to
  int threads_ = 0;
};

}  // namespace

int bench_main(int argc, char** argv, int first) {
  Bench bench;
  return bench.main(argc, argv, first);
}

}  // namespace sampleattn::cli
