#include "cli/bench_report.h"

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "cli/common.h"

namespace sampleattn::cli {

void progress(bool quiet, const std::string& line) {
  if (!quiet) std::fprintf(stderr, "[bench] %s\n", line.c_str());
}

std::string json_line(const BenchSetting& s, const BenchRow& r, double peak) {
  std::ostringstream j;
  j.precision(6);
  j << "{\"method\":\"" << r.method << "\",\"seq\":" << r.seq << ",\"heads\":" << s.heads
    << ",\"kv_heads\":" << s.kv_heads << ",\"head_dim\":" << s.head_dim << ",\"dtype\":\""
    << dtype_name(s.dtype) << "\",\"precision\":" << json_string(s.precision) << ",\"threads\":" << s.threads
    << ",\"isa\":" << json_string(s.isa) << ",\"backend\":" << json_string(s.backend_name)
    << ",\"data\":" << json_string(s.data) << ",\"time_s\":" << r.time_s << ",\"gflops\":" << r.gflops << ",\"workspace_bytes\":" << r.workspace_bytes;
  // The model's variants: always present, so that every row says which attention it measured.
  j << ",\"head_dim_v\":" << s.head_dim_v << ",\"window_left\":" << s.window_left << ",\"softcap\":" << s.softcap
    << ",\"alibi\":" << (s.alibi ? "true" : "false") << ",\"sinks\":" << (s.sinks.empty() ? "false" : "true");
  if (!s.sinks.empty()) {
    j << ",\"sink_logits\":[";
    for (size_t h = 0; h < s.sinks.size(); ++h) {
      j << (h ? "," : "");
      if (std::isinf(s.sinks[h])) {
        j << "null";  // -inf: no sink for that head (JSON has no infinity)
      } else {
        j << s.sinks[h];
      }
    }
    j << "]";
  }
  if (s.cuda) j << ",\"device\":" << json_string(s.device_name);
  // The engine's side (issue 14): how K/V were stored and read, by whose threads.
  j << ",\"q_len\":" << r.q_len << ",\"kv_layout\":" << json_string(s.kv_layout)
    << ",\"kv_dtype\":" << json_string(s.kv_dtype) << ",\"host_pool\":" << (s.host_pool ? "true" : "false")
    << ",\"dense_flops\":" << std::setprecision(17) << r.dense_flops << std::setprecision(6) << ",\"kv_bytes\":" << r.kv_bytes << ",\"kv_gbs\":" << r.kv_gbs;
  if (r.read_gbs > 0) j << ",\"read_gbs\":" << r.read_gbs;
  if (s.host_pool) {
    j << ",\"host_pool_time_s\":" << r.time_s << ",\"own_pool_time_s\":" << r.own_pool_time_s
      << ",\"host_pool_ratio\":" << r.host_pool_ratio << ",\"spinning_host_time_s\":" << r.spinning_host_time_s
      << ",\"spinning_host_ratio\":" << r.spinning_host_ratio << ",\"host_pool_calls\":" << r.host_pool_calls;
  }
  if (r.cache_check >= 0) j << ",\"cache_check_rel_l2_err\":" << r.cache_check;
  if (r.sample) {
    j << ",\"alpha\":" << r.alpha << ",\"density\":" << r.density << ",\"stripes_mean\":" << r.stripes_mean << ",\"overhead_s\":"
      << r.overhead_s << ",\"sampling_s\":" << r.sampling_s << ",\"selection_s\":" << r.selection_s << ",\"min_cra\":" << r.min_cra << ",\"cra_p1\":" << r.cra_p1 << ",\"cra_mean\":"
      << r.cra_mean << ",\"sampled_rows_min_cra\":" << r.sampled_cra << ",\"val_cra_min\":" << r.val_cra_min
      << ",\"val_cra_p5\":" << r.val_cra_p5 << ",\"val_cra_mean\":" << r.val_cra_mean << ",\"dense_heads\":"
      << r.dense_heads << ",\"widened_heads\":" << r.widened_heads << ",\"dense_rows\":" << r.dense_rows;
    if (r.dense_time_s > 0) j << ",\"dense_time_s\":" << r.dense_time_s << ",\"speedup\":" << r.speedup;
    if (r.rel_l2 >= 0) {
      j << ",\"rel_l2_err\":" << r.rel_l2 << ",\"rel_l2_err_median\":" << r.rel_l2_median
        << ",\"rel_l2_err_p90\":" << r.rel_l2_p90 << ",\"rel_l2_err_max\":" << r.rel_l2_max;
    }
    if (r.needle_recall >= 0) {
      j << ",\"needle_recall\":" << r.needle_recall << ",\"needle_recall_dense\":" << r.needle_recall_dense
        << ",\"needles_visible\":" << r.needles_visible;
    }
    if (r.far_rows > 0) {
      j << ",\"far_rows\":" << r.far_rows << ",\"far_kept\":" << r.far_kept << ",\"far_rel_l2_err\":" << r.far_rel_l2;
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
    array("head_val_cra_p5", r.head_val_cra_p5);
    array("head_alpha_stripes", r.head_alpha_stripes);
    array("head_dense_rows", r.head_dense_rows);
    j << ",\"head_decision\":[";
    for (size_t i = 0; i < r.head_decision.size(); ++i) j << (i ? "," : "") << json_string(r.head_decision[i]);
    j << "]";
    if (!r.head_rel_l2.empty()) array("head_rel_l2_err", r.head_rel_l2);
    if (r.far_rows > 0) array("head_far_rel_l2_err", r.head_far_rel_l2);
  } else if (r.check >= 0) {
    // Quantized K/V: the oracle ran on the dequantized values, so this is the kernel's error alone.
    j << ",\"rel_l2_err\":" << r.check << ",\"oracle_kv\":\""
      << (s.kv_dtype == "same" ? "as stored" : "dequantized") << "\"";
  }
  if (peak > 0) j << ",\"sgemm_gflops\":" << peak;
  if (s.amx_gflops > 0) j << ",\"amx_gflops\":" << s.amx_gflops;
  j << "}";
  return j.str();
}

void print_csv_header() {
  std::printf("method,seq,alpha,heads,kv_heads,head_dim,dtype,threads,isa,backend,time_s,gflops,dense_time_s,"
              "speedup,density,stripes_mean,overhead_s,min_cra,rel_l2_err,rel_l2_err_median,"
              "rel_l2_err_p90,rel_l2_err_max,needle_recall,needle_recall_dense\n");
}

void emit_row(const BenchSetting& s, const BenchRow& r, double peak, bool json, bool csv) {
  if (json) {
    std::printf("%s\n", json_line(s, r, peak).c_str());
    std::fflush(stdout);
  } else if (csv) {
    std::printf("%s,%lld,%.4g,%d,%d,%d,%s,%d,%s,%s,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g\n",
                r.method.c_str(), static_cast<long long>(r.seq), r.alpha, s.heads, s.kv_heads, s.head_dim,
                dtype_name(s.dtype), s.threads, s.isa.c_str(), s.backend_name.c_str(), r.time_s, r.gflops,
                r.dense_time_s, r.speedup, r.density, r.stripes_mean, r.overhead_s, r.min_cra, r.rel_l2,
                r.rel_l2_median, r.rel_l2_p90, r.rel_l2_max, r.needle_recall, r.needle_recall_dense);
    std::fflush(stdout);
  }
}

void print_table(const BenchSetting& s, const std::string& method, const std::vector<BenchRow>& rows, double peak) {
  std::printf("sampleattn bench: %s inputs, %d heads (%d kv), d=%d, %s, %d threads, %s on %s\n",
              s.data.c_str(), s.heads, s.kv_heads, s.head_dim, dtype_name(s.dtype), s.threads, s.isa.c_str(),
              s.backend_name.c_str());
  std::string model;
  if (s.head_dim_v != s.head_dim) model += ", head_dim_v " + std::to_string(s.head_dim_v);
  if (s.window_left >= 0) model += ", window " + std::to_string(s.window_left);
  if (s.softcap > 0) {
    char cap[40];
    std::snprintf(cap, sizeof cap, ", softcap %g", s.softcap);
    model += cap;
  }
  if (s.alibi) model += ", ALiBi";
  if (!s.sinks.empty()) model += ", learned sinks";
  if (!model.empty()) std::printf("model:%s\n", model.c_str() + 1);
  if (peak > 0) std::printf("OpenBLAS SGEMM 4096^3 in this run: %.1f GFLOP/s\n", peak);
  if (s.amx_gflops > 0) std::printf("AMX tile products (tdpbf16ps) in this run: %.1f GFLOP/s\n", s.amx_gflops);
  if (s.kv_layout != "packed" || s.kv_dtype != "same") {
    std::printf("kv cache: %s, %s\n", s.kv_layout.c_str(), s.kv_dtype == "same" ? dtype_name(s.dtype) : s.kv_dtype.c_str());
  }
  for (const BenchRow& r : rows) {
    // One line per row for what the columns leave out: the queries, the K/V read rate, the pools.
    if (r.q_len == r.seq && !s.host_pool && r.read_gbs <= 0) continue;
    std::printf("N=%lld %s:%s q_len %lld, K/V %s at %.2f GB/s", static_cast<long long>(r.seq), r.method.c_str(),
                r.sample ? (" alpha " + std::to_string(r.alpha)).c_str() : "", static_cast<long long>(r.q_len),
                mebibytes(r.kv_bytes).c_str(), r.kv_gbs);
    if (r.read_gbs > 0) std::printf(" (plain read %.2f GB/s)", r.read_gbs);
    if (s.host_pool) {
      std::printf("; host pool %.4f s = %.3fx the own pool's %.4f s; own pool beside spinning host threads %.4f s = "
                  "%.3fx",
                  r.time_s, r.host_pool_ratio, r.own_pool_time_s, r.spinning_host_time_s, r.spinning_host_ratio);
    }
    std::printf("\n");
  }
  if (method == "dense") {
    std::printf("%8s %12s %10s %10s\n", "N", "dense s", "GFLOP/s", "rel err");
    for (const BenchRow& r : rows) {
      std::printf("%8lld %12.4f %10.1f %10s\n", static_cast<long long>(r.seq), r.time_s, r.gflops,
                  r.check >= 0 ? std::to_string(r.check).c_str() : "-");
    }
    return;
  }
  std::printf("%8s %6s %10s %10s %8s %8s %9s %9s %8s %8s %8s %8s %8s\n", "N", "alpha", "dense s", "sample s",
              "speedup", "density", "rel err", "(median)", "min CRA", "val p5", "dense h", "needles", "(dense)");
  for (const BenchRow& r : rows) {
    if (!r.sample) continue;
    auto fmt = [](double v, const char* f) {
      if (v < 0) return std::string("-");
      char b[32];
      std::snprintf(b, sizeof b, f, v);
      return std::string(b);
    };
    std::printf("%8lld %6.3g %10s %10.4f %8s %8.4f %9s %9s %8.4f %8s %8s %8s %8s\n", static_cast<long long>(r.seq),
                r.alpha, fmt(r.dense_time_s > 0 ? r.dense_time_s : -1, "%.4f").c_str(), r.time_s,
                fmt(r.speedup > 0 ? r.speedup : -1, "%.2fx").c_str(), r.density, fmt(r.rel_l2, "%.4f").c_str(),
                fmt(r.rel_l2_median, "%.4f").c_str(), r.min_cra, fmt(r.val_cra_p5, "%.4f").c_str(),
                (std::to_string(r.dense_heads) + "/" + std::to_string(r.head_dense.size())).c_str(),
                fmt(r.needle_recall, "%.2f").c_str(), fmt(r.needle_recall_dense, "%.2f").c_str());
  }
  for (const BenchRow& r : rows) {
    if (!r.sample || r.far_rows == 0) continue;
    std::printf("%8lld: %lld far rows (--mix far): far key kept in %.1f%% of them, rel err over them %.4f\n",
                static_cast<long long>(r.seq), static_cast<long long>(r.far_rows), 100.0 * r.far_kept, r.far_rel_l2);
  }
  for (const BenchRow& r : rows) {
    if (!r.sample || r.dense_rows == 0) continue;
    std::printf("%8lld: the look (--look) sent %lld query rows of sparse heads dense\n", static_cast<long long>(r.seq),
                static_cast<long long>(r.dense_rows));
  }
}

}  // namespace sampleattn::cli
