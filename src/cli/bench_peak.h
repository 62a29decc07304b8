// `sampleattn bench --peak`: the machine's matrix-multiply rate in the same run, the yardstick
// for dense attention's GFLOP/s, and its read rate over as many bytes as the K/V, the yardstick
// for decode (which reads every key once per query).
#pragma once

#include <cstdint>
#include <vector>

#include "cli/host_pool.h"

namespace sampleattn::cli {

// GFLOP/s of an OpenBLAS SGEMM of 4096^3 on `threads` threads (median of 3 after one untimed).
double sgemm_gflops(int threads);

// A plain read of `bytes` bytes by `threads` threads, each its own contiguous share: the yardstick
// for decode. The bench times one pass after each timed library call and reports bytes over the
// median pass (read_gbs), so that the call and the read see the same minutes of a shared machine's
// memory (measured apart, a minute's drift of 1.5-3x on the VMs of docs/PERF.md moved the ratio
// as much as the code did). A pass starts the pool's threads before it is timed and stops them
// after, so that no reader spins beside the library's calls; the waiting threads yield (a busy
// machine does not stall a pass on a descheduled spinner). Buffers that fit in the caches measure
// the caches, as the attention over them would.
class ReadLoop {
 public:
  ReadLoop(uint64_t bytes, int threads);  // allocates and touches the buffer (one untimed pass)
  double pass();                          // the seconds of one timed pass
  uint64_t bytes() const { return static_cast<uint64_t>(buffer_.size()) * 8; }

 private:
  struct Job {
    const uint64_t* words = nullptr;
    int64_t count = 0, shares = 1;
    struct alignas(64) Sum {
      uint64_t value = 0;
    };
    std::vector<Sum> sums;  // each share's sum (the reads are used), a cache line each
  };
  static void read_share(void* job, int64_t share);  // a SpinPool task

  std::vector<uint64_t> buffer_;
  SpinPool pool_;
  Job job_;
};

// The AMX tile product's rate on `threads` threads (tdpbf16ps, 4 independent accumulators per
// thread; median of 5 runs), or 0 where the CPU has no amx table (or its tiles are emulated).
double amx_gflops(int threads);

}  // namespace sampleattn::cli
