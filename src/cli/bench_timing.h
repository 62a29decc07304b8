// `sampleattn bench`: one method run on the context: an untimed statistics run, warmup runs,
// then timed runs (the median reported); the inputs live where the backend reads them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/bench_inputs.h"
#include "sampleattn/sampleattn.hpp"
#include "workload/npy.h"

namespace sampleattn::cli {

struct Measured {
  double time_s = 0;                  // median over repeats
  double read_gbs = 0;                // TimedRuns::read: bytes over its median pass (0: none)
  uint64_t workspace_bytes = 0;       // what sampleattn_plan reports
  double dense_flops = 0;             // sampleattn_plan_info.dense_flops (0: the plan failed)
  workload::Tensor3 o;                // f32 output [seq, heads, head_dim_v]
  sampleattn_stats stats{};
  std::vector<sampleattn_head_stats> heads;
  std::vector<int32_t> stripe_offsets;
  std::vector<int32_t> stripes;
  std::vector<int32_t> dense_row_offsets;  // the look's dense rows (query indices)
  std::vector<int32_t> dense_row_indices;
};

class ReadLoop;

struct TimedRuns {
  int64_t warmup = 0, repeat = 1;
  bool quiet = false;       // no progress lines on stderr
  ReadLoop* read = nullptr;  // when set, one pass of it after each timed run (Measured::read_gbs)
};

double median(std::vector<double> v);

// Runs `method` with method_params' precision and sample parameters, the inputs' model variants
// and their K/V storage (in.kv: params.kv_cache when paged or quantized), warmup + repeat times; the output is kept from the last run (as f32). false with error
// set when a call fails.
bool measure(sampleattn_context* ctx, sampleattn_backend backend, const BenchInputs& in, sampleattn_method method,
             const sampleattn::Params& method_params, const TimedRuns& runs, Measured* out, std::string* error);

}  // namespace sampleattn::cli
