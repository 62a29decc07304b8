// The oracle (reference/oracle.h) over a validated Problem, for the tests: each call converts
// the Problem into the oracle's own Call (shapes, strides, sequences, scale, causal) and runs
// the same computation. Tools use oracle.h directly and need no core/problem.h.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/problem.h"
#include "reference/oracle.h"

namespace sampleattn::reference {

// The oracle's description of `problem` (pointers, not copies of the data).
Call call_of(const Problem& problem);

// Exact attention for the listed (token, head) rows.
std::vector<RowResult> attention_rows(const Problem& problem,
                                      const std::vector<std::pair<int64_t, int>>& rows,
                                      const MaskLookup& mask = {});

// The naive same-precision computation of oracle.h's naive_attention_rows.
std::vector<RowResult> naive_attention_rows(const Problem& problem,
                                            const std::vector<std::pair<int64_t, int>>& rows,
                                            bool bf16_products, const MaskLookup& mask = {});

}  // namespace sampleattn::reference
