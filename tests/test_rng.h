// The tests' fixed-seed random numbers, in a header of its own so that programs which do not link
// the internal libraries (tests/mpi) share it with tests/test_util.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sampleattn::testing {

// splitmix64: the same stream on every platform (and every MPI rank).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

}  // namespace sampleattn::testing
