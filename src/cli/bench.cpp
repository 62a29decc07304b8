#include "cli/bench.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/common.h"
#include "cli/device_memory.h"
#include "cli/options.h"
#include "core/problem.h"
#include "reference/attention_reference.h"
#include "workload/generator.h"
#include "workload/attention_profile.h"
#include "workload/metrics.h"
#include "workload/npy.h"

namespace sampleattn::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Inputs {
  workload::Tensor3 q, k, v;                 // in the benchmark dtype
  std::vector<workload::PlantedNeedle> needles;
  std::string source;
};

struct Measured {
  double time_s = 0;                  // median over repeats
  uint64_t workspace_bytes = 0;       // what sampleattn_plan reports
  workload::Tensor3 o;                // f32 output [seq, heads, dim]
  sampleattn_stats stats{};
  std::vector<sampleattn_head_stats> heads;
  std::vector<int32_t> stripe_offsets;
  std::vector<int32_t> stripes;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

class Bench {
 public:
  int main(int argc, char** argv, int first) {
    declare();
    std::string error;
    for (int i = first; i < argc; ++i) {
      if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
        std::printf("usage: sampleattn bench [options]\n%s", o_.usage().c_str());
        return 0;
      }
    }
    if (!o_.parse(argc, argv, first, &error) || !read(&error)) {
      std::fprintf(stderr, "sampleattn bench: %s\n\nOptions:\n%s", error.c_str(), o_.usage().c_str());
      return 2;
    }
    if (!make_context(o_, &ctx_, &error)) {
      std::fprintf(stderr, "sampleattn bench: %s\n", error.c_str());
      return 1;
    }
    sampleattn_context_info info;
    sampleattn_context_info_init(&info);
    sampleattn_context_get_info(ctx_, &info);
    backend_ = info.backend;
    threads_ = info.num_threads;
    backend_name_ = backend_ == SAMPLEATTN_BACKEND_CUDA ? "cuda" : "cpu";
    device_name_ = info.device_name;
    const int rc = run_all();
    sampleattn_context_destroy(ctx_);
    return rc;
  }

 private:
  void declare() {
    o_.value("method", "both", "dense, sample, or both (sample compared against dense)");
    o_.value("seq", "", "sequence lengths, comma-separated (default 4096,8192,16384,32768)");
    o_.value("heads", "8", "query heads");
    o_.value("kv-heads", "", "key/value heads (default: as many as --heads)");
    o_.value("head-dim", "128", "head dimension");
    o_.value("dtype", "f32", "input dtype: f32, f16, bf16");
    o_.value("repeat", "3", "timed runs per configuration (the median is reported)");
    o_.value("warmup", "0", "untimed runs after the (untimed) statistics run");
    o_.value("data", "structured", "structured | random | npy:DIR (DIR/q.npy, k.npy, v.npy)");
    o_.value("seed", "1", "input seed");
    o_.value("needles", "8", "needles planted in structured inputs");
    o_.flag("json", "one JSON object per line per configuration");
    o_.flag("csv", "CSV rows (for plots)");
    o_.flag("check", "add rel_l2_err against a double-precision result on sampled rows");
    o_.flag("peak", "time an OpenBLAS SGEMM of 4096^3 in the same run (sgemm_gflops)");
    o_.flag("quiet", "no progress on stderr");
    declare_context_options(o_);
    declare_method_options(o_);
  }

  bool read(std::string* error) {
    const std::string m = o_.get("method");
    if (m != "dense" && m != "sample" && m != "both") {
      *error = "--method must be dense, sample or both";
      return false;
    }
    method_ = m;
    if (o_.has("seq")) {
      if (!o_.get_int_list("seq", 1, 1 << 20, &seqs_, error)) return false;
    } else {
      seqs_ = {4096, 8192, 16384, 32768};
    }
    int64_t v;
    if (!o_.get_int("heads", 1, 1024, &v, error)) return false;
    heads_ = static_cast<int>(v);
    if (!o_.has("kv-heads")) o_.set("kv-heads", o_.get("heads"));
    if (!o_.get_int("kv-heads", 1, 1024, &v, error)) return false;
    kv_heads_ = static_cast<int>(v);
    if (!o_.get_int("head-dim", 1, 1024, &v, error)) return false;
    head_dim_ = static_cast<int>(v);
    if (!o_.get_int("repeat", 1, 1000, &repeat_, error)) return false;
    if (!o_.get_int("warmup", 0, 1000, &warmup_, error)) return false;
    if (!o_.get_int("seed", 0, INT64_MAX, &v, error)) return false;
    seed_ = static_cast<uint64_t>(v);
    if (!o_.get_int("needles", 0, 64, &needles_, error)) return false;
    if (!parse_dtype(o_.get("dtype"), &dtype_)) {
      *error = "--dtype must be f32, f16 or bf16";
      return false;
    }
    data_ = o_.get("data");
    if (data_ != "structured" && data_ != "random" && data_.rfind("npy:", 0) != 0) {
      *error = "--data must be structured, random or npy:DIR";
      return false;
    }
    if (data_.rfind("npy:", 0) == 0) seqs_ = {0};  // the files decide
    json_ = o_.has("json");
    csv_ = o_.has("csv");
    quiet_ = o_.has("quiet");
    // --alpha may list several thresholds: dense runs once per length, sample once per alpha.
    alphas_.clear();
    for (const std::string& a : o_.get_list("alpha")) {
      Options one = o_;
      one.set("alpha", a);
      double alpha;
      if (!one.get_double("alpha", 0, 1, &alpha, error)) return false;
      alphas_.push_back(static_cast<float>(alpha));
    }
    if (alphas_.empty()) {
      *error = "--alpha needs a value";
      return false;
    }
    o_.set("alpha", std::to_string(alphas_.front()));
    sampleattn_params_init(&method_params_);
    return read_method_options(o_, &method_params_, error);
  }

  void progress(const std::string& line) const {
    if (!quiet_) std::fprintf(stderr, "[bench] %s\n", line.c_str());
  }

  Status load(int64_t seq, Inputs* in) const {
    workload::Tensor3 q, k, v;
    if (data_ == "structured") {
      workload::GeneratedData g;
      SAMPLEATTN_RETURN_IF_ERROR(
          workload::generate(structured_config(seq, heads_, kv_heads_, head_dim_, seed_, needles_), &g));
      q = std::move(g.q);
      k = std::move(g.k);
      v = std::move(g.v);
      in->needles = std::move(g.needles);
      in->source = "structured";
    } else if (data_ == "random") {
      workload::Rng rng(seed_);
      auto gaussian = [&](int64_t heads, workload::Tensor3* t) -> Status {
        std::vector<float> values(static_cast<size_t>(seq * heads * head_dim_));
        for (float& x : values) x = static_cast<float>(rng.normal());
        return workload::tensor_from_f32(seq, heads, head_dim_, DType::kF32, values, t);
      };
      SAMPLEATTN_RETURN_IF_ERROR(gaussian(heads_, &q));
      SAMPLEATTN_RETURN_IF_ERROR(gaussian(kv_heads_, &k));
      SAMPLEATTN_RETURN_IF_ERROR(gaussian(kv_heads_, &v));
      in->source = "random";
    } else {
      const std::string dir = data_.substr(4);
      SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(dir + "/q.npy", &q));
      SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(dir + "/k.npy", &k));
      SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(dir + "/v.npy", &v));
      in->source = data_;
    }
    SAMPLEATTN_RETURN_IF_ERROR(workload::convert_tensor(q, dtype_, &in->q));
    SAMPLEATTN_RETURN_IF_ERROR(workload::convert_tensor(k, dtype_, &in->k));
    SAMPLEATTN_RETURN_IF_ERROR(workload::convert_tensor(v, dtype_, &in->v));
    return Status::ok();
  }

  // Runs one method warmup + repeat times; the output is kept from the last run (as f32).
  bool measure(const Inputs& in, sampleattn_method method, Measured* out, std::string* error) {
    BackendMemory mem(backend_);
    void* q = mem.upload(in.q.data(), in.q.bytes.size(), error);
    void* k = q ? mem.upload(in.k.data(), in.k.bytes.size(), error) : nullptr;
    void* v = k ? mem.upload(in.v.data(), in.v.bytes.size(), error) : nullptr;
    const size_t o_bytes = static_cast<size_t>(in.q.num_elements()) * sizeof(float);
    void* o = v ? mem.allocate(o_bytes, error) : nullptr;
    if (o == nullptr) return false;
    sampleattn_params p = tensor_params(in.q, in.k, in.v, q, k, v, o, DType::kF32);
    p.method = method;
    p.precision = method_params_.precision;
    p.sample = method_params_.sample;
    sampleattn_plan_info plan;
    sampleattn_plan_info_init(&plan);
    if (sampleattn_plan(ctx_, &p, &plan) == SAMPLEATTN_SUCCESS) out->workspace_bytes = plan.workspace_bytes;
    const int nheads = static_cast<int>(in.q.heads);
    out->heads.assign(static_cast<size_t>(nheads), {});
    out->stripe_offsets.assign(static_cast<size_t>(nheads) + 1, 0);
    out->stripes.assign(static_cast<size_t>(nheads) * static_cast<size_t>(in.k.seq), 0);  // always enough
    // One untimed run collects the statistics (and warms caches and pages); the timed runs ask
    // for none, as a serving engine would, so they include no statistics work.
    sampleattn_stats_init(&out->stats);
    out->stats.head_stats = out->heads.data();
    out->stats.stripe_offsets = out->stripe_offsets.data();
    out->stats.stripes = out->stripes.data();
    out->stats.stripe_capacity = static_cast<int64_t>(out->stripes.size());
    std::vector<double> times;
    for (int64_t r = -1; r < warmup_ + repeat_; ++r) {
      const auto t0 = Clock::now();
      const sampleattn_status s = sampleattn_forward(ctx_, &p, r < 0 ? &out->stats : nullptr);
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      if (s != SAMPLEATTN_SUCCESS) {
        *error = std::string(sampleattn_status_string(s)) + ": " + sampleattn_last_error();
        return false;
      }
      if (r >= warmup_) times.push_back(dt);
      progress(std::string(method == SAMPLEATTN_METHOD_DENSE ? "dense" : "sample") + " N=" +
               std::to_string(in.q.seq) + (r < 0 ? " statistics run" : r < warmup_ ? " warmup " : " run ") +
               (r < 0 ? std::string() : std::to_string(r + 1)) + ": " + std::to_string(dt) + " s");
    }
    out->time_s = median(times);
    const Status made = workload::make_tensor(in.q.seq, in.q.heads, in.q.dim, DType::kF32, &out->o);
    if (!made.is_ok()) {
      *error = made.message();
      return false;
    }
    return mem.download(o, o_bytes, out->o.data(), error);
  }

  // rel_l2 of `got` against the fp64 oracle on a sample of rows per head.
  double check_against_oracle(const Inputs& in, const Measured& m) const {
    sampleattn_params p = tensor_params(in.q, in.k, in.v, in.q.data(), in.k.data(), in.v.data(),
                                        const_cast<void*>(m.o.data()), DType::kF32);
    Problem problem;
    if (!build_problem(&p, true, &problem).is_ok()) return std::nan("");
    std::vector<std::pair<int64_t, int>> rows;
    const int64_t n = in.q.seq;
    const int per_head = 24;
    for (int h = 0; h < problem.num_q_heads; ++h) {
      for (int i = 0; i < per_head; ++i) rows.emplace_back((n - 1) - (n - 1) * i / per_head, h);
    }
    const auto oracle = reference::attention_rows(problem, rows);
    double num = 0, den = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      const float* got = static_cast<const float*>(m.o.data()) + (rows[r].first * in.q.heads + rows[r].second) * in.q.dim;
      for (int64_t c = 0; c < in.q.dim; ++c) {
        const double d = got[c] - oracle[r].o[c];
        num += d * d;
        den += oracle[r].o[c] * oracle[r].o[c];
      }
    }
    return std::sqrt(num / std::max(den, 1e-300));
  }

  double sgemm_gflops() const {
    const int n = 4096;
    std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
    openblas_set_num_threads(threads_);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    std::vector<double> times;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = Clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
      times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return 2.0 * n * n * static_cast<double>(n) / median(times) / 1e9;
  }

  struct Row {
    std::string method;
    int64_t seq = 0;
    double time_s = 0, gflops = 0;
    uint64_t workspace_bytes = 0;
    // sample only
    bool sample = false;
    float alpha = 0;
    double dense_time_s = 0, speedup = 0, density = 0, stripes_mean = 0, overhead_s = 0;
    double min_cra = 0, cra_p1 = 0, cra_mean = 0, sampled_cra = 0, rel_l2 = -1, rel_l2_median = -1, rel_l2_p90 = -1, rel_l2_max = -1;
    double needle_recall = -1, needle_recall_dense = -1;
    std::vector<double> head_rel_l2, head_cra_min;
    std::vector<int> head_stripes, head_dense;
    std::vector<double> head_density;
    double check = -1;
    int dense_heads = 0;
  };

  std::string json(const Row& r, double peak) const {
    std::ostringstream j;
    j.precision(6);
    j << "{\"method\":\"" << r.method << "\",\"seq\":" << r.seq << ",\"heads\":" << heads_
      << ",\"kv_heads\":" << kv_heads_ << ",\"head_dim\":" << head_dim_ << ",\"dtype\":\""
      << dtype_name(dtype_) << "\",\"precision\":\""
      << (method_params_.precision == SAMPLEATTN_PRECISION_BF16 ? "bf16" : "f32") << "\",\"threads\":" << threads_
      << ",\"isa\":\"" << isa_ << "\",\"backend\":\"" << backend_name_ << "\",\"data\":\"" << data_
      << "\",\"time_s\":" << r.time_s << ",\"gflops\":" << r.gflops << ",\"workspace_bytes\":" << r.workspace_bytes;
    if (backend_ == SAMPLEATTN_BACKEND_CUDA) j << ",\"device\":\"" << device_name_ << "\"";
    if (r.sample) {
      j << ",\"alpha\":" << r.alpha << ",\"density\":" << r.density << ",\"stripes_mean\":" << r.stripes_mean << ",\"overhead_s\":"
        << r.overhead_s << ",\"min_cra\":" << r.min_cra << ",\"cra_p1\":" << r.cra_p1 << ",\"cra_mean\":"
        << r.cra_mean << ",\"sampled_rows_min_cra\":" << r.sampled_cra << ",\"dense_heads\":" << r.dense_heads;
      if (r.dense_time_s > 0) j << ",\"dense_time_s\":" << r.dense_time_s << ",\"speedup\":" << r.speedup;
      if (r.rel_l2 >= 0) {
        j << ",\"rel_l2_err\":" << r.rel_l2 << ",\"rel_l2_err_median\":" << r.rel_l2_median
          << ",\"rel_l2_err_p90\":" << r.rel_l2_p90 << ",\"rel_l2_err_max\":" << r.rel_l2_max;
      }
      if (r.needle_recall >= 0) {
        j << ",\"needle_recall\":" << r.needle_recall << ",\"needle_recall_dense\":" << r.needle_recall_dense;
      }
      auto array = [&j](const char* name, const auto& values) {
        j << ",\"" << name << "\":[";
        for (size_t i = 0; i < values.size(); ++i) j << (i ? "," : "") << values[i];
        j << "]";
      };
      array("head_stripes", r.head_stripes);
      array("head_dense", r.head_dense);
      array("head_density", r.head_density);
      array("head_min_cra", r.head_cra_min);
      if (!r.head_rel_l2.empty()) array("head_rel_l2_err", r.head_rel_l2);
    } else if (r.check >= 0) {
      j << ",\"rel_l2_err\":" << r.check;
    }
    if (peak > 0) j << ",\"sgemm_gflops\":" << peak;
    j << "}";
    return j.str();
  }

  int run_all() {
    const double peak = o_.has("peak") ? sgemm_gflops() : 0;
    if (peak > 0) progress("OpenBLAS SGEMM 4096^3: " + std::to_string(peak) + " GFLOP/s");
    std::vector<Row> rows;
    if (csv_) {
      std::printf("method,seq,alpha,heads,kv_heads,head_dim,dtype,threads,isa,backend,time_s,gflops,dense_time_s,"
                  "speedup,density,stripes_mean,overhead_s,min_cra,rel_l2_err,rel_l2_err_median,"
                  "rel_l2_err_p90,rel_l2_err_max,needle_recall,needle_recall_dense\n");
    }
    for (int64_t seq : seqs_) {
      Inputs in;
      const auto t_gen = Clock::now();
      Status st = load(seq, &in);
      if (!st.is_ok()) {
        std::fprintf(stderr, "sampleattn bench: %s\n", st.message().c_str());
        return 1;
      }
      progress("inputs " + in.source + " N=" + std::to_string(in.q.seq) + " ready in " +
               std::to_string(std::chrono::duration<double>(Clock::now() - t_gen).count()) + " s");
      seq = in.q.seq;
      heads_ = static_cast<int>(in.q.heads);
      kv_heads_ = static_cast<int>(in.k.heads);
      head_dim_ = static_cast<int>(in.q.dim);
      const double flops = 2.0 * static_cast<double>(seq) * seq * head_dim_ * heads_;
      std::string error;
      Measured dense, sparse;
      const bool want_dense = method_ != "sample" || o_.has("check");
      if (want_dense) {
        if (!measure(in, SAMPLEATTN_METHOD_DENSE, &dense, &error)) {
          std::fprintf(stderr, "sampleattn bench: dense N=%lld: %s\n", static_cast<long long>(seq), error.c_str());
          return 1;
        }
        isa_ = dense.stats.isa ? dense.stats.isa : "";
      }
      if (method_ != "sample") {
        Row r;
        r.method = "dense";
        r.seq = seq;
        r.time_s = dense.time_s;
        r.workspace_bytes = dense.workspace_bytes;
        r.gflops = flops / dense.time_s / 1e9;
        if (o_.has("check")) r.check = check_against_oracle(in, dense);
        emit(r, peak);
        rows.push_back(r);
      }
      if (method_ == "dense") continue;
      for (float alpha : alphas_) {
      method_params_.sample.alpha = alpha;
      if (!measure(in, SAMPLEATTN_METHOD_SAMPLE, &sparse, &error)) {
        std::fprintf(stderr, "sampleattn bench: sample N=%lld: %s\n", static_cast<long long>(seq), error.c_str());
        return 1;
      }
      isa_ = sparse.stats.isa ? sparse.stats.isa : "";
      Row r;
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
      // The true kept mass of the chosen masks on a large sample of rows (not only the sampled ones).
      const std::vector<workload::HeadMask> masks = workload::masks_from_stats(
          sparse.heads.data(), sparse.stripe_offsets.data(), sparse.stripes.data(), heads_, seq);
      workload::KeptMassResult kept;
      st = workload::kept_mass(in.q, in.k, 1.0 / std::sqrt(static_cast<double>(head_dim_)), masks,
                               workload::strided_rows(seq, 128), &kept);
      if (!st.is_ok()) {
        std::fprintf(stderr, "sampleattn bench: %s\n", st.message().c_str());
        return 1;
      }
      r.min_cra = kept.min;
      r.head_cra_min = kept.head_min;
      for (const sampleattn_head_stats& h : sparse.heads) {
        r.head_stripes.push_back(h.num_stripes);
        r.head_dense.push_back(h.dense);
        r.head_density.push_back(h.density);
      }
      r.cra_p1 = kept.p1;
      r.cra_mean = kept.mean;
      if (want_dense) {
        r.dense_time_s = dense.time_s;
        r.speedup = dense.time_s / sparse.time_s;
        workload::RelErrorResult e;
        st = workload::rel_l2_error(sparse.o, dense.o, {}, &e);
        if (!st.is_ok()) {
          std::fprintf(stderr, "sampleattn bench: %s\n", st.message().c_str());
          return 1;
        }
        r.rel_l2 = e.overall;
        r.rel_l2_median = e.median;
        r.rel_l2_p90 = e.p90;
        r.rel_l2_max = e.max;
        r.head_rel_l2 = e.per_head;
        if (!in.needles.empty()) {
          workload::NeedleResult ns, nd;
          if (workload::needle_recall(sparse.o, in.needles, 0.5, &ns).is_ok() &&
              workload::needle_recall(dense.o, in.needles, 0.5, &nd).is_ok()) {
            r.needle_recall = ns.recall;
            r.needle_recall_dense = nd.recall;
          }
        }
      }
      emit(r, peak);
      rows.push_back(r);
      }
    }
    if (!json_ && !csv_) print_table(rows, peak);
    return 0;
  }

  void emit(const Row& r, double peak) const {
    if (json_) {
      std::printf("%s\n", json(r, peak).c_str());
      std::fflush(stdout);
    } else if (csv_) {
      std::printf("%s,%lld,%.4g,%d,%d,%d,%s,%d,%s,%s,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g\n",
                  r.method.c_str(), static_cast<long long>(r.seq), r.alpha, heads_, kv_heads_, head_dim_,
                  dtype_name(dtype_), threads_, isa_.c_str(), backend_name_.c_str(), r.time_s, r.gflops,
                  r.dense_time_s, r.speedup, r.density, r.stripes_mean, r.overhead_s, r.min_cra, r.rel_l2,
                  r.rel_l2_median, r.rel_l2_p90, r.rel_l2_max, r.needle_recall, r.needle_recall_dense);
      std::fflush(stdout);
    }
  }

  void print_table(const std::vector<Row>& rows, double peak) const {
    std::printf("sampleattn bench: %s inputs, %d heads (%d kv), d=%d, %s, %d threads, %s on %s\n",
                data_.c_str(), heads_, kv_heads_, head_dim_, dtype_name(dtype_), threads_, isa_.c_str(),
                backend_name_.c_str());
    if (peak > 0) std::printf("OpenBLAS SGEMM 4096^3 in this run: %.1f GFLOP/s\n", peak);
    if (method_ == "dense") {
      std::printf("%8s %12s %10s %10s\n", "N", "dense s", "GFLOP/s", "rel err");
      for (const Row& r : rows) {
        std::printf("%8lld %12.4f %10.1f %10s\n", static_cast<long long>(r.seq), r.time_s, r.gflops,
                    r.check >= 0 ? std::to_string(r.check).c_str() : "-");
      }
      return;
    }
    std::printf("%8s %6s %10s %10s %8s %8s %9s %9s %8s %8s %8s\n", "N", "alpha", "dense s", "sample s", "speedup",
                "density", "rel err", "(median)", "min CRA", "needles", "(dense)");
    for (const Row& r : rows) {
      if (!r.sample) continue;
      auto fmt = [](double v, const char* f) {
        if (v < 0) return std::string("-");
        char b[32];
        std::snprintf(b, sizeof b, f, v);
        return std::string(b);
      };
      std::printf("%8lld %6.3g %10s %10.4f %8s %8.4f %9s %9s %8.4f %8s %8s\n", static_cast<long long>(r.seq), r.alpha,
                  fmt(r.dense_time_s > 0 ? r.dense_time_s : -1, "%.4f").c_str(), r.time_s,
                  fmt(r.speedup > 0 ? r.speedup : -1, "%.2fx").c_str(), r.density, fmt(r.rel_l2, "%.4f").c_str(),
                  fmt(r.rel_l2_median, "%.4f").c_str(), r.min_cra, fmt(r.needle_recall, "%.2f").c_str(),
                  fmt(r.needle_recall_dense, "%.2f").c_str());
    }
  }

  Options o_;
  sampleattn_context* ctx_ = nullptr;
  sampleattn_backend backend_ = SAMPLEATTN_BACKEND_CPU;
  std::string backend_name_, device_name_, isa_, method_, data_;
  int threads_ = 0, heads_ = 8, kv_heads_ = 8, head_dim_ = 128;
  std::vector<int64_t> seqs_;
  std::vector<float> alphas_;
  int64_t repeat_ = 3, warmup_ = 1, needles_ = 8;
  uint64_t seed_ = 1;
  DType dtype_ = DType::kF32;
  bool json_ = false, csv_ = false, quiet_ = false;
  sampleattn_params method_params_{};
};

}  // namespace

int bench_main(int argc, char** argv, int first) {
  Bench bench;
  return bench.main(argc, argv, first);
}

}  // namespace sampleattn::cli
