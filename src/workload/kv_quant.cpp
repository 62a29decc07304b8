#include "workload/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace sampleattn::workload {

uint8_t fp8_e4m3_encode(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
  const float a = std::fabs(x);
  if (std::isnan(a)) return sign | 0x7f;
  // Saturation: every value at or past 448 (ties between 448 and the missing 480 included) is 448.
  if (a >= kFp8E4M3Max) return sign | 0x7e;
  if (a < 0x1p-6f) {
    // Subnormal (or zero): multiples of 2^-9. a * 2^9 is exact, and nearbyint rounds ties to
    // even in the default rounding mode; 8 is the smallest normal, 0x08, as it should be.
    return sign | static_cast<uint8_t>(std::nearbyint(a * 0x1p9f));
  }
  // Normal: keep 3 of f32's 23 mantissa bits, ties to even. The exponent field sits right above
  // the mantissa, so a carry out of the mantissa moves to the next binade by itself.
  uint32_t abits;
  std::memcpy(&abits, &a, sizeof abits);
  const int exponent = static_cast<int>(abits >> 23) - 127;  // -6 .. 8 here
  const uint32_t mantissa = abits & 0x7fffff;
  uint32_t code = (static_cast<uint32_t>(exponent + 7) << 3) | (mantissa >> 20);
  const uint32_t rest = mantissa & 0xfffff, half = 0x80000;
  if (rest > half || (rest == half && (code & 1))) ++code;
  return sign | static_cast<uint8_t>(code);  // below 448: at most 0x7e
}

float fp8_e4m3_decode(uint8_t code) {
  const bool negative = code & 0x80;
  const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
  float a;
  if (exponent == 15 && mantissa == 7) {
    a = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    a = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    a = std::ldexp(1.f + static_cast<float>(mantissa) / 8.f, exponent - 7);
  }
  return negative ? -a : a;
}

int8_t int8_encode(float x, float scale) {
  const float q = std::nearbyint(x / scale);
  return static_cast<int8_t>(std::clamp(q, -kInt8Max, kInt8Max));
}

float symmetric_scale(float max_abs, float limit) { return max_abs > 0 ? max_abs / limit : 1.f; }

namespace {

Status check_shape(const Tensor3& t) {
  if (t.seq < 0 || t.heads < 1 || t.dim < 1) return invalid_shape("quantize: an empty or negative shape");
  return Status::ok();
}

}  // namespace

Status quantize_int8(const Tensor3& t, QuantizedTensor* out) {
  SAMPLEATTN_RETURN_IF_ERROR(check_shape(t));
  out->codes.assign(static_cast<size_t>(t.num_elements()), 0);
  out->scales.assign(static_cast<size_t>(t.seq * t.heads), 1.f);
  out->scale_token_stride = t.heads;
  std::vector<float> row(static_cast<size_t>(t.dim));
  for (int64_t s = 0; s < t.seq; ++s) {
    for (int64_t h = 0; h < t.heads; ++h) {
      float max_abs = 0;
      for (int64_t i = 0; i < t.dim; ++i) {
        row[static_cast<size_t>(i)] = t.at(s, h, i);
        max_abs = std::max(max_abs, std::fabs(row[static_cast<size_t>(i)]));
      }
      const float scale = symmetric_scale(max_abs, kInt8Max);
      out->scales[static_cast<size_t>(s * t.heads + h)] = scale;
      uint8_t* codes = out->codes.data() + (s * t.heads + h) * t.dim;
      for (int64_t i = 0; i < t.dim; ++i) codes[i] = static_cast<uint8_t>(int8_encode(row[static_cast<size_t>(i)], scale));
    }
  }
  return Status::ok();
}

Status quantize_fp8_e4m3(const Tensor3& t, QuantizedTensor* out) {
  SAMPLEATTN_RETURN_IF_ERROR(check_shape(t));
  out->codes.assign(static_cast<size_t>(t.num_elements()), 0);
  out->scales.assign(static_cast<size_t>(t.heads), 0.f);
  out->scale_token_stride = 0;
  for (int64_t s = 0; s < t.seq; ++s) {
    for (int64_t h = 0; h < t.heads; ++h) {
      float& m = out->scales[static_cast<size_t>(h)];
      for (int64_t i = 0; i < t.dim; ++i) m = std::max(m, std::fabs(t.at(s, h, i)));
    }
  }
  for (float& s : out->scales) s = symmetric_scale(s, kFp8E4M3Max);
  for (int64_t s = 0; s < t.seq; ++s) {
    for (int64_t h = 0; h < t.heads; ++h) {
      const float scale = out->scales[static_cast<size_t>(h)];
      uint8_t* codes = out->codes.data() + (s * t.heads + h) * t.dim;
      for (int64_t i = 0; i < t.dim; ++i) codes[i] = fp8_e4m3_encode(t.at(s, h, i) / scale);
    }
  }
  return Status::ok();
}

Status dequantize(const QuantizedTensor& q, KvQuant kind, int64_t seq, int64_t heads, int64_t dim, Tensor3* out) {
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(seq, heads, dim, DType::kF32, out));
  if (static_cast<int64_t>(q.codes.size()) != seq * heads * dim) {
    return invalid_shape("dequantize: the codes do not fill the shape");
  }
  float* values = static_cast<float*>(out->data());
  for (int64_t s = 0; s < seq; ++s) {
    for (int64_t h = 0; h < heads; ++h) {
      const float scale = q.scales[static_cast<size_t>(s * q.scale_token_stride + h)];
      const int64_t base = (s * heads + h) * dim;
      for (int64_t i = 0; i < dim; ++i) {
        const uint8_t c = q.codes[static_cast<size_t>(base + i)];
        const float v = kind == KvQuant::kInt8 ? static_cast<float>(static_cast<int8_t>(c)) : fp8_e4m3_decode(c);
        values[base + i] = scale * v;
      }
    }
  }
  return Status::ok();
}

}  // namespace sampleattn::workload
