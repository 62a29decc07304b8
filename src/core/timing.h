// Wall-clock seconds for the per-stage times of the statistics.
#pragma once

#include <chrono>

namespace sampleattn {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace sampleattn
