// Shared test helpers: deterministic inputs, a params builder over owned buffers, and error
// measures against the double-precision oracle.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "sampleattn/sampleattn.hpp"
#include "test_rng.h"
#include "simd/dispatch.h"
#include "core/dtype_convert.h"
#include "core/problem.h"
#include "cpu/thread_pool.h"
#include "reference/attention_reference.h"
#include "sampleattn/sampleattn.h"

namespace sampleattn::testing {


// A tensor [tokens, heads, d] in one dtype, stored as bytes.
struct Buffer {
  DType dtype = DType::kF32;
  int64_t tokens = 0;
  int heads = 0;
  int d = 0;
  std::vector<uint8_t> bytes;

  Buffer() = default;
  // Exactly the tensor's bytes, no padding, so AddressSanitizer sees any read past its end. An
  // empty tensor has no storage (data() may be null: the library accepts null for zero tokens).
  Buffer(DType t, int64_t n, int h, int dim) : dtype(t), tokens(n), heads(h), d(dim),
      bytes(static_cast<size_t>(n) * h * dim * dtype_size(t), 0) {}
  void* data() { return bytes.data(); }
  float get(int64_t i) const { return load_scalar(bytes.data(), dtype, i); }
  void set(int64_t i, float v) { store_scalar(bytes.data(), dtype, i, v); }
  int64_t size() const { return tokens * heads * d; }
  void fill_normal(Rng& rng, float scale) {
    for (int64_t i = 0; i < size(); ++i) set(i, static_cast<float>(rng.normal() * scale));
  }
  void poison() {
    for (int64_t i = 0; i < size(); ++i) set(i, std::nanf(""));
  }
};

// One attention problem with owned inputs, in [token, head, dim] layout.
struct Case {
  int d = 64;
  int hq = 2;
  int hkv = 2;
  DType in = DType::kF32;
  DType out = DType::kF32;
  bool causal = true;
  std::vector<int32_t> cu_q{0};  // sequences
  std::vector<int32_t> cu_k{0};
  Buffer q, k, v, o;
  std::vector<float> lse;

  void add_sequence(int32_t q_len, int32_t k_len) {
    cu_q.push_back(cu_q.back() + q_len);
    cu_k.push_back(cu_k.back() + k_len);
  }

  // Fills Q/K/V with Gaussian values (score spread set by qk_scale) and poisons O.
  void materialize(uint64_t seed, float qk_scale = 1.0f) {
    Rng rng(seed);
    q = Buffer(in, cu_q.back(), hq, d);
    k = Buffer(in, cu_k.back(), hkv, d);
    v = Buffer(in, cu_k.back(), hkv, d);
    o = Buffer(out, cu_q.back(), hq, d);
    q.fill_normal(rng, qk_scale);
    k.fill_normal(rng, 1.0f);
    v.fill_normal(rng, 1.0f);
    o.poison();
    lse.assign(static_cast<size_t>(cu_q.back()) * hq, std::nanf(""));
  }

  sampleattn::Params params() {
    sampleattn::Params p;
    // The tests name their products: f32 unless a test asks for bf16 (what AUTO, the library's
    // default, resolves to is tested in abi_test).
    p.precision = SAMPLEATTN_PRECISION_F32;
    p.q = {q.data(), static_cast<sampleattn_dtype>(in), int64_t{hq} * d, d};
    p.k = {k.data(), static_cast<sampleattn_dtype>(in), int64_t{hkv} * d, d};
    p.v = {v.data(), static_cast<sampleattn_dtype>(in), int64_t{hkv} * d, d};
    p.o = {o.data(), static_cast<sampleattn_dtype>(out), int64_t{hq} * d, d};
    p.head_dim = d;
    p.num_q_heads = hq;
    p.num_kv_heads = hkv;
    p.causal = causal ? 1 : 0;
    p.batch = static_cast<int32_t>(cu_q.size()) - 1;
    p.cu_seqlens_q = cu_q.data();
    p.cu_seqlens_k = cu_k.data();
    p.lse = lse.data();
    return p;
  }
};

// A dense-attention shape: head dim, sequences (q_len, k_len), causal.
struct DenseShape {
  int d;
  std::vector<std::pair<int32_t, int32_t>> seqs;
  bool causal;
};

// The dense suites' case: 2 kv heads with `group` query heads each, inputs and output in dtype.
inline Case dense_case(const DenseShape& shape, DType dtype, int group, uint64_t seed) {
  Case c;
  c.d = shape.d;
  c.hkv = 2;
  c.hq = 2 * group;
  c.in = dtype;
  c.out = dtype;
  c.causal = shape.causal;
  for (auto [ql, kl] : shape.seqs) c.add_sequence(ql, kl);
  c.materialize(seed, 1.5f);
  return c;
}

// Adds a positional part to a materialized case's Q and K (the look's inputs, look_test and
// cuda_test): the cos and sin of a position's phase per frequency, so near keys score high, with
// a strength in Q that varies from row to row: rows with none find their largest scores anywhere,
// rows with much in their band (8 slow frequencies: a broad peak). `local`: 32 scattered
// frequencies, strong in every row: a sharp peak at the row's own key, far above every key
// outside the band (the look finds few rows). Needs d >= 64.
inline void add_positional(Case& c, uint64_t seed, bool local) {
  const int freqs = local ? 32 : 8;
  std::vector<double> w(static_cast<size_t>(freqs));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<double> scattered(0.05, 1.0);
  for (int f = 0; f < freqs; ++f) w[static_cast<size_t>(f)] = local ? scattered(rng) : 0.01 * (f + 1);
  auto add = [&](Buffer& b, int heads, int64_t token, int64_t pos, float amplitude) {
    for (int h = 0; h < heads; ++h) {
      for (int f = 0; f < freqs; ++f) {
        const double phase = w[static_cast<size_t>(f)] * static_cast<double>(pos);
        const int64_t at = (token * heads + h) * c.d + 2 * f;
        b.set(at, b.get(at) + amplitude * static_cast<float>(std::cos(phase)));
        b.set(at + 1, b.get(at + 1) + amplitude * static_cast<float>(std::sin(phase)));
      }
    }
  };
  for (size_t s = 0; s + 1 < c.cu_q.size(); ++s) {
    const int64_t q_offset = (c.cu_k[s + 1] - c.cu_k[s]) - (c.cu_q[s + 1] - c.cu_q[s]);
    for (int64_t t = c.cu_k[s]; t < c.cu_k[s + 1]; ++t) add(c.k, c.hkv, t, t - c.cu_k[s], local ? 4.f : 1.f);
    for (int64_t t = c.cu_q[s]; t < c.cu_q[s + 1]; ++t) {
      const int64_t i = t - c.cu_q[s];
      add(c.q, c.hq, t, q_offset + i, local ? 2.f : 1.5f * static_cast<float>(i % 4));
    }
  }
}

// The look's probe cases (look_test, cuda_test): one sequence of 4096 tokens, d = 128, one kv
// head, add_positional's local part (every row's best keys in its band), and key 100 along
// dimensions 64..71 asked for, far above its band's best, by the rows far_rows names (head,
// row). With a window of 40, 4,056 rows lie past the band, every third one in the probe (those
// with (4095 - row) % 3 == 0, core/mask.h: 1,352 rows, so a head is looked at whole from 2 rows
// flagged there): kProbedRows are in the probe, kUnprobedRow is not.
inline constexpr int32_t kProbedRows[2] = {3699, 3849};
inline constexpr int32_t kUnprobedRow = 2989;
inline Case far_key_case(DType dtype, int hq, const std::vector<std::pair<int, int32_t>>& far_rows) {
  Case c;
  c.d = 128;
  c.hq = hq;
  c.hkv = 1;
  c.in = c.out = dtype;
  c.add_sequence(4096, 4096);
  c.materialize(3, 0.5f);
  add_positional(c, 3, /*local=*/true);
  for (int e = 64; e < 72; ++e) {
    c.k.set(100 * c.d + e, 8.f);
    for (const auto& [head, row] : far_rows) c.q.set((static_cast<int64_t>(row) * c.hq + head) * c.d + e, 8.f);
  }
  return c;
}

// Plants structure in Q/K for sampling to find: `columns` (key positions of every sequence) that
// every query leans on through dimension 0.
inline void plant(Case& c, const std::vector<int32_t>& columns, float strength) {
  for (size_t s = 0; s + 1 < c.cu_k.size(); ++s) {
    for (int32_t j : columns) {
      const int64_t key = c.cu_k[s] + j;
      if (key >= c.cu_k[s + 1]) continue;
      for (int h = 0; h < c.hkv; ++h) c.k.set((key * c.hkv + h) * c.d + 0, strength);
    }
    for (int64_t t = c.cu_q[s]; t < c.cu_q[s + 1]; ++t) {
      for (int h = 0; h < c.hq; ++h) c.q.set((t * c.hq + h) * c.d + 0, strength);
    }
  }
}

struct Errors {
  double rel_l2 = 0;   // ||out - ref|| / ||ref||
  double max_abs = 0;
};

// Error of `rows` (as the output dtype stores them) against the oracle rows.
inline Errors errors_of(const std::vector<reference::RowResult>& oracle,
                        const std::vector<std::vector<double>>& rows) {
  double num = 0, den = 0, worst = 0;
  for (size_t r = 0; r < oracle.size(); ++r) {
    for (size_t c = 0; c < oracle[r].o.size(); ++c) {
      const double diff = rows[r][c] - oracle[r].o[c];
      num += diff * diff;
      den += oracle[r].o[c] * oracle[r].o[c];
      worst = std::max(worst, std::abs(diff));
    }
  }
  return {den > 0 ? std::sqrt(num / den) : std::sqrt(num), worst};
}

inline std::vector<std::vector<double>> output_rows(const Case& c,
                                                    const std::vector<std::pair<int64_t, int>>& rows) {
  std::vector<std::vector<double>> out;
  for (const auto& [t, h] : rows) {
    std::vector<double> row(c.d);
    for (int x = 0; x < c.d; ++x) row[x] = c.o.get((t * c.hq + h) * c.d + x);
    out.push_back(std::move(row));
  }
  return out;
}

// The naive result as it would be stored in the output dtype.
inline std::vector<std::vector<double>> stored(const std::vector<reference::RowResult>& rows, DType out) {
  std::vector<std::vector<double>> r;
  for (const auto& row : rows) {
    std::vector<double> v(row.o.size());
    for (size_t c = 0; c < v.size(); ++c) {
      uint8_t tmp[4] = {};
      store_scalar(tmp, out, 0, static_cast<float>(row.o[c]));
      v[c] = load_scalar(tmp, out, 0);
    }
    r.push_back(std::move(v));
  }
  return r;
}

inline std::vector<std::pair<int64_t, int>> all_rows(const Problem& p) {
  std::vector<std::pair<int64_t, int>> rows;
  for (int64_t t = 0; t < p.total_q; ++t) {
    for (int h = 0; h < p.num_q_heads; ++h) rows.emplace_back(t, h);
  }
  return rows;
}

// Forces an ISA for the lifetime of the object; tests skip when the CPU lacks it.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : ok_(force_cpu_isa(isa)) {}
  ~ScopedIsa() { clear_forced_isa(); }
  bool ok() const { return ok_; }

 private:
  bool ok_;
};

// The masks of the heads that ran sparse, keyed (sequence, head), from a call's statistics
// (head_stats and the stripe arrays); dense heads have none.
using MaskMap = std::map<std::pair<int, int>, reference::HeadMask>;
inline MaskMap masks_from_stats(const std::vector<sampleattn_head_stats>& heads, int nseq, int hq,
                                const std::vector<int32_t>& offsets, const std::vector<int32_t>& stripes) {
  MaskMap masks;
  for (int s = 0; s < nseq; ++s) {
    for (int h = 0; h < hq; ++h) {
      const size_t i = static_cast<size_t>(s) * hq + h;
      if (heads[i].dense) continue;
      reference::HeadMask m;
      m.window = heads[i].window;
      m.stripes.assign(stripes.begin() + offsets[i], stripes.begin() + offsets[i + 1]);
      EXPECT_TRUE(std::is_sorted(m.stripes.begin(), m.stripes.end()));
      EXPECT_EQ(static_cast<int32_t>(m.stripes.size()), heads[i].num_stripes);
      masks[{s, h}] = std::move(m);
    }
  }
  return masks;
}

// The dense rows the statistics name (dense_row_offsets / dense_row_indices, ABI 1.6) added to
// their heads' masks as positions; expects each head's count and the total to agree.
inline void add_dense_rows(MaskMap& masks, const std::vector<sampleattn_head_stats>& heads, const Case& c,
                           const sampleattn_stats& stats, const std::vector<int32_t>& row_offsets,
                           const std::vector<int32_t>& rows) {
  const int nseq = static_cast<int>(c.cu_q.size()) - 1;
  int64_t total = 0;
  for (int s = 0; s < nseq; ++s) {
    const int64_t q_offset = (c.cu_k[s + 1] - c.cu_k[s]) - (c.cu_q[s + 1] - c.cu_q[s]);
    for (int h = 0; h < c.hq; ++h) {
      const size_t i = static_cast<size_t>(s) * c.hq + h;
      EXPECT_EQ(row_offsets[i + 1] - row_offsets[i], heads[i].dense_rows);
      total += heads[i].dense_rows;
      auto it = masks.find({s, h});
      if (it == masks.end()) {
        EXPECT_EQ(heads[i].dense_rows, 0);
        continue;
      }
      for (int32_t r = row_offsets[i]; r < row_offsets[i + 1]; ++r) it->second.dense_rows.push_back(q_offset + rows[r]);
    }
  }
  EXPECT_EQ(total, stats.num_dense_rows);
}

// The oracle's view of those masks (no entry: dense).
inline reference::MaskLookup lookup(const MaskMap& masks) {
  return [&masks](int s, int h) -> const reference::HeadMask* {
    auto it = masks.find({s, h});
    return it == masks.end() ? nullptr : &it->second;
  };
}

// Small-problem sampling parameters: sampling applies from k_len 0, with a short window; alpha's
// masks as they stand (no validation rows: Validation* has its own tests), kept sparse
// (max_density 1: these small masks are dense-ish) to test the mechanism.
inline void small_sample_params(sampleattn::Params& p) {
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  p.sample.dense_below = 0;
  p.sample.min_window = 8;
  p.sample.r_w = 0.08f;
  p.sample.sample_block = 16;
  p.sample.r_row = 0.2f;
  p.sample.sink_tokens = 1;
  p.sample.max_density = 1.f;
  p.sample.r_val = 0.f;
}

// The CPU backend's pool for driver-level tests: `threads` workers, not bound to cores.
inline std::unique_ptr<cpu::ThreadPool> pool_of(int threads) {
  cpu::ThreadPoolOptions o;
  o.num_threads = threads;
  o.bind = false;
  std::unique_ptr<cpu::ThreadPool> pool;
  EXPECT_TRUE(cpu::ThreadPool::create(o, &pool).is_ok());
  return pool;
}

inline sampleattn_context* cpu_context(int threads, uint64_t max_workspace_bytes = 0) {
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.backend = SAMPLEATTN_BACKEND_CPU;
  o.num_threads = threads;
  o.max_workspace_bytes = max_workspace_bytes;
  sampleattn_context* ctx = nullptr;
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  return ctx;
}

}  // namespace sampleattn::testing
