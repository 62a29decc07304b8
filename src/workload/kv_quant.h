// Quantized KV caches as engines store them (sampleattn_kv_cache, ABI 1.4): int8 with one scale
// per (token, kv head), and OCP fp8 e4m3fn with one scale per kv head; a stored x stands for
// scale * x. The encoders are exact (round to nearest, ties to even), so that tests and the bench
// build the same bytes an engine would, and the decoders give the values the oracle must see.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "workload/npy.h"

namespace sampleattn::workload {

inline constexpr float kInt8Max = 127.f;
inline constexpr float kFp8E4M3Max = 448.f;

// fp8 e4m3fn codes: f32_to_fp8_e4m3 and fp8_e4m3_to_f32 of core/dtype_convert.h.

// int8: round(x / scale) to nearest, ties to even, clamped to [-127, 127].
int8_t int8_encode(float x, float scale);
// The symmetric scale of values whose largest magnitude is max_abs: max_abs / limit, or 1 when
// max_abs is 0 (every value then encodes to 0; a scale must be finite and is never 0).
float symmetric_scale(float max_abs, float limit);

// A tensor [seq, heads, dim] quantized: codes in the same layout (one byte each), scales as the
// scheme says. Decoding code c of (t, h) gives scales[t * scale_token_stride + h] * value(c) in f32.
struct QuantizedTensor {
  std::vector<uint8_t> codes;  // int8 codes as their two's complement bytes, or fp8 codes
  std::vector<float> scales;
  int64_t scale_token_stride = 0;  // int8: heads (one scale per token and head); fp8: 0 (per head)
};

// int8 per (token, head): scale = max |x| over the head's row / 127. Any input dtype.
Status quantize_int8(const Tensor3& t, QuantizedTensor* out);
// fp8 e4m3fn per head: scale = max |x| over all of the head's tokens / 448.
Status quantize_fp8_e4m3(const Tensor3& t, QuantizedTensor* out);

// The values a quantized tensor stands for, as an f32 tensor of t's shape (scale * value, in f32).
enum class KvQuant { kInt8, kFp8E4M3 };
Status dequantize(const QuantizedTensor& q, KvQuant kind, int64_t seq, int64_t heads, int64_t dim, Tensor3* out);

}  // namespace sampleattn::workload
