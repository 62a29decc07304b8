// Per-head statistics of the true (exact, causal) attention on sampled rows, to compare generated
// inputs with real captures side by side, and the exact-row helpers the metrics share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "workload/npy.h"

namespace sampleattn::workload {

// Exact causal softmax of one query row over keys 0 .. visible-1 of one head, in double.
// q: head_dim floats; keys: rows of head_dim floats, `key_stride` floats apart. probs gets
// `visible` values summing to 1 (empty when visible <= 0).
void row_probabilities(const float* q, const float* keys, int64_t key_stride, int head_dim,
                       int64_t visible, double scale, std::vector<double>* probs);

// `count` query rows of 0 .. q_len-1, evenly strided and always including the last; all rows
// when count >= q_len. Ascending.
std::vector<int64_t> strided_rows(int64_t q_len, int64_t count);

struct ProfileOptions {
  int64_t rows = 64;               // sampled query rows per head (evenly strided, last included)
  int sink_tokens = 4;             // "sink" = the first tokens
  double window_fraction = 0.08;   // local window: ceil(fraction * k_len) keys, at least 1
  double top_column_fraction = 0.01;  // top columns: ceil(fraction * k_len), at least 1
  double scale = 0;                // 0: 1/sqrt(head_dim)
};

struct HeadProfile {
  double sink_mass = 0;        // mean over rows of the mass on the first sink_tokens keys
  double window_mass = 0;      // mean mass within the local window
  double top_columns_mass = 0; // mean mass in the top columns (by column sums over the rows)
  // Mean mass of the union window + top columns: what a window-plus-stripes mask of that size
  // keeps (the top columns include the sink when it is heavy), and its minimum over the rows.
  double covered_mass = 0;
  double covered_min = 0;
  double entropy = 0;          // nats, mean over rows
};

// q: [q_len, Hq, d], k: [k_len, Hkv, d] (any dtype), queries are the last q_len positions of the
// k_len (causal). Query head h reads kv head h / (Hq / Hkv).
Status profile_attention(const Tensor3& q, const Tensor3& k, const ProfileOptions& options,
                         std::vector<HeadProfile>* profiles);

// A fixed-width table, one line per head plus the median over heads. `labels` (optional, one per
// head) names the head, e.g. its generated type.
std::string format_profile_table(const std::string& title, const std::vector<HeadProfile>& profiles,
                                 const std::vector<std::string>& labels = {});

// Median over heads of each field.
HeadProfile median_profile(const std::vector<HeadProfile>& profiles);

}  // namespace sampleattn::workload
