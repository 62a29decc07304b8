// `sampleattn bench`: the inputs of one sequence length: generated structured inputs, random
// Gaussian ones, or the user's .npy files, in the benchmark dtype (--dtype, or the files' own).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/bench_options.h"
#include "core/status.h"
#include "workload/generator.h"
#include "workload/npy.h"

namespace sampleattn::cli {

struct BenchInputs {
  workload::Tensor3 q, k, v;  // in the benchmark dtype; v may have its own head dim (head_dim_v)
  std::vector<workload::PlantedNeedle> needles;
  std::string source;
  DType dtype = DType::kF32;  // of q, k and v
  // The model's variants every run and metric of these inputs uses: the options' window and
  // softcap, ALiBi slopes for q's heads, sinks generated for these inputs.
  workload::ModelVariants model;
};

// Uses options.data, heads, kv_heads, head_dim, head_dim_v, seed, needles, mix, dtype and variants;
// npy:DIR files keep their dtype unless options.dtype_given. Structured inputs are made for the
// model (window, softcap: workload::GeneratorConfig).
Status load_bench_inputs(const BenchOptions& options, int64_t seq, BenchInputs* in);

}  // namespace sampleattn::cli
