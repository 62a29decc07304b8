// `sampleattn bench`: what it prints: a JSON object or a CSV row per configuration as it is
// measured, or one table at the end; progress lines on stderr.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "sampleattn/sampleattn.h"

namespace sampleattn::cli {

// One configuration's results: a dense run, or a sample run at one alpha.
struct BenchRow {
  std::string method;
  int64_t seq = 0;    // keys
  int64_t q_len = 0;  // queries: the last q_len positions (= seq for a prefill)
  double time_s = 0, gflops = 0;
  double dense_flops = 0;  // the plan's: 2 (d + d_v) per query-key pair a dense attention computes
  uint64_t workspace_bytes = 0;
  // The K/V as stored (bytes of the seq keys, scales included) over the median time, and the same
  // threads' plain read rate over as many bytes in this run (--peak; 0: not measured).
  uint64_t kv_bytes = 0;
  double kv_gbs = 0, read_gbs = 0;
  // --host-pool: time_s is the host pool's; the library's own pool's, and the own pool's beside the
  // host pool's spinning workers, with their ratios to the own pool's (> 1: slower).
  double own_pool_time_s = 0, host_pool_ratio = 0, spinning_host_time_s = 0, spinning_host_ratio = 0;
  double host_pool_calls = 0;  // parallel_for calls per forward
  double cache_check = -1;     // paged or quantized: last rows' rel_l2 against the oracle
  // sample only
  bool sample = false;
  float alpha = 0;
  double dense_time_s = 0, speedup = 0, density = 0, stripes_mean = 0, overhead_s = 0;
  double sampling_s = 0, selection_s = 0;  // overhead_s's parts: stage 1, stage 2 (+ validation)
  double min_cra = 0, cra_p1 = 0, cra_mean = 0, sampled_cra = 0, rel_l2 = -1, rel_l2_median = -1, rel_l2_p90 = -1, rel_l2_max = -1;
  double needle_recall = -1, needle_recall_dense = -1;
  int64_t needles_visible = 0;  // the needles recall counts (those the model's window shows)
  // The far mix's rare rows among the queries: how many, the share whose far key the mask keeps,
  // and the sparse output's relative L2 error against dense over them (all heads; per head).
  int64_t far_rows = 0;
  double far_kept = -1, far_rel_l2 = -1;
  std::vector<double> head_far_rel_l2;
  std::vector<double> head_rel_l2, head_cra_min;
  std::vector<int> head_stripes, head_dense, head_alpha_stripes, head_dense_rows;
  std::vector<std::string> head_decision;
  // The library's validation rows (stats.val_cra_*; per head the 5th percentile); -1: none.
  double val_cra_min = -1, val_cra_p5 = -1, val_cra_mean = -1;
  std::vector<double> head_val_cra_p5;
  int widened_heads = 0;
  int64_t dense_rows = 0;  // rows the look sent dense (sample.look > 0)
  std::vector<double> head_density;
  double check = -1;  // dense with --check: rel_l2 against the fp64 oracle
  int dense_heads = 0;
};

// What every row repeats: the shape, the run's settings and where it ran.
struct BenchSetting {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int head_dim_v = 0;  // resolved (head_dim when V has the same size)
  // The model's variants (ABI 1.3): window (-1: none), softcap (0: none), ALiBi (standard slopes),
  // the sink logits (empty: none).
  int64_t window_left = -1;
  double softcap = 0;
  bool alibi = false;
  std::vector<float> sinks;
  DType dtype = DType::kF32;
  std::string kv_layout = "packed", kv_dtype = "same";  // --kv-layout, --kv-dtype as given
  bool host_pool = false;
  std::string precision;  // the products that ran: "f32", "bf16" (CPU), "f16" or "bf16" (CUDA)
  int threads = 0;
  std::string isa, backend_name, device_name, data;
  bool cuda = false;  // the device name is reported
  double amx_gflops = 0;  // --peak on a CPU with the amx table: the tile product's rate in this run
};

// "[bench] line" on stderr unless quiet.
void progress(bool quiet, const std::string& line);

std::string json_line(const BenchSetting& s, const BenchRow& r, double peak);
void print_csv_header();
// Prints the row now as JSON or CSV; nothing for the table, which comes at the end.
void emit_row(const BenchSetting& s, const BenchRow& r, double peak, bool json, bool csv);
// The table: `method` dense shows the dense rows, else the sample rows against dense.
void print_table(const BenchSetting& s, const std::string& method, const std::vector<BenchRow>& rows, double peak);

}  // namespace sampleattn::cli
