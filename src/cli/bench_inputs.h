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
  workload::Tensor3 q, k, v;  // in the benchmark dtype
  std::vector<workload::PlantedNeedle> needles;
  std::string source;
  DType dtype = DType::kF32;  // of q, k and v
};

// Uses options.data, heads, kv_heads, head_dim, seed, needles, mix and dtype; npy:DIR files keep
// their dtype unless options.dtype_given.
Status load_bench_inputs(const BenchOptions& options, int64_t seq, BenchInputs* in);

}  // namespace sampleattn::cli
