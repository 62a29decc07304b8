#include "core/input_scan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/dtype_convert.h"

namespace sampleattn {
namespace {

// Bits of an all-ones exponent (NaN or Inf) in each dtype.
template <typename Bits>
bool all_finite(const Bits* x, int n, Bits exponent) {
  Bits any = 0;
  for (int i = 0; i < n; ++i) any |= static_cast<Bits>(((x[i] & exponent) == exponent) ? 1 : 0);
  return any == 0;
}

template <DType T>
float value_at(const char* row, int i) {
  if constexpr (T == DType::kF32) {
    float x;
    std::memcpy(&x, row + 4 * i, 4);
    return x;
  } else {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    return T == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

template <DType T>
void scan_row(const char* row, int dim, float* sumsq, float* max_abs, bool* finite, int* bad_dim) {
  using Bits = std::conditional_t<T == DType::kF32, uint32_t, uint16_t>;
  constexpr Bits kExponent = static_cast<Bits>(T == DType::kF32 ? 0x7f800000u : (T == DType::kF16 ? 0x7c00u : 0x7f80u));
  *finite = all_finite<Bits>(reinterpret_cast<const Bits*>(row), dim, kExponent);
  float total = 0, most = 0;
  if constexpr (T == DType::kF16) {
    // |x| <= 65504 in f16, so no f16 row can reach the bounds of input_scan_status (65504^2 * 256
    // is far below them): only the bits need reading, and the dtype's own bounds stand in for the
    // measured ones.
    total = static_cast<float>(dim) * 65504.f * 65504.f;
    most = 65504.f;
  } else {
    // Eight independent lanes, so the compiler vectorizes the sums (head dims are multiples of 8).
    constexpr int kLanes = 8;
    float s[kLanes] = {}, m[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= dim; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float x = value_at<T>(row, i + l);
        s[l] += x * x;
        m[l] = std::max(m[l], std::fabs(x));
      }
    }
    for (; i < dim; ++i) {
      const float x = value_at<T>(row, i);
      s[0] += x * x;
      m[0] = std::max(m[0], std::fabs(x));
    }
    for (int l = 0; l < kLanes; ++l) {
      total += s[l];
      most = std::max(most, m[l]);
    }
  }
  if (!*finite) {
    for (int c = 0; c < dim; ++c) {
      if (!std::isfinite(load_scalar(row, T, c))) {
        *bad_dim = c;
        break;
      }
    }
  }
  *sumsq = total;
  *max_abs = most;
}

template <DType T>
InputScan scan(const TensorView& t, int heads, int dim, int64_t token_begin, int64_t token_end) {
  InputScan out;
  float max_sumsq = 0;
  for (int64_t tok = token_begin; tok < token_end; ++tok) {
    for (int h = 0; h < heads; ++h) {
      float sumsq, max_abs;
      bool finite;
      int bad_dim = 0;
      scan_row<T>(t.row(tok, h), dim, &sumsq, &max_abs, &finite, &bad_dim);
      if (!finite && out.bad_token < 0) {
        out.bad_token = tok;
        out.bad_head = h;
        out.bad_dim = bad_dim;
      }
      max_sumsq = std::max(max_sumsq, sumsq);
      out.max_abs = std::max(out.max_abs, max_abs);
    }
  }
  out.max_row_norm = std::sqrt(max_sumsq);
  return out;
}

std::string where(const char* name, const InputScan& s) {
  return std::string(name) + "[token " + std::to_string(s.bad_token) + ", head " + std::to_string(s.bad_head) +
         ", dim " + std::to_string(s.bad_dim) + "]";
}

}  // namespace

void InputScan::merge(const InputScan& other) {
  if (other.bad_token >= 0 && (bad_token < 0 || other.bad_token < bad_token ||
                               (other.bad_token == bad_token && other.bad_head < bad_head))) {
    bad_token = other.bad_token;
    bad_head = other.bad_head;
    bad_dim = other.bad_dim;
  }
  max_row_norm = std::max(max_row_norm, other.max_row_norm);
  max_abs = std::max(max_abs, other.max_abs);
}

InputScan scan_rows(const TensorView& t, int heads, int dim, int64_t token_begin, int64_t token_end) {
  switch (t.dtype) {
    case DType::kF32: return scan<DType::kF32>(t, heads, dim, token_begin, token_end);
    case DType::kF16: return scan<DType::kF16>(t, heads, dim, token_begin, token_end);
    case DType::kBF16: return scan<DType::kBF16>(t, heads, dim, token_begin, token_end);
  }
  return {};
}

Status input_scan_status(const Problem& p, const InputScan& q, const InputScan& k, const InputScan& v) {
  const struct {
    const char* name;
    const InputScan& scan;
  } tensors[] = {{"q", q}, {"k", k}, {"v", v}};
  for (const auto& t : tensors) {
    if (t.scan.bad_token >= 0) {
      return invalid_argument("non-finite value (NaN or Inf) in " + where(t.name, t.scan) +
                              "; inputs must be finite (docs/SECURITY.md)");
    }
  }
  // Every score is scale * q.k with |q.k| <= |q| |k|; the kernels work in log2 units (another
  // factor log2(e)) and accumulate in f32. Keep the bound below 2^100 so no score, difference of
  // scores or partial dot product overflows. Output sums are at most k_len * max|v|.
  constexpr double kScoreLimit = 0x1p100;
  const double score_bound = static_cast<double>(p.scale) * 1.4426950408889634 *
                             static_cast<double>(q.max_row_norm) * static_cast<double>(k.max_row_norm);
  if (!(score_bound < kScoreLimit)) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "inputs too large: scale * max|q| * max|k| = %.3g could overflow f32 scores "
                  "(max row norms: q %.3g, k %.3g)", score_bound, static_cast<double>(q.max_row_norm),
                  static_cast<double>(k.max_row_norm));
    return invalid_argument(buf);
  }
  int64_t max_k_len = 0;
  for (const Sequence& s : p.sequences) max_k_len = std::max(max_k_len, s.k_len);
  // ALiBi adds -slope * |p - j| (|p - j| < k_len) to a score: the same bound holds for the sum.
  double max_slope = 0;
  for (float slope : p.alibi_slopes) max_slope = std::max(max_slope, std::fabs(static_cast<double>(slope)));
  const double bias_bound = max_slope * 1.4426950408889634 * static_cast<double>(max_k_len);
  if (!(score_bound + bias_bound < kScoreLimit)) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "ALiBi slopes too large: max|slope| %.3g times %lld keys could overflow f32 scores",
                  max_slope, static_cast<long long>(max_k_len));
    return invalid_argument(buf);
  }
  if (!(static_cast<double>(v.max_abs) * static_cast<double>(std::max<int64_t>(max_k_len, 1)) < 0x1p120)) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "inputs too large: max|v| = %.3g times %lld keys could overflow f32 sums",
                  static_cast<double>(v.max_abs), static_cast<long long>(max_k_len));
    return invalid_argument(buf);
  }
  return Status::ok();
}

}  // namespace sampleattn
