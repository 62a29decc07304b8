// The look's int8 layouts of the avx512 table with VNNI and of the amx table (simd/kernels.h,
// LookPath), one definition for flash_avx512.cpp (vpdpbusd) and flash_amx.cpp (int8 tiles), which
// are built with the same flags:
//   Q: [m][d] s8 rows, then int32 fix[m] = 128 * (sum of the row) at fix_offset(m, d).
//   K: [ceil(n/32) * 2][d/4][16][4] u8 = s8 + 128: groups of 16 keys, each key's 4 consecutive
//      dimensions adjacent (one zmm, or one 64-byte row of a B tile, is 16 keys x 4 dimensions);
//      padding keys up to a multiple of 32 are 128 (0), their scales 0.
// u8 x s8 products summed in int32: acc = qi . (ki + 128) = qi . ki + fix, exact.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sampleattn::flash::look_layout {

static constexpr int kGroup = 16;  // keys a group
static constexpr int kStep = 32;   // keys a kernel step (two groups); K is padded to it

static constexpr size_t round64(size_t bytes) { return (bytes + 63) / 64 * 64; }
static constexpr size_t fix_offset(int m, int d) { return round64(static_cast<size_t>(m) * d); }
static constexpr size_t q_bytes(int m, int d) { return fix_offset(m, d) + round64(static_cast<size_t>(m) * sizeof(int32_t)); }
static constexpr size_t k_bytes(int n, int d) {
  return (static_cast<size_t>(n) + kStep - 1) / kStep * kStep * static_cast<size_t>(d);
}

}  // namespace sampleattn::flash::look_layout
