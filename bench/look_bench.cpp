// What would a look at every row cost (issue 11, docs/ACCURACY.md "A third training")? The look
// estimates each row's largest score outside its mask with int8 Q and K: products only, no exp,
// no values. This measures its floor on one core against the library's own dense attention per
// query-key pair, in the same run:
//   look/rows:R/keys:N  an AVX-512 VNNI kernel (vpdpbusd, 64 int8 products an instruction):
//                       R int8 rows (s8, per-row scales) against N int8 keys (u8 with a +128
//                       offset, per-key scales, packed 16 keys x 4 bytes a vector), every row's
//                       largest scaled product; counter pair_ns = ns per (row, key) pair.
//   dense/seq:N/bf16:B  sampleattn_forward, method dense, f32 inputs, one head of N causal tokens
//                       on one thread, precision F32 (B = 0) or BF16 (B = 1: bf16 products, what
//                       AUTO runs for bf16 inputs on a CPU with them); counter pair_ns = ns per
//                       causal pair.
// (Google Benchmark prints pair_ns with an "s": seconds per 1e9 pairs, i.e. ns per pair.)
// pair_ns(look) / pair_ns(dense) times the share of pairs the look reads (those outside the
// window band, about 0.7-0.8) is its cost as a share of the dense time. Skipped without
// AVX-512 VNNI.
// GCC 12 reports _mm512_undefined_* inside its own intrinsic headers as (maybe-)uninitialized
// (GCC bug 105593); the pragma must precede the first include of those headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "sampleattn/sampleattn.h"
#include "simd/cpu_features.h"

namespace {

constexpr int kDim = 128;
constexpr int kRowTile = 8;   // rows a tile (8 x 2 accumulators of 16 keys)
constexpr int kKeyTile = 32;  // keys a tile

struct LookData {
  std::vector<int8_t> q;       // [rows][kDim], s8
  std::vector<int32_t> q_fix;  // per row: 128 * sum(q), the +128 offset of the keys to take off
  std::vector<float> q_scale;
  std::vector<uint8_t> k;      // packed: [key / 16][kDim / 4][16 keys][4 bytes], u8 = s8 + 128
  std::vector<float> k_scale;
  std::vector<float> row_max;
};

LookData make_data(int rows, int keys) {
  LookData d;
  uint32_t state = 12345;
  auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return static_cast<int8_t>(static_cast<int>(state >> 24) - 128);
  };
  d.q.resize(static_cast<size_t>(rows) * kDim);
  d.q_fix.resize(rows);
  d.q_scale.assign(rows, 0.01f);
  for (int r = 0; r < rows; ++r) {
    int32_t sum = 0;
    for (int i = 0; i < kDim; ++i) sum += d.q[static_cast<size_t>(r) * kDim + i] = next();
    d.q_fix[r] = 128 * sum;
  }
  d.k.resize(static_cast<size_t>(keys) * kDim);
  d.k_scale.assign(keys, 0.02f);
  for (int j = 0; j < keys; ++j)
    for (int i = 0; i < kDim; ++i)
      d.k[((static_cast<size_t>(j / 16) * (kDim / 4) + i / 4) * 16 + j % 16) * 4 + i % 4] =
          static_cast<uint8_t>(next() + 128);
  d.row_max.resize(rows);
  return d;
}

// Rows [r0, r0 + 8) against keys [0, keys): each row's largest k_scale * (q . k) (the row's own
// scale, positive, is applied once after).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void look_tile(const LookData& d, int r0, int keys,
                                                                       float* row_max) {
  __m512 best[kRowTile];
  for (auto& b : best) b = _mm512_set1_ps(-INFINITY);
  const int8_t* q = d.q.data() + static_cast<size_t>(r0) * kDim;
  for (int j0 = 0; j0 < keys; j0 += kKeyTile) {
    __m512i acc[kRowTile][2];
    for (auto& row : acc) row[0] = row[1] = _mm512_setzero_si512();
    const auto* k0 = reinterpret_cast<const __m512i*>(d.k.data() + static_cast<size_t>(j0) * kDim);
    const auto* k1 = k0 + kDim / 4;
    for (int s = 0; s < kDim / 4; ++s) {
      const __m512i a = _mm512_loadu_si512(k0 + s), b = _mm512_loadu_si512(k1 + s);
      for (int r = 0; r < kRowTile; ++r) {
        int32_t q4;
        std::memcpy(&q4, q + r * kDim + 4 * s, sizeof q4);
        const __m512i qv = _mm512_set1_epi32(q4);
        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], a, qv);
        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], b, qv);
      }
    }
    const __m512 s0 = _mm512_loadu_ps(d.k_scale.data() + j0), s1 = _mm512_loadu_ps(d.k_scale.data() + j0 + 16);
    for (int r = 0; r < kRowTile; ++r) {
      const __m512i fix = _mm512_set1_epi32(d.q_fix[r0 + r]);
      const __m512 e0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][0], fix)), s0);
      const __m512 e1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][1], fix)), s1);
      best[r] = _mm512_max_ps(best[r], _mm512_max_ps(e0, e1));
    }
  }
  for (int r = 0; r < kRowTile; ++r) row_max[r] = _mm512_reduce_max_ps(best[r]) * d.q_scale[r0 + r];
}

// The kernel against a scalar restatement on a few rows: the figure is only worth quoting if the
// products are right.
bool look_is_right(const LookData& d, int keys) {
  std::vector<float> got(kRowTile);
  look_tile(d, 0, keys, got.data());
  for (int r = 0; r < kRowTile; ++r) {
    float best = -INFINITY;
    for (int j = 0; j < keys; ++j) {
      int32_t dot = 0;
      for (int i = 0; i < kDim; ++i) {
        const int kv = d.k[((static_cast<size_t>(j / 16) * (kDim / 4) + i / 4) * 16 + j % 16) * 4 + i % 4] - 128;
        dot += d.q[static_cast<size_t>(r) * kDim + i] * kv;
      }
      best = std::max(best, static_cast<float>(dot) * d.k_scale[j]);
    }
    if (got[r] != best * d.q_scale[r]) return false;
  }
  return true;
}

void BM_Look(benchmark::State& state) {
  if (!sampleattn::cpu_features().avx512_vnni) {
    state.SkipWithError("no AVX-512 VNNI");
    return;
  }
  const int rows = static_cast<int>(state.range(0)), keys = static_cast<int>(state.range(1));
  LookData d = make_data(rows, keys);
  if (!look_is_right(d, keys)) {
    state.SkipWithError("the kernel disagrees with the scalar products");
    return;
  }
  for (auto _ : state) {
    for (int r0 = 0; r0 < rows; r0 += kRowTile) look_tile(d, r0, keys, d.row_max.data() + r0);
    benchmark::DoNotOptimize(d.row_max.data());
  }
  const double pairs = static_cast<double>(rows) * keys;
  state.counters["pair_ns"] = benchmark::Counter(pairs * static_cast<double>(state.iterations()) * 1e-9,
                                                 benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Look)->Name("look")->ArgNames({"rows", "keys"})->Args({256, 8192})->Args({1024, 16384})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Dense(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> q(static_cast<size_t>(n) * kDim), k(q.size()), v(q.size()), o(q.size());
  uint32_t s = 7;
  for (std::vector<float>* t : {&q, &k, &v})
    for (float& x : *t) x = static_cast<float>((s = s * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
  sampleattn_context_options opts;
  sampleattn_context_options_init(&opts);
  opts.num_threads = 1;
  sampleattn_context* ctx = nullptr;
  if (sampleattn_context_create(&opts, &ctx) != SAMPLEATTN_SUCCESS) {
    state.SkipWithError(sampleattn_last_error());
    return;
  }
  sampleattn_params p;
  sampleattn_params_init(&p);
  p.q = {q.data(), SAMPLEATTN_DTYPE_F32, kDim, kDim};
  p.k = {k.data(), SAMPLEATTN_DTYPE_F32, kDim, kDim};
  p.v = {v.data(), SAMPLEATTN_DTYPE_F32, kDim, kDim};
  p.o = {o.data(), SAMPLEATTN_DTYPE_F32, kDim, kDim};
  p.head_dim = kDim;
  p.num_q_heads = p.num_kv_heads = 1;
  p.seqlen_q = p.seqlen_k = n;
  p.precision = state.range(1) ? SAMPLEATTN_PRECISION_BF16 : SAMPLEATTN_PRECISION_F32;
  for (auto _ : state) {
    if (sampleattn_forward(ctx, &p, nullptr) != SAMPLEATTN_SUCCESS) {
      state.SkipWithError(sampleattn_last_error());
      break;
    }
  }
  sampleattn_context_destroy(ctx);
  const double pairs = static_cast<double>(n) * static_cast<double>(n + 1) / 2;
  state.counters["pair_ns"] = benchmark::Counter(pairs * static_cast<double>(state.iterations()) * 1e-9,
                                                 benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Dense)->Name("dense")->ArgNames({"seq", "bf16"})->Args({8192, 0})->Args({8192, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
