// The KV-cache quantizers of workload/kv_quant.h: fp8 e4m3fn encoding and decoding against an
// independent nearest-value search, int8's rounding, and the per-(token, head) and per-head scales.
#include "workload/kv_quant.h"

#include <gtest/gtest.h>

#include "core/dtype_convert.h"

#include <cmath>
#include <limits>
#include <vector>

#include "workload/generator.h"

namespace sampleattn::workload {
namespace {

// The e4m3fn value set written out from the format's definition.
double e4m3_value(int code) {
  const int e = (code >> 3) & 15, m = code & 7;
  const double a = e == 0 ? m * std::ldexp(1.0, -9) : (1 + m / 8.0) * std::ldexp(1.0, e - 7);
  return (code & 0x80) ? -a : a;
}

// Nearest finite code by search, ties to the even code (mantissa's last bit 0), saturating.
uint8_t nearest_e4m3(float x) {
  int best = -1;
  double best_distance = 0;
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;  // NaN
    if (std::signbit(x) != bool(code & 0x80)) continue;
    const double d = std::fabs(e4m3_value(code) - static_cast<double>(x));
    if (best < 0 || d < best_distance || (d == best_distance && (code & 1) == 0)) {
      best = code;
      best_distance = d;
    }
  }
  return static_cast<uint8_t>(best);
}

TEST(Fp8E4M3, DecodesEveryCodeByTheDefinition) {
  for (int code = 0; code < 256; ++code) {
    const float got = fp8_e4m3_to_f32(static_cast<uint8_t>(code));
    if ((code & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(got)) << code;
    } else {
      EXPECT_EQ(static_cast<double>(got), e4m3_value(code)) << code;
    }
  }
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.f, -9));   // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_f32(0x08), std::ldexp(1.f, -6));   // smallest normal
  EXPECT_TRUE(std::signbit(fp8_e4m3_to_f32(0x80)));
}

TEST(Fp8E4M3, EncodeRoundTripsEveryValue) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;
    EXPECT_EQ(f32_to_fp8_e4m3(fp8_e4m3_to_f32(static_cast<uint8_t>(code))), code) << code;
  }
}

TEST(Fp8E4M3, MidpointsRoundToEven) {
  for (int code = 0; code < 0x7e; ++code) {
    const double lo = e4m3_value(code), hi = e4m3_value(code + 1);
    const float mid = static_cast<float>((lo + hi) / 2);  // exact in f32
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    const int even = (code & 1) == 0 ? code : code + 1;
    EXPECT_EQ(f32_to_fp8_e4m3(mid), even) << "between " << lo << " and " << hi;
    EXPECT_EQ(f32_to_fp8_e4m3(-mid), even | 0x80);
    EXPECT_EQ(f32_to_fp8_e4m3(std::nextafter(mid, 0.f)), code);
    EXPECT_EQ(f32_to_fp8_e4m3(std::nextafter(mid, 1e9f)), code + 1);
  }
}

TEST(Fp8E4M3, MatchesTheNearestValueOnRandomInputs) {
  Rng rng(7);
  for (int i = 0; i < 20000; ++i) {
    const float x = static_cast<float>(rng.normal() * std::ldexp(1.0, static_cast<int>(rng.below(24)) - 12));
    ASSERT_EQ(f32_to_fp8_e4m3(x), nearest_e4m3(x)) << x;
  }
}

TEST(Fp8E4M3, SaturatesAndKeepsNaN) {
  EXPECT_EQ(f32_to_fp8_e4m3(448.f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(470.f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(1e30f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(f32_to_fp8_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0xff);
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.f, -11)), 0x00);  // a quarter of the smallest subnormal
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.f, -10)), 0x00);  // half of it: the tie goes to even 0
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(3.f, -10)), 0x02);  // 1.5 of it: the tie goes to even 2
  EXPECT_EQ(f32_to_fp8_e4m3(-0.f), 0x80);
}

TEST(Int8, RoundsToNearestEvenAndClamps) {
  EXPECT_EQ(int8_encode(2.5f, 1.f), 2);
  EXPECT_EQ(int8_encode(3.5f, 1.f), 4);
  EXPECT_EQ(int8_encode(-2.5f, 1.f), -2);
  EXPECT_EQ(int8_encode(127.4f, 1.f), 127);
  EXPECT_EQ(int8_encode(300.f, 1.f), 127);
  EXPECT_EQ(int8_encode(-300.f, 1.f), -127);
  EXPECT_EQ(symmetric_scale(0.f, kInt8Max), 1.f);
  EXPECT_EQ(symmetric_scale(254.f, kInt8Max), 2.f);
}

Tensor3 random_tensor(int64_t seq, int64_t heads, int64_t dim, DType dtype) {
  Rng rng(3);
  std::vector<float> values(static_cast<size_t>(seq * heads * dim));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(rng.normal() * (1 + i % 7));
  Tensor3 t;
  EXPECT_TRUE(tensor_from_f32(seq, heads, dim, dtype, values, &t).is_ok());
  return t;
}

TEST(QuantizeTensor, Int8ScalesPerTokenAndHead) {
  const Tensor3 t = random_tensor(37, 3, 64, DType::kF16);
  QuantizedTensor q;
  ASSERT_TRUE(quantize_int8(t, &q).is_ok());
  ASSERT_EQ(q.scales.size(), 37u * 3);
  EXPECT_EQ(q.scale_token_stride, 3);
  Tensor3 back;
  ASSERT_TRUE(dequantize(q, KvQuant::kInt8, t.seq, t.heads, t.dim, &back).is_ok());
  for (int64_t s = 0; s < t.seq; ++s) {
    for (int64_t h = 0; h < t.heads; ++h) {
      const float scale = q.scales[static_cast<size_t>(s * 3 + h)];
      float max_abs = 0;
      bool reaches_127 = false;
      for (int64_t i = 0; i < t.dim; ++i) {
        max_abs = std::max(max_abs, std::fabs(t.at(s, h, i)));
        const auto code = static_cast<int8_t>(q.codes[static_cast<size_t>((s * 3 + h) * 64 + i)]);
        reaches_127 |= code == 127 || code == -127;
        EXPECT_EQ(code, int8_encode(t.at(s, h, i), scale));
        EXPECT_NEAR(back.at(s, h, i), t.at(s, h, i), 0.5f * scale * 1.0001f);
      }
      EXPECT_EQ(scale, max_abs / 127.f);
      EXPECT_TRUE(reaches_127);
    }
  }
}

TEST(QuantizeTensor, Fp8ScalesPerHead) {
  const Tensor3 t = random_tensor(41, 2, 32, DType::kF32);
  QuantizedTensor q;
  ASSERT_TRUE(quantize_fp8_e4m3(t, &q).is_ok());
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_EQ(q.scale_token_stride, 0);
  Tensor3 back;
  ASSERT_TRUE(dequantize(q, KvQuant::kFp8E4M3, t.seq, t.heads, t.dim, &back).is_ok());
  for (int64_t h = 0; h < 2; ++h) {
    float max_abs = 0;
    for (int64_t s = 0; s < t.seq; ++s) {
      for (int64_t i = 0; i < t.dim; ++i) max_abs = std::max(max_abs, std::fabs(t.at(s, h, i)));
    }
    const float scale = q.scales[static_cast<size_t>(h)];
    EXPECT_EQ(scale, max_abs / 448.f);
    for (int64_t s = 0; s < t.seq; ++s) {
      for (int64_t i = 0; i < t.dim; ++i) {
        const float x = t.at(s, h, i);
        EXPECT_EQ(q.codes[static_cast<size_t>((s * 2 + h) * 32 + i)], f32_to_fp8_e4m3(x / scale));
        // 3 mantissa bits: half an ulp is 1/16 of the value, or of the subnormal step.
        EXPECT_LE(std::fabs(back.at(s, h, i) - x), std::max(std::fabs(x) / 16.f, scale * std::ldexp(1.f, -10)) * 1.001f);
      }
    }
  }
}

TEST(QuantizeTensor, AllZeroRowsGetScaleOne) {
  Tensor3 t;
  ASSERT_TRUE(make_tensor(4, 2, 16, DType::kF32, &t).is_ok());
  QuantizedTensor q;
  ASSERT_TRUE(quantize_int8(t, &q).is_ok());
  for (float s : q.scales) EXPECT_EQ(s, 1.f);
  ASSERT_TRUE(quantize_fp8_e4m3(t, &q).is_ok());
  for (float s : q.scales) EXPECT_EQ(s, 1.f);
  for (uint8_t c : q.codes) EXPECT_EQ(c, 0);
}

}  // namespace
}  // namespace sampleattn::workload
