// RoPE with the convention of generator.h (Llama / Hugging Face `rotate_half`).
#include <cmath>
#include <vector>

#include "workload/generator.h"

namespace sampleattn::workload {

void apply_rope(float* data, int64_t seq, int heads, int head_dim, double base, int64_t first_position) {
  const int half = head_dim / 2;
  std::vector<double> theta(half);
  for (int i = 0; i < half; ++i) theta[i] = std::pow(base, -2.0 * i / head_dim);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < seq; ++t) {
    const double pos = static_cast<double>(first_position + t);
    for (int i = 0; i < half; ++i) {
      const double a = pos * theta[i];
      const double cs = std::cos(a), sn = std::sin(a);
      for (int h = 0; h < heads; ++h) {
        float* row = data + (t * heads + h) * head_dim;
        const double x = row[i], y = row[i + half];
        row[i] = static_cast<float>(x * cs - y * sn);
        row[i + half] = static_cast<float>(y * cs + x * sn);
      }
    }
  }
}

}  // namespace sampleattn::workload
