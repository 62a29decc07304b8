// `sampleattn bench`: accuracy: the dense output against the fp64 oracle (--check), and the
// sparse output's kept mass, error against dense and needle recall.
#pragma once

#include "cli/bench_inputs.h"
#include "cli/bench_report.h"
#include "cli/bench_timing.h"
#include "core/status.h"

namespace sampleattn::cli {

// rel_l2 of `o` (f32 [q_len, heads, head_dim_v]) against the fp64 oracle on per_head rows per head
// (the last row first, at most q_len) of the causal attention over `in` (softmax scale
// 1/sqrt(dim); the queries are the last q_len of the k.seq positions) with the inputs' model
// variants. The oracle reads in.k and in.v: for a quantized KV cache, the dequantized values the
// cache stands for, so the error is the kernel's, not the quantization's.
double rel_l2_against_oracle(const BenchInputs& in, const workload::Tensor3& o, int per_head = 24);

// The true kept mass (CRA) of the masks the sample run chose, on 1 row in 128 of every head, of
// each row's distribution over the keys the model shows it (its variants' scores, the sink left
// out): row.min_cra, cra_p1, cra_mean, head_cra_min.
Status add_kept_mass(const BenchInputs& in, const Measured& sparse, BenchRow* row);

// The sparse output against the dense one: row.rel_l2*, head_rel_l2, and needle recall of both
// over the needles the model's window shows (none: no recall reported).
Status add_error_against_dense(const BenchInputs& in, const Measured& sparse, const Measured& dense, BenchRow* row);

}  // namespace sampleattn::cli
