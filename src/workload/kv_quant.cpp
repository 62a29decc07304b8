#include "workload/kv_quant.h"

#include "core/dtype_convert.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace sampleattn::workload {

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
      for (int64_t i = 0; i < t.dim; ++i) codes[i] = f32_to_fp8_e4m3(t.at(s, h, i) / scale);
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
        const float v = kind == KvQuant::kInt8 ? static_cast<float>(static_cast<int8_t>(c)) : fp8_e4m3_to_f32(c);
        values[base + i] = scale * v;
      }
    }
  }
  return Status::ok();
}

}  // namespace sampleattn::workload
