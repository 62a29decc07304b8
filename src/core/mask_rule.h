// The max_density rule (docs/ALGORITHM.md) and the pair count it rests on, shared by the CPU and
// the CUDA kernels (nvcc runs with --expt-relaxed-constexpr), so both backends decide alike.
#pragma once

#include <cstdint>

namespace sampleattn {

// Queries of a sampled (causal) sequence of k_len keys sit at positions q_offset .. k_len - 1;
// stripe column j is seen by those at p >= j + window.
constexpr int64_t stripe_pairs_of(int64_t k_len, int64_t q_offset, int64_t window, int64_t j) {
  const int64_t from = j + window > q_offset ? j + window : q_offset;
  return k_len > from ? k_len - from : 0;
}

// A mask computing more than max_density of the causal pairs runs dense.
constexpr bool mask_runs_dense(int64_t mask_pairs, int64_t causal_pairs, float max_density) {
  return static_cast<double>(mask_pairs) > static_cast<double>(max_density) * static_cast<double>(causal_pairs);
}

}  // namespace sampleattn
