// `sampleattn bench`: the inputs of one sequence length: generated structured inputs, random
// Gaussian ones, or the user's .npy files, in the benchmark dtype (--dtype, or the files' own).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/bench_kv.h"
#include "cli/bench_options.h"
#include "core/status.h"
#include "workload/generator.h"
#include "workload/npy.h"

namespace sampleattn::cli {

struct BenchInputs {
  // q in the benchmark dtype, its last --q-len positions; k and v: every key, in the benchmark
  // dtype, or (quantized K/V) the f32 values the stored ones stand for. v may have its own head dim.
  workload::Tensor3 q, k, v;
  KvStorage kv;  // K and V as the library reads them (--kv-layout, --kv-dtype)
  std::vector<workload::PlantedNeedle> needles;
  std::vector<std::vector<workload::FarRow>> far_rows;  // per query head: the far mix's rare rows
  std::string source;
  DType dtype = DType::kF32;  // of q, k and v
  // The model's variants every run and metric of these inputs uses: the options' window and
  // softcap, ALiBi slopes for q's heads, sinks generated for these inputs.
  workload::ModelVariants model;
};

// Uses options.data, heads, kv_heads, head_dim, head_dim_v, seed, needles, mix, dtype and variants;
// npy:DIR files keep their dtype unless options.dtype_given. Structured inputs are made for the
// model (window, softcap: workload::GeneratorConfig). Then K and V are stored as options.page_size
// and kv_dtype say, the sinks are generated over what the kernel sees, and q keeps its last q_len
// positions.
Status load_bench_inputs(const BenchOptions& options, int64_t seq, BenchInputs* in);

}  // namespace sampleattn::cli
