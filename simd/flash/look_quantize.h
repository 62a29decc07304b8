// The look's quantization (simd/kernels.h, LookPath; docs/ALGORITHM.md, step 5), one definition
// for every table: a row of d f32 values to integers in [-127, 127], written as f32, and the
// row's scale absmax / 127 (0 for a row of zeros). Plain IEEE operations in a fixed order, so
// every table gets the same integers from the same row; the CUDA backend's look restates it.
// `static`: each translation unit gets its own copy, compiled with its own flags (no inline
// function is shared between units built for different ISAs).
#pragma once

#include <cmath>

namespace sampleattn::flash {

static inline float look_quantize(const float* x, int d, float* out) {
  float amax = 0.f;
  for (int i = 0; i < d; ++i) amax = std::fabs(x[i]) > amax ? std::fabs(x[i]) : amax;
  if (!(amax > 0.f) || !std::isfinite(amax)) {
    for (int i = 0; i < d; ++i) out[i] = 0.f;
    return 0.f;
  }
  const float inv = 127.f / amax;
  for (int i = 0; i < d; ++i) {
    const float v = std::nearbyint(x[i] * inv);
    out[i] = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
  }
  return amax / 127.f;
}

}  // namespace sampleattn::flash
