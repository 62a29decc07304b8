// The AMX tile operations the amx table uses, as macros over tile numbers (the instructions name
// their tiles in the opcode, so the numbers must be literals).
//
// Written as inline assembly with a "memory" clobber rather than through GCC's <amx*intrin.h>:
// those macros have no clobber, so the compiler may move the softmax's stores of P past the tile
// load that reads them (or a load of S ahead of the tile store that writes it). The amx
// translation unit is then built with the avx512 table's flags and no -mamx-*: the class
// templates it shares with flash_avx512.cpp (softmax, score mods) compile to the same code in
// both units.
//
// With SAMPLEATTN_AMX_EMULATE (CMake option of the same name; a developer's tool, never a release
// build) the same macros run a scalar model of the tiles in thread-local memory, so that the amx
// table's layouts, strides and edge cases are testable on a CPU without AMX; the model rounds like
// the hardware where it matters to the tests (bf16 inputs, f32 accumulation), not bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

namespace sampleattn::amx_tiles {

// The 64-byte operand of ldtilecfg (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row of tile i (tiles 8..15 unused)
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

#if defined(SAMPLEATTN_AMX_EMULATE)

struct EmulatedTiles {
  TileConfig cfg;
  alignas(64) uint8_t t[8][16][64];
};
inline thread_local EmulatedTiles emulated;

inline void load_config(const TileConfig* c) {
  emulated.cfg = *c;
  std::memset(emulated.t, 0, sizeof(emulated.t));
}
inline void load(int t, const void* base, long stride) {
  for (int r = 0; r < emulated.cfg.rows[t]; ++r) {
    std::memcpy(emulated.t[t][r], static_cast<const char*>(base) + r * stride, emulated.cfg.colsb[t]);
  }
}
inline void store(int t, void* base, long stride) {
  for (int r = 0; r < emulated.cfg.rows[t]; ++r) {
    std::memcpy(static_cast<char*>(base) + r * stride, emulated.t[t][r], emulated.cfg.colsb[t]);
  }
}
inline void zero(int t) { std::memset(emulated.t[t], 0, sizeof(emulated.t[t])); }
inline float bf16_at(int t, int r, int k) {
  uint16_t h;
  std::memcpy(&h, &emulated.t[t][r][2 * k], 2);
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// C[m][n] += sum_k A[m][2k] B[k][2n] + A[m][2k+1] B[k][2n+1] (bf16 pairs, f32 C).
inline void dpbf16ps(int c, int a, int b) {
  const int rows = emulated.cfg.rows[c], cols = emulated.cfg.colsb[c] / 4, pairs = emulated.cfg.colsb[a] / 4;
  for (int m = 0; m < rows; ++m) {
    for (int n = 0; n < cols; ++n) {
      float acc;
      std::memcpy(&acc, &emulated.t[c][m][4 * n], 4);
      for (int k = 0; k < pairs; ++k) {
        acc += bf16_at(a, m, 2 * k) * bf16_at(b, k, 2 * n) + bf16_at(a, m, 2 * k + 1) * bf16_at(b, k, 2 * n + 1);
      }
      std::memcpy(&emulated.t[c][m][4 * n], &acc, 4);
    }
  }
}

// C[m][n] += sum_k sum_i s8(A[m][4k + i]) * u8(B[k][4n + i]) (int32 C): tdpbsud.
inline void dpbsud(int c, int a, int b) {
  const int rows = emulated.cfg.rows[c], cols = emulated.cfg.colsb[c] / 4, quads = emulated.cfg.colsb[a] / 4;
  for (int m = 0; m < rows; ++m) {
    for (int n = 0; n < cols; ++n) {
      int32_t acc;
      std::memcpy(&acc, &emulated.t[c][m][4 * n], 4);
      for (int k = 0; k < quads; ++k) {
        for (int i = 0; i < 4; ++i) {
          acc += static_cast<int8_t>(emulated.t[a][m][4 * k + i]) * static_cast<int32_t>(emulated.t[b][k][4 * n + i]);
        }
      }
      std::memcpy(&emulated.t[c][m][4 * n], &acc, 4);
    }
  }
}

#define SAMPLEATTN_TILE_CONFIG(cfg) ::sampleattn::amx_tiles::load_config(cfg)
#define SAMPLEATTN_TILE_LOAD(t, base, stride) ::sampleattn::amx_tiles::load(t, base, stride)
#define SAMPLEATTN_TILE_STORE(t, base, stride) ::sampleattn::amx_tiles::store(t, base, stride)
#define SAMPLEATTN_TILE_ZERO(t) ::sampleattn::amx_tiles::zero(t)
#define SAMPLEATTN_TILE_DP(c, a, b) ::sampleattn::amx_tiles::dpbf16ps(c, a, b)
#define SAMPLEATTN_TILE_DP_S8U8(c, a, b) ::sampleattn::amx_tiles::dpbsud(c, a, b)

#else

#define SAMPLEATTN_TILE_CONFIG(cfg) __asm__ volatile("ldtilecfg %0" ::"m"(*(cfg)) : "memory")
#define SAMPLEATTN_TILE_LOAD(t, base, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(static_cast<long>(stride)) : "memory")
#define SAMPLEATTN_TILE_STORE(t, base, stride) \
  __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"(static_cast<long>(stride)) : "memory")
#define SAMPLEATTN_TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
// tmm c += tmm a (rows x bf16 pairs) . tmm b (pairs x columns, each column's pair adjacent).
#define SAMPLEATTN_TILE_DP(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
// tmm c (int32) += tmm a (rows x quads of s8) . tmm b (quads x columns of 4 u8 each).
#define SAMPLEATTN_TILE_DP_S8U8(c, a, b) __asm__ volatile("tdpbsud %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

#endif

}  // namespace sampleattn::amx_tiles
