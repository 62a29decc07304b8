// The validated, normalized form of one attention call (sampleattn_params), shared by every
// backend. Building it is where all validation rules live, so plan() and forward() agree.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/kv_cache.h"
#include "core/mask.h"
#include "core/score_mod.h"
#include "core/status.h"
#include "kernel_lists.h"
#include "sampleattn/sampleattn.h"

namespace sampleattn {

// The head-dim list (SAMPLEATTN_HEAD_DIMS in cmake/KernelLists.cmake), ascending.
inline constexpr int kSupportedHeadDims[] = {
#define SAMPLEATTN_HEAD_DIM_ELEMENT(D) D,
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_HEAD_DIM_ELEMENT)
#undef SAMPLEATTN_HEAD_DIM_ELEMENT
};

struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t token_stride = 0;  // elements
  int64_t head_stride = 0;   // elements

  // The first element of (token, head)'s row.
  const char* row(int64_t token, int64_t head) const {
    return static_cast<const char*>(data) + (token * token_stride + head * head_stride) * dtype_size(dtype);
  }
};

struct OutputView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
};

struct Sequence {
  int64_t q_begin = 0;  // first query token in the concatenated batch
  int64_t q_len = 0;
  int64_t k_begin = 0;
  int64_t k_len = 0;
  // Queries are the last q_len of the k_len positions: query i sits at position q_offset + i.
  int64_t q_offset() const { return k_len - q_len; }
};

struct Problem {
  TensorView q, k, v;  // k and v: data and dtype; their rows are addressed through kv
  OutputView o;
  KvLayout kv;  // where each sequence's keys live (packed or paged) and their scales
  float* lse = nullptr;
  int head_dim = 0;    // of q and k
  int head_dim_v = 0;  // of v and o, resolved (never 0)
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int group = 1;  // query heads per kv head
  std::vector<Sequence> sequences;
  int64_t total_q = 0;
  int64_t total_k = 0;
  float scale = 0.f;  // the softmax scale, resolved (never 0)
  bool causal = true;
  sampleattn_method method = SAMPLEATTN_METHOD_DENSE;
  sampleattn_precision precision = SAMPLEATTN_PRECISION_AUTO;
  sampleattn_sample_params sample{};
  void* stream = nullptr;
  // The model's variants (sampleattn_params, ABI 1.3). window_left < 0: no model window.
  int64_t window_left = kNoModelWindow;
  float softcap = 0.f;               // 0 = none
  std::vector<float> alibi_slopes;   // [num_q_heads] natural-log units, or empty
  std::vector<float> sinks;          // [num_q_heads] natural-log units (-inf = none), or empty

  // Query head h's softcap, ALiBi slope and sink in log2 units (core/score_mod.h).
  ScoreMod score_mod(int q_head) const;
  // Whether any variant changes a score or a denominator (plain attention otherwise).
  bool has_score_mod() const { return softcap > 0.f || !alibi_slopes.empty() || !sinks.empty(); }
  // The keys a causal query of `seq` sees at most (model_span of core/mask.h).
  int64_t span(const Sequence& seq) const { return model_span(seq.k_len, window_left); }

  // Key j of sequence `seq`, kv head `head`: element offsets into k, v and their scales.
  KvRow kv_row(int seq, int64_t j, int head) const { return kv.row(seq, sequences[seq].k_begin, j, head); }
  bool paged() const { return kv.paged(); }

  // Query-key pairs a dense attention computes (causal within the model window, or full),
  // summed over heads.
  double dense_pairs() const;
};

// The documented defaults (sampleattn_*_init), at the library's full struct size.
sampleattn_sample_params default_sample_params();
sampleattn_params default_params();
sampleattn_kv_cache default_kv_cache();

// Validates `params` and fills `problem`. With check_data, the Q/K/V/O pointers must be set
// (sampleattn_forward); without, only shapes and parameters are checked (sampleattn_plan).
Status build_problem(const sampleattn_params* params, bool check_data, Problem* problem);

}  // namespace sampleattn
