// Flash kernel throughput per ISA table and path: attend on one tile (FLOP/s, 4*m*n*d per call)
// and the pack costs (elements/s). Compare ratios taken in one run: the machine is noisy.
//
//   kernels_bench --benchmark_filter=attend --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// The score variants' cost (issue 15): attend_mods times plain attend and attend with a softcap,
// ALiBi or both, call by call alternately on the same tile, and reports the ratio of their CPU
// times (the `ratio` counter), which the machine's noise barely moves:
//
//   kernels_bench --benchmark_filter=attend_mods/avx512/f32 --benchmark_min_time=2
//
// Arguments: attend/<isa>/<path>/m/n/d; attend_mods/<isa>/<path>/m/n/d/causal/mods (mods: 1
// softcap, 2 ALiBi, 3 both); pack/<isa>/<path>/<which>/rows/d.
#include <benchmark/benchmark.h>

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/dtype_convert.h"
#include "core/input_scan.h"
#include "core/mask.h"
#include "core/problem.h"
#include "core/validation_units.h"
#include "simd/dispatch.h"
#include "simd/kernels.h"

namespace sampleattn {
namespace {

struct Free {
  void operator()(void* p) const { std::free(p); }
};
using Mem = std::unique_ptr<void, Free>;
Mem alloc64(size_t bytes) { return Mem(std::aligned_alloc(64, bytes < 64 ? 64 : (bytes + 63) / 64 * 64)); }

std::vector<float> random_rows(int rows, int d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows) * d);
  for (float& v : x) v = dist(rng);
  return x;
}

const FlashPath* path_of(const KernelTable* t, Precision precision) {
  return t == nullptr ? nullptr : t->path(precision);
}

// A tile of m query rows against n keys, packed once. Full: every row sees every key (span arrays
// null). Causal: the diagonal tile drivers hit, row r sees keys [0, r * n / m]; `pairs` counts
// only the pairs the mask lets through.
struct Tile {
  int m, n, d;
  Mem qp, kp, vp, scratch;
  std::vector<int32_t> hi;
  double pairs = 0;
  bool causal;
  float qk_scale = 1.0f;

  Tile(const FlashPath& path, int m_, int n_, int d_, bool causal_) : m(m_), n(n_), d(d_), hi(m_, n_), causal(causal_) {
    const std::vector<float> q = random_rows(m, d, 1), k = random_rows(n, d, 2), v = random_rows(n, d, 3);
    qp = alloc64(path.packed_bytes(m, d));
    kp = alloc64(path.packed_bytes(n, d));
    vp = alloc64(path.packed_bytes(n, d));
    scratch = alloc64(path.scratch_bytes(m, n));
    const float scale = static_cast<float>(1.4426950408889634 / std::sqrt(d));
    path.pack_q(RowSource{q.data(), DType::kF32, d, nullptr}, m, d, pack_q_scale(path, scale), qp.get());
    qk_scale = sampleattn::qk_scale(path, scale);
    path.pack_k(RowSource{k.data(), DType::kF32, d, nullptr}, n, d, kp.get());
    path.pack_v(RowSource{v.data(), DType::kF32, d, nullptr}, n, d, vp.get());
    pairs = static_cast<double>(m) * n;
    if (causal) {
      pairs = 0;
      for (int r = 0; r < m; ++r) {
        hi[r] = 1 + static_cast<int>(static_cast<int64_t>(r) * (n - 1) / (m > 1 ? m - 1 : 1));
        pairs += hi[r];
      }
    }
  }
};

// One running online-softmax state over a tile, and the args that update it.
struct TileState {
  std::vector<float> row_max, row_sum, acc;
  AttendTileArgs args;
  TileState(Tile& t, const ScoreModArgs& mod)
      : row_max(t.m, -INFINITY), row_sum(t.m, 0.0f), acc(static_cast<size_t>(t.m) * t.d, 0.0f),
        args{t.qp.get(), t.m, t.kp.get(), t.vp.get(), t.n, t.d, t.d, nullptr, t.causal ? t.hi.data() : nullptr,
             row_max.data(), row_sum.data(), acc.data(), t.scratch.get(), mod, t.qk_scale} {}
};

void attend_tile(benchmark::State& state, Isa isa, Precision precision, bool causal) {
  const FlashPath* path = path_of(kernel_table_for(isa), precision);
  if (path == nullptr) {
    state.SkipWithError("not supported on this CPU");
    return;
  }
  Tile tile(*path, static_cast<int>(state.range(0)), static_cast<int>(state.range(1)),
            static_cast<int>(state.range(2)), causal);
  TileState st(tile, {});
  for (auto _ : state) {
    path->attend(st.args);
    benchmark::DoNotOptimize(st.acc.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(4.0 * tile.pairs * tile.d * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

constexpr int kSoftcap = 1, kAlibi = 2;  // the bits of attend_mods' mods argument

// Plain attend and attend with the variants of range(4) (kSoftcap, kAlibi) on the same tile, one call of
// each per iteration, each timed on the thread's CPU clock: `ratio` is the variants' total time
// over plain's. The variants: Gemma 2's softcap of 50; ALiBi with a slope per row (8 heads of a
// kv group), the rows after the keys.
void attend_mods(benchmark::State& state, Isa isa, Precision precision) {
  const FlashPath* path = path_of(kernel_table_for(isa), precision);
  if (path == nullptr) {
    state.SkipWithError("not supported on this CPU");
    return;
  }
  Tile tile(*path, static_cast<int>(state.range(0)), static_cast<int>(state.range(1)),
            static_cast<int>(state.range(2)), state.range(3) != 0);
  const int bits = static_cast<int>(state.range(4));
  std::vector<float> slopes(tile.m);
  std::vector<int32_t> row_pos(tile.m), key_pos(tile.n);
  for (int r = 0; r < tile.m; ++r) {
    slopes[r] = static_cast<float>(std::exp2(-1.0 - r % 8) * 1.4426950408889634);
    row_pos[r] = 4096 + tile.n + r;
  }
  for (int j = 0; j < tile.n; ++j) key_pos[j] = 4096 + j;
  ScoreModArgs mod;
  if (bits & kSoftcap) mod.softcap = static_cast<float>(50.0 * 1.4426950408889634);
  if (bits & kAlibi) {
    mod.alibi = slopes.data();
    mod.row_pos = row_pos.data();
    mod.key_pos = key_pos.data();
  }
  TileState plain(tile, {}), modified(tile, mod);
  double plain_s = 0, mods_s = 0;
  for (auto _ : state) {
    const double t0 = thread_seconds();
    path->attend(plain.args);
    benchmark::ClobberMemory();
    const double t1 = thread_seconds();
    path->attend(modified.args);
    benchmark::ClobberMemory();
    plain_s += t1 - t0;
    mods_s += thread_seconds() - t1;
  }
  benchmark::DoNotOptimize(plain.acc.data());
  benchmark::DoNotOptimize(modified.acc.data());
  const double calls = static_cast<double>(state.iterations());
  state.counters["plain_us"] = 1e6 * plain_s / calls;
  state.counters["mods_us"] = 1e6 * mods_s / calls;
  state.counters["ratio"] = mods_s / plain_s;
  state.counters["FLOPS"] = benchmark::Counter(4.0 * tile.pairs * tile.d * calls / mods_s);
}

// Stage 1's score kernel (FlashPath::scores: S = Q K^T of m packed rows against n packed keys,
// cpu/sampling.cpp, one key tile at a time), into a buffer of `chunk` such tiles written in
// turn, as a chunk of sampled rows keeps its scores (chunk 1: the tile stays in L1/L2), from
// `ktiles` packed key tiles read in turn (512: 64 MB of f32 tiles, past the caches, as stage 1
// reads a sequence's packed keys; 1: the tile stays in L2).
void scores_tile(benchmark::State& state, Isa isa, Precision precision) {
  const FlashPath* path = path_of(kernel_table_for(isa), precision);
  if (path == nullptr) {
    state.SkipWithError("not supported on this CPU");
    return;
  }
  const int m = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)), d = static_cast<int>(state.range(2)),
            chunk = static_cast<int>(state.range(3)), ktiles = static_cast<int>(state.range(4));
  const std::vector<float> q = random_rows(m, d, 1), k = random_rows(n, d, 2);
  const size_t kbytes = path->packed_bytes(n, d);
  Mem qp = alloc64(path->packed_bytes(m, d)), kp = alloc64(kbytes * ktiles);
  path->pack_q({q.data(), DType::kF32, d, nullptr}, m, d, 0.1f, qp.get());
  for (int t = 0; t < ktiles; ++t) path->pack_k({k.data(), DType::kF32, d, nullptr}, n, d, static_cast<char*>(kp.get()) + t * kbytes);
  const size_t tile_floats = static_cast<size_t>(m) * n;
  std::vector<float> s(tile_floats * static_cast<size_t>(chunk), 0.f);
  int64_t at = 0, kt = 0;
  for (auto _ : state) {
    path->scores(qp.get(), m, static_cast<char*>(kp.get()) + kt * kbytes, n, d, s.data() + static_cast<size_t>(at) * tile_floats, n, 1.0f);
    at = (at + 1) % chunk;
    kt = (kt + 1) % ktiles;
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(s.data());
  state.counters["FLOPS"] = benchmark::Counter(2.0 * m * n * d * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

// Stage 1's vector passes over a key tile's scores (simd/kernels.h; cpu/sampling.cpp): which = 0,
// row_stats (each row's maximum and sum of exp2); 1, accumulate_columns (each row's
// probabilities added per column). m rows x n keys of f32 scores in L2, every row seeing every
// key; counter scores = scores a second.
void row_ops(benchmark::State& state, Isa isa) {
  const KernelTable* t = kernel_table_for(isa);
  const int which = static_cast<int>(state.range(0)), m = static_cast<int>(state.range(1)),
            n = static_cast<int>(state.range(2));
  std::vector<float> s = random_rows(m, n, 4);
  for (float& v : s) v *= 4.0f;  // scores in log2 units, a few units apart
  std::vector<int32_t> lo(m, 0), hi(m, n);
  std::vector<float> row_max(m), row_sum(m), row_scale(m, 1.0f / n), columns(n, 0.0f);
  for (auto _ : state) {
    if (which == 0) {
      std::fill(row_max.begin(), row_max.end(), -INFINITY);
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      t->row_stats(s.data(), n, m, n, lo.data(), hi.data(), row_max.data(), row_sum.data());
    } else {
      t->accumulate_columns(s.data(), n, m, n, lo.data(), hi.data(), row_max.data(), row_scale.data(), columns.data());
    }
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(row_sum.data());
  benchmark::DoNotOptimize(columns.data());
  state.counters["scores"] = benchmark::Counter(static_cast<double>(m) * n * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

// Validation's per-bucket masses (simd/kernels.h, bucket_masses; cpu/sampling.cpp): m rows x n keys
// of f32 scores in L2, each row's keys all stripe candidates, their buckets drawn at random from
// the grid's 1 .. kValidationGrid + 1 with `unused` percent of them kBucketUnused (ranked past the
// cap), in no order, as key order leaves them; counter scores = scores a second.
void bucket_masses(benchmark::State& state, Isa isa) {
  const KernelTable* t = kernel_table_for(isa);
  const int unused = static_cast<int>(state.range(0)), m = static_cast<int>(state.range(1)),
            n = static_cast<int>(state.range(2));
  std::vector<float> s = random_rows(m, n, 5);
  for (float& v : s) v *= 4.0f;
  std::mt19937 rng(11);
  std::vector<uint8_t> bucket(static_cast<size_t>(n));
  for (uint8_t& b : bucket) {
    b = static_cast<int>(rng() % 100) < unused ? kBucketUnused : static_cast<uint8_t>(1 + rng() % (kValidationGrid + 1));
  }
  std::vector<uint32_t> masses(static_cast<size_t>(m) * kValidationMassStride, 0u);
  for (auto _ : state) {
    for (int r = 0; r < m; ++r) {
      t->bucket_masses(s.data() + static_cast<size_t>(r) * n, 0, n, n, 4.0f, 1.0f / n, bucket.data(),
                       masses.data() + static_cast<size_t>(r) * kValidationMassStride);
    }
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(masses.data());
  state.counters["scores"] = benchmark::Counter(static_cast<double>(m) * n * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

// The look's packs (simd/kernels.h, LookPath: each row quantized to int8 and laid out for the
// table's look products): rows of d f32 values, K or Q; counter elements = values a second.
void look_pack(benchmark::State& state, Isa isa) {
  const LookPath& look = kernel_table_for(isa)->look;
  const bool k = state.range(0) == 1;
  const int rows = static_cast<int>(state.range(1)), d = static_cast<int>(state.range(2));
  const std::vector<float> x = random_rows(rows, d, 4);
  Mem dst = alloc64(k ? look.k_bytes(rows, d) : look.q_bytes(rows, d));
  std::vector<float> scales(static_cast<size_t>(rows) + 64);
  const RowSource src{x.data(), DType::kF32, d, nullptr};
  for (auto _ : state) {
    (k ? look.pack_k : look.pack_q)(src, rows, d, 1.0f, dst.get(), scales.data());
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  state.counters["elements"] = benchmark::Counter(static_cast<double>(rows) * d * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

// The look's products (LookPath::scores): m packed rows against a tile of n packed keys, as
// Looker::look_block runs them (64 rows, 256 keys: a K tile of 32 KiB stays in L1); counter
// pairs = query-key scores a second.
void look_scores(benchmark::State& state, Isa isa) {
  const LookPath& look = kernel_table_for(isa)->look;
  const int m = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)), d = static_cast<int>(state.range(2));
  const std::vector<float> qx = random_rows(m, d, 5), kx = random_rows(n, d, 6);
  Mem q = alloc64(look.q_bytes(m, d)), k = alloc64(look.k_bytes(n, d));
  std::vector<float> q_scales(static_cast<size_t>(m) + 64), k_scales(static_cast<size_t>(n) + 64);
  look.pack_q(RowSource{qx.data(), DType::kF32, d, nullptr}, m, d, 1.0f, q.get(), q_scales.data());
  look.pack_k(RowSource{kx.data(), DType::kF32, d, nullptr}, n, d, 1.0f, k.get(), k_scales.data());
  std::vector<float> s(static_cast<size_t>(m) * n);
  for (auto _ : state) {
    look.scores(q.get(), q_scales.data(), m, k.get(), k_scales.data(), n, d, s.data(), n);
    benchmark::DoNotOptimize(s.data());
    benchmark::ClobberMemory();
  }
  state.counters["pairs"] = benchmark::Counter(static_cast<double>(m) * n * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

enum Which { kQ = 0, kK = 1, kV = 2 };

void pack(benchmark::State& state, Isa isa, Precision precision, DType dtype) {
  const FlashPath* path = path_of(kernel_table_for(isa), precision);
  if (path == nullptr) {
    state.SkipWithError("not supported on this CPU");
    return;
  }
  const int which = static_cast<int>(state.range(0)), rows = static_cast<int>(state.range(1)),
            d = static_cast<int>(state.range(2));
  const std::vector<float> x = random_rows(rows, d, 4);
  std::vector<uint16_t> half(x.size(), 0x3c00);  // f16 1.0 / bf16 ~1.0: speed does not depend on values
  const void* base = dtype == DType::kF32 ? static_cast<const void*>(x.data()) : static_cast<const void*>(half.data());
  Mem dst = alloc64(path->packed_bytes(rows, d));
  const RowSource src{base, dtype, d, nullptr};
  for (auto _ : state) {
    switch (which) {
      case kQ: path->pack_q(src, rows, d, 0.1f, dst.get()); break;
      case kK: path->pack_k(src, rows, d, dst.get()); break;
      default: path->pack_v(src, rows, d, dst.get()); break;
    }
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  state.counters["elements"] = benchmark::Counter(static_cast<double>(rows) * d * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void register_all() {
  struct Variant {
    Isa isa;
    Precision precision;
    std::string name;  // "<isa>/<precision>"
  };
  // Every table of the ISA list and every precision it has on this CPU, best first.
  std::vector<Variant> variants;
  for (int i = kNumIsas - 1; i >= 0; --i) {
    for (int p = kNumPrecisions - 1; p >= 0; --p) {
      variants.push_back({kAllIsas[i], kAllPrecisions[p],
                          std::string(isa_name(kAllIsas[i])) + "/" + precision_name(kAllPrecisions[p])});
    }
  }
  for (const Variant& v : variants) {
    const KernelTable* t = kernel_table_for(v.isa);
    if (path_of(t, v.precision) == nullptr) continue;
    const bool scalar = v.isa == Isa::kScalar;
    auto* b = benchmark::RegisterBenchmark((std::string("attend/") + v.name).c_str(), attend_tile, v.isa, v.precision, false);
    b->ArgNames({"m", "n", "d"})->Args({t->block_rows, t->key_tile, 128});
    if (!scalar) {
      for (int m : {14, 28, 64, 128}) {
        for (int n : {64, 128, 256, 512}) {
          if (m == t->block_rows && n == t->key_tile) continue;
          b->Args({m, n, 128});
        }
      }
      for (int d : kSupportedHeadDims) {
        if (d != 128) b->Args({t->block_rows, t->key_tile, d});
      }
    }
    if (v.precision == Precision::kF32) {
      benchmark::RegisterBenchmark((std::string("look_pack/") + isa_name(v.isa)).c_str(), look_pack, v.isa)
          ->ArgNames({"k", "rows", "d"})
          ->Args({1, 2048, 128})
          ->Args({0, 64, 128});
      benchmark::RegisterBenchmark((std::string("look_scores/") + isa_name(v.isa)).c_str(), look_scores, v.isa)
          ->ArgNames({"m", "n", "d"})
          ->Args({64, 256, 128});
    }
    benchmark::RegisterBenchmark((std::string("scores/") + v.name).c_str(), scores_tile, v.isa, v.precision)
        ->ArgNames({"m", "n", "d", "chunk", "ktiles"})
        ->Args({128, t->key_tile, 128, 1, 1})
        ->Args({128, t->key_tile, 128, 128, 1})
        ->Args({64, t->key_tile, 128, 1, 1})
        ->Args({64, t->key_tile, 128, 128, 1})
        ->Args({64, t->key_tile, 128, 1, 512})
        ->Args({64, t->key_tile, 128, 128, 512})
        ->Args({128, t->key_tile, 128, 128, 512});
    if (v.precision == Precision::kF32) {
      benchmark::RegisterBenchmark((std::string("row_ops/") + isa_name(v.isa)).c_str(), row_ops, v.isa)
          ->ArgNames({"columns", "m", "n"})
          ->Args({0, 256, t->key_tile})
          ->Args({1, 256, t->key_tile});
      benchmark::RegisterBenchmark((std::string("bucket_masses/") + isa_name(v.isa)).c_str(), bucket_masses, v.isa)
          ->ArgNames({"unused", "m", "n"})
          ->Args({0, 256, t->key_tile})
          ->Args({30, 256, t->key_tile})
          ->Args({70, 256, t->key_tile});
    }
    benchmark::RegisterBenchmark((std::string("attend_causal/") + v.name).c_str(), attend_tile, v.isa, v.precision, true)
        ->ArgNames({"m", "n", "d"})
        ->Args({t->block_rows, t->block_rows, 128});
    // The table's full tile and a diagonal one, with each variant and both.
    auto* mods = benchmark::RegisterBenchmark((std::string("attend_mods/") + v.name).c_str(), attend_mods, v.isa,
                                              v.precision);
    mods->ArgNames({"m", "n", "d", "causal", "mods"});
    for (int causal : {0, 1}) {
      for (int bits : {kSoftcap, kAlibi, kSoftcap | kAlibi}) mods->Args({t->block_rows, t->key_tile, 128, causal, bits});
    }
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      if (scalar && dt != DType::kF32) continue;
      benchmark::RegisterBenchmark((std::string("pack/") + v.name + "/" + dtype_name(dt)).c_str(), pack, v.isa,
                                   v.precision, dt)
          ->ArgNames({"qkv", "rows", "d"})
          ->Args({kQ, t->block_rows, 128})
          ->Args({kK, t->key_tile, 128})
          ->Args({kV, t->key_tile, 128});
    }
  }
}

// The input policy's scan (core/input_scan.h) over `tokens` rows of 8 heads x d, with a table's
// row scan (the scalar table's is the portable definition): bytes/s. One thread; the backend
// splits it over the workers in chunks of tokens.
void input_scan(benchmark::State& state, Isa isa, DType dtype) {
  const KernelTable* t = kernel_table_for(isa);
  if (t == nullptr) {
    state.SkipWithError("CPU lacks this ISA");
    return;
  }
  const int64_t tokens = state.range(0);
  const int heads = 8, d = static_cast<int>(state.range(1));
  const std::vector<float> values = random_rows(static_cast<int>(tokens * heads), d, 7);
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) store_scalar(bytes.data(), dtype, static_cast<int64_t>(i), values[i]);
  const TensorView view{bytes.data(), dtype, int64_t{heads} * d, d};
  for (auto _ : state) {
    InputScan scan = scan_rows(view, heads, d, 0, tokens, t->scan_row);
    benchmark::DoNotOptimize(scan);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}

void register_input_scan() {
  for (int i = kNumIsas - 1; i >= 0; --i) {
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      benchmark::RegisterBenchmark((std::string("input_scan/") + isa_name(kAllIsas[i]) + "/" + dtype_name(dt)).c_str(),
                                   input_scan, kAllIsas[i], dt)
          ->ArgNames({"tokens", "d"})
          ->Args({4096, 128});
    }
  }
}

// The decode kernel (attend_rows): m query rows of each of 8 kv heads against n keys and values read
// straight from cache-shaped rows ([token, kv head, d], all 8 heads in one call, as a decode task
// runs them), in the K/V dtype; the data fit in L2, so this is the kernel's arithmetic. Counter
// `ns_per_key` (Google Benchmark prints it with an "s" suffix; the value is in nanoseconds): one
// key row of K and V of one kv head for its m rows (4 = a GQA group of 4 and one query).
// `int8_int` is int8 K/V with integer products (AttendRowsArgs::int8_products; tables with
// attend_rows_int8_products only), `int8` the same data with f32 products. With `keys` > n the
// rows come from memory: a cache of `keys` keys (32K: 64 MB of f16 K and as much V, past the L3 of
// the machines of docs/PERF.md), walked n keys a call, as a decode task walks its keys: its
// ns_per_key against the same n in L2 is what the memory's stream adds, on one core.
//
//   kernels_bench --benchmark_filter=attend_rows --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
void attend_rows(benchmark::State& state, Isa isa, DType dtype, bool integer) {
  const KernelTable* t = kernel_table_for(isa);
  if (t == nullptr) {
    state.SkipWithError("CPU lacks this ISA");
    return;
  }
  if (integer && !t->attend_rows_int8_products) {
    state.SkipWithError("no integer products in this table (CPU without AVX512_VNNI)");
    return;
  }
  const int m = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)), d = static_cast<int>(state.range(2));
  const int keys = std::max(n, static_cast<int>(state.range(3))) / n * n;  // whole calls
  const int heads = 8;
  const std::vector<float> q = random_rows(m * heads, d, 1), kf = random_rows(keys * heads, d, 2),
                           vf = random_rows(keys * heads, d, 3);
  std::vector<uint8_t> k(kf.size() * dtype_size(dtype)), v(vf.size() * dtype_size(dtype));
  std::vector<float> scales(static_cast<size_t>(keys) * heads, 0.02f);
  for (size_t i = 0; i < kf.size(); ++i) {
    if (dtype == DType::kI8) {
      k[i] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(kf[i] * 30.f)));
      v[i] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(vf[i] * 30.f)));
    } else if (dtype == DType::kFP8) {
      k[i] = f32_to_fp8_e4m3(kf[i]);
      v[i] = f32_to_fp8_e4m3(vf[i]);
    } else {
      store_scalar(k.data(), dtype, static_cast<int64_t>(i), kf[i]);
      store_scalar(v.data(), dtype, static_cast<int64_t>(i), vf[i]);
    }
  }
  std::vector<int64_t> offsets(static_cast<size_t>(keys));
  for (int j = 0; j < keys; ++j) offsets[static_cast<size_t>(j)] = int64_t{j} * heads * d;
  const float* sc = dtype == DType::kI8 || dtype == DType::kFP8 ? scales.data() : nullptr;
  Mem scratch = alloc64(t->attend_rows_scratch_bytes(m * heads, n));
  std::vector<float> row_max(static_cast<size_t>(m) * heads), row_sum(row_max.size()), acc(row_max.size() * d);
  for (auto _ : state) {
    std::fill(row_max.begin(), row_max.end(), -INFINITY);
    std::fill(row_sum.begin(), row_sum.end(), 0.f);
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int b0 = 0; b0 < keys; b0 += n) {
      const float* scb = sc != nullptr ? sc + b0 : nullptr;  // [kv head][key], scale_head_step = keys
      const bool finite = t->attend_rows({.q = q.data(), .m = m, .k = {k.data(), dtype, 0, offsets.data() + b0, scb},
                                          .v = {v.data(), dtype, 0, offsets.data() + b0, scb}, .n = n, .d = d, .dv = d,
                                          .lo = nullptr, .hi = nullptr, .row_max = row_max.data(),
                                          .row_sum = row_sum.data(), .acc = acc.data(),
                                          .scratch = static_cast<float*>(scratch.get()), .mod = {}, .heads = heads,
                                          .k_head_step = d, .v_head_step = d, .scale_head_step = keys,
                                          .int8_products = integer, .same_q = b0 > 0,
                                          .next_k = {k.data(), dtype, 0, offsets.data() + b0 + n, scb},
                                          .next_n = b0 + n < keys ? n : 0});
      benchmark::DoNotOptimize(finite);
    }
    benchmark::DoNotOptimize(acc.data());
  }
  state.counters["ns_per_key"] =
      benchmark::Counter(static_cast<double>(keys) * heads * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetItemsProcessed(state.iterations() * keys * heads);
}

void register_attend_rows() {
  for (int i = kNumIsas - 1; i >= 0; --i) {
    for (auto [dt, integer] : {std::pair{DType::kF16, false}, std::pair{DType::kBF16, false}, std::pair{DType::kI8, false},
                               std::pair{DType::kI8, true}, std::pair{DType::kFP8, false}, std::pair{DType::kF32, false}}) {
      const std::string name = std::string("attend_rows/") + isa_name(kAllIsas[i]) + "/" + dtype_name(dt) + (integer ? "_int" : "");
      benchmark::RegisterBenchmark(name.c_str(), attend_rows, kAllIsas[i], dt, integer)
          ->ArgNames({"m", "n", "d", "keys"})
          ->Args({4, 64, 128, 0})
          ->Args({16, 64, 128, 0})
          ->Args({4, 128, 128, 0})
          ->Args({4, 256, 128, 0})
          ->Args({4, 64, 128, 32768})    // from memory
          ->Args({4, 128, 128, 32768});  // the driver's block (kDecodeBlock)
    }
  }
}

}  // namespace
}  // namespace sampleattn

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  sampleattn::register_all();
  sampleattn::register_input_scan();
  sampleattn::register_attend_rows();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
