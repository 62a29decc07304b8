// `sampleattn bench`: its options, declared and read into one plain record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/bench_kv.h"
#include "cli/common.h"
#include "cli/options.h"
#include "core/dtype.h"
#include "sampleattn/sampleattn.hpp"
#include "workload/generator.h"

namespace sampleattn::cli {

struct BenchOptions {
  std::string method;          // dense, sample or both
  std::vector<int64_t> seqs;   // {0} with npy:DIR inputs: the files decide
  int heads = 8, kv_heads = 8, head_dim = 128;
  int head_dim_v = 0;          // 0: head_dim (npy:DIR inputs: v.npy decides)
  VariantOptions variants;     // the model's window, softcap, ALiBi, sinks (generated per input)
  int64_t repeat = 3, warmup = 1, needles = 8;
  workload::HeadMix mix = workload::HeadMix::kDefault;
  uint64_t seed = 1;
  DType dtype = DType::kF32;
  bool dtype_given = false;    // without --dtype, npy:DIR inputs keep the files' dtype
  std::string data;            // structured, random or npy:DIR
  bool json = false, csv = false, quiet = false, check = false, peak = false;
  // The engine's side (issue 14): how K/V are stored, the queries per sequence, whose threads run.
  int64_t page_size = 0;       // --kv-layout paged:PAGE; 0: packed
  KvDtype kv_dtype = KvDtype::kSame;
  int64_t q_len = 0;           // --q-len: the last q_len positions query; 0: every position (= seq)
  bool host_pool = false;      // also run through a spinning host pool's parallel_for
  std::vector<float> alphas;   // dense runs once per length, sample once per alpha
  sampleattn::Params method_params;  // precision and sample parameters (alpha: the first)
};

void declare_bench_options(Options& o);
// Reads the parsed options; false with error set on bad values (a usage error): every range is
// checked here, before any input is generated or read. Sets defaults it derives (kv-heads,
// alpha) in `o`.
bool read_bench_options(Options& o, BenchOptions* b, std::string* error);

}  // namespace sampleattn::cli
