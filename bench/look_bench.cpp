// The look at every row (docs/ALGORITHM.md, step 5) against the library's dense attention per
// query-key pair, on one core, in the same run:
//   look/rows:R/keys:N  the active kernel table's look (simd/kernels.h, LookPath: vpdpbusd on a
//                       CPU with AVX512_VNNI): R query rows of one head, packed once, against N
//                       packed keys in the driver's 256-key tiles, 64 rows a call (as
//                       src/cpu/look.cpp runs it): the scores, then each row's band and outside
//                       maxima (row_max, the band the last 8% of the keys); counter pair_ns = ns
//                       per (row, key) pair.
//   dense/seq:N/bf16:B  sampleattn_forward, method dense, f32 inputs, one head of N causal tokens
//                       on one thread, precision F32 (B = 0) or BF16 (B = 1: bf16 products, what
//                       AUTO runs for bf16 inputs on a CPU with them); counter pair_ns = ns per
//                       causal pair.
// (Google Benchmark prints pair_ns with an "s": seconds per 1e9 pairs, i.e. ns per pair.)
// The look reads every causal pair of a sparse head, so pair_ns(look) / pair_ns(dense) is its
// cost as a share of the dense time. The table's own tests check its products
// (tests/kernels_test.cpp).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/aligned_buffer.h"
#include "sampleattn/sampleattn.h"
#include "simd/dispatch.h"

namespace {

using namespace sampleattn;

constexpr int kDim = 128;
constexpr int kRows = 64;   // rows a look call (src/cpu/look.cpp)
constexpr int kTile = 256;  // keys a score tile

std::vector<float> random_rows(int64_t rows, uint32_t seed) {
  std::vector<float> x(static_cast<size_t>(rows) * kDim);
  for (float& v : x) v = static_cast<float>((seed = seed * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
  return x;
}

void BM_Look(benchmark::State& state) {
  const LookPath& look = active_kernel_table().look;
  const int rows = static_cast<int>(state.range(0)), keys = static_cast<int>(state.range(1));
  const std::vector<float> q = random_rows(rows, 1), k = random_rows(keys, 2);
  cpu::AlignedBuffer kp = cpu::allocate_aligned(look.k_bytes(keys, kDim));
  std::vector<float> q_scales(static_cast<size_t>(rows)), k_scales(static_cast<size_t>(keys) + 64);
  look.pack_k({k.data(), DType::kF32, kDim}, keys, kDim, 1.0f, kp.get(), k_scales.data());
  // Q packed in calls of 64 rows, as the driver packs them.
  std::vector<cpu::AlignedBuffer> blocks;
  for (int r0 = 0; r0 < rows; r0 += kRows) {
    blocks.push_back(cpu::allocate_aligned(look.q_bytes(kRows, kDim)));
    look.pack_q({q.data() + static_cast<size_t>(r0) * kDim, DType::kF32, kDim}, kRows, kDim, 0.125f,
                blocks.back().get(), q_scales.data() + r0);
  }
  std::vector<float> s(static_cast<size_t>(kRows) * kTile);
  std::vector<int32_t> lo(kRows, 0), mid(kRows), hi(kRows);
  std::vector<float> outer(kRows), inner(kRows);
  const int band = keys - keys / 12;  // the last 8% of the keys: the rows' band
  for (auto _ : state) {
    for (int r0 = 0; r0 < rows; r0 += kRows) {
      std::fill(outer.begin(), outer.end(), -INFINITY);
      std::fill(inner.begin(), inner.end(), -INFINITY);
      for (int t0 = 0; t0 < keys; t0 += kTile) {
        const int n = std::min(kTile, keys - t0);
        look.scores(blocks[static_cast<size_t>(r0 / kRows)].get(), q_scales.data() + r0, kRows,
                    kp.get() + look.k_bytes(t0, kDim), k_scales.data() + t0, n, kDim, s.data(), kTile);
        std::fill(mid.begin(), mid.end(), band - t0);
        std::fill(hi.begin(), hi.end(), n);
        look.row_max(s.data(), kTile, kRows, n, lo.data(), mid.data(), hi.data(), outer.data(), inner.data());
      }
      benchmark::DoNotOptimize(outer.data());
    }
  }
  const double pairs = static_cast<double>(rows) * keys;
  state.counters["pair_ns"] = benchmark::Counter(pairs * static_cast<double>(state.iterations()) * 1e-9,
                                                 benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.SetLabel(active_kernel_table().name);
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
