// `sampleattn bench`: the inputs of one sequence length: generated structured inputs, random
// Gaussian ones, or the user's .npy files, converted to the benchmark dtype.
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
};

// Uses options.data, heads, kv_heads, head_dim, seed, needles and dtype.
Status load_bench_inputs(const BenchOptions& options, int64_t seq, BenchInputs* in);

}  // namespace sampleattn::cli
