// Does the AMX tile unit run while the AVX-512 units do? One core, a loop whose every iteration
// issues one tile step (4 tdpbf16ps on 2 A + 2 B tiles into 4 C tiles, with the step's 4 tile
// loads from L1, as the amx kernel's QK step) and/or `vectors` vectors of vector work of one kind:
//   0: 4 independent FMA chains (one FMA a cycle: bound by their latency),
//   1: the amx softmax's shape: load 16 scores, a polynomial, vscalefps, bf16 rounding,
//              store the 16 bf16 values, add into a row sum (4 chains),
//   2: the same with the bf16 values added up instead of stored,
//   3: the same with bf16 by truncation (shift + vpmovdw) instead of vcvtneps2bf16,
//   4: the same with a multiply instead of vscalefps,
//   5: 8 independent FMA chains (two FMA ports busy every cycle).
// The time per iteration (Time, ns) is the figure.
// Compare a "both" time with its "tiles" and "vector" times: max(a, b) is overlap, a + b is none
// (docs/PERF.md, 2026-12-03). Skipped where the CPU (or Linux) gives no AMX tiles.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's vscalefps intrinsic (as in flash_amx.cpp)
#endif
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <cstdint>

#include "simd/cpu_features.h"
#include "simd/flash/amx_tiles.h"

namespace {

enum Mode { kTiles = 1, kVector = 2, kBoth = 3 };
enum Work { kFma = 0, kSoftmax = 1, kSoftmaxNoStore = 2, kSoftmaxNoConvert = 3, kSoftmaxNoScalef = 4, kFma8 = 5 };

alignas(64) uint16_t a_tile[16 * 32];
alignas(64) uint16_t b_tiles[8 * 1024 + 64];
alignas(64) float scores[2048 + 64];
alignas(64) uint16_t probabilities[2048 + 64];

void configure() {
  sampleattn::amx_tiles::TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  SAMPLEATTN_TILE_CONFIG(&cfg);
  for (uint16_t& x : a_tile) x = 0x3c00;
  for (uint16_t& x : b_tiles) x = 0x3c00;
  for (float& x : scores) x = -1.0f;
  SAMPLEATTN_TILE_ZERO(4);
  SAMPLEATTN_TILE_ZERO(5);
  SAMPLEATTN_TILE_ZERO(6);
  SAMPLEATTN_TILE_ZERO(7);
}

void overlap(benchmark::State& state) {
  if (!sampleattn::cpu_features().amx_bf16 || !sampleattn::cpu_features().amx_permitted) {
    state.SkipWithError("no AMX tiles here");
    return;
  }
  const int mode = static_cast<int>(state.range(0));
  const int work = static_cast<int>(state.range(1));
  const int vectors = static_cast<int>(state.range(2));
  configure();
  __m512 acc[8];
  for (__m512& a : acc) a = _mm512_set1_ps(1.0001f);
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-7f);
  int64_t i = 0;
  for (auto _ : state) {
    if (mode & kTiles) {
      const uint16_t* kb = b_tiles + (i & 7) * 1024;
      SAMPLEATTN_TILE_LOAD(2, kb, 128);
      SAMPLEATTN_TILE_LOAD(3, kb + 32, 128);
      SAMPLEATTN_TILE_LOAD(0, a_tile, 64);
      SAMPLEATTN_TILE_DP(4, 0, 2);
      SAMPLEATTN_TILE_DP(5, 0, 3);
      SAMPLEATTN_TILE_LOAD(1, a_tile, 64);
      SAMPLEATTN_TILE_DP(6, 1, 2);
      SAMPLEATTN_TILE_DP(7, 1, 3);
    }
    if (mode & kVector) {
      if (work == kFma8) {
        for (int k = 0; k < vectors; k += 8) {
          for (int a = 0; a < 8; ++a) acc[a] = _mm512_fmadd_ps(acc[a], m, c);
        }
      } else if (work == kFma) {
        for (int k = 0; k < vectors; k += 4) {
          acc[0] = _mm512_fmadd_ps(acc[0], m, c);
          acc[1] = _mm512_fmadd_ps(acc[1], m, c);
          acc[2] = _mm512_fmadd_ps(acc[2], m, c);
          acc[3] = _mm512_fmadd_ps(acc[3], m, c);
        }
      } else {
        for (int k = 0; k < vectors; ++k) {
          const int j = (k * 16 + static_cast<int>(i & 15) * 128) & 2047;
          const __m512 x = _mm512_loadu_ps(scores + j);
          __m512 p = _mm512_fmadd_ps(x, m, c);
          p = _mm512_fmadd_ps(p, x, c);
          p = _mm512_fmadd_ps(p, x, c);
          p = work == kSoftmaxNoScalef ? _mm512_mul_ps(p, x) : _mm512_scalef_ps(p, x);
          if (work == kSoftmaxNoConvert) {
            // the upper halves of the f32 values: bf16 truncated, by a shift and a narrowing
            const __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(p), 16));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(probabilities + j), h);
          } else {
            const __m256i h = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(p));
            if (work == kSoftmaxNoStore) {
              acc[4 + (k & 3)] = _mm512_add_ps(acc[4 + (k & 3)], _mm512_castsi512_ps(_mm512_castsi256_si512(h)));
            } else {
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(probabilities + j), h);
            }
          }
          acc[k & 3] = _mm512_add_ps(acc[k & 3], p);
        }
      }
    }
    ++i;
  }
  __m512 sum = acc[0];
  for (int k = 1; k < 8; ++k) sum = _mm512_add_ps(sum, acc[k]);
  benchmark::DoNotOptimize(sum);
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"mode", "work", "vectors"});
  b->Args({kTiles, kFma, 0});
  for (const int work : {kFma, kSoftmax, kSoftmaxNoStore, kSoftmaxNoConvert, kSoftmaxNoScalef, kFma8}) {
    for (const int vectors : {12, 24, 48, 96}) {
      b->Args({kVector, work, vectors});
      b->Args({kBoth, work, vectors});
    }
  }
}
BENCHMARK(overlap)->Apply(args);

}  // namespace

BENCHMARK_MAIN();
