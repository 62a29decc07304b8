#include "core/input_scan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
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

// The square rounded on its own (RowScan::sumsq), never fused with the add that follows: a build
// with FMA enabled everywhere (-march=native) would otherwise contract x * x + s.
inline float square(float x) {
  float sq = x * x;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(sq));
#endif
  return sq;
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

// Quantized rows: int8 needs no reading (|x| <= 127 and no NaN); fp8 e4m3's only non-finite codes
// are 0x7f and 0xff (|x| <= 448 otherwise). The bounds are the dtype's, as for f16 above; the
// row's scale multiplies them.
template <DType T>
void scan_quantized_row(const char* row, int dim, float* sumsq, float* max_abs, bool* finite, int* bad_dim) {
  constexpr float kMax = T == DType::kI8 ? 127.f : 448.f;
  *finite = true;
  if constexpr (T == DType::kFP8) {
    const auto* b = reinterpret_cast<const uint8_t*>(row);
    uint8_t nan = 0;
    for (int i = 0; i < dim; ++i) nan |= static_cast<uint8_t>((b[i] & 0x7fu) == 0x7fu);
    if (nan != 0) {
      *finite = false;
      for (int i = 0; i < dim; ++i) {
        if ((b[i] & 0x7fu) == 0x7fu) {
          *bad_dim = i;
          break;
        }
      }
    }
  }
  *sumsq = static_cast<float>(dim) * kMax * kMax;
  *max_abs = kMax;
}

template <DType T>
void scan_any_row(RowScanFn* scan_row, const char* row, int dim, float* sumsq, float* max_abs, bool* finite,
                  int* bad_dim) {
  if constexpr (T == DType::kI8 || T == DType::kFP8) {
    scan_quantized_row<T>(row, dim, sumsq, max_abs, finite, bad_dim);
  } else {
    const RowScan r = scan_row(row, T, dim);
    *sumsq = r.sumsq;
    *max_abs = r.max_abs;
    *finite = r.finite;
    *bad_dim = r.bad_dim;
  }
}

template <class F>
InputScan with_scan_dtype(DType t, F&& f) {
  switch (t) {
    case DType::kF32: return f(std::integral_constant<DType, DType::kF32>{});
    case DType::kF16: return f(std::integral_constant<DType, DType::kF16>{});
    case DType::kBF16: return f(std::integral_constant<DType, DType::kBF16>{});
    case DType::kI8: return f(std::integral_constant<DType, DType::kI8>{});
    case DType::kFP8: return f(std::integral_constant<DType, DType::kFP8>{});
  }
  return {};
}

template <DType T>
InputScan scan(RowScanFn* scan_row, const TensorView& t, int heads, int dim, int64_t token_begin, int64_t token_end) {
  InputScan out;
  float max_sumsq = 0;
  for (int64_t tok = token_begin; tok < token_end; ++tok) {
    for (int h = 0; h < heads; ++h) {
      float sumsq, max_abs;
      bool finite;
      int bad_dim = 0;
      scan_any_row<T>(scan_row, t.row(tok, h), dim, &sumsq, &max_abs, &finite, &bad_dim);
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
  const std::string at = std::string(name) +
                         (s.bad_sequence < 0 ? "[token " + std::to_string(s.bad_token)
                                             : "[sequence " + std::to_string(s.bad_sequence) + ", key " +
                                                   std::to_string(s.bad_token)) +
                         ", head " + std::to_string(s.bad_head);
  return s.bad_dim < 0 ? "the scale of " + at + "]" : at + ", dim " + std::to_string(s.bad_dim) + "]";
}

}  // namespace

void InputScan::merge(const InputScan& other) {
  const auto key = [](const InputScan& s) { return std::make_tuple(s.bad_sequence, s.bad_token, s.bad_head); };
  if (other.bad_token >= 0 && (bad_token < 0 || key(other) < key(*this))) {
    bad_sequence = other.bad_sequence;
    bad_token = other.bad_token;
    bad_head = other.bad_head;
    bad_dim = other.bad_dim;
  }
  max_row_norm = std::max(max_row_norm, other.max_row_norm);
  max_abs = std::max(max_abs, other.max_abs);
}

RowScan scan_row_portable(const void* data, DType dtype, int dim) {
  const char* row = static_cast<const char*>(data);
  RowScan r;
  const auto scan = [&](auto dt) {
    constexpr DType T = decltype(dt)::value;
    using Bits = std::conditional_t<T == DType::kF32, uint32_t, uint16_t>;
    constexpr Bits kExponent = static_cast<Bits>(T == DType::kF32 ? 0x7f800000u : (T == DType::kF16 ? 0x7c00u : 0x7f80u));
    r.finite = all_finite<Bits>(reinterpret_cast<const Bits*>(row), dim, kExponent);
    if constexpr (T == DType::kF16) {
      // |x| <= 65504 in f16, so no f16 row can reach the bounds of input_scan_status (65504^2 * 256
      // is far below them): only the bits need reading, and the dtype's own bounds stand in for the
      // measured ones.
      r.sumsq = static_cast<float>(dim) * 65504.f * 65504.f;
      r.max_abs = 65504.f;
    } else {
      // Eight lanes (RowScan::sumsq says in which order), which the vector versions follow.
      constexpr int kLanes = 8;
      float s[kLanes] = {}, m[kLanes] = {};
      int i = 0;
      for (; i + kLanes <= dim; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const float x = value_at<T>(row, i + l);
          s[l] += square(x);
          m[l] = std::max(m[l], std::fabs(x));
        }
      }
      for (; i < dim; ++i) {
        const float x = value_at<T>(row, i);
        s[0] += square(x);
        m[0] = std::max(m[0], std::fabs(x));
      }
      for (int l = 0; l < kLanes; ++l) {
        r.sumsq += s[l];
        r.max_abs = std::max(r.max_abs, m[l]);
      }
    }
    if (!r.finite) {
      for (int c = 0; c < dim; ++c) {
        if (!std::isfinite(load_scalar(row, T, c))) {
          r.bad_dim = c;
          break;
        }
      }
    }
  };
  switch (dtype) {
    case DType::kF32: scan(std::integral_constant<DType, DType::kF32>{}); break;
    case DType::kF16: scan(std::integral_constant<DType, DType::kF16>{}); break;
    case DType::kBF16: scan(std::integral_constant<DType, DType::kBF16>{}); break;
    case DType::kI8:
    case DType::kFP8: break;  // not rows of this kind (scan_kv_rows)
  }
  return r;
}

InputScan scan_rows(const TensorView& t, int heads, int dim, int64_t token_begin, int64_t token_end,
                    RowScanFn* scan_row) {
  return with_scan_dtype(t.dtype, [&](auto dt) {
    return scan<decltype(dt)::value>(scan_row, t, heads, dim, token_begin, token_end);
  });
}

// Scales per scan_row call (its dim is an int).
constexpr int64_t kScaleRow = int64_t{1} << 20;

InputScan scan_kv_rows(const Problem& p, bool values, int seq, int64_t key_begin, int64_t key_end, bool read_values,
                       RowScanFn* scan_row) {
  const TensorView& t = values ? p.v : p.k;
  const float* scales = values ? p.kv.v_scale : p.kv.k_scale;
  const int dim = values ? p.head_dim_v : p.head_dim;
  const int esize = dtype_size(t.dtype);
  return with_scan_dtype(t.dtype, [&](auto dt) {
    constexpr DType T = decltype(dt)::value;
    InputScan out;
    float max_sumsq = 0;
    // The bound of a value the attention checks as it reads it (read_values false): f16, int8 and
    // fp8 count with their dtype's bound; f32 and bf16 with nothing here (the attention's largest
    // magnitudes complete their bounds, AttendRowsArgs::k_max_abs).
    constexpr float kMax = T == DType::kF16 ? 65504.f : T == DType::kI8 ? 127.f : T == DType::kFP8 ? 448.f : 0.f;
    if (!read_values && key_begin < key_end) {
      // Only the scales to read (the values count with their dtype's bound, below): a row's
      // bounds grow with its |scale|, so the largest scale gives the largest bounds (the same
      // floats as the loop below, which runs only to name a non-finite scale). A page run's scales
      // follow at the token stride.
      float max_scale = 1.f;
      bool finite = true;
      if (scales != nullptr) {
        max_scale = 0.f;
        // Contiguous scales go through scan_row as f32 rows (vectors; NaN left out of the
        // maximum, as here); strided ones in eight lanes (one chain of maxima would wait on
        // itself every scale).
        const auto see_row = [&](const float* x, int64_t n) {
          for (int64_t i = 0; i < n; i += kScaleRow) {
            const RowScan r = scan_row(x + i, DType::kF32, static_cast<int>(std::min(kScaleRow, n - i)));
            max_scale = std::max(max_scale, r.max_abs);
            finite = finite && r.finite;
          }
        };
        constexpr int kLanes = 8;
        float lane_max[kLanes] = {};
        bool lane_finite = true;
        const auto see_strided = [&](const float* x, int64_t n, int64_t stride) {
          int64_t i = 0;
          for (; i + kLanes <= n; i += kLanes) {
            for (int l = 0; l < kLanes; ++l) {
              const float a = std::fabs(x[(i + l) * stride]);
              lane_max[l] = a > lane_max[l] ? a : lane_max[l];
              lane_finite = lane_finite & (a <= std::numeric_limits<float>::max());
            }
          }
          for (; i < n; ++i) {
            const float a = std::fabs(x[i * stride]);
            lane_max[0] = a > lane_max[0] ? a : lane_max[0];
            lane_finite = lane_finite & (a <= std::numeric_limits<float>::max());
          }
        };
        const int64_t step = p.kv.scale_token_stride, head_step = p.kv.scale_head_stride;
        const int heads = p.num_kv_heads;
        // A run's scales as one array when its keys' kv heads share their pages and sit side by
        // side ([token][kv head], as packed caches and vLLM's pages keep them).
        const bool together = (!p.kv.paged() || p.kv.table_head_stride == 0) && head_step == 1 && step == heads;
        for (int64_t j = key_begin; j < key_end;) {
          const int64_t run = std::min(p.kv.run_from(j), key_end - j);
          if (together) {
            see_row(scales + p.kv_row(seq, j, 0).scale, run * heads);
          } else {
            for (int h = 0; h < heads; ++h) see_strided(scales + p.kv_row(seq, j, h).scale, run, step);
          }
          j += run;
        }
        for (int l = 0; l < kLanes; ++l) max_scale = std::max(max_scale, lane_max[l]);
        finite = finite && lane_finite;
      }
      if (finite) {
        const float sumsq = static_cast<float>(dim) * kMax * kMax;
        out.max_abs = kMax * max_scale;
        out.max_row_norm = std::sqrt(sumsq * (max_scale * max_scale));
        return out;
      }
    }
    for (int64_t j = key_begin; j < key_end; ++j) {
      for (int h = 0; h < p.num_kv_heads; ++h) {
        const KvRow at = p.kv_row(seq, j, h);
        float sumsq, max_abs;
        bool finite;
        int bad_dim = 0;
        if (read_values) {
          scan_any_row<T>(scan_row, static_cast<const char*>(t.data) + (values ? at.v : at.k) * esize, dim, &sumsq,
                          &max_abs, &finite, &bad_dim);
        } else {
          sumsq = static_cast<float>(dim) * kMax * kMax;
          max_abs = kMax;
          finite = true;
        }
        if (scales != nullptr) {  // a quantized row: its values times its scale
          const float scale = std::fabs(scales[at.scale]);
          if (!std::isfinite(scale)) {
            finite = false;
            bad_dim = -1;  // the scale itself
          }
          sumsq *= scale * scale;
          max_abs *= scale;
        }
        if (!finite && out.bad_token < 0) {
          // Packed K/V name the token (as Q does); paged ones the sequence and key position.
          out.bad_sequence = p.paged() ? seq : -1;
          out.bad_token = p.paged() ? j : p.sequences[seq].k_begin + j;
          out.bad_head = h;
          out.bad_dim = bad_dim;
        }
        max_sumsq = std::max(max_sumsq, sumsq);
        out.max_abs = std::max(out.max_abs, max_abs);
      }
    }
    out.max_row_norm = std::sqrt(max_sumsq);
    return out;
  });
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
