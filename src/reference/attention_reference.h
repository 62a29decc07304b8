// Double-precision oracles. Slow on purpose: every product and sum in double, inputs read
// through their dtype exactly as the library reads them.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/problem.h"

namespace sampleattn::reference {

// A sparse mask for one (sequence, query head): the query at position p sees keys
// max(0, p - window + 1) .. p plus each stripe j <= p - window (docs/ALGORITHM.md).
struct HeadMask {
  int64_t window = 0;
  std::vector<int32_t> stripes;  // ascending
};

// Returns the mask of (sequence, query head), or nullptr for dense.
using MaskLookup = std::function<const HeadMask*(int sequence, int head)>;

// One output row: query token `token` (index into the concatenated batch) and query head `head`.
struct RowResult {
  int64_t token = 0;
  int head = 0;
  std::vector<double> o;  // head_dim values
  double lse = 0;         // natural log; -inf when the row sees no key
};

// Whether key j is visible to the query at position p under `mask` (nullptr = dense causal or
// full, following problem.causal).
bool visible(const Problem& problem, const HeadMask* mask, int64_t p, int64_t j);

// Exact attention for the listed (token, head) rows.
std::vector<RowResult> attention_rows(const Problem& problem,
                                      const std::vector<std::pair<int64_t, int>>& rows,
                                      const MaskLookup& mask = {});

// Every row of the problem, in token-major then head order.
std::vector<RowResult> attention_all(const Problem& problem, const MaskLookup& mask = {});

// The same computation in float (f32 products, f32 sums, f32 exp), or with Q (scaled), K, V and
// the probabilities rounded to bf16 before their products when bf16_products is set: the "naive
// implementation in the same precision" whose error against the oracle bounds the kernels'.
std::vector<RowResult> naive_attention_rows(const Problem& problem,
                                            const std::vector<std::pair<int64_t, int>>& rows,
                                            bool bf16_products, const MaskLookup& mask = {});

// Sequence index holding query token `token`.
int sequence_of_token(const Problem& problem, int64_t token);

}  // namespace sampleattn::reference
