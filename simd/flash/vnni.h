// The AVX512_VNNI products in inline assembly: vpdpwssd (pairs of int16) and vpdpbusd (quads of
// u8 x s8), each adding into its accumulator in place. GCC 12 compiles _mm512_dpwssd_epi32 /
// _mm512_dpbusd_epi32 in a loop of many accumulators with a register copy of the accumulator
// around most products and, past about 20 live vectors, stack spills: the look's 8 x 2 block
// (look_block_vnni, flash_avx512.cpp) ran 16 products, 30 register moves and 2 stores to the
// stack a step (perf annotate, 2026-12-07); the decode kernel's value sums likewise
// (kernels_bench int8_int 22.9 -> 22.1 ns a key). Templates, so that a unit compiled without
// AVX-512 (whose "v" registers are 256 bits) never checks their operands: only the avx512 unit
// instantiates them.
#pragma once

#include <cstdint>

namespace sampleattn::flash::vnni {

// acc + the pairwise int16 products of a and b (vpdpwssd).
template <class Zmm>
inline Zmm dpwssd(Zmm acc, Zmm a, Zmm b) {
  asm("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
// The same with b the int16 pair at `pair` in every lane, broadcast by the instruction's load.
template <class Zmm>
inline Zmm dpwssd(Zmm acc, Zmm a, const int16_t* pair) {
  asm("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*reinterpret_cast<const int32_t*>(pair)));
  return acc;
}
// acc + the products of a's u8 quads with b's int8 quads (vpdpbusd).
template <class Zmm>
inline Zmm dpbusd(Zmm acc, Zmm a, Zmm b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

}  // namespace sampleattn::flash::vnni
