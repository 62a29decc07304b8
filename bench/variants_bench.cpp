// Dense attention with each model variant (issue 15) against plain causal attention on the CPU
// backend, through the public API. Each iteration times the plain call and the variant's call
// one after the other, so the ratio (counter vs_plain, the variant's median over the plain
// median) is taken in one run on this noisy machine; the iteration time reported is the
// variant's. pairs_vs_plain is the ratio of the query-key pairs the two compute.
//
//   variants_bench --benchmark_filter='/8192/'                 # softcap, alibi, sinks, window vs plain
//   variants_bench --benchmark_filter='window/32768/4096'      # a 4K model window at 32K vs causal
//
// Arguments: <variant>/seq/window_left/heads (window_left -1: none; for the window case the
// model's window, k_len - 1 = as wide as the sequence: the window code with nothing to skip).
// d = 128, f32, as many kv heads as query heads, the library's default threads.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <utility>
#include <memory>
#include <random>
#include <vector>

#include "core/mask.h"
#include "sampleattn/sampleattn.h"

namespace sampleattn {
namespace {

constexpr int kHeadDim = 128;

enum class Variant { kSoftcap, kAlibi, kSinks, kWindow };

// Q, K, V [seq, heads, kHeadDim] f32 with normal values, made once per shape.
struct Inputs {
  int heads = 0;
  std::vector<float> q, k, v, o;
};

const Inputs& inputs(int64_t seq, int heads) {
  static std::map<std::pair<int64_t, int>, std::unique_ptr<Inputs>> cache;
  std::unique_ptr<Inputs>& in = cache[{seq, heads}];
  if (!in) {
    in = std::make_unique<Inputs>();
    in->heads = heads;
    std::mt19937 rng(static_cast<unsigned>(seq));
    std::normal_distribution<float> dist(0.f, 1.f);
    const size_t n = static_cast<size_t>(seq) * heads * kHeadDim;
    for (auto* x : {&in->q, &in->k, &in->v}) {
      x->resize(n);
      for (float& e : *x) e = dist(rng);
    }
    in->o.resize(n);
  }
  return *in;
}

sampleattn_params plain_params(const Inputs& in, int64_t seq) {
  sampleattn_params p;
  sampleattn_params_init(&p);
  const int64_t row = int64_t{in.heads} * kHeadDim;
  p.q = {in.q.data(), SAMPLEATTN_DTYPE_F32, row, kHeadDim};
  p.k = {in.k.data(), SAMPLEATTN_DTYPE_F32, row, kHeadDim};
  p.v = {in.v.data(), SAMPLEATTN_DTYPE_F32, row, kHeadDim};
  p.o = {const_cast<float*>(in.o.data()), SAMPLEATTN_DTYPE_F32, row, kHeadDim};
  p.head_dim = kHeadDim;
  p.num_q_heads = p.num_kv_heads = in.heads;
  p.seqlen_q = p.seqlen_k = seq;
  return p;
}

double seconds_of(sampleattn_context* ctx, const sampleattn_params& p) {
  const auto t0 = std::chrono::steady_clock::now();
  const sampleattn_status s = sampleattn_forward(ctx, &p, nullptr);
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s == SAMPLEATTN_SUCCESS ? t : -1;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

void variant_vs_plain(benchmark::State& state, Variant variant) {
  const int64_t seq = state.range(0);
  const int64_t window_left = state.range(1);
  const int heads = static_cast<int>(state.range(2));
  const Inputs& in = inputs(seq, heads);
  const sampleattn_params plain = plain_params(in, seq);
  sampleattn_params p = plain;
  std::vector<float> slopes(static_cast<size_t>(heads));
  for (int h = 0; h < heads; ++h) slopes[h] = std::exp2(-8.f * static_cast<float>(h + 1) / static_cast<float>(heads));
  const std::vector<float> sinks(static_cast<size_t>(heads), 2.f);
  switch (variant) {
    case Variant::kSoftcap: p.softcap = 50.f; break;  // Gemma 2's attention cap
    case Variant::kAlibi: p.alibi_slopes = slopes.data(); break;
    case Variant::kSinks: p.sinks = sinks.data(); break;
    case Variant::kWindow: break;
  }
  p.window_left = window_left;

  sampleattn_context_options options;
  sampleattn_context_options_init(&options);
  options.backend = SAMPLEATTN_BACKEND_CPU;
  sampleattn_context* ctx = nullptr;
  if (sampleattn_context_create(&options, &ctx) != SAMPLEATTN_SUCCESS) {
    state.SkipWithError(sampleattn_last_error());
    return;
  }
  // One call of each first: the pool's scratch and the pages of O are then in place.
  if (seconds_of(ctx, plain) < 0 || seconds_of(ctx, p) < 0) {
    state.SkipWithError(sampleattn_last_error());
    sampleattn_context_destroy(ctx);
    return;
  }
  std::vector<double> plain_s, variant_s;
  for (auto _ : state) {
    // Alternate which runs first, so that a drift in the machine's load falls on both.
    if (plain_s.size() % 2 == 0) {
      plain_s.push_back(seconds_of(ctx, plain));
      variant_s.push_back(seconds_of(ctx, p));
    } else {
      variant_s.push_back(seconds_of(ctx, p));
      plain_s.push_back(seconds_of(ctx, plain));
    }
    state.SetIterationTime(variant_s.back());
  }
  sampleattn_context_destroy(ctx);
  const double pairs = static_cast<double>(model_pairs(seq, seq, window_left));
  state.counters["plain_s"] = median(plain_s);
  state.counters["variant_s"] = median(variant_s);
  state.counters["vs_plain"] = median(variant_s) / median(plain_s);
  state.counters["pairs_vs_plain"] = pairs / static_cast<double>(causal_pairs(seq, seq));
  state.counters["pairs_per_s"] = benchmark::Counter(pairs * heads, benchmark::Counter::kIsIterationInvariantRate);
}

void dense_8k(benchmark::internal::Benchmark* b) {
  b->Args({8192, -1, 8})->Iterations(9)->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(variant_vs_plain, softcap, Variant::kSoftcap)->Apply(dense_8k);
BENCHMARK_CAPTURE(variant_vs_plain, alibi, Variant::kAlibi)->Apply(dense_8k);
BENCHMARK_CAPTURE(variant_vs_plain, sinks, Variant::kSinks)->Apply(dense_8k);
BENCHMARK_CAPTURE(variant_vs_plain, window, Variant::kWindow)
    ->Args({8192, 8191, 8})  // the window code, nothing to skip
    ->Args({8192, 4095, 8})
    ->Iterations(9)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(variant_vs_plain, window, Variant::kWindow)
    ->Args({32768, 4095, 2})  // a 4K-key model window at 32K against full causal (2 heads: the ratio)
    ->Iterations(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sampleattn
BENCHMARK_MAIN();
