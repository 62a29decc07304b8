// The KV cache of ABI 1.4 (sampleattn_kv_cache) on the C API: every malformed cache is refused
// with its status and a message that names the field, before any output is written (never a
// crash); a paged cache and a packed one with seqused_k compute exactly what the packed call on
// the same keys computes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cpu/flash_driver.h"
#include "test_util.h"

namespace sampleattn::testing {
namespace {

// A paged copy of a Case's K and V: page_size-token pages laid out [page][slot][kv head][dim], in
// shuffled order. The slots after a sequence's last key, the spare pages and the table entries
// after a sequence's last page are never read: they hold NaN and -1, so reading one shows.
struct PagedKv {
  int page_size = 16;
  int num_pages = 0;
  int64_t table_stride = 0;
  std::vector<int32_t> table;
  Buffer k, v;

  PagedKv(const Case& c, int page, int spare_pages, uint64_t seed) : page_size(page) {
    const size_t nseq = c.cu_k.size() - 1;
    std::vector<int64_t> pages_of(nseq);
    int64_t used = 0;
    for (size_t b = 0; b < nseq; ++b) {
      pages_of[b] = (c.cu_k[b + 1] - c.cu_k[b] + page - 1) / page;
      used += pages_of[b];
      table_stride = std::max(table_stride, pages_of[b] + 1);
    }
    num_pages = static_cast<int>(used) + spare_pages;
    std::vector<int32_t> order(static_cast<size_t>(num_pages));
    std::iota(order.begin(), order.end(), 0);
    Rng rng(seed);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
    table.assign(nseq * static_cast<size_t>(table_stride), -1);
    k = Buffer(c.k.dtype, int64_t{num_pages} * page, c.hkv, c.d);
    v = Buffer(c.v.dtype, int64_t{num_pages} * page, c.hkv, c.d);
    k.poison();
    v.poison();
    size_t next = 0;
    for (size_t b = 0; b < nseq; ++b) {
      for (int64_t i = 0; i < pages_of[b]; ++i) table[b * table_stride + i] = order[next++];
      for (int64_t j = 0; j < c.cu_k[b + 1] - c.cu_k[b]; ++j) {
        const int64_t to = int64_t{table[b * table_stride + j / page]} * page + j % page;
        const int64_t from = c.cu_k[b] + j;
        const size_t row = static_cast<size_t>(c.hkv) * c.d * dtype_size(c.k.dtype);
        std::memcpy(k.bytes.data() + to * row, c.k.bytes.data() + from * row, row);
        std::memcpy(v.bytes.data() + to * row, c.v.bytes.data() + from * row, row);
      }
    }
  }

  int64_t page_stride() const { return int64_t{page_size} * k.heads * k.d; }

  sampleattn_kv_cache cache() const {
    sampleattn_kv_cache c;
    sampleattn_kv_cache_init(&c);
    c.block_table = table.data();
    c.block_table_stride = table_stride;
    c.page_size = page_size;
    c.num_pages = num_pages;
    c.k_page_stride = c.v_page_stride = page_stride();
    return c;
  }

  // The case's params with K and V read from the pages through `cache`.
  sampleattn::Params params(Case& c, const sampleattn_kv_cache* cache) {
    sampleattn::Params p = c.params();
    p.k.data = k.data();
    p.v.data = v.data();
    p.kv_cache = cache;
    return p;
  }
};

// 4 query heads on 2 kv heads, head dim 64: two sequences, the first ending mid-page.
Case two_sequences(uint64_t seed, std::vector<std::pair<int32_t, int32_t>> seqs = {{40, 70}, {25, 48}}) {
  Case c;
  c.hq = 4;
  c.hkv = 2;
  for (auto [q, k] : seqs) c.add_sequence(q, k);
  c.materialize(seed, 1.0f);
  return c;
}

class KvCacheCalls : public ::testing::TestWithParam<Isa> {};

// Shuffled pages of 16 give the packed call's output and lse bit for bit: the kernels read the same
// rows in the same order, only from elsewhere. Dense and sampled, every kernel table.
TEST_P(KvCacheCalls, PagedEqualsPackedBitForBit) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  for (auto method : {SAMPLEATTN_METHOD_DENSE, SAMPLEATTN_METHOD_SAMPLE}) {
    SCOPED_TRACE(method == SAMPLEATTN_METHOD_DENSE ? "dense" : "sample");
    Case c = two_sequences(3, {{40, 70}, {130, 150}, {25, 48}});
    sampleattn::Params packed = c.params();
    if (method == SAMPLEATTN_METHOD_SAMPLE) small_sample_params(packed);
    ASSERT_EQ(sampleattn_forward(ctx, &packed, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    const std::vector<uint8_t> packed_o = c.o.bytes;
    const std::vector<float> packed_lse = c.lse;

    PagedKv pages(c, 16, 3, 11);
    const sampleattn_kv_cache cache = pages.cache();
    sampleattn::Params paged = pages.params(c, &cache);
    if (method == SAMPLEATTN_METHOD_SAMPLE) small_sample_params(paged);
    c.o.poison();
    c.lse.assign(c.lse.size(), std::nanf(""));
    sampleattn_plan_info plan;
    sampleattn_plan_info_init(&plan);
    ASSERT_EQ(sampleattn_plan(ctx, &paged, &plan), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    EXPECT_EQ(plan.total_k_tokens, 70 + 150 + 48);
    ASSERT_EQ(sampleattn_forward(ctx, &paged, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    EXPECT_EQ(c.o.bytes, packed_o);
    EXPECT_EQ(0, std::memcmp(c.lse.data(), packed_lse.data(), c.lse.size() * sizeof(float)));
  }
  sampleattn_context_destroy(ctx);
}

// Sequences that share a prefix share its pages (an engine's prefix cache): the second sequence's
// first table entries point at the first one's pages, its own copies of those keys are poisoned.
// Page sizes 16, 32 and 64; every table; dense and sampled.
TEST_P(KvCacheCalls, SharedPrefixPagesEqualPacked) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  for (int page : {16, 32, 64}) {
    for (auto method : {SAMPLEATTN_METHOD_DENSE, SAMPLEATTN_METHOD_SAMPLE}) {
      SCOPED_TRACE("page " + std::to_string(page) + (method == SAMPLEATTN_METHOD_DENSE ? " dense" : " sample"));
      Case c = two_sequences(7, {{60, 150}, {50, 140}});
      const int64_t prefix = 2 * page;  // whole pages
      const size_t row = static_cast<size_t>(c.hkv) * c.d * dtype_size(c.k.dtype);
      std::memcpy(c.k.bytes.data() + c.cu_k[1] * row, c.k.bytes.data(), prefix * row);
      std::memcpy(c.v.bytes.data() + c.cu_k[1] * row, c.v.bytes.data(), prefix * row);
      sampleattn::Params packed = c.params();
      if (method == SAMPLEATTN_METHOD_SAMPLE) small_sample_params(packed);
      ASSERT_EQ(sampleattn_forward(ctx, &packed, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      const std::vector<uint8_t> want_o = c.o.bytes;
      const std::vector<float> want_lse = c.lse;

      PagedKv pages(c, page, 1, 13);
      for (int64_t i = 0; i < prefix / page; ++i) {
        const int32_t own = pages.table[pages.table_stride + i];
        pages.table[pages.table_stride + i] = pages.table[i];  // the first sequence's page
        for (int64_t t = 0; t < page * c.hkv * c.d; ++t) {       // and the now unused copy poisoned
          pages.k.set(own * page * c.hkv * c.d + t, std::nanf(""));
          pages.v.set(own * page * c.hkv * c.d + t, std::nanf(""));
        }
      }
      const sampleattn_kv_cache cache = pages.cache();
      sampleattn::Params paged = pages.params(c, &cache);
      if (method == SAMPLEATTN_METHOD_SAMPLE) small_sample_params(paged);
      c.o.poison();
      ASSERT_EQ(sampleattn_forward(ctx, &paged, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      EXPECT_EQ(c.o.bytes, want_o);
      EXPECT_EQ(0, std::memcmp(c.lse.data(), want_lse.data(), c.lse.size() * sizeof(float)));
    }
  }
  sampleattn_context_destroy(ctx);
}

// seqused_k on packed K/V: sequence b uses the first seqused_k[b] of its keys, which is the call
// on inputs cut to those keys (the queries are the last ones of the used keys).
TEST_P(KvCacheCalls, SequsedKEqualsTheTruncatedCall) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  Case c = two_sequences(5, {{30, 80}, {20, 50}});
  const int32_t used[] = {61, 35};
  Case cut = two_sequences(5, {{30, used[0]}, {20, used[1]}});
  cut.q = c.q;
  const size_t row = static_cast<size_t>(c.hkv) * c.d * sizeof(float);
  for (size_t b = 0; b < 2; ++b) {
    std::memcpy(cut.k.bytes.data() + cut.cu_k[b] * row, c.k.bytes.data() + c.cu_k[b] * row, used[b] * row);
    std::memcpy(cut.v.bytes.data() + cut.cu_k[b] * row, c.v.bytes.data() + c.cu_k[b] * row, used[b] * row);
  }
  sampleattn::Params truncated = cut.params();
  ASSERT_EQ(sampleattn_forward(ctx, &truncated, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();

  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  cache.seqused_k = used;
  sampleattn::Params p = c.params();
  p.kv_cache = &cache;
  // The unused keys are never read.
  for (size_t b = 0; b < 2; ++b) {
    for (int64_t t = c.cu_k[b] + used[b]; t < c.cu_k[b + 1]; ++t) {
      for (int64_t i = 0; i < c.hkv * c.d; ++i) c.k.set(t * c.hkv * c.d + i, std::nanf(""));
    }
  }
  ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  EXPECT_EQ(c.o.bytes, cut.o.bytes);
  EXPECT_EQ(0, std::memcmp(c.lse.data(), cut.lse.data(), c.lse.size() * sizeof(float)));
  sampleattn_context_destroy(ctx);
}

// A case's K and V quantized: int8 with a scale per (token, kv head), or fp8 e4m3 with a scale per
// kv head; `dequantized` holds the values they stand for (scale * value, in f32, as the kernels
// compute them), in the case's own f32 layout.
struct QuantizedCopy {
  DType dtype;
  Buffer k, v;
  std::vector<float> k_scale, v_scale;
  int64_t scale_token_stride = 0;
  Buffer k_dequantized, v_dequantized;

  QuantizedCopy(const Case& c, DType t) : dtype(t) {
    const int64_t tokens = c.k.tokens, heads = c.hkv, d = c.d;
    scale_token_stride = t == DType::kI8 ? heads : 0;
    for (auto [src, dst, scales, deq] : {std::tuple{&c.k, &k, &k_scale, &k_dequantized},
                                         std::tuple{&c.v, &v, &v_scale, &v_dequantized}}) {
      *dst = Buffer(t, tokens, c.hkv, c.d);
      *deq = Buffer(DType::kF32, tokens, c.hkv, c.d);
      scales->assign(static_cast<size_t>(t == DType::kI8 ? tokens * heads : heads), 0.f);
      for (int64_t i = 0; i < tokens * heads; ++i) {  // each row's (int8) or head's (fp8) largest magnitude
        float& s = (*scales)[static_cast<size_t>(t == DType::kI8 ? i : i % heads)];
        for (int64_t x = 0; x < d; ++x) s = std::max(s, std::fabs(src->get(i * d + x)));
      }
      for (float& s : *scales) s = s > 0 ? s / (t == DType::kI8 ? 127.f : 448.f) : 1.f;
      for (int64_t i = 0; i < tokens * heads; ++i) {
        const float scale = (*scales)[static_cast<size_t>(t == DType::kI8 ? i : i % heads)];
        for (int64_t x = 0; x < d; ++x) {
          const float y = src->get(i * d + x) / scale;
          uint8_t code;
          if (t == DType::kI8) {
            code = static_cast<uint8_t>(static_cast<int8_t>(std::nearbyint(std::clamp(y, -127.f, 127.f))));
          } else {
            code = f32_to_fp8_e4m3(y);
          }
          dst->bytes[static_cast<size_t>(i * d + x)] = code;
          deq->set(i * d + x, dst->get(i * d + x) * scale);
        }
      }
    }
  }

  sampleattn_kv_cache cache() const {
    sampleattn_kv_cache c;
    sampleattn_kv_cache_init(&c);
    c.k_scale = k_scale.data();
    c.v_scale = v_scale.data();
    c.scale_token_stride = scale_token_stride;
    c.scale_head_stride = 1;
    return c;
  }
};

// Quantized K/V compute exactly what the f32 call on their dequantized values computes: the packs
// (and the decode kernel) dequantize each value as scale * value in f32, once. Dense, sampled and
// decode chunks; every kernel table; precision F32 and AUTO. One exception: under AUTO, a table
// whose decode kernel multiplies int8 K/V in integers (attend_rows_int8_products: Q and the
// weights rounded to int16, simd/decode/decode.h) gives the decode chunks' rows within 2^-12
// relative (L2 over the sequence's rows) and their lse within 2^-12, and every other row's bits.
TEST_P(KvCacheCalls, QuantizedEqualsItsDequantizedValues) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  for (auto [t, precision] : {std::pair{DType::kI8, SAMPLEATTN_PRECISION_F32}, std::pair{DType::kI8, SAMPLEATTN_PRECISION_AUTO},
                              std::pair{DType::kFP8, SAMPLEATTN_PRECISION_AUTO}}) {
    for (auto method : {SAMPLEATTN_METHOD_DENSE, SAMPLEATTN_METHOD_SAMPLE}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + (method == SAMPLEATTN_METHOD_DENSE ? " dense" : " sample") +
                   (precision == SAMPLEATTN_PRECISION_F32 ? " f32" : " auto"));
      Case c = two_sequences(21, {{40, 70}, {1, 300}, {130, 150}, {9, 200}});
      const QuantizedCopy quant(c, t);
      c.k = quant.k_dequantized;
      c.v = quant.v_dequantized;
      sampleattn::Params reference = c.params();
      reference.precision = precision;
      if (method == SAMPLEATTN_METHOD_SAMPLE) small_sample_params(reference);
      ASSERT_EQ(sampleattn_forward(ctx, &reference, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      const std::vector<uint8_t> want_o = c.o.bytes;
      const std::vector<float> want_lse = c.lse;

      const sampleattn_kv_cache cache = quant.cache();
      sampleattn::Params p = c.params();
      p.k = {quant.k.bytes.data(), static_cast<sampleattn_dtype>(t), int64_t{c.hkv} * c.d, c.d};
      p.v = {quant.v.bytes.data(), static_cast<sampleattn_dtype>(t), int64_t{c.hkv} * c.d, c.d};
      p.kv_cache = &cache;
      p.precision = precision;
      if (method == SAMPLEATTN_METHOD_SAMPLE) small_sample_params(p);
      c.o.poison();
      ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      if (!(t == DType::kI8 && precision == SAMPLEATTN_PRECISION_AUTO && active_kernel_table().attend_rows_int8_products)) {
        EXPECT_EQ(c.o.bytes, want_o);
        EXPECT_EQ(0, std::memcmp(c.lse.data(), want_lse.data(), c.lse.size() * sizeof(float)));
        continue;
      }
      Problem problem;
      ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
      int decoded = 0;
      for (size_t b = 0; b < problem.sequences.size(); ++b) {
        const bool decode = cpu::decode_streams(problem, problem.sequences[b]);
        decoded += decode;
        const int64_t first = c.cu_q[b] * c.hq, last = c.cu_q[b + 1] * c.hq;  // (token, head) rows
        double err = 0, norm = 0, lse_err = 0;
        for (int64_t i = first * c.d; i < last * c.d; ++i) {
          const double want_x = load_scalar(want_o.data(), c.o.dtype, i);
          err += (c.o.get(i) - want_x) * (c.o.get(i) - want_x);
          norm += want_x * want_x;
        }
        for (int64_t i = first; i < last; ++i) lse_err = std::max(lse_err, std::abs(double{c.lse[i]} - want_lse[i]));
        SCOPED_TRACE("sequence " + std::to_string(b) + (decode ? " (decode kernel)" : ""));
        EXPECT_LE(std::sqrt(err / norm), decode ? 0x1p-12 : 0.0);
        EXPECT_LE(lse_err, decode ? 0x1p-12 : 0.0);
      }
      EXPECT_GT(decoded, 0);
    }
  }
  sampleattn_context_destroy(ctx);
}

// Decode steps and short chunks (at most 16 queries: the decode kernel, key splits merged by their
// log-sum-exp) in a batch with a prefill chunk, against the fp64 oracle: within twice the error
// of a naive f16 attention, lse within 1e-4. 8 query heads on 2 kv heads, so a chunk of 1, 2 or 4
// queries streams (at most 16 stacked rows) and one of 16 runs the packed kernels.
TEST_P(KvCacheCalls, DecodeAndShortChunksMatchTheOracle) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  Case c;
  c.hq = 8;
  c.hkv = 2;
  c.in = c.out = DType::kF16;
  for (auto [q, k] : std::vector<std::pair<int32_t, int32_t>>{{1, 9000}, {2, 5000}, {4, 4100}, {16, 3000}, {40, 300}}) {
    c.add_sequence(q, k);
  }
  c.materialize(33, 1.5f);
  sampleattn::Params p = c.params();
  for (int threads : {1, 2, 5}) {  // the key splits depend on the workers: the result must not
    SCOPED_TRACE("threads " + std::to_string(threads));
    sampleattn_context* ctx = cpu_context(threads);
    c.o.poison();
    ASSERT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
    sampleattn_context_destroy(ctx);
    Problem problem;
    ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
    const auto rows = all_rows(problem);
    const auto oracle = reference::attention_rows(problem, rows);
    const auto naive = reference::naive_attention_rows(problem, rows, false);
    const Errors ours = errors_of(oracle, output_rows(c, rows));
    const Errors base = errors_of(oracle, stored(naive, DType::kF16));
    EXPECT_LE(ours.rel_l2, 2 * base.rel_l2 + 1e-7) << "naive " << base.rel_l2;
    EXPECT_LE(ours.max_abs, 2 * base.max_abs + 1e-6) << "naive " << base.max_abs;
    for (size_t r = 0; r < rows.size(); ++r) {
      EXPECT_NEAR(c.lse[static_cast<size_t>(rows[r].first) * c.hq + rows[r].second], oracle[r].lse, 1e-4) << "row " << r;
    }
  }
}

// A decode step's keys and values are not scanned before the attention (the decode kernel checks
// each value as it reads it): a NaN or Inf there still fails the call with the scan's message
// naming it, and no output is written. f16 (bounded by its dtype), bf16 and f32 (whose bounds the
// kernel's largest magnitudes complete).
TEST_P(KvCacheCalls, DecodeFindsNonFiniteKeysWithoutWritingOutput) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    for (bool values : {false, true}) {
      for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + (values ? " v " : " k ") + std::to_string(bad));
        Case c;
        c.hq = 8;
        c.hkv = 2;
        c.in = c.out = dt;
        c.add_sequence(1, 6000);
        c.materialize(41, 1.0f);
        (values ? c.v : c.k).set((4321 * c.hkv + 1) * c.d + 7, bad);
        c.o.poison();
        const std::vector<uint8_t> o_before = c.o.bytes;
        sampleattn::Params p = c.params();
        EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_INVALID_ARGUMENT);
        EXPECT_NE(std::string(sampleattn_last_error()).find(std::string(values ? "v" : "k") + "[token 4321, head 1, dim 7]"),
                  std::string::npos)
            << sampleattn_last_error();
        EXPECT_EQ(c.o.bytes, o_before);
      }
    }
  }
  sampleattn_context_destroy(ctx);
}

// The range policy on a decode step's bf16 and f32 K/V, which the scan leaves to the attention:
// keys or values too large fail the call with the scan's message and no output; a key whose
// largest magnitude fails the attention's bound (sqrt(d) * max|k|) while its real norm passes the
// scan's is attended after all (the full scan decides, then the attention runs again).
TEST_P(KvCacheCalls, DecodeRangePolicyOnUnboundedKv) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  for (DType dt : {DType::kBF16, DType::kF32}) {
    const auto make = [&](Case& c, float q_scale) {
      c.hq = 8;
      c.hkv = 2;
      c.in = dt;
      c.out = DType::kF32;
      c.add_sequence(1, 3000);
      c.materialize(47, q_scale);
    };
    // The largest query row norm, and the policy's factor on it (scale * log2(e), scale 1/sqrt(d)).
    const auto q_norm = [](const Case& c) {
      double most = 0;
      for (int h = 0; h < c.hq; ++h) {
        double sq = 0;
        for (int x = 0; x < c.d; ++x) sq += std::pow(c.q.get(static_cast<int64_t>(h) * c.d + x), 2);
        most = std::max(most, std::sqrt(sq));
      }
      return most / std::sqrt(static_cast<double>(c.d)) * 1.4426950408889634;
    };
    for (int which = 0; which < 3; ++which) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " case " + std::to_string(which));
      Case c;
      make(c, which == 2 ? 0x1p37f : 1.0f);
      const int64_t at = (1234 * c.hkv + 1) * c.d + 5;
      if (which == 0) {
        c.k.set(at, 0x1p103f);  // the key's norm alone breaks the score bound
      } else if (which == 1) {
        c.v.set(at, 0x1p110f);  // times 3000 keys: past 2^120
      } else {
        // Large queries and one large key value: the key row's norm is about the value, and the
        // score bound with it passes; with sqrt(d) times the value it does not. (A row's sum of
        // squares is f32: values past 2^64 overflow it and fail the scan as well.)
        c.k.set(at, 0x1p60f);
        const double exact = q_norm(c) * std::sqrt(std::pow(0x1p60, 2) + 16.0 * c.d);
        ASSERT_LT(exact, 0x1p99);
        ASSERT_GE(q_norm(c) * std::sqrt(static_cast<double>(c.d)) * 0x1p60, 0x1p100);
      }
      c.o.poison();
      const std::vector<uint8_t> o_before = c.o.bytes;
      sampleattn::Params p = c.params();
      const sampleattn_status st = sampleattn_forward(ctx, &p, nullptr);
      if (which < 2) {
        EXPECT_EQ(st, SAMPLEATTN_INVALID_ARGUMENT);
        EXPECT_NE(std::string(sampleattn_last_error()).find(which == 0 ? "could overflow f32 scores" : "max|v|"),
                  std::string::npos)
            << sampleattn_last_error();
        EXPECT_EQ(c.o.bytes, o_before);
        continue;
      }
      ASSERT_EQ(st, SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      Problem problem;
      ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
      const auto rows = all_rows(problem);
      const auto oracle = reference::attention_rows(problem, rows);
      const Errors ours = errors_of(oracle, output_rows(c, rows));
      EXPECT_LE(ours.rel_l2, 1e-5);
    }
  }
  sampleattn_context_destroy(ctx);
}

// The scan is left to the decode kernel only when every sequence with queries is a streaming decode
// step: a prefill chunk beside it writes its rows as it goes, so there a NaN in the decode step's
// values (the api fuzzer's find) must fail the call before anything is written; and the keys of a
// sequence without queries, which no kernel reads, are scanned as always.
TEST_P(KvCacheCalls, MixedBatchesAndKeysWithoutQueriesAreScannedFirst) {
  ScopedIsa isa(GetParam());
  if (!isa.ok()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  sampleattn_context* ctx = cpu_context(2);
  for (auto [seqs, bad_token] : {std::pair{std::vector<std::pair<int32_t, int32_t>>{{1, 3000}, {64, 300}}, int64_t{5}},
                                 std::pair{std::vector<std::pair<int32_t, int32_t>>{{1, 3000}, {0, 400}}, int64_t{3100}}}) {
    Case c;
    c.hq = 8;
    c.hkv = 2;
    c.in = c.out = DType::kF16;
    for (auto [q, k] : seqs) c.add_sequence(q, k);
    c.materialize(43, 1.0f);
    c.v.set((bad_token * c.hkv + 0) * c.d + 0, std::nanf(""));
    c.o.poison();
    const std::vector<uint8_t> o_before = c.o.bytes;
    sampleattn::Params p = c.params();
    EXPECT_EQ(sampleattn_forward(ctx, &p, nullptr), SAMPLEATTN_INVALID_ARGUMENT);
    EXPECT_NE(std::string(sampleattn_last_error()).find("v[token " + std::to_string(bad_token) + ", head 0, dim 0]"),
              std::string::npos)
        << sampleattn_last_error();
    EXPECT_EQ(c.o.bytes, o_before);
  }
  sampleattn_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(AllTables, KvCacheCalls, ::testing::ValuesIn(kAllIsas),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(isa_name(i.param)); });

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------
class KvCacheRefused : public ::testing::Test {
 protected:
  void SetUp() override { ctx_ = cpu_context(1); }
  void TearDown() override { sampleattn_context_destroy(ctx_); }

  // forward refuses p with `status` and a message containing `text`, writing nothing; plan too
  // unless the check needs the data (plan validates everything but the data pointers).
  void expect_refused(const sampleattn_params& p, Case& c, sampleattn_status status, const std::string& text,
                      bool plan_too = true) {
    c.o.poison();
    const std::vector<uint8_t> o_before = c.o.bytes;
    EXPECT_EQ(sampleattn_forward(ctx_, &p, nullptr), status) << sampleattn_last_error();
    const std::string message = sampleattn_last_error();
    EXPECT_NE(message.find(text), std::string::npos) << "message: " << message << "\nwanted: " << text;
    EXPECT_EQ(c.o.bytes, o_before);
    if (plan_too) {
      sampleattn_plan_info plan;
      sampleattn_plan_info_init(&plan);
      EXPECT_EQ(sampleattn_plan(ctx_, &p, &plan), status) << sampleattn_last_error();
      EXPECT_NE(std::string(sampleattn_last_error()).find(text), std::string::npos) << sampleattn_last_error();
    }
  }

  sampleattn_context* ctx_ = nullptr;
};

TEST_F(KvCacheRefused, PageSizeNotAPositiveMultipleOf16) {
  Case c = two_sequences(1);
  PagedKv pages(c, 16, 0, 2);
  for (int32_t size : {24, 0, -16, 8, 17}) {
    sampleattn_kv_cache cache = pages.cache();
    cache.page_size = size;
    const sampleattn::Params p = pages.params(c, &cache);
    SCOPED_TRACE(size);
    expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE,
                   "kv_cache.page_size must be a positive multiple of 16, got " + std::to_string(size));
  }
}

TEST_F(KvCacheRefused, NoPages) {
  Case c = two_sequences(1);
  PagedKv pages(c, 16, 0, 2);
  for (int32_t n : {0, -3}) {
    sampleattn_kv_cache cache = pages.cache();
    cache.num_pages = n;
    const sampleattn::Params p = pages.params(c, &cache);
    expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE, "kv_cache.num_pages must be >= 1 with a block_table");
  }
}

TEST_F(KvCacheRefused, BlockTableStrideTooSmallForTheKeys) {
  Case c = two_sequences(1);  // sequence 0: 70 keys, 5 pages of 16
  PagedKv pages(c, 16, 0, 2);
  sampleattn_kv_cache cache = pages.cache();
  cache.block_table_stride = 4;
  sampleattn::Params p = pages.params(c, &cache);
  expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE,
                 "sequence 0 has 70 keys: 5 pages of 16, more than block_table_stride (4)");
  cache.block_table_stride = 0;
  expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE, "kv_cache.block_table_stride must be in [1, 2^31), got 0");
  cache.block_table_stride = int64_t{1} << 40;  // (b * stride would overflow int64 for a large batch)
  expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE, "kv_cache.block_table_stride must be in [1, 2^31), got 1099511627776");
  // With seqused_k the used keys decide: 64 keys fit 4 entries.
  const int32_t used[] = {64, 48};
  cache = pages.cache();
  cache.seqused_k = used;
  cache.block_table_stride = 4;
  std::vector<int32_t> table(pages.table);
  for (size_t i = 0; i < 4; ++i) table[i] = pages.table[i];
  for (size_t i = 0; i < 4; ++i) table[4 + i] = pages.table[pages.table_stride + i];
  cache.block_table = table.data();
  EXPECT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
}

TEST_F(KvCacheRefused, TableEntryOutsideThePages) {
  Case c = two_sequences(1);
  PagedKv pages(c, 16, 1, 2);
  for (int32_t bad : {pages.num_pages, -1, std::numeric_limits<int32_t>::max()}) {
    std::vector<int32_t> table = pages.table;
    table[pages.table_stride + 2] = bad;  // sequence 1, its third (last) page
    sampleattn_kv_cache cache = pages.cache();
    cache.block_table = table.data();
    const sampleattn::Params p = pages.params(c, &cache);
    expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE,
                   "kv_cache.block_table[1][2] = " + std::to_string(bad) + " is not a page in [0, " +
                       std::to_string(pages.num_pages) + ")");
  }
}

TEST_F(KvCacheRefused, PageStridesThatOverlapPages) {
  Case c = two_sequences(1);
  PagedKv pages(c, 16, 0, 2);
  const int64_t extent = pages.page_stride();  // (16 - 1) * 128 + 64 + 64: exactly one page
  for (const char* which : {"k_page_stride", "v_page_stride"}) {
    for (int64_t stride : {extent - 1, int64_t{64}, int64_t{0}, -extent}) {
      sampleattn_kv_cache cache = pages.cache();
      (std::string(which) == "k_page_stride" ? cache.k_page_stride : cache.v_page_stride) = stride;
      const sampleattn::Params p = pages.params(c, &cache);
      SCOPED_TRACE(std::string(which) + " " + std::to_string(stride));
      expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE,
                     std::string("kv_cache.") + which + " (" + std::to_string(stride) +
                         ") is smaller than a page's rows (" + std::to_string(extent) + " elements): pages would overlap");
    }
  }
}

TEST_F(KvCacheRefused, SequsedKNegativeOrBeyondThePackedSequence) {
  Case c = two_sequences(1);  // 70 and 48 keys
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  sampleattn::Params p = c.params();
  p.kv_cache = &cache;
  const int32_t negative[] = {70, -1};
  cache.seqused_k = negative;
  expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE, "kv_cache.seqused_k[1] = -1 is negative");
  const int32_t beyond[] = {71, 48};
  cache.seqused_k = beyond;
  expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE, "kv_cache.seqused_k[0] = 71 exceeds the sequence's 70 keys");
  // Fewer used keys than queries: causal chunked prefill cannot place them.
  const int32_t short_of_queries[] = {70, 24};
  cache.seqused_k = short_of_queries;
  expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE, "sequence 1 has 25 queries but only 24 keys");
  // Paged, the pages bound the keys, not cu_seqlens_k: negative is still refused.
  PagedKv pages(c, 16, 0, 2);
  sampleattn_kv_cache paged = pages.cache();
  paged.seqused_k = negative;
  const sampleattn::Params pp = pages.params(c, &paged);
  expect_refused(pp, c, SAMPLEATTN_INVALID_SHAPE, "kv_cache.seqused_k[1] = -1 is negative");
}

TEST_F(KvCacheRefused, QuantizedQueriesOrOutput) {
  Case c = two_sequences(1);
  for (auto dtype : {SAMPLEATTN_DTYPE_I8, SAMPLEATTN_DTYPE_FP8_E4M3}) {
    const std::string n = std::to_string(static_cast<int>(dtype));
    sampleattn::Params p = c.params();
    p.q.dtype = dtype;
    expect_refused(p, c, SAMPLEATTN_UNSUPPORTED_DTYPE, "q.dtype " + n + " is not f32, f16 or bf16");
    p = c.params();
    p.o.dtype = dtype;
    expect_refused(p, c, SAMPLEATTN_UNSUPPORTED_DTYPE, "o.dtype " + n + " is not f32, f16 or bf16");
  }
  // K and V take them, but nothing past them.
  sampleattn::Params p = c.params();
  p.k.dtype = static_cast<sampleattn_dtype>(5);
  expect_refused(p, c, SAMPLEATTN_UNSUPPORTED_DTYPE, "k.dtype 5 is not f32, f16, bf16, int8 or fp8 e4m3");
  // An unknown dtype is named as such even with scales beside it (not "scale of an unquantized K").
  const float scale = 1.f;
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  cache.k_scale = &scale;
  p.k.dtype = static_cast<sampleattn_dtype>(7);
  p.kv_cache = &cache;
  expect_refused(p, c, SAMPLEATTN_UNSUPPORTED_DTYPE, "k.dtype 7 is not f32, f16, bf16, int8 or fp8 e4m3");
}

// An int8 K/V case: the rows as int8 codes with per-(token, kv head) scales.
struct QuantizedKv {
  std::vector<int8_t> k, v;
  std::vector<float> k_scale, v_scale;
  explicit QuantizedKv(const Case& c) {
    const size_t n = static_cast<size_t>(c.cu_k.back()) * c.hkv * c.d;
    k.resize(n);
    v.resize(n);
    for (size_t i = 0; i < n; ++i) {
      k[i] = static_cast<int8_t>(static_cast<int>(i * 37 % 255) - 127);
      v[i] = static_cast<int8_t>(static_cast<int>(i * 91 % 255) - 127);
    }
    k_scale.assign(static_cast<size_t>(c.cu_k.back()) * c.hkv, 1.f / 64);
    v_scale.assign(k_scale.size(), 1.f / 128);
  }
  sampleattn_kv_cache cache(const Case& c) const {
    sampleattn_kv_cache cache;
    sampleattn_kv_cache_init(&cache);
    cache.k_scale = k_scale.data();
    cache.v_scale = v_scale.data();
    cache.scale_token_stride = c.hkv;
    cache.scale_head_stride = 1;
    return cache;
  }
  sampleattn::Params params(Case& c, const sampleattn_kv_cache* cache) {
    sampleattn::Params p = c.params();
    p.k.data = k.data();
    p.v.data = v.data();
    p.k.dtype = p.v.dtype = SAMPLEATTN_DTYPE_I8;
    p.kv_cache = cache;
    return p;
  }
};

TEST_F(KvCacheRefused, QuantizedWithoutItsScale) {
  Case c = two_sequences(1);
  QuantizedKv quant(c);
  sampleattn_kv_cache cache = quant.cache(c);
  sampleattn::Params p = quant.params(c, &cache);
  ASSERT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  cache.k_scale = nullptr;
  expect_refused(p, c, SAMPLEATTN_NULL_POINTER, "kv_cache.k_scale is NULL but that tensor is quantized",
                 /*plan_too=*/false);
  cache = quant.cache(c);
  cache.v_scale = nullptr;
  expect_refused(p, c, SAMPLEATTN_NULL_POINTER, "kv_cache.v_scale is NULL but that tensor is quantized",
                 /*plan_too=*/false);
  // Only V quantized: the missing scale is still V's.
  cache.k_scale = nullptr;
  p.k = c.params().k;
  expect_refused(p, c, SAMPLEATTN_NULL_POINTER, "kv_cache.v_scale is NULL but that tensor is quantized",
                 /*plan_too=*/false);
  // No kv_cache at all: no scales.
  p = quant.params(c, nullptr);
  expect_refused(p, c, SAMPLEATTN_NULL_POINTER, "kv_cache.k_scale is NULL", /*plan_too=*/false);
}

TEST_F(KvCacheRefused, ScaleOfAnUnquantizedTensor) {
  Case c = two_sequences(1);
  c.in = DType::kF16;
  c.materialize(1);
  const std::vector<float> scales(static_cast<size_t>(c.cu_k.back()) * c.hkv, 1.f);
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  cache.k_scale = scales.data();
  cache.scale_token_stride = c.hkv;
  cache.scale_head_stride = 1;
  sampleattn::Params p = c.params();
  p.kv_cache = &cache;
  expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "kv_cache.k_scale is set but that tensor is not int8 or fp8 e4m3");
  cache.k_scale = nullptr;
  cache.v_scale = scales.data();
  expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "kv_cache.v_scale is set but that tensor is not int8 or fp8 e4m3");
}

TEST_F(KvCacheRefused, NegativeScaleStrides) {
  Case c = two_sequences(1);
  QuantizedKv quant(c);
  for (int which = 0; which < 3; ++which) {
    sampleattn_kv_cache cache = quant.cache(c);
    (which == 0 ? cache.scale_token_stride : which == 1 ? cache.scale_head_stride : cache.scale_page_stride) = -1;
    const sampleattn::Params p = quant.params(c, &cache);
    SCOPED_TRACE(which);
    expect_refused(p, c, SAMPLEATTN_INVALID_SHAPE, "kv_cache scale strides must be >= 0");
  }
}

TEST_F(KvCacheRefused, NonFiniteScaleNamed) {
  Case c = two_sequences(1);
  QuantizedKv quant(c);
  const float specials[] = {std::nanf(""), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  for (float bad : specials) {
    SCOPED_TRACE(bad);
    QuantizedKv q = quant;
    q.k_scale[75 * c.hkv + 1] = bad;  // token 75: sequence 1, key 5
    sampleattn_kv_cache cache = q.cache(c);
    sampleattn::Params p = q.params(c, &cache);
    expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "non-finite value (NaN or Inf) in the scale of k[token 75, head 1]",
                   /*plan_too=*/false);
    q = quant;
    q.v_scale[3 * c.hkv] = bad;
    cache = q.cache(c);
    p = q.params(c, &cache);
    expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "the scale of v[token 3, head 0]", /*plan_too=*/false);
  }
  // fp8 with one scale per kv head (token stride 0): the first key that uses it is named.
  std::vector<uint8_t> k8(quant.k.size(), 0x38), v8(quant.v.size(), 0x30);  // 1.0 and 0.5
  const float per_head[] = {1.f, std::nanf("")};
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  cache.k_scale = per_head;
  cache.v_scale = per_head;
  cache.scale_head_stride = 1;
  sampleattn::Params p = c.params();
  p.k.data = k8.data();
  p.v.data = v8.data();
  p.k.dtype = p.v.dtype = SAMPLEATTN_DTYPE_FP8_E4M3;
  p.kv_cache = &cache;
  expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "the scale of k[token 0, head 1]", /*plan_too=*/false);
}

TEST_F(KvCacheRefused, Fp8NanCodeInTheKeysNamed) {
  Case c = two_sequences(1);
  const size_t n = static_cast<size_t>(c.cu_k.back()) * c.hkv * c.d;
  std::vector<uint8_t> k8(n, 0x38), v8(n, 0x30);
  const float per_head[] = {0.5f, 0.25f};
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  cache.k_scale = per_head;
  cache.v_scale = per_head;
  cache.scale_head_stride = 1;
  sampleattn::Params p = c.params();
  p.k.data = k8.data();
  p.v.data = v8.data();
  p.k.dtype = p.v.dtype = SAMPLEATTN_DTYPE_FP8_E4M3;
  p.kv_cache = &cache;
  ASSERT_EQ(sampleattn_forward(ctx_, &p, nullptr), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  for (uint8_t code : {uint8_t{0x7f}, uint8_t{0xff}}) {
    std::vector<uint8_t> bad = k8;
    bad[(7 * c.hkv + 1) * c.d + 3] = code;  // token 7, head 1, dim 3
    p.k.data = bad.data();
    expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "non-finite value (NaN or Inf) in k[token 7, head 1, dim 3]",
                   /*plan_too=*/false);
  }
  // Paged, the place is the sequence and the key's position in it.
  PagedKv pages(c, 16, 0, 2);
  std::vector<uint8_t> paged_k(static_cast<size_t>(pages.num_pages) * 16 * c.hkv * c.d, 0x38);
  std::vector<uint8_t> paged_v(paged_k.size(), 0x30);
  const int64_t page = pages.table[pages.table_stride + 1];  // sequence 1, keys 16..31
  paged_k[static_cast<size_t>((page * 16 + 4) * c.hkv * c.d + 9)] = 0x7f;  // key 20, head 0, dim 9
  sampleattn_kv_cache paged = pages.cache();
  paged.k_page_stride = paged.v_page_stride = int64_t{16} * c.hkv * c.d;
  paged.k_scale = paged.v_scale = per_head;
  paged.scale_head_stride = 1;
  p.k.data = paged_k.data();
  p.v.data = paged_v.data();
  p.kv_cache = &paged;
  expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "k[sequence 1, key 20, head 0, dim 9]", /*plan_too=*/false);
}

TEST_F(KvCacheRefused, PagingFieldsWithoutABlockTable) {
  Case c = two_sequences(1);
  sampleattn_kv_cache cache;
  sampleattn_kv_cache_init(&cache);
  sampleattn::Params p = c.params();
  p.kv_cache = &cache;
  cache.page_size = 16;
  expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "kv_cache.page_size and num_pages need a block_table");
  cache.page_size = 0;
  cache.num_pages = 4;
  expect_refused(p, c, SAMPLEATTN_INVALID_ARGUMENT, "kv_cache.page_size and num_pages need a block_table");
}

}  // namespace
}  // namespace sampleattn::testing
