// `sampleattn bench --peak`: the machine's matrix-multiply rate in the same run, the yardstick
// for dense attention's GFLOP/s, and its read rate over as many bytes as the K/V, the yardstick
// for decode (which reads every key once per query).
#pragma once

#include <cstdint>

namespace sampleattn::cli {

// GFLOP/s of an OpenBLAS SGEMM of 4096^3 on `threads` threads (median of 3 after one untimed).
double sgemm_gflops(int threads);

// GB/s (1e9 bytes) of `threads` threads reading `bytes` bytes once, each its own contiguous share,
// on a pool started beforehand (no thread start is timed) whose waiting threads yield (a busy
// machine does not stall a pass on a descheduled spinner): the median of 7 passes after one untimed.
// Buffers that fit in the caches measure the caches, as the attention over them would.
double read_gbs(uint64_t bytes, int threads);

// The AMX tile product's rate on `threads` threads (tdpbf16ps, 4 independent accumulators per
// thread; median of 5 runs), or 0 where the CPU has no amx table (or its tiles are emulated).
double amx_gflops(int threads);

}  // namespace sampleattn::cli
