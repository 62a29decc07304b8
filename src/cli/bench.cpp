// The flow of `sampleattn bench`: options, context, then per sequence length: inputs, dense
// runs, sample runs per alpha, each row printed as it is measured (or one table at the end).
// Each job lives in its own unit: bench_options, bench_inputs, bench_timing, bench_accuracy,
// bench_peak, bench_report.
#include "cli/bench.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/bench_accuracy.h"
#include "cli/bench_inputs.h"
#include "cli/bench_options.h"
#include "cli/bench_peak.h"
#include "cli/bench_report.h"
#include "cli/bench_timing.h"
#include "cli/common.h"
#include "cli/options.h"
#include "core/mask.h"

namespace sampleattn::cli {
namespace {

using Clock = std::chrono::steady_clock;

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
    s.bf16_products = b_.method_params.precision == SAMPLEATTN_PRECISION_BF16;
    s.threads = threads_;
    s.isa = isa_;
    s.backend_name = backend_name_;
    s.device_name = device_name_;
    s.data = b_.data;
    s.cuda = backend_ == SAMPLEATTN_BACKEND_CUDA;
    return s;
  }

  void emit(const BenchRow& r, double peak) const { emit_row(setting(), r, peak, b_.json, b_.csv); }

  bool measure_method(const BenchInputs& in, sampleattn_method method, Measured* out, std::string* error) const {
    return measure(ctx_.get(), backend_, in, method, b_.method_params, TimedRuns{b_.warmup, b_.repeat, b_.quiet}, out, error);
  }

  int fail(const std::string& message) const { return cli::fail("bench", message); }

  int run_all() {
    const double peak = b_.peak ? sgemm_gflops(threads_) : 0;
    if (peak > 0) progress(b_.quiet, "OpenBLAS SGEMM 4096^3: " + std::to_string(peak) + " GFLOP/s");
    std::vector<BenchRow> rows;
    if (b_.csv) print_csv_header();
    for (int64_t seq : b_.seqs) {
      BenchInputs in;
      const auto t_gen = Clock::now();
      Status st = load_bench_inputs(b_, seq, &in);
      if (!st.is_ok()) return fail(describe(st));
      progress(b_.quiet, "inputs " + in.source + " N=" + std::to_string(in.q.seq) + " ready in " +
                             std::to_string(std::chrono::duration<double>(Clock::now() - t_gen).count()) + " s");
      seq = in.q.seq;
      b_.heads = static_cast<int>(in.q.heads);
      b_.kv_heads = static_cast<int>(in.k.heads);
      b_.head_dim = static_cast<int>(in.q.dim);
      head_dim_v_ = static_cast<int>(in.v.dim);
      model_ = in.model;
      b_.dtype = in.dtype;
      // 2 N^2 d H for the causal attention (Q K^T and P V at d each); a model window computes only
      // its pairs, and V of its own size makes P V cost head_dim_v.
      const double work = static_cast<double>(model_pairs(seq, seq, model_.window_left)) /
                          static_cast<double>(causal_pairs(seq, seq)) *
                          (static_cast<double>(b_.head_dim + head_dim_v_) / (2.0 * b_.head_dim));
      const double flops = 2.0 * static_cast<double>(seq) * seq * b_.head_dim * b_.heads * work;
      std::string error;
      Measured dense, sparse;
      const bool want_dense = b_.method != "sample" || b_.check;
      if (want_dense) {
        if (!measure_method(in, SAMPLEATTN_METHOD_DENSE, &dense, &error)) {
          return fail("dense N=" + std::to_string(seq) + ": " + error);
        }
        isa_ = dense.stats.isa ? dense.stats.isa : "";
      }
      if (b_.method != "sample") {
        BenchRow r;
        r.method = "dense";
        r.seq = seq;
        r.time_s = dense.time_s;
        r.workspace_bytes = dense.workspace_bytes;
        r.gflops = flops / dense.time_s / 1e9;
        if (b_.check) r.check = rel_l2_against_oracle(in, dense.o);
        emit(r, peak);
        rows.push_back(r);
      }
      if (b_.method == "dense") continue;
      for (float alpha : b_.alphas) {
        b_.method_params.sample.alpha = alpha;
        if (!measure_method(in, SAMPLEATTN_METHOD_SAMPLE, &sparse, &error)) {
          return fail("sample N=" + std::to_string(seq) + ": " + error);
        }
        isa_ = sparse.stats.isa ? sparse.stats.isa : "";
        BenchRow r;
        r.alpha = alpha;
        r.method = "sample";
        r.sample = true;
        r.seq = seq;
        r.time_s = sparse.time_s;
        r.workspace_bytes = sparse.workspace_bytes;
        r.gflops = flops / sparse.time_s / 1e9;
        r.density = sparse.stats.density;
        r.stripes_mean = sparse.stats.stripes_mean;
        r.overhead_s = sparse.stats.time_sampling_s + sparse.stats.time_selection_s;
        r.dense_heads = sparse.stats.num_dense_heads;
        r.sampled_cra = sparse.stats.cra_min;
        r.val_cra_min = sparse.stats.val_cra_min;
        r.val_cra_p5 = sparse.stats.val_cra_p5;
        r.val_cra_mean = sparse.stats.val_cra_mean;
        r.widened_heads = sparse.stats.num_widened_heads;
        // The true kept mass of the chosen masks on a large sample of rows (not only the sampled ones).
        st = add_kept_mass(in, sparse, &r);
        if (!st.is_ok()) return fail(describe(st));
        for (const sampleattn_head_stats& h : sparse.heads) {
          r.head_stripes.push_back(h.num_stripes);
          r.head_dense.push_back(h.dense);
          r.head_density.push_back(h.density);
          r.head_val_cra_p5.push_back(h.val_cra_p5);
          r.head_alpha_stripes.push_back(h.alpha_stripes);
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
  int head_dim_v_ = 0;            // of the current inputs
  workload::ModelVariants model_;  // of the current inputs (sinks generated for them)
  ContextHandle ctx_;
  sampleattn_backend backend_ = SAMPLEATTN_BACKEND_CPU;
  std::string backend_name_, device_name_, isa_;
  int threads_ = 0;
};

}  // namespace

int bench_main(int argc, char** argv, int first) {
  Bench bench;
  return bench.main(argc, argv, first);
}

}  // namespace sampleattn::cli
