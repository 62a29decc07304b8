// Context-parallel attention over MPI (sampleattn_mpi_forward) against one process's
// sampleattn_forward over the whole batch, at any number of ranks: every rank builds the same global
// Q/K/V (same seed), computes the single-process reference itself, runs the collective call on its
// own shard and compares its rows. Splits: contiguous (even, explicit runs in and out of rank order,
// empty runs), zigzag (with empty chunks); varlen batches; causal and not; f32/f16/bf16; head_dim_v;
// softcap; sinks; strided layouts; sub-communicators; the statistics; and the collective errors
// (every rank fails, none hangs, none writes output).
//
// Every rank runs every test. A check that fails on one rank is gathered to all of them
// (expect_no_failures_on_any_rank), so every rank fails the test and rank 0, the only one that
// prints, names the rank. Tests never return early on a rank-local condition between collective
// calls: a rank that left would leave the others waiting.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sampleattn/sampleattn.h"
#include "sampleattn/sampleattn_mpi.h"
#include "test_rng.h"

namespace {

// ---------------------------------------------------------------------------------------------
// Ranks and failures
// ---------------------------------------------------------------------------------------------
int rank_of(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  return rank;
}
int size_of(MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  return size;
}
int world_rank() { return rank_of(MPI_COMM_WORLD); }
int world_size() { return size_of(MPI_COMM_WORLD); }

// True on every rank when ok is true on every rank.
bool all_ranks(bool ok) {
  int local = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&local, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return all != 0;
}

std::vector<int> gather_ints(int value, MPI_Comm comm = MPI_COMM_WORLD) {
  std::vector<int> all(static_cast<size_t>(size_of(comm)));
  MPI_Allgather(&value, 1, MPI_INT, all.data(), 1, MPI_INT, comm);
  return all;
}

std::vector<uint64_t> gather_u64(uint64_t value) {
  std::vector<uint64_t> all(static_cast<size_t>(world_size()));
  MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  return all;
}

// What went wrong on this rank, one line a problem.
class Failures {
 public:
  template <class... Parts>
  void add(const Parts&... parts) {
    std::ostringstream line;
    (line << ... << parts);
    lines_.push_back(line.str());
  }
  bool empty() const { return lines_.empty(); }
  std::string text() const {
    std::string all;
    for (const std::string& line : lines_) {
      if (all.size() > 6000) {
        all += "  ... (" + std::to_string(lines_.size()) + " problems in all)\n";
        break;
      }
      all += "  " + line + "\n";
    }
    return all;
  }

 private:
  std::vector<std::string> lines_;
};

// Collective over MPI_COMM_WORLD: every rank learns every rank's failures and fails the test with
// them, so rank 0 reports the problems of the others, naming them.
void expect_no_failures_on_any_rank(const Failures& failures) {
  const std::string text = failures.text();
  const int size = world_size();
  const std::vector<int> sizes = gather_ints(static_cast<int>(text.size()));
  std::vector<int> displs(static_cast<size_t>(size), 0);
  for (int r = 1; r < size; ++r) displs[r] = displs[r - 1] + sizes[r - 1];
  std::string all(static_cast<size_t>(displs[size - 1] + sizes[size - 1]), '\0');
  MPI_Allgatherv(text.data(), static_cast<int>(text.size()), MPI_CHAR, all.data(), sizes.data(), displs.data(),
                 MPI_CHAR, MPI_COMM_WORLD);
  for (int r = 0; r < size; ++r) {
    if (sizes[r] == 0) continue;
    ADD_FAILURE() << "rank " << r << " of " << size << ":\n" << all.substr(displs[r], sizes[r]);
  }
}

bool contains_ignoring_case(const std::string& haystack, const std::string& needle) {
  auto lower = [](std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// Data: a fixed-seed generator and the 16-bit formats (round to nearest even)
// ---------------------------------------------------------------------------------------------
using sampleattn::testing::Rng;  // tests/test_rng.h

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t f32_to_f16(float value) {
  uint32_t x = bits_of(value);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u);  // NaN, inf
  if (x >= 0x477FF000u) return sign | 0x7C00u;                                 // rounds past 65504
  if (x < 0x38800000u) {                                                       // below 2^-14: subnormal
    return sign | static_cast<uint16_t>(std::nearbyint(float_of(x) * 16777216.0f));
  }
  const uint32_t rounded = x + 0x0FFFu + ((x >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}

float f16_to_f32(uint16_t h) {
  const int exponent = (h >> 10) & 0x1F;
  const uint32_t mantissa = h & 0x3FFu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa != 0 ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), exponent - 25);
  }
  return (h & 0x8000u) ? -magnitude : magnitude;
}

uint16_t f32_to_bf16(float value) {
  const uint32_t x = bits_of(value);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

float bf16_to_f32(uint16_t b) { return float_of(static_cast<uint32_t>(b) << 16); }

size_t dtype_size(sampleattn_dtype dtype) { return dtype == SAMPLEATTN_DTYPE_F32 ? 4 : 2; }

const char* dtype_name(sampleattn_dtype dtype) {
  switch (dtype) {
    case SAMPLEATTN_DTYPE_F32: return "f32";
    case SAMPLEATTN_DTYPE_F16: return "f16";
    case SAMPLEATTN_DTYPE_BF16: return "bf16";
    default: return "?";
  }
}

float load(const uint8_t* base, sampleattn_dtype dtype, int64_t index) {
  if (dtype == SAMPLEATTN_DTYPE_F32) {
    float f;
    std::memcpy(&f, base + index * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, base + index * 2, 2);
  return dtype == SAMPLEATTN_DTYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

void store(uint8_t* base, sampleattn_dtype dtype, int64_t index, float value) {
  if (dtype == SAMPLEATTN_DTYPE_F32) {
    std::memcpy(base + index * 4, &value, 4);
    return;
  }
  const uint16_t h = dtype == SAMPLEATTN_DTYPE_F16 ? f32_to_f16(value) : f32_to_bf16(value);
  std::memcpy(base + index * 2, &h, 2);
}

float rounded_to(sampleattn_dtype dtype, float value) {
  switch (dtype) {
    case SAMPLEATTN_DTYPE_F16: return f16_to_f32(f32_to_f16(value));
    case SAMPLEATTN_DTYPE_BF16: return bf16_to_f32(f32_to_bf16(value));
    default: return value;
  }
}

// The byte every output buffer is filled with before a call: 0xFF... is a NaN in f32, f16 and bf16.
constexpr uint8_t kSentinel = 0xFF;

// ---------------------------------------------------------------------------------------------
// The problem, its shards and the local tensors
// ---------------------------------------------------------------------------------------------
struct Shape {
  std::vector<int32_t> seqlens{1000};
  int hq = 4;
  int hkv = 2;
  int d = 64;
  int dv = 0;  // 0: d
  int causal = 1;
  sampleattn_dtype in = SAMPLEATTN_DTYPE_F32;
  sampleattn_dtype out = SAMPLEATTN_DTYPE_F32;
  sampleattn_precision precision = SAMPLEATTN_PRECISION_F32;
  float softcap = 0;
  std::vector<float> sinks;  // empty: none
  float q_scale = 1.0f;      // spread of the scores (q and k are N(0, 1) before it)
  bool lse = true;
  bool single_sequence_form = false;  // batch 1 through seqlen_q/seqlen_k instead of cu_seqlens
  uint64_t seed = 1;
  // Method sample (causal), with `planted` key positions that every query leans on through
  // dimension 0 (so that its heads run sparse on these random inputs).
  bool sample = false;
  std::vector<int32_t> planted;
  sampleattn_stripe_scope scope = SAMPLEATTN_STRIPES_PER_HEAD;
  bool validation = true;  // false: r_val 0, no validation rows
  float look = 0;          // sample.look: the look at every row (0: off)
  // (row, key) of the first sequence: the row asks for the key through dimension 1, far above
  // every other key it sees (a rare row fetching a far key of its own, for the look to find).
  std::vector<std::pair<int32_t, int32_t>> far_rows;

  int value_dim() const { return dv != 0 ? dv : d; }
};

struct SeqRun {
  int64_t begin = 0;
  int64_t length = 0;
};

enum class Split {
  kEvenNullShard,     // shard NULL
  kEvenDefaultShard,  // sampleattn_mpi_shard_init's defaults
  kZigzag,
  kExplicit,  // begin/length from RankCall::runs_fn
};

// Rank r's run of a sequence of length L among P ranks: the even split.
SeqRun even_run(int64_t length, int rank, int ranks) {
  const int64_t begin = rank * length / ranks, end = (rank + 1) * length / ranks;
  return {begin, end - begin};
}

// The zigzag split: chunk r, then chunk 2P - 1 - r (either may be empty when L < 2P).
std::vector<SeqRun> zigzag_runs(int64_t length, int rank, int ranks) {
  auto chunk = [&](int64_t c) {
    const int64_t begin = c * length / (2 * ranks), end = (c + 1) * length / (2 * ranks);
    return SeqRun{begin, end - begin};
  };
  return {chunk(rank), chunk(2 * ranks - 1 - rank)};
}

// An uneven contiguous partition: rank r's share is proportional to r + 1, except that rank 1 holds
// nothing when there are 3 ranks or more; the runs follow one another in rank order or, reversed,
// rank 0 holding the end of the sequence. The run last in the sequence takes the remainder.
SeqRun uneven_run(int64_t length, int rank, int ranks, bool reversed) {
  std::vector<int64_t> weight(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) weight[r] = r + 1;
  if (ranks >= 3) weight[1] = 0;
  const int64_t total_weight = std::accumulate(weight.begin(), weight.end(), int64_t{0});
  std::vector<int> order(static_cast<size_t>(ranks));
  std::iota(order.begin(), order.end(), 0);
  if (reversed) std::reverse(order.begin(), order.end());
  int64_t position = 0;
  for (int i = 0; i < ranks; ++i) {
    const int r = order[i];
    const int64_t run = i + 1 == ranks ? length - position : length * weight[r] / total_weight;
    if (r == rank) return {position, run};
    position += run;
  }
  return {};
}

using RunsFn = std::function<SeqRun(int64_t length, int rank, int ranks)>;

enum class Layout {
  kPacked,       // q, k, v, o each [token, head, dim], dense
  kInterleaved,  // q|k|v of a token side by side in one buffer, with padding; o [token, head, dim] padded
  kHeadMajor,    // q, k, v, o each [head, token, dim], with a gap between heads
};

// Element (token, head, c) of a strided tensor.
struct View {
  uint8_t* base = nullptr;
  sampleattn_dtype dtype = SAMPLEATTN_DTYPE_F32;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  int64_t index(int64_t token, int head, int c) const { return token * token_stride + head * head_stride + c; }
  float get(int64_t token, int head, int c) const { return load(base, dtype, index(token, head, c)); }
  void set(int64_t token, int head, int c, float value) { store(base, dtype, index(token, head, c), value); }
};

// One rank's call: the global problem (values and reference), its shard, its local tensors and the
// params pointing at them. Not movable: params points into it.
struct RankCall {
  Shape shape;
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0;
  int ranks = 1;
  Split split = Split::kEvenNullShard;

  std::vector<int32_t> cu;            // global offsets of the sequences
  std::vector<int32_t> cu_q, cu_k;    // the copies params points at
  int64_t total_tokens = 0;
  std::vector<float> q, k, v;         // global values, already rounded to the input dtype
  std::vector<std::vector<SeqRun>> runs; // per sequence: this rank's runs in local order
  std::vector<int64_t> tokens;        // the global token of each local token
  std::vector<int64_t> begin, length; // the explicit shard arrays
  sampleattn_mpi_shard shard{};
  bool pass_shard = false;

  std::vector<uint8_t> qkv_bytes, q_bytes, k_bytes, v_bytes, o_bytes;
  View q_view, k_view, v_view, o_view;
  std::vector<float> lse;
  sampleattn_params params{};

  sampleattn_sample_params sample_params{};
  // Method sample: the reference's mask (per (sequence, head) of the whole batch).
  std::vector<sampleattn_head_stats> ref_heads;
  std::vector<int32_t> ref_offsets, ref_stripes;

  sampleattn_status reference_status = SAMPLEATTN_SUCCESS;
  std::string reference_message;
  std::vector<float> o_ref, lse_ref;  // global, f32
  double max_abs_ref = 0;

  RankCall() = default;
  RankCall(const RankCall&) = delete;
  RankCall& operator=(const RankCall&) = delete;

  int64_t local_tokens() const { return static_cast<int64_t>(tokens.size()); }
  // "sequence b position p" of a global token.
  std::string where(int64_t token) const {
    const auto it = std::upper_bound(cu.begin(), cu.end(), static_cast<int32_t>(token));
    const int64_t b = (it - cu.begin()) - 1;
    return "sequence " + std::to_string(b) + " position " + std::to_string(token - cu[b]);
  }
};

sampleattn_context* g_context = nullptr;  // one CPU context of one thread per rank (main)

// Vectors that back a tensor are never empty, so that no data pointer is NULL even on a rank that
// holds no token (a NULL pointer is tested on its own).
void resize_at_least_one(std::vector<uint8_t>& bytes, size_t size) { bytes.assign(std::max<size_t>(size, 64), 0); }

std::unique_ptr<RankCall> make_setup(const Shape& shape, Split split, MPI_Comm comm = MPI_COMM_WORLD,
                                  Layout layout = Layout::kPacked, const RunsFn& runs_fn = nullptr) {
  auto s = std::make_unique<RankCall>();
  s->shape = shape;
  s->comm = comm;
  s->rank = rank_of(comm);
  s->ranks = size_of(comm);
  s->split = split;
  const int hq = shape.hq, hkv = shape.hkv, d = shape.d, dv = shape.value_dim();
  const size_t in_size = dtype_size(shape.in), out_size = dtype_size(shape.out);

  s->cu.assign(1, 0);
  for (int32_t length : shape.seqlens) s->cu.push_back(s->cu.back() + length);
  s->cu_q = s->cu;
  s->cu_k = s->cu;
  s->total_tokens = s->cu.back();

  Rng rng(shape.seed);
  auto fill = [&](std::vector<float>& values, int64_t count, float scale) {
    values.resize(static_cast<size_t>(count));
    for (float& x : values) x = rounded_to(shape.in, static_cast<float>(rng.normal() * scale));
  };
  fill(s->q, s->total_tokens * hq * d, shape.q_scale);
  fill(s->k, s->total_tokens * hkv * d, 1.0f);
  fill(s->v, s->total_tokens * hkv * dv, 1.0f);
  for (size_t b = 0; b < shape.seqlens.size(); ++b) {
    for (int32_t j : shape.planted) {
      if (j >= shape.seqlens[b]) continue;
      for (int h = 0; h < hkv; ++h) s->k[((s->cu[b] + j) * hkv + h) * d] = rounded_to(shape.in, 8.0f);
    }
  }
  if (!shape.planted.empty()) {
    for (int64_t t = 0; t < s->total_tokens; ++t) {
      for (int h = 0; h < hq; ++h) s->q[(t * hq + h) * d] = rounded_to(shape.in, 8.0f);
    }
  }
  for (const auto& [row, key] : shape.far_rows) {
    for (int h = 0; h < hq; ++h) s->q[(row * hq + h) * d + 1] = rounded_to(shape.in, 12.0f);
    for (int h = 0; h < hkv; ++h) s->k[(key * hkv + h) * d + 1] = rounded_to(shape.in, 12.0f);
  }

  // This rank's runs and tokens.
  sampleattn_mpi_shard_init(&s->shard);
  s->pass_shard = split != Split::kEvenNullShard;
  for (size_t b = 0; b < shape.seqlens.size(); ++b) {
    const int64_t length = shape.seqlens[b];
    std::vector<SeqRun> runs;
    switch (split) {
      case Split::kEvenNullShard:
      case Split::kEvenDefaultShard: runs = {even_run(length, s->rank, s->ranks)}; break;
      case Split::kZigzag: runs = zigzag_runs(length, s->rank, s->ranks); break;
      case Split::kExplicit: runs = {runs_fn(length, s->rank, s->ranks)}; break;
    }
    for (const SeqRun& run : runs) {
      for (int64_t p = run.begin; p < run.begin + run.length; ++p) s->tokens.push_back(s->cu[b] + p);
    }
    if (split == Split::kExplicit) {
      s->begin.push_back(runs[0].begin);
      s->length.push_back(runs[0].length);
    }
    s->runs.push_back(std::move(runs));
  }
  if (split == Split::kZigzag) s->shard.split = SAMPLEATTN_MPI_SPLIT_ZIGZAG;
  if (split == Split::kExplicit) {
    s->shard.begin = s->begin.data();
    s->shard.length = s->length.data();
  }

  // The local tensors.
  const int64_t n = s->local_tokens();
  switch (layout) {
    case Layout::kPacked:
      resize_at_least_one(s->q_bytes, n * hq * d * in_size);
      resize_at_least_one(s->k_bytes, n * hkv * d * in_size);
      resize_at_least_one(s->v_bytes, n * hkv * dv * in_size);
      resize_at_least_one(s->o_bytes, n * hq * dv * out_size);
      s->q_view = {s->q_bytes.data(), shape.in, int64_t{hq} * d, d};
      s->k_view = {s->k_bytes.data(), shape.in, int64_t{hkv} * d, d};
      s->v_view = {s->v_bytes.data(), shape.in, int64_t{hkv} * dv, dv};
      s->o_view = {s->o_bytes.data(), shape.out, int64_t{hq} * dv, dv};
      break;
    case Layout::kInterleaved: {
      const int64_t row = int64_t{hq} * d + int64_t{hkv} * d + int64_t{hkv} * dv + 16;
      resize_at_least_one(s->qkv_bytes, n * row * in_size);
      uint8_t* base = s->qkv_bytes.data();
      s->q_view = {base, shape.in, row, d};
      s->k_view = {base + int64_t{hq} * d * in_size, shape.in, row, d};
      s->v_view = {base + (int64_t{hq} + hkv) * d * in_size, shape.in, row, dv};
      const int64_t o_row = int64_t{hq} * dv + 8;
      resize_at_least_one(s->o_bytes, n * o_row * out_size);
      s->o_view = {s->o_bytes.data(), shape.out, o_row, dv};
      break;
    }
    case Layout::kHeadMajor: {
      // The head stride follows the local token count (at least one token's worth, so that an
      // empty shard's strides are still ones libsampleattn accepts).
      const int64_t tokens = std::max<int64_t>(n, 1);
      const int64_t q_head = tokens * d + 8, v_head = tokens * dv + 8;
      resize_at_least_one(s->q_bytes, hq * q_head * in_size);
      resize_at_least_one(s->k_bytes, hkv * q_head * in_size);
      resize_at_least_one(s->v_bytes, hkv * v_head * in_size);
      resize_at_least_one(s->o_bytes, hq * v_head * out_size);
      s->q_view = {s->q_bytes.data(), shape.in, d, q_head};
      s->k_view = {s->k_bytes.data(), shape.in, d, q_head};
      s->v_view = {s->v_bytes.data(), shape.in, dv, v_head};
      s->o_view = {s->o_bytes.data(), shape.out, dv, v_head};
      break;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t g = s->tokens[i];
    if (g >= s->total_tokens) continue;  // a run past the batch's end (an error case): left as is
    for (int h = 0; h < hq; ++h) {
      for (int c = 0; c < d; ++c) s->q_view.set(i, h, c, s->q[(g * hq + h) * d + c]);
    }
    for (int h = 0; h < hkv; ++h) {
      for (int c = 0; c < d; ++c) s->k_view.set(i, h, c, s->k[(g * hkv + h) * d + c]);
      for (int c = 0; c < dv; ++c) s->v_view.set(i, h, c, s->v[(g * hkv + h) * dv + c]);
    }
  }
  std::fill(s->o_bytes.begin(), s->o_bytes.end(), kSentinel);
  s->lse.resize(static_cast<size_t>(std::max<int64_t>(n * hq, 1)));
  std::memset(s->lse.data(), kSentinel, s->lse.size() * sizeof(float));

  sampleattn_params& p = s->params;
  sampleattn_params_init(&p);
  p.precision = shape.precision;
  p.q = {s->q_view.base, shape.in, s->q_view.token_stride, s->q_view.head_stride};
  p.k = {s->k_view.base, shape.in, s->k_view.token_stride, s->k_view.head_stride};
  p.v = {s->v_view.base, shape.in, s->v_view.token_stride, s->v_view.head_stride};
  p.o = {s->o_view.base, shape.out, s->o_view.token_stride, s->o_view.head_stride};
  p.head_dim = d;
  p.head_dim_v = shape.dv;
  p.num_q_heads = hq;
  p.num_kv_heads = hkv;
  p.causal = shape.causal;
  if (shape.single_sequence_form) {
    p.batch = 1;
    p.seqlen_q = p.seqlen_k = shape.seqlens.at(0);
  } else {
    p.batch = static_cast<int32_t>(shape.seqlens.size());
    p.cu_seqlens_q = s->cu_q.data();
    p.cu_seqlens_k = s->cu_k.data();
  }
  p.softcap = shape.softcap;
  p.sinks = shape.sinks.empty() ? nullptr : shape.sinks.data();
  p.lse = shape.lse ? s->lse.data() : nullptr;
  sampleattn_sample_params_init(&s->sample_params);
  s->sample_params.dense_below = 0;
  s->sample_params.scope = shape.scope;
  if (!shape.validation) s->sample_params.r_val = 0.f;
  s->sample_params.look = shape.look;
  if (shape.sample) {
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    p.sample = &s->sample_params;
  }
  return s;
}

// Arrays for a call's mask statistics over `sequences` x `heads` heads and up to `tokens` stripes
// a head.
struct MaskStats {
  sampleattn_stats stats;
  std::vector<sampleattn_head_stats> heads;
  std::vector<int32_t> offsets, stripes;
  MaskStats(int64_t sequences, int heads_per_sequence, int64_t tokens) {
    sampleattn_stats_init(&stats);
    heads.resize(static_cast<size_t>(sequences * heads_per_sequence));
    offsets.resize(heads.size() + 1);
    stripes.resize(static_cast<size_t>(std::max<int64_t>(tokens * heads_per_sequence, 1)));
    stats.head_stats = heads.data();
    stats.stripe_offsets = offsets.data();
    stats.stripes = stripes.data();
    stats.stripe_capacity = static_cast<int64_t>(stripes.size());
  }
};

// The single-process reference over the whole batch, f32 output.
void compute_reference(RankCall& s) {
  const Shape& shape = s.shape;
  const int hq = shape.hq, hkv = shape.hkv, d = shape.d, dv = shape.value_dim();
  const int64_t n = s.total_tokens;
  std::vector<uint8_t> q(std::max<size_t>(s.q.size() * dtype_size(shape.in), 64)),
      k(std::max<size_t>(s.k.size() * dtype_size(shape.in), 64)),
      v(std::max<size_t>(s.v.size() * dtype_size(shape.in), 64));
  for (size_t i = 0; i < s.q.size(); ++i) store(q.data(), shape.in, static_cast<int64_t>(i), s.q[i]);
  for (size_t i = 0; i < s.k.size(); ++i) store(k.data(), shape.in, static_cast<int64_t>(i), s.k[i]);
  for (size_t i = 0; i < s.v.size(); ++i) store(v.data(), shape.in, static_cast<int64_t>(i), s.v[i]);
  s.o_ref.assign(static_cast<size_t>(std::max<int64_t>(n * hq * dv, 1)), std::numeric_limits<float>::quiet_NaN());
  s.lse_ref.assign(static_cast<size_t>(std::max<int64_t>(n * hq, 1)), std::numeric_limits<float>::quiet_NaN());

  sampleattn_params p;
  sampleattn_params_init(&p);
  p.precision = shape.precision;
  p.q = {q.data(), shape.in, int64_t{hq} * d, d};
  p.k = {k.data(), shape.in, int64_t{hkv} * d, d};
  p.v = {v.data(), shape.in, int64_t{hkv} * dv, dv};
  p.o = {s.o_ref.data(), SAMPLEATTN_DTYPE_F32, int64_t{hq} * dv, dv};
  p.head_dim = d;
  p.head_dim_v = shape.dv;
  p.num_q_heads = hq;
  p.num_kv_heads = hkv;
  p.causal = shape.causal;
  p.batch = static_cast<int32_t>(shape.seqlens.size());
  p.cu_seqlens_q = s.cu.data();
  p.cu_seqlens_k = s.cu.data();
  p.softcap = shape.softcap;
  p.sinks = shape.sinks.empty() ? nullptr : shape.sinks.data();
  p.lse = s.lse_ref.data();
  MaskStats mask(static_cast<int64_t>(shape.seqlens.size()), hq, n);
  if (shape.sample) {
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    p.sample = &s.sample_params;
  }
  s.reference_status = sampleattn_forward(g_context, &p, shape.sample ? &mask.stats : nullptr);
  if (shape.sample) {
    s.ref_heads = mask.heads;
    s.ref_offsets = mask.offsets;
    s.ref_stripes.assign(mask.stripes.begin(), mask.stripes.begin() + mask.offsets.back());
  }
  if (s.reference_status != SAMPLEATTN_SUCCESS) s.reference_message = sampleattn_last_error();
  s.max_abs_ref = 0;
  for (int64_t i = 0; i < n * hq * dv; ++i) s.max_abs_ref = std::max(s.max_abs_ref, double{std::abs(s.o_ref[i])});
}

sampleattn_status call(RankCall& s, sampleattn_mpi_stats* stats) {
  return sampleattn_mpi_forward(g_context, s.comm, &s.params, s.pass_shard ? &s.shard : nullptr, stats);
}

struct Tolerance {
  double out_rel;  // max |o - ref| over max |ref|
  double lse_abs;
};
// f32 products both ways: the ring merges blocks by their log-sum-exp, which rounds differently.
constexpr Tolerance kF32{2e-5, 1e-4};
constexpr Tolerance kF16Out{2e-3, 1e-4};   // the output rounded to f16 (2^-11 relative)
constexpr Tolerance kBf16Out{1e-2, 1e-4};  // the output rounded to bf16 (2^-8 relative)
// bf16 products (precision AUTO on a CPU with fast bf16 dots): the probabilities are rounded to
// bf16 against each block's own maximum, not the row's.
constexpr Tolerance kBf16Products{2e-2, 3e-2};

// This rank's rows against the reference's, and the output's padding untouched.
void compare(const RankCall& s, const Tolerance& tol, Failures& f) {
  const Shape& shape = s.shape;
  const int hq = shape.hq, dv = shape.value_dim();
  if (s.reference_status != SAMPLEATTN_SUCCESS) {
    f.add("the reference sampleattn_forward failed: ", sampleattn_status_string(s.reference_status), ": ",
          s.reference_message);
    return;
  }
  const double limit = tol.out_rel * std::max(s.max_abs_ref, 1e-3);
  double worst = 0;
  int64_t bad = 0;
  std::string worst_at;
  for (int64_t i = 0; i < s.local_tokens(); ++i) {
    const int64_t g = s.tokens[i];
    for (int h = 0; h < hq; ++h) {
      for (int c = 0; c < dv; ++c) {
        const float got = s.o_view.get(i, h, c);
        const float ref = s.o_ref[(g * hq + h) * dv + c];
        const double err = std::abs(double{got} - ref);
        if (err <= limit) continue;
        ++bad;
        if (!(err <= worst)) {  // NaN first
          worst = err;
          std::ostringstream at;
          at.precision(9);
          at << err << " at local token " << i << " (" << s.where(g) << ") head " << h << " dim " << c << ": got "
             << got << ", reference " << ref;
          worst_at = at.str();
        }
        if (std::isnan(err)) worst = std::numeric_limits<double>::infinity();
      }
    }
  }
  if (bad > 0) {
    f.add(bad, " output elements off by more than ", limit, " (", tol.out_rel, " of max |ref| ", s.max_abs_ref,
          "); the worst, ", worst_at);
  }
  if (shape.lse) {
    int64_t bad_lse = 0;
    std::string first;
    for (int64_t i = 0; i < s.local_tokens(); ++i) {
      const int64_t g = s.tokens[i];
      for (int h = 0; h < hq; ++h) {
        const float got = s.lse[i * hq + h], ref = s.lse_ref[g * hq + h];
        const bool ok = std::isinf(ref) ? got == ref : std::abs(double{got} - ref) <= tol.lse_abs;
        if (ok) continue;
        if (bad_lse++ == 0) {
          std::ostringstream at;
          at.precision(9);
          at << "local token " << i << " (" << s.where(g) << ") head " << h << ": got " << got << ", reference "
             << ref;
          first = at.str();
        }
      }
    }
    if (bad_lse > 0) f.add(bad_lse, " lse values off by more than ", tol.lse_abs, "; first at ", first);
  } else {
    const bool untouched = std::all_of(reinterpret_cast<const uint8_t*>(s.lse.data()),
                                       reinterpret_cast<const uint8_t*>(s.lse.data() + s.lse.size()),
                                       [](uint8_t b) { return b == kSentinel; });
    if (!untouched) f.add("lse was NULL in params, yet the test's lse buffer was written");
  }
  // Every output byte outside this rank's rows (the gaps of a strided layout, the spare bytes of
  // an empty shard) keeps the sentinel.
  std::vector<bool> covered(s.o_bytes.size(), false);
  const size_t out_size = dtype_size(shape.out);
  for (int64_t i = 0; i < s.local_tokens(); ++i) {
    for (int h = 0; h < hq; ++h) {
      const size_t first_byte = static_cast<size_t>(s.o_view.index(i, h, 0)) * out_size;
      std::fill(covered.begin() + first_byte, covered.begin() + first_byte + dv * out_size, true);
    }
  }
  int64_t stray = 0;
  for (size_t b = 0; b < s.o_bytes.size(); ++b) stray += !covered[b] && s.o_bytes[b] != kSentinel;
  if (stray > 0) f.add(stray, " output bytes outside this rank's rows were written");
}

std::string describe(const Shape& shape, Split split, int ranks) {
  std::ostringstream out;
  out << ranks << " ranks, split "
      << (split == Split::kZigzag ? "zigzag" : split == Split::kExplicit ? "explicit runs" : "even contiguous")
      << ", seqlens {";
  for (size_t b = 0; b < shape.seqlens.size(); ++b) out << (b ? ", " : "") << shape.seqlens[b];
  out << "}, " << shape.hq << "/" << shape.hkv << " heads, d " << shape.d << "/" << shape.value_dim() << ", causal "
      << shape.causal << ", " << dtype_name(shape.in) << " -> " << dtype_name(shape.out);
  return out.str();
}

// Builds the problem, runs the collective call and compares this rank's rows; the failures are
// this rank's (the caller gathers them).
Failures run_and_compare(const Shape& shape, Split split, const Tolerance& tol, MPI_Comm comm = MPI_COMM_WORLD,
                         Layout layout = Layout::kPacked, const RunsFn& runs_fn = nullptr,
                         sampleattn_mpi_stats* stats = nullptr) {
  std::unique_ptr<RankCall> s = make_setup(shape, split, comm, layout, runs_fn);
  compute_reference(*s);
  Failures f;
  const sampleattn_status status = call(*s, stats);
  if (status != SAMPLEATTN_SUCCESS) {
    f.add(describe(shape, split, s->ranks), ": sampleattn_mpi_forward returned ", sampleattn_status_string(status),
          ": ", sampleattn_mpi_last_error());
    return f;
  }
  Failures mismatches;
  compare(*s, tol, mismatches);
  if (!mismatches.empty()) f.add(describe(shape, split, s->ranks), " (", s->local_tokens(), " local tokens):\n",
                                 mismatches.text());
  return f;
}

void expect_matches_reference(const Shape& shape, Split split, const Tolerance& tol = kF32,
                              Layout layout = Layout::kPacked, const RunsFn& runs_fn = nullptr) {
  expect_no_failures_on_any_rank(run_and_compare(shape, split, tol, MPI_COMM_WORLD, layout, runs_fn));
}

Shape varlen_shape() {
  Shape shape;
  // 5 tokens: fewer than 2P chunks from P = 3 on, so zigzag leaves chunks empty; and an empty
  // sequence.
  shape.seqlens = {517, 5, 0, 1200};
  shape.seed = 21;
  return shape;
}

RunsFn uneven(bool reversed) {
  return [reversed](int64_t length, int rank, int ranks) { return uneven_run(length, rank, ranks, reversed); };
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------
TEST(MpiAttention, ContiguousEvenSplitOneSequence) {
  Shape shape;  // L 1000, causal, 4 q heads on 2 kv heads, d 64, f32
  shape.single_sequence_form = true;
  expect_matches_reference(shape, Split::kEvenNullShard);
}

TEST(MpiAttention, ContiguousEvenSplitDefaultShardWithCuSeqlens) {
  Shape shape;
  shape.seed = 2;
  expect_matches_reference(shape, Split::kEvenDefaultShard);
}

TEST(MpiAttention, ContiguousExplicitEvenRuns) {
  Shape shape;
  shape.seed = 3;
  expect_matches_reference(shape, Split::kExplicit, kF32, Layout::kPacked, even_run);
}

TEST(MpiAttention, ZigzagOneSequence) {
  Shape shape;
  shape.seed = 4;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, ZigzagSingleSequenceForm) {
  Shape shape;
  shape.seqlens = {777};
  shape.single_sequence_form = true;
  shape.seed = 5;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, UnevenRunsInRankOrderWithAnEmptyRun) {
  Shape shape;
  shape.seed = 6;
  expect_matches_reference(shape, Split::kExplicit, kF32, Layout::kPacked, uneven(false));
}

TEST(MpiAttention, UnevenRunsInReversedRankOrder) {
  Shape shape;
  shape.seed = 7;
  expect_matches_reference(shape, Split::kExplicit, kF32, Layout::kPacked, uneven(true));
}

TEST(MpiAttention, VarlenBatchContiguous) { expect_matches_reference(varlen_shape(), Split::kEvenDefaultShard); }

TEST(MpiAttention, VarlenBatchZigzagWithEmptyChunks) { expect_matches_reference(varlen_shape(), Split::kZigzag); }

TEST(MpiAttention, VarlenBatchUnevenReversedRuns) {
  expect_matches_reference(varlen_shape(), Split::kExplicit, kF32, Layout::kPacked, uneven(true));
}

TEST(MpiAttention, NonCausalContiguous) {
  Shape shape;
  shape.causal = 0;
  shape.seed = 8;
  expect_matches_reference(shape, Split::kEvenNullShard);
}

TEST(MpiAttention, NonCausalVarlenZigzagOneKvHead) {
  Shape shape = varlen_shape();
  shape.causal = 0;
  shape.hkv = 1;
  shape.seed = 9;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, NonCausalUnevenRuns) {
  Shape shape;
  shape.causal = 0;
  shape.seed = 10;
  expect_matches_reference(shape, Split::kExplicit, kF32, Layout::kPacked, uneven(true));
}

TEST(MpiAttention, F16InputsF32Output) {
  Shape shape;
  shape.in = SAMPLEATTN_DTYPE_F16;
  shape.seed = 11;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, F16InputsF16Output) {
  Shape shape = varlen_shape();
  shape.in = shape.out = SAMPLEATTN_DTYPE_F16;
  shape.seed = 12;
  expect_matches_reference(shape, Split::kEvenDefaultShard, kF16Out);
}

TEST(MpiAttention, Bf16InputsF32Output) {
  Shape shape;
  shape.in = SAMPLEATTN_DTYPE_BF16;
  shape.seed = 13;
  expect_matches_reference(shape, Split::kExplicit, kF32, Layout::kPacked, uneven(false));
}

TEST(MpiAttention, Bf16InputsF16Output) {
  Shape shape;
  shape.in = SAMPLEATTN_DTYPE_BF16;
  shape.out = SAMPLEATTN_DTYPE_F16;
  shape.seed = 14;
  expect_matches_reference(shape, Split::kZigzag, kF16Out);
}

TEST(MpiAttention, Bf16InputsBf16Output) {
  Shape shape;
  shape.in = shape.out = SAMPLEATTN_DTYPE_BF16;
  shape.seed = 15;
  expect_matches_reference(shape, Split::kEvenNullShard, kBf16Out);
}

TEST(MpiAttention, Bf16InputsAutoPrecision) {
  // AUTO may run bf16 products (Zen 4, AMX) in the reference and in every block of the ring.
  Shape shape = varlen_shape();
  shape.in = SAMPLEATTN_DTYPE_BF16;
  shape.precision = SAMPLEATTN_PRECISION_AUTO;
  shape.seed = 16;
  expect_matches_reference(shape, Split::kZigzag, kBf16Products);
}

TEST(MpiAttention, HeadDimVDiffers) {
  Shape shape;
  shape.d = 96;
  shape.dv = 64;
  shape.seed = 17;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, HeadDimVDiffersUnevenRuns) {
  Shape shape = varlen_shape();
  shape.d = 128;
  shape.dv = 96;
  shape.hq = 2;
  shape.hkv = 2;
  shape.seed = 18;
  expect_matches_reference(shape, Split::kExplicit, kF32, Layout::kPacked, uneven(false));
}

TEST(MpiAttention, Softcap) {
  Shape shape;
  shape.q_scale = 4.0f;  // scores of spread 4: the cap at 10 bends many of them
  shape.softcap = 10.0f;
  shape.seed = 19;
  expect_matches_reference(shape, Split::kEvenDefaultShard);
}

TEST(MpiAttention, SoftcapThirty) {
  Shape shape;
  shape.q_scale = 8.0f;
  shape.softcap = 30.0f;
  shape.seed = 20;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, Sinks) {
  // Each sink counts once per row, however many blocks the row's keys come in.
  Shape shape;
  shape.sinks = {1.0f, -std::numeric_limits<float>::infinity(), 6.0f, 8.0f};
  shape.seed = 22;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, SinksAndSoftcapVarlenUnevenRuns) {
  Shape shape = varlen_shape();
  shape.sinks = {-std::numeric_limits<float>::infinity(), 0.5f, 3.0f, 7.0f};
  shape.softcap = 30.0f;
  shape.q_scale = 6.0f;
  shape.seed = 23;
  expect_matches_reference(shape, Split::kExplicit, kF32, Layout::kPacked, uneven(true));
}

TEST(MpiAttention, SinksNonCausal) {
  Shape shape;
  shape.causal = 0;
  shape.sinks = {2.0f, -std::numeric_limits<float>::infinity(), 9.0f, 0.0f};
  shape.seed = 24;
  expect_matches_reference(shape, Split::kEvenNullShard);
}

TEST(MpiAttention, NullLse) {
  Shape shape = varlen_shape();
  shape.lse = false;
  shape.seed = 25;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttention, NullLseContiguous) {
  Shape shape;
  shape.lse = false;
  shape.seed = 26;
  expect_matches_reference(shape, Split::kEvenNullShard);
}

TEST(MpiAttention, InterleavedLayout) {
  // Q/K/V side by side in one buffer with padding, O padded: the strides are the local tensors' own.
  Shape shape = varlen_shape();
  shape.dv = 32;
  shape.seed = 27;
  expect_matches_reference(shape, Split::kZigzag, kF32, Layout::kInterleaved);
}

TEST(MpiAttention, InterleavedLayoutF16UnevenRuns) {
  Shape shape;
  shape.in = shape.out = SAMPLEATTN_DTYPE_F16;
  shape.seed = 28;
  expect_matches_reference(shape, Split::kExplicit, kF16Out, Layout::kInterleaved, uneven(true));
}

TEST(MpiAttention, HeadMajorLayout) {
  // [head, token, dim]: the head stride is a multiple of the LOCAL token count, which is what a rank
  // that allocates its own shard's tensors has.
  Shape shape;
  shape.seed = 36;
  expect_matches_reference(shape, Split::kEvenDefaultShard, kF32, Layout::kHeadMajor);
}

TEST(MpiAttention, HeadMajorLayoutVarlenZigzag) {
  Shape shape = varlen_shape();
  shape.dv = 32;
  shape.seed = 37;
  expect_matches_reference(shape, Split::kZigzag, kF32, Layout::kHeadMajor);
}

TEST(MpiAttention, RepeatedCallsGiveTheSameBits) {
  Shape shape = varlen_shape();
  shape.seed = 29;
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kZigzag);
  compute_reference(*s);
  Failures f;
  std::vector<uint8_t> first;
  for (int i = 0; i < 3; ++i) {
    std::fill(s->o_bytes.begin(), s->o_bytes.end(), kSentinel);
    const sampleattn_status status = call(*s, nullptr);
    if (status != SAMPLEATTN_SUCCESS) {
      f.add("call ", i, ": ", sampleattn_status_string(status), ": ", sampleattn_mpi_last_error());
      break;
    }
    if (i == 0) {
      first = s->o_bytes;
      compare(*s, kF32, f);
    } else if (s->o_bytes != first) {
      f.add("call ", i, " wrote other bits than the first");
    }
  }
  expect_no_failures_on_any_rank(f);
}

TEST(MpiAttention, SubCommunicators) {
  // Even and odd ranks of the world: two rings at once, each with its own problem. A library that
  // used MPI_COMM_WORLD, or world ranks, inside would mix them up.
  const int color = world_rank() % 2;
  MPI_Comm half = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, color, world_rank(), &half), MPI_SUCCESS);
  Shape shape = color == 0 ? Shape{} : varlen_shape();
  shape.seed = 30 + color;
  const Split split = color == 0 ? Split::kZigzag : Split::kEvenDefaultShard;
  Failures f = run_and_compare(shape, split, kF32, half);
  MPI_Comm_free(&half);
  expect_no_failures_on_any_rank(f);
}

TEST(MpiAttention, ReorderedCommunicator) {
  // The world's ranks in reverse order: the shards follow the ranks of the communicator passed.
  MPI_Comm reversed = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, 0, world_size() - 1 - world_rank(), &reversed), MPI_SUCCESS);
  Shape shape = varlen_shape();
  shape.seed = 38;
  Failures f = run_and_compare(shape, Split::kZigzag, kF32, reversed);
  Failures g = run_and_compare(shape, Split::kExplicit, kF32, reversed, Layout::kPacked, uneven(false));
  MPI_Comm_free(&reversed);
  expect_no_failures_on_any_rank(f);
  expect_no_failures_on_any_rank(g);
}

TEST(MpiAttention, TinySequencesMostRanksEmpty) {
  // One token: every rank but the last holds nothing (even split), or all but one chunk is empty
  // (zigzag).
  Shape one;
  one.seqlens = {1};
  one.seed = 39;
  expect_matches_reference(one, Split::kEvenNullShard);
  expect_matches_reference(one, Split::kZigzag);
  Shape few;
  few.seqlens = {2, 0, 3, 1};
  few.seed = 40;
  expect_matches_reference(few, Split::kEvenDefaultShard);
  expect_matches_reference(few, Split::kZigzag);
  expect_matches_reference(few, Split::kExplicit, kF32, Layout::kPacked, uneven(true));
}

// A rank that holds no token may pass NULL tensors, as sampleattn_forward accepts for zero tokens.
void expect_empty_shards_accept_null(const Shape& shape, Split split, const RunsFn& runs_fn) {
  std::unique_ptr<RankCall> s = make_setup(shape, split, MPI_COMM_WORLD, Layout::kPacked, runs_fn);
  compute_reference(*s);
  if (s->local_tokens() == 0) {
    s->params.q.data = s->params.k.data = s->params.v.data = nullptr;
    s->params.o.data = nullptr;
    s->params.lse = nullptr;
  }
  Failures f;
  const sampleattn_status status = call(*s, nullptr);
  if (status != SAMPLEATTN_SUCCESS) {
    f.add(describe(shape, split, s->ranks), " (", s->local_tokens(), " local tokens, NULL tensors when none): ",
          sampleattn_status_string(status), ": ", sampleattn_mpi_last_error());
  } else {
    compare(*s, kF32, f);
  }
  expect_no_failures_on_any_rank(f);
}

TEST(MpiAttention, EmptyShardsWithNullTensors) {
  Shape one;
  one.seqlens = {1};
  one.seed = 41;
  expect_empty_shards_accept_null(one, Split::kEvenNullShard, nullptr);
  Shape shape;
  shape.seed = 42;
  expect_empty_shards_accept_null(shape, Split::kExplicit, uneven(false));  // rank 1 empty from 3 ranks on
}

TEST(MpiAttention, TwoThreadContexts) {
  sampleattn_context_options options;
  sampleattn_context_options_init(&options);
  options.backend = SAMPLEATTN_BACKEND_CPU;
  options.num_threads = 2;
  options.binding = SAMPLEATTN_BIND_NONE;
  sampleattn_context* two = nullptr;
  const bool created = sampleattn_context_create(&options, &two) == SAMPLEATTN_SUCCESS;
  ASSERT_TRUE(all_ranks(created)) << sampleattn_last_error();
  sampleattn_context* const one = g_context;
  g_context = two;
  Shape shape = varlen_shape();
  shape.seed = 43;
  Failures f = run_and_compare(shape, Split::kZigzag, kF32);
  g_context = one;
  sampleattn_context_destroy(two);
  expect_no_failures_on_any_rank(f);
}

TEST(MpiAttention, StatsReportTheRing) {
  const int ranks = world_size();
  Shape shape;
  shape.seed = 33;
  sampleattn_mpi_stats stats;
  sampleattn_mpi_stats_init(&stats);
  Failures f = run_and_compare(shape, Split::kEvenDefaultShard, kF32, MPI_COMM_WORLD, Layout::kPacked, nullptr,
                               &stats);
  if (stats.struct_size != sizeof(stats)) f.add("stats.struct_size ", stats.struct_size, ", not ", sizeof(stats));
  if (!(stats.time_total_s > 0)) f.add("time_total_s ", stats.time_total_s);
  if (!(stats.time_attention_s > 0 && stats.time_attention_s <= stats.time_total_s * 1.01 + 1e-3)) {
    f.add("time_attention_s ", stats.time_attention_s, " with time_total_s ", stats.time_total_s);
  }
  if (!(stats.time_wait_s >= 0 && stats.time_wait_s <= stats.time_total_s * 1.01 + 1e-3)) {
    f.add("time_wait_s ", stats.time_wait_s, " with time_total_s ", stats.time_total_s);
  }
  if (stats.attention_calls < 1) f.add("attention_calls ", stats.attention_calls);
  // Every rank's K/V: 1000 tokens, 2 kv heads, 64 + 64 values of 4 bytes.
  const uint64_t kv_bytes = uint64_t{1000} * 2 * (64 + 64) * 4;
  if (ranks == 1) {
    if (stats.bytes_sent != 0 || stats.bytes_received != 0) {
      f.add("one rank: bytes_sent ", stats.bytes_sent, ", bytes_received ", stats.bytes_received, " (0 expected)");
    }
    if (stats.ring_steps > 1) f.add("one rank: ring_steps ", stats.ring_steps);
  } else {
    if (stats.ring_steps != ranks) f.add("ring_steps ", stats.ring_steps, ", not ", ranks);
    if (stats.bytes_sent == 0) f.add("bytes_sent 0");
    if (stats.bytes_received == 0) f.add("bytes_received 0");
  }
  const std::vector<uint64_t> sent = gather_u64(stats.bytes_sent), received = gather_u64(stats.bytes_received);
  const uint64_t total_sent = std::accumulate(sent.begin(), sent.end(), uint64_t{0});
  const uint64_t total_received = std::accumulate(received.begin(), received.end(), uint64_t{0});
  if (world_rank() == 0) {
    if (total_sent != total_received) f.add("the ranks sent ", total_sent, " bytes in all but received ", total_received);
    // A ring passes each block on at most P - 1 times.
    if (total_sent > (ranks - 1) * kv_bytes) {
      f.add("the ranks sent ", total_sent, " bytes in all: more than every K/V block passed P - 1 times (",
            (ranks - 1) * kv_bytes, ")");
    }
  }
  expect_no_failures_on_any_rank(f);
}

TEST(MpiAttention, StatsZigzagRingSteps) {
  const int ranks = world_size();
  Shape shape = varlen_shape();
  shape.seed = 34;
  sampleattn_mpi_stats stats;
  sampleattn_mpi_stats_init(&stats);
  Failures f = run_and_compare(shape, Split::kZigzag, kF32, MPI_COMM_WORLD, Layout::kPacked, nullptr, &stats);
  if (ranks > 1 && stats.ring_steps != ranks) f.add("ring_steps ", stats.ring_steps, ", not ", ranks);
  if (ranks > 1 && stats.bytes_sent == 0) f.add("bytes_sent 0");
  if (ranks == 1 && stats.bytes_sent != 0) f.add("one rank: bytes_sent ", stats.bytes_sent);
  expect_no_failures_on_any_rank(f);
}

// ---------------------------------------------------------------------------------------------
// SampleAttention across ranks: the one-process call's mask, exactly, and its output
// ---------------------------------------------------------------------------------------------
// The mask the ranks chose (every rank's libsampleattn statistics) against the reference's:
// the same decision, window, stripe count and stripes for every (sequence, head).
void compare_masks(const RankCall& s, const MaskStats& got, Failures& f) {
  int sparse = 0;
  int64_t dense_rows = 0;
  for (size_t i = 0; i < s.ref_heads.size(); ++i) {
    const sampleattn_head_stats& a = s.ref_heads[i];
    const sampleattn_head_stats& b = got.heads[i];
    sparse += a.dense ? 0 : 1;
    dense_rows += a.dense_rows;
    if (a.dense_rows != b.dense_rows) f.add("(sequence, head) ", i, ": ", b.dense_rows, " dense rows, one process ", a.dense_rows);
    if (a.decision != b.decision || a.dense != b.dense || a.window != b.window || a.num_stripes != b.num_stripes ||
        a.alpha_stripes != b.alpha_stripes) {
      f.add("(sequence, head) ", i, ": decision/dense/window/stripes/alpha ", b.decision, "/", b.dense, "/", b.window, "/",
            b.num_stripes, "/", b.alpha_stripes, ", one process ", a.decision, "/", a.dense, "/", a.window, "/",
            a.num_stripes, "/", a.alpha_stripes);
      continue;
    }
    if (!std::equal(s.ref_stripes.begin() + s.ref_offsets[i], s.ref_stripes.begin() + s.ref_offsets[i + 1],
                    got.stripes.begin() + got.offsets[i])) {
      f.add("(sequence, head) ", i, ": other stripes than one process's");
    }
    if (std::abs(a.val_cra_p5 - b.val_cra_p5) > 1e-4f || std::abs(a.cra_min - b.cra_min) > 1e-4f) {
      f.add("(sequence, head) ", i, ": kept mass val p5 ", b.val_cra_p5, " / in-sample min ", b.cra_min,
            ", one process ", a.val_cra_p5, " / ", a.cra_min);
    }
  }
  if (sparse == 0) f.add("every head of the reference ran dense: the case tests no mask");
  if (s.sample_params.look > 0.f && dense_rows == 0) f.add("the look sent no row dense: the case tests no look");
}

// Runs a method-sample call and compares this rank's rows and the whole mask with one process's.
Failures run_sample(const Shape& shape, Split split, const Tolerance& tol, const RunsFn& runs_fn = nullptr,
                    sampleattn_mpi_stats* out_stats = nullptr) {
  std::unique_ptr<RankCall> s = make_setup(shape, split, MPI_COMM_WORLD, Layout::kPacked, runs_fn);
  compute_reference(*s);
  Failures f;
  MaskStats mask(static_cast<int64_t>(shape.seqlens.size()), shape.hq, s->total_tokens);
  sampleattn_mpi_stats stats;
  sampleattn_mpi_stats_init(&stats);
  stats.sample_stats = &mask.stats;
  const sampleattn_status status = call(*s, &stats);
  if (status != SAMPLEATTN_SUCCESS) {
    f.add(describe(shape, split, s->ranks), ", method sample: sampleattn_mpi_forward returned ",
          sampleattn_status_string(status), ": ", sampleattn_mpi_last_error());
    return f;
  }
  Failures mismatches;
  compare(*s, tol, mismatches);
  compare_masks(*s, mask, mismatches);
  if (stats.ring_steps != 0 || stats.attention_calls != 1) {
    mismatches.add("ring_steps ", stats.ring_steps, ", attention_calls ", stats.attention_calls);
  }
  if (s->ranks > 1 && (stats.bytes_sent == 0 || stats.bytes_received == 0)) {
    mismatches.add("bytes_sent ", stats.bytes_sent, ", bytes_received ", stats.bytes_received);
  }
  if (!mismatches.empty()) {
    f.add(describe(shape, split, s->ranks), ", method sample (", s->local_tokens(), " local tokens):\n", mismatches.text());
  }
  if (out_stats != nullptr) *out_stats = stats;
  return f;
}

Shape sample_shape() {
  Shape shape;
  shape.sample = true;
  shape.seqlens = {3000};
  shape.hq = 8;
  shape.hkv = 2;
  shape.q_scale = 0.5f;
  shape.planted = {2, 100, 101, 777, 1500, 2222};
  shape.seed = 41;
  return shape;
}

TEST(MpiSample, ContiguousSameMaskAndOutput) { expect_no_failures_on_any_rank(run_sample(sample_shape(), Split::kEvenDefaultShard, kF32)); }

TEST(MpiSample, ZigzagSameMaskAndOutput) { expect_no_failures_on_any_rank(run_sample(sample_shape(), Split::kZigzag, kF32)); }

// The look at every row across ranks: every rank's keys gathered for the look, its rows' flags
// added over the ranks, the same dense rows as one process, and their keys in the exchange.
TEST(MpiSample, ZigzagWithTheLookSameMaskAndOutput) {
  Shape shape = sample_shape();
  shape.validation = false;  // alpha's masks: validation widens these random heads past the look's cost
  shape.far_rows = {{1200, 300}, {1201, 300}, {2500, 950}};
  shape.look = 4.f;
  expect_no_failures_on_any_rank(run_sample(shape, Split::kZigzag, kF32));
}

TEST(MpiSample, VarlenBatchZigzagBf16) {
  Shape shape = sample_shape();
  shape.seqlens = {2100, 5, 0, 2600};
  shape.in = shape.out = SAMPLEATTN_DTYPE_BF16;
  shape.precision = SAMPLEATTN_PRECISION_AUTO;
  expect_no_failures_on_any_rank(run_sample(shape, Split::kZigzag, kBf16Products));
}

TEST(MpiSample, RankWithoutSampledRows) {
  // 3000 positions in blocks of 64: the sampled blocks are 15, 31 and 46 (rows 960 on), so rank 0's
  // [0, 500) holds no sampled row (validation rows, though); the other ranks split the rest.
  const RunsFn runs = [](int64_t length, int rank, int ranks) -> SeqRun {
    const int64_t first = std::min<int64_t>(500, length);
    if (ranks == 1) return {0, length};
    if (rank == 0) return {0, first};
    const int64_t rest = length - first;
    const int64_t begin = first + (rank - 1) * rest / (ranks - 1), end = first + rank * rest / (ranks - 1);
    return {begin, end - begin};
  };
  expect_no_failures_on_any_rank(run_sample(sample_shape(), Split::kExplicit, kF32, runs));
  Shape no_validation = sample_shape();
  no_validation.validation = false;
  no_validation.seed = 42;
  expect_no_failures_on_any_rank(run_sample(no_validation, Split::kExplicit, kF32, runs));
}

TEST(MpiSample, UnevenRunsKvGroupScope) {
  Shape shape = sample_shape();
  shape.seed = 43;
  shape.scope = SAMPLEATTN_STRIPES_PER_KV_GROUP;
  expect_no_failures_on_any_rank(run_sample(shape, Split::kExplicit, kF32, uneven(true)));
}

// ---------------------------------------------------------------------------------------------
// Errors: every rank fails with the same status, none hangs, none writes output
// ---------------------------------------------------------------------------------------------
struct Outcome {
  sampleattn_status status = SAMPLEATTN_SUCCESS;
  std::string message;
  bool untouched = true;
};

Outcome call_outcome(RankCall& s, sampleattn_context* context, const sampleattn_params* params,
                     const sampleattn_mpi_shard* shard) {
  Outcome out;
  out.status = sampleattn_mpi_forward(context, s.comm, params, shard, nullptr);
  out.message = sampleattn_mpi_last_error();
  auto all_sentinel = [](const uint8_t* begin, const uint8_t* end) {
    return std::all_of(begin, end, [](uint8_t b) { return b == kSentinel; });
  };
  out.untouched = all_sentinel(s.o_bytes.data(), s.o_bytes.data() + s.o_bytes.size()) &&
                  all_sentinel(reinterpret_cast<const uint8_t*>(s.lse.data()),
                               reinterpret_cast<const uint8_t*>(s.lse.data() + s.lse.size()));
  return out;
}

Outcome call_outcome(RankCall& s) { return call_outcome(s, g_context, &s.params, s.pass_shard ? &s.shard : nullptr); }

struct ExpectedError {
  std::vector<sampleattn_status> statuses;  // any of these
  int faulty_rank = -1;  // >= 0: the other ranks' messages name it ("rank N")
  std::vector<std::string> words;  // the message names one of them (any case); empty: not checked
};

std::string status_list(const std::vector<int>& statuses) {
  std::string list;
  for (size_t r = 0; r < statuses.size(); ++r) {
    list += (r ? ", " : "") + std::string(sampleattn_status_string(static_cast<sampleattn_status>(statuses[r])));
  }
  return list;
}

// Collective: this rank's outcome against the expected error, and the ranks' statuses agreeing.
void expect_error_on_every_rank(const Outcome& out, const ExpectedError& expected) {
  Failures f;
  const std::vector<int> statuses = gather_ints(out.status);
  const int rank = world_rank();
  if (out.status == SAMPLEATTN_SUCCESS) {
    f.add("returned SAMPLEATTN_SUCCESS (the ranks: ", status_list(statuses), ")");
  } else {
    const int model = statuses[expected.faulty_rank >= 0 ? expected.faulty_rank : 0];
    if (out.status != model) f.add("status differs between the ranks: ", status_list(statuses));
    if (std::find(expected.statuses.begin(), expected.statuses.end(), out.status) == expected.statuses.end()) {
      std::string allowed;
      for (sampleattn_status s : expected.statuses) allowed += std::string(" ") + sampleattn_status_string(s);
      f.add("status ", sampleattn_status_string(out.status), ", expected one of", allowed, " (message: ", out.message,
            ")");
    }
    if (out.message.empty()) {
      f.add("sampleattn_mpi_last_error() is empty after ", sampleattn_status_string(out.status));
    } else if (!expected.words.empty() &&
               std::none_of(expected.words.begin(), expected.words.end(),
                            [&](const std::string& w) { return contains_ignoring_case(out.message, w); })) {
      std::string words;
      for (const std::string& w : expected.words) words += " \"" + w + "\"";
      f.add("the message \"", out.message, "\" names none of", words);
    }
    if (expected.faulty_rank >= 0 && rank != expected.faulty_rank &&
        !contains_ignoring_case(out.message, "rank " + std::to_string(expected.faulty_rank))) {
      f.add("the message \"", out.message, "\" does not name the rank at fault (rank ", expected.faulty_rank, ")");
    }
  }
  if (!out.untouched) f.add("the output (o or lse) was written by a call that failed");
  expect_no_failures_on_any_rank(f);
}

const std::vector<sampleattn_status> kShapeOrArgument = {SAMPLEATTN_INVALID_SHAPE, SAMPLEATTN_INVALID_ARGUMENT};
const std::vector<std::string> kRunWords = {"cover", "tile", "overlap", "gap", "run", "length", "shard", "position"};

TEST(MpiAttentionErrors, RunsLeaveAGap) {
  // The last rank's run is one token short: position L - 1 of the sequence belongs to no rank.
  const RunsFn short_last = [](int64_t length, int rank, int ranks) {
    SeqRun run = even_run(length, rank, ranks);
    if (rank == ranks - 1) --run.length;
    return run;
  };
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kExplicit, MPI_COMM_WORLD, Layout::kPacked, short_last);
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, kRunWords});
}

TEST(MpiAttentionErrors, RunsOverlap) {
  // The last rank's run starts one token early: one position belongs to two ranks (and the runs'
  // lengths add up to L + 1).
  const RunsFn early_last = [](int64_t length, int rank, int ranks) {
    SeqRun run = even_run(length, rank, ranks);
    if (rank == ranks - 1 && ranks > 1) {
      --run.begin;
      ++run.length;
    }
    if (ranks == 1) ++run.length;  // one rank: past the end instead
    return run;
  };
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kExplicit, MPI_COMM_WORLD, Layout::kPacked, early_last);
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, kRunWords});
}

TEST(MpiAttentionErrors, RunsLeaveAGapInOneSequenceOfABatch) {
  // Varlen: the runs of sequence 0 tile it, those of sequence 3 leave its last token out.
  Shape shape = varlen_shape();
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kExplicit, MPI_COMM_WORLD, Layout::kPacked, uneven(false));
  // Shorten this rank's run of the last sequence when it holds the sequence's end (the tensors
  // keep their token, which the library never reads since it fails).
  const int64_t last_length = shape.seqlens.back();
  if (s->begin.back() + s->length.back() == last_length && s->length.back() > 0) --s->length.back();
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, kRunWords});
}

TEST(MpiAttentionErrors, RanksDisagreeOnQueryHeads) {
  if (world_size() == 1) GTEST_SKIP() << "needs two ranks";
  Shape shape;
  if (world_rank() == world_size() - 1) shape.hq = 2;  // valid on its own: 2 q heads on 2 kv heads
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s),
                             {{SAMPLEATTN_INVALID_ARGUMENT, SAMPLEATTN_INVALID_SHAPE}, -1, {"head"}});
}

TEST(MpiAttentionErrors, RanksDisagreeOnSequenceLengths) {
  if (world_size() == 1) GTEST_SKIP() << "needs two ranks";
  Shape shape;
  if (world_rank() == world_size() - 1) shape.seqlens = {999};
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, {}});
}

TEST(MpiAttentionErrors, RanksDisagreeOnCausal) {
  if (world_size() == 1) GTEST_SKIP() << "needs two ranks";
  Shape shape;
  if (world_rank() == 0) shape.causal = 0;
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kZigzag);
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, {"causal"}});
}

TEST(MpiAttentionErrors, RanksDisagreeOnSplit) {
  if (world_size() == 1) GTEST_SKIP() << "needs two ranks";
  const bool zigzag = world_rank() == world_size() - 1;
  std::unique_ptr<RankCall> s = make_setup(Shape{}, zigzag ? Split::kZigzag : Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, {}});
}

TEST(MpiAttentionErrors, NullQueryOnTheLastRank) {
  const int last = world_size() - 1;
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kEvenDefaultShard);
  if (world_rank() == last) s->params.q.data = nullptr;
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_NULL_POINTER}, last, {}});
}

TEST(MpiAttentionErrors, BadHeadDimOnRankZero) {
  // Rank 0 alone asks for an unsupported head dim: invalid on its own and a disagreement; either
  // may be what the library sees first.
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kZigzag);
  if (world_rank() == 0) s->params.head_dim = 65;
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_UNSUPPORTED_HEAD_DIM, SAMPLEATTN_INVALID_ARGUMENT,
                                    SAMPLEATTN_INVALID_SHAPE},
                                   -1,
                                   {"head"}});
}

TEST(MpiAttentionErrors, MethodSampleNonCausal) {
  Shape shape = sample_shape();
  shape.causal = 0;
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT}, -1, {"sample", "causal"}});
}

TEST(MpiAttentionErrors, RanksDisagreeOnSampleParameters) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  std::unique_ptr<RankCall> s = make_setup(sample_shape(), Split::kZigzag);
  if (world_rank() == 1) s->sample_params.alpha = 0.9f;
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT}, -1, {"sample parameters"}});
}

TEST(MpiAttentionErrors, AlibiSlopes) {
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f};
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kZigzag);
  s->params.alibi_slopes = slopes.data();
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT}, -1, {"alibi"}});
}

TEST(MpiAttentionErrors, WindowLeft) {
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kEvenDefaultShard);
  s->params.window_left = 128;
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT}, -1, {"window"}});
}

TEST(MpiAttentionErrors, KvCache) {
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kEvenDefaultShard);
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  s->params.kv_cache = &cache;
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT}, -1, {"kv_cache", "cache"}});
}

TEST(MpiAttentionErrors, CuSeqlensKDiffersFromQ) {
  // Chunked prefill (fewer queries than keys) is not self-attention over a shard.
  std::unique_ptr<RankCall> s = make_setup(varlen_shape(), Split::kEvenDefaultShard);
  s->cu_k.back() += 1;
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, {"cu_seqlens", "seqlen"}});
}

TEST(MpiAttentionErrors, SeqlenKDiffersFromQ) {
  Shape shape;
  shape.single_sequence_form = true;
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kEvenNullShard);
  s->params.seqlen_k = s->params.seqlen_q + 1;
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, {"seqlen"}});
}

TEST(MpiAttentionErrors, UnknownSplit) {
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kEvenDefaultShard);
  s->shard.split = static_cast<sampleattn_mpi_split>(7);
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT}, -1, {"split"}});
}

TEST(MpiAttentionErrors, BeginWithoutLength) {
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kExplicit, MPI_COMM_WORLD, Layout::kPacked, even_run);
  s->shard.length = nullptr;
  expect_error_on_every_rank(call_outcome(*s),
                             {{SAMPLEATTN_NULL_POINTER, SAMPLEATTN_INVALID_ARGUMENT}, -1, {"begin", "length"}});
}

TEST(MpiAttentionErrors, ShardFromANewerHeader) {
  // The library's ABI rule: a struct_size larger than the library knows is refused.
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kEvenDefaultShard);
  s->shard.struct_size = sizeof(sampleattn_mpi_shard) + 8;
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_UNSUPPORTED_VERSION}, -1, {}});
}

TEST(MpiAttentionErrors, ZigzagWithExplicitRuns) {
  // begin/length are for the contiguous split; zigzag's chunks are fixed.
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kExplicit, MPI_COMM_WORLD, Layout::kPacked, even_run);
  s->shard.split = SAMPLEATTN_MPI_SPLIT_ZIGZAG;
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT}, -1, {"begin", "length", "zigzag"}});
}

TEST(MpiAttentionErrors, RanksDisagreeOnSoftcap) {
  if (world_size() == 1) GTEST_SKIP() << "needs two ranks";
  Shape shape;
  if (world_rank() == 0) shape.softcap = 30.0f;
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kZigzag);
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, {"softcap"}});
}

TEST(MpiAttentionErrors, RanksDisagreeOnSinks) {
  if (world_size() == 1) GTEST_SKIP() << "needs two ranks";
  Shape shape;
  shape.sinks = {1.0f, 2.0f, 3.0f, 4.0f};
  if (world_rank() == world_size() - 1) shape.sinks[2] = 3.5f;
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s), {kShapeOrArgument, -1, {"sink"}});
}

TEST(MpiAttentionErrors, RanksDisagreeOnInputDtype) {
  if (world_size() == 1) GTEST_SKIP() << "needs two ranks";
  Shape shape;
  if (world_rank() == world_size() - 1) shape.in = SAMPLEATTN_DTYPE_BF16;
  std::unique_ptr<RankCall> s = make_setup(shape, Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s), {{SAMPLEATTN_INVALID_ARGUMENT, SAMPLEATTN_INVALID_SHAPE,
                                                 SAMPLEATTN_UNSUPPORTED_DTYPE},
                                                -1,
                                                {"dtype"}});
}

TEST(MpiAttentionErrors, OneRankOutOfWorkspace) {
  // The last rank's context may hold 4 KiB of scratch: its call fails (before or during the ring),
  // and so does every other rank's, without hanging.
  const int last = world_size() - 1;
  sampleattn_context_options options;
  sampleattn_context_options_init(&options);
  options.backend = SAMPLEATTN_BACKEND_CPU;
  options.num_threads = 1;
  options.binding = SAMPLEATTN_BIND_NONE;
  options.max_workspace_bytes = 4096;
  sampleattn_context* small = nullptr;
  const bool created = sampleattn_context_create(&options, &small) == SAMPLEATTN_SUCCESS;
  ASSERT_TRUE(all_ranks(created)) << sampleattn_last_error();
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kZigzag);
  const Outcome out = call_outcome(*s, world_rank() == last ? small : g_context, &s->params, &s->shard);
  sampleattn_context_destroy(small);
  Outcome relaxed = out;
  relaxed.untouched = true;  // a failure inside the ring is not an invalid argument: output may be written
  expect_error_on_every_rank(relaxed, {{SAMPLEATTN_OUT_OF_MEMORY}, last, {"workspace", "memory"}});
}

TEST(MpiAttentionErrors, NullParamsOnEveryRank) {
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s, g_context, nullptr, &s->shard), {{SAMPLEATTN_NULL_POINTER}, -1, {}});
}

TEST(MpiAttentionErrors, NullContextOnEveryRank) {
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kEvenDefaultShard);
  expect_error_on_every_rank(call_outcome(*s, nullptr, &s->params, &s->shard), {{SAMPLEATTN_NULL_POINTER}, -1, {}});
}

TEST(MpiAttentionErrors, NullContextOnTheLastRank) {
  // "When any rank's arguments are invalid ... every rank returns an error (none hangs)".
  const int last = world_size() - 1;
  std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kZigzag);
  sampleattn_context* context = world_rank() == last ? nullptr : g_context;
  expect_error_on_every_rank(call_outcome(*s, context, &s->params, &s->shard), {{SAMPLEATTN_NULL_POINTER}, last, {}});
}

TEST(MpiAttentionErrors, WorksAgainAfterAFailure) {
  // A failed call leaves nothing behind: the next one on the same communicator succeeds.
  {
    std::unique_ptr<RankCall> s = make_setup(Shape{}, Split::kZigzag);
    if (world_rank() == world_size() - 1) s->params.v.data = nullptr;
    const Outcome out = call_outcome(*s);
    EXPECT_TRUE(all_ranks(out.status != SAMPLEATTN_SUCCESS));
  }
  Shape shape;
  shape.seed = 35;
  expect_matches_reference(shape, Split::kZigzag);
}

TEST(MpiAttentionIsolation, ApplicationMessagesOnTheSameCommunicator) {
  // Messages of the application's own, sent on the communicator before the call and received after
  // it (tags 0 and 1, the ones a library is most likely to use): the library's traffic must not
  // match them. MPI's answer for libraries is a communicator of their own (MPI_Comm_dup, cached as
  // an attribute of the caller's). Last in the program: where the library takes the message, the
  // ring hangs and the watchdog ends the run.
  const int rank = world_rank(), ranks = world_size();
  MPI_Comm comm = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &comm), MPI_SUCCESS);
  const int next = (rank + 1) % ranks, previous = (rank + ranks - 1) % ranks;
  int64_t sent[2] = {1000 + rank, 2000 + rank}, received[2] = {-1, -1};
  MPI_Request requests[4];
  MPI_Isend(&sent[0], 1, MPI_INT64_T, next, 0, comm, &requests[0]);
  MPI_Isend(&sent[1], 1, MPI_INT64_T, next, 1, comm, &requests[1]);
  Shape shape;
  shape.seed = 32;
  Failures f = run_and_compare(shape, Split::kZigzag, kF32, comm);
  MPI_Irecv(&received[0], 1, MPI_INT64_T, previous, 0, comm, &requests[2]);
  MPI_Irecv(&received[1], 1, MPI_INT64_T, previous, 1, comm, &requests[3]);
  MPI_Waitall(4, requests, MPI_STATUSES_IGNORE);
  if (received[0] != 1000 + previous || received[1] != 2000 + previous) {
    f.add("the application's messages arrived as ", received[0], ", ", received[1], " instead of ", 1000 + previous,
          ", ", 2000 + previous);
  }
  MPI_Comm_free(&comm);
  expect_no_failures_on_any_rank(f);
}

// ---------------------------------------------------------------------------------------------
// main: MPI around GoogleTest
// ---------------------------------------------------------------------------------------------
// A test that runs far longer than it should means ranks are waiting on each other: say which test
// and end the process (mpirun then ends the others), rather than leave CTest's timeout to say
// nothing. SAMPLEATTN_MPI_TEST_WATCHDOG_S sets the limit (default 60 s; 0: none).
class Watchdog : public ::testing::EmptyTestEventListener {
 public:
  explicit Watchdog(int seconds) : seconds_(seconds) {
    if (seconds_ > 0) thread_ = std::thread([this] { watch(); });
  }
  ~Watchdog() override { stop(); }
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::lock_guard<std::mutex> lock(mutex_);
    test_ = std::string(info.test_suite_name()) + "." + info.name();
    started_ = std::chrono::steady_clock::now();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    test_.clear();
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, std::chrono::seconds(1));
      if (test_.empty() || stopping_) continue;
      const auto elapsed = std::chrono::steady_clock::now() - started_;
      if (elapsed > std::chrono::seconds(seconds_)) {
        std::fprintf(stderr, "mpi_attention_test: rank %d: %s still running after %d s: ranks waiting on each other?\n",
                     world_rank_, test_.c_str(), seconds_);
        std::fflush(stderr);
        std::_Exit(124);
      }
    }
  }

  const int seconds_;
  const int world_rank_ = world_rank();
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::string test_;
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "mpi_attention_test: MPI_Init_thread failed\n");
    return 2;
  }
  // The library reports MPI's errors as statuses only when MPI returns them.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) delete listeners.Release(listeners.default_result_printer());
  const char* watchdog_env = std::getenv("SAMPLEATTN_MPI_TEST_WATCHDOG_S");
  auto* watchdog = new Watchdog(watchdog_env != nullptr ? std::atoi(watchdog_env) : 60);
  listeners.Append(watchdog);  // GoogleTest owns it

  sampleattn_context_options options;
  sampleattn_context_options_init(&options);
  options.backend = SAMPLEATTN_BACKEND_CPU;
  options.num_threads = 1;
  options.binding = SAMPLEATTN_BIND_NONE;
  const sampleattn_status created = sampleattn_context_create(&options, &g_context);
  if (created != SAMPLEATTN_SUCCESS) {
    std::fprintf(stderr, "mpi_attention_test: rank %d: sampleattn_context_create: %s: %s\n", rank,
                 sampleattn_status_string(created), sampleattn_last_error());
  }
  int result = 1;
  if (all_ranks(created == SAMPLEATTN_SUCCESS)) {
    if (rank == 0) std::printf("mpi_attention_test: %d ranks\n", world_size());
    result = RUN_ALL_TESTS();
  }
  watchdog->stop();
  sampleattn_context_destroy(g_context);

  // A test that failed on any rank fails the program on every rank.
  int failed = result != 0 ? 1 : 0, any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed) std::printf("mpi_attention_test: a test failed on another rank\n");
  MPI_Finalize();
  return any_failed ? 1 : 0;
}
