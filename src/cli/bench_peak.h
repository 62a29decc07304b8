// `sampleattn bench --peak`: the machine's matrix-multiply rate in the same run, the yardstick
// for dense attention's GFLOP/s.
#pragma once

namespace sampleattn::cli {

// GFLOP/s of an OpenBLAS SGEMM of 4096^3 on `threads` threads (median of 3 after one untimed).
double sgemm_gflops(int threads);

}  // namespace sampleattn::cli
