// Portable kernels: plain loops, no intrinsics. They define the semantics every vector table must
// match (see simd/kernels.h) and run on any x86-64 CPU.
#include <algorithm>
#include <cmath>

#include "core/dtype_convert.h"
#include "core/score_mod.h"
#include "core/validation_units.h"
#include "simd/flash/entry_points.h"
#include "simd/flash/look_quantize.h"

namespace sampleattn::scalar {
namespace {

size_t round64(size_t bytes) { return (bytes + 63) / 64 * 64; }

void load_rows(const RowSource& src, int rows, int d, float scale, float* dst) {
  for (int r = 0; r < rows; ++r) {
    const int64_t base = src.offsets ? src.offsets[r] : r * src.row_stride;
    // Quantized rows: the stored value times the row's scale (then times scale, as the vector
    // tables round it: the two factors multiplied first).
    const float factor = dtype_quantized(src.dtype) ? scale * scale_at(src, r) : scale;
    for (int c = 0; c < d; ++c) dst[r * d + c] = load_scalar(src.base, src.dtype, base + c) * factor;
  }
}

int span_lo(const int32_t* lo, int r) { return lo ? std::max(lo[r], 0) : 0; }
int span_hi(const int32_t* hi, int r, int n) { return hi ? std::min(hi[r], n) : n; }

}  // namespace

size_t f32_packed_bytes(int rows, int d) { return round64(static_cast<size_t>(rows) * d * sizeof(float)); }
size_t f32_scratch_bytes(int m, int n) { return round64(static_cast<size_t>(m) * n * sizeof(float)); }

void f32_pack_q(const RowSource& src, int m, int d, float scale, void* dst) {
  load_rows(src, m, d, scale, static_cast<float*>(dst));
}
void f32_pack_k(const RowSource& src, int n, int d, void* dst) {
  load_rows(src, n, d, 1.0f, static_cast<float*>(dst));
}
void f32_pack_v(const RowSource& src, int n, int d, void* dst) {
  load_rows(src, n, d, 1.0f, static_cast<float*>(dst));
}

void f32_scores(const void* qv, int m, const void* kv, int n, int d, float* s, int64_t lds, float qk_scale) {
  const float* q = static_cast<const float*>(qv);
  const float* k = static_cast<const float*>(kv);
  for (int r = 0; r < m; ++r) {
    for (int j = 0; j < n; ++j) {
      float dot = 0.f;
      for (int c = 0; c < d; ++c) dot += q[r * d + c] * k[j * d + c];
      s[r * lds + j] = qk_scale == 1.0f ? dot : dot * qk_scale;
    }
  }
}

// score_mod.h's modified_score, with the slope and query position of row r: the capped score,
// then the ALiBi bias added.
void modify_scores(float* s, int64_t lds, int m, int n, const ScoreModArgs& mod) {
  for (int r = 0; r < m; ++r) {
    float* sr = s + r * lds;
    for (int j = 0; j < n; ++j) {
      float x = softcapped(sr[j], mod.softcap);
      if (mod.alibi != nullptr) x += alibi_bias(mod.alibi[r], mod.row_pos[r], mod.key_pos[j]);
      sr[j] = x;
    }
  }
}

void f32_attend(const AttendTileArgs& a) {
  float* s = static_cast<float*>(a.scratch);
  f32_scores(a.q, a.m, a.k, a.n, a.d, s, a.n, a.qk_scale);
  // Every score of the tile, masked ones too: the softmax below reads only the spans.
  if (a.mod.any()) modify_scores(s, a.n, a.m, a.n, a.mod);
  const float* v = static_cast<const float*>(a.v);
  for (int r = 0; r < a.m; ++r) {
    const int lo = span_lo(a.lo, r), hi = span_hi(a.hi, r, a.n);
    if (lo >= hi) continue;
    float* sr = s + static_cast<int64_t>(r) * a.n;
    float mx = a.row_max[r];
    for (int j = lo; j < hi; ++j) mx = std::max(mx, sr[j]);
    const float c = std::exp2(a.row_max[r] - mx);  // exp2(-inf) = 0 on the first tile
    float sum = 0.f;
    float* acc = a.acc + static_cast<int64_t>(r) * a.dv;
    for (int x = 0; x < a.dv; ++x) acc[x] *= c;
    for (int j = lo; j < hi; ++j) {
      const float p = std::exp2(sr[j] - mx);
      sum += p;
      for (int x = 0; x < a.dv; ++x) acc[x] += p * v[static_cast<int64_t>(j) * a.dv + x];
    }
    a.row_sum[r] = a.row_sum[r] * c + sum;
    a.row_max[r] = mx;
  }
}

void row_stats(const float* s, int64_t lds, int m, int n, const int32_t* lo, const int32_t* hi,
               float* row_max, float* row_sum) {
  for (int r = 0; r < m; ++r) {
    const int l = span_lo(lo, r), h = span_hi(hi, r, n);
    if (l >= h) continue;
    const float* sr = s + r * lds;
    float mx = row_max[r];
    for (int j = l; j < h; ++j) mx = std::max(mx, sr[j]);
    float sum = 0.f;
    for (int j = l; j < h; ++j) sum += std::exp2(sr[j] - mx);
    row_sum[r] = row_sum[r] * std::exp2(row_max[r] - mx) + sum;
    row_max[r] = mx;
  }
}

void accumulate_columns(const float* s, int64_t lds, int m, int n, const int32_t* lo,
                        const int32_t* hi, const float* row_max, const float* row_scale,
                        float* col_sum) {
  for (int r = 0; r < m; ++r) {
    const int l = span_lo(lo, r), h = span_hi(hi, r, n);
    const float* sr = s + r * lds;
    for (int j = l; j < h; ++j) col_sum[j] += std::exp2(sr[j] - row_max[r]) * row_scale[r];
  }
}

// The probability in kValidationMassOne units, rounded to nearest (ties to even, as the vector
// tables' conversions; p <= 1, so at most 2^31).
uint32_t mass_units(float p) {
  return static_cast<uint32_t>(std::nearbyint(p * static_cast<float>(kValidationMassOne)));
}

void bucket_masses(const float* s, int lo, int split, int hi, float row_max, float scale, const uint8_t* bucket,
                   uint32_t* masses) {
  for (int j = lo; j < split; ++j) {
    if (bucket[j] != kBucketUnused) masses[bucket[j]] += mass_units(std::exp2(s[j] - row_max) * scale);
  }
  uint32_t band = 0;
  for (int j = split; j < hi; ++j) band += mass_units(std::exp2(s[j] - row_max) * scale);
  masses[0] += band;
}

void store_rows(const float* acc, int m, int d, const float* row_scale, void* dst, DType dtype,
                int64_t row_stride) {
  for (int r = 0; r < m; ++r) {
    for (int x = 0; x < d; ++x) store_scalar(dst, dtype, r * row_stride + x, acc[r * d + x] * row_scale[r]);
  }
}

// The decode step, from the definition: source rows dequantized one value at a time (the row's
// scale times the stored value, as the packs round it), scores, the online softmax, values.
size_t attend_rows_scratch_bytes(int m, int n) { return round64(static_cast<size_t>(m) * n * sizeof(float)); }

namespace {

// One kv head's rows (a.heads == 1).
bool attend_head_rows(const AttendRowsArgs& a) {
  bool finite = true;
  // The largest |value| of f32 and bf16 rows (AttendRowsArgs::k_max_abs).
  const auto raise = [](float* max_abs, DType t, float x) {
    if (max_abs != nullptr && (t == DType::kF32 || t == DType::kBF16) && !(std::fabs(x) <= *max_abs)) *max_abs = std::fabs(x);
  };
  const auto value = [&](const RowSource& src, int j, int c) {
    const int64_t base = src.offsets ? src.offsets[j] : j * src.row_stride;
    const float x = load_scalar(src.base, src.dtype, base + c);
    finite = finite && std::isfinite(x);  // fp8's NaN codes load as NaN
    raise(&src == &a.k ? a.k_max_abs : a.v_max_abs, src.dtype, x);
    return dtype_quantized(src.dtype) ? x * scale_at(src, j) : x;
  };
  float* s = a.scratch;
  for (int r = 0; r < a.m; ++r) {
    for (int j = 0; j < a.n; ++j) {
      float dot = 0.f;
      for (int c = 0; c < a.d; ++c) dot += a.q[static_cast<int64_t>(r) * a.d + c] * value(a.k, j, c);
      s[static_cast<int64_t>(r) * a.n + j] = dot;
    }
  }
  if (a.mod.any()) modify_scores(s, a.n, a.m, a.n, a.mod);
  for (int r = 0; r < a.m; ++r) {
    const int lo = span_lo(a.lo, r), hi = span_hi(a.hi, r, a.n);
    if (lo >= hi) continue;
    float* sr = s + static_cast<int64_t>(r) * a.n;
    float mx = a.row_max[r];
    for (int j = lo; j < hi; ++j) mx = std::max(mx, sr[j]);
    const float c = std::exp2(a.row_max[r] - mx);
    float* acc = a.acc + static_cast<int64_t>(r) * a.dv;
    for (int x = 0; x < a.dv; ++x) acc[x] *= c;
    float sum = 0.f;
    for (int j = lo; j < hi; ++j) {
      const float p = std::exp2(sr[j] - mx);
      sum += p;
      for (int x = 0; x < a.dv; ++x) acc[x] += p * value(a.v, j, x);
    }
    a.row_sum[r] = a.row_sum[r] * c + sum;
    a.row_max[r] = mx;
  }
  // Values outside every span are not read above; read them once to check them, as the vector
  // tables (which convert whole rows) do.
  for (int j = 0; j < a.n; ++j) {
    for (int x = 0; x < a.dv; ++x) value(a.v, j, x);
  }
  return finite;
}

}  // namespace

bool attend_rows(const AttendRowsArgs& a) {
  bool finite = true;
  for (int h = 0; h < a.heads; ++h) {
    const int64_t r0 = static_cast<int64_t>(h) * a.m;
    AttendRowsArgs one = a;
    one.q = a.q + r0 * a.d;
    one.k = head_rows(a.k, h, a.k_head_step, a.scale_head_step);
    one.v = head_rows(a.v, h, a.v_head_step, a.scale_head_step);
    one.lo = a.lo ? a.lo + r0 : nullptr;
    one.hi = a.hi ? a.hi + r0 : nullptr;
    one.row_max = a.row_max + r0;
    one.row_sum = a.row_sum + r0;
    one.acc = a.acc + r0 * a.dv;
    if (a.mod.alibi != nullptr) {
      one.mod.alibi = a.mod.alibi + r0;
      one.mod.row_pos = a.mod.row_pos + r0;
    }
    one.heads = 1;
    finite = attend_head_rows(one) && finite;
  }
  return finite;
}

// The look (simd/kernels.h, LookPath): Q and K rows of integers as f32, [rows][d] each; the
// products exact in f32 (integers below 2^24).
size_t look_q_bytes(int rows, int d) { return round64(static_cast<size_t>(rows) * d * sizeof(float)); }
size_t look_k_bytes(int rows, int d) { return round64(static_cast<size_t>(rows) * d * sizeof(float)); }
void look_pack_q(const RowSource& src, int m, int d, float scale, void* dst, float* scales) {
  float* out = static_cast<float*>(dst);
  load_rows(src, m, d, 1.0f, out);  // then quantized in place
  for (int r = 0; r < m; ++r) {
    float* row = out + static_cast<int64_t>(r) * d;
    scales[r] = flash::look_quantize(row, d, row) * scale;
  }
}
void look_pack_k(const RowSource& src, int n, int d, float scale, void* dst, float* scales) {
  look_pack_q(src, n, d, scale, dst, scales);
}
void look_scores(const void* qv, const float* q_scales, int m, const void* kv, const float* k_scales, int n, int d,
                 float* s, int64_t lds) {
  f32_scores(qv, m, kv, n, d, s, lds, 1.0f);  // the integers' products, exact
  for (int r = 0; r < m; ++r) {
    for (int j = 0; j < n; ++j) s[r * lds + j] = (s[r * lds + j] * k_scales[j]) * q_scales[r];
  }
}
void look_row_max(const float* s, int64_t lds, int m, int n, const int32_t* lo, const int32_t* mid, const int32_t* hi,
                  float* outer, float* inner) {
  for (int r = 0; r < m; ++r) {
    const int a = std::max(lo[r], 0), c = std::min(hi[r], n);
    const int b = std::min(std::max(mid[r], a), c);
    for (int j = a; j < c; ++j) {
      float* best = j < b ? outer + r : inner + r;
      *best = std::max(*best, s[r * lds + j]);
    }
  }
}

}  // namespace sampleattn::scalar
