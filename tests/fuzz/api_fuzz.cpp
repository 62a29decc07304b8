// libFuzzer target: the C API (plan + forward) on parameters and data drawn from the input.
// Buffers are sized exactly from the parameters (no padding), so AddressSanitizer sees any read
// or write past what the call describes. Checks:
// - plan and forward agree on every status; a failure has a message and leaves O untouched;
// - a successful call on finite inputs matches the double-precision oracle over the reported
//   mask (dense, or window + stripes);
// - non-finite inputs follow docs/SECURITY.md: they never crash, and rows whose keys are all
//   finite still match the oracle.
// The model's variants (ABI 1.3) are drawn too: V and O of their own head size, a sliding window,
// a softcap, ALiBi slopes and sinks (arrays of exactly num_q_heads floats, so that AddressSanitizer
// sees a read past them), with valid and invalid values; the oracle computes each.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "core/dtype_convert.h"
#include "core/problem.h"
#include "reference/attention_reference.h"
#include "sampleattn/sampleattn.hpp"

// A failed check prints what failed (libFuzzer then saves the input) and stops.
#define FUZZ_CHECK(cond, ...)                         \
  do {                                                \
    if (!(cond)) {                                    \
      std::fprintf(stderr, "api_fuzz: check failed: " #cond ": " __VA_ARGS__); \
      std::fprintf(stderr, "\n");                     \
      __builtin_trap();                               \
    }                                                 \
  } while (0)

namespace {

using sampleattn::DType;

sampleattn_context* context() {
  static sampleattn_context* ctx = [] {
    sampleattn_context_options opt;
    sampleattn_context_options_init(&opt);
    opt.backend = SAMPLEATTN_BACKEND_CPU;
    opt.num_threads = 2;
    opt.binding = SAMPLEATTN_BIND_NONE;
    sampleattn_context* c = nullptr;
    if (sampleattn_context_create(&opt, &c) != SAMPLEATTN_SUCCESS) std::abort();
    return c;
  }();
  return ctx;
}

struct Tensor {
  std::vector<uint8_t> bytes;
  int dtype = 0;
  int64_t token_stride = 0, head_stride = 0;
};

// Elements spanned by `tokens` rows of `heads` heads of `d` values at these strides.
int64_t span(int64_t tokens, int heads, int d, int64_t ts, int64_t hs) {
  if (tokens <= 0 || heads <= 0 || d <= 0) return 0;
  return (tokens - 1) * ts + (heads - 1) * hs + d;
}

size_t dtype_bytes(int dt) { return dt == SAMPLEATTN_DTYPE_F32 ? 4 : 2; }

float pick_float(FuzzedDataProvider& in, std::initializer_list<float> specials, float lo, float hi) {
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    const size_t i = in.ConsumeIntegralInRange<size_t>(0, specials.size() - 1);
    return *(specials.begin() + i);
  }
  return in.ConsumeFloatingPointInRange<float>(lo, hi);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const float nan = std::nanf(""), inf = INFINITY;

  static const int kDims[] = {64, 80, 96, 128, 256, 32, 0, -16, 100};
  const int d = in.ConsumeIntegralInRange<int>(0, 19) < 18 ? kDims[in.ConsumeIntegralInRange<int>(0, 4)]
                                                            : kDims[in.ConsumeIntegralInRange<int>(0, 8)];
  // head_dim_v: mostly the default (0: head_dim), else another of the list, rarely a bad one.
  int dv_field = 0;
  switch (in.ConsumeIntegralInRange<int>(0, 15)) {
    case 0: case 1: case 2: case 3: dv_field = kDims[in.ConsumeIntegralInRange<int>(0, 4)]; break;
    case 4: dv_field = kDims[in.ConsumeIntegralInRange<int>(0, 8)]; break;
    default: break;
  }
  const int hkv = in.ConsumeIntegralInRange<int>(1, 3);
  const int group = in.ConsumeIntegralInRange<int>(1, 3);
  const int hq = in.ConsumeIntegralInRange<int>(0, 31) == 0 ? in.ConsumeIntegralInRange<int>(-1, 5) : hkv * group;
  const int batch = in.ConsumeIntegralInRange<int>(1, 3);
  const bool causal = in.ConsumeBool() || in.ConsumeBool();
  std::vector<int32_t> cu_q{0}, cu_k{0};
  for (int b = 0; b < batch; ++b) {
    const int q_len = in.ConsumeIntegralInRange<int>(0, 48);
    int k_len = q_len + in.ConsumeIntegralInRange<int>(0, 48);
    if (in.ConsumeIntegralInRange<int>(0, 31) == 0) k_len = in.ConsumeIntegralInRange<int>(-2, 64);
    cu_q.push_back(cu_q.back() + q_len);
    cu_k.push_back(cu_k.back() + k_len);
  }
  const int64_t total_q = cu_q.back(), total_k = std::max(0, cu_k.back());

  sampleattn::Params p;
  p.head_dim = d;
  p.num_q_heads = hq;
  p.num_kv_heads = hkv;
  p.batch = batch;
  p.cu_seqlens_q = cu_q.data();
  p.cu_seqlens_k = cu_k.data();
  p.causal = causal ? 1 : 0;
  p.method = in.ConsumeBool() ? SAMPLEATTN_METHOD_SAMPLE : SAMPLEATTN_METHOD_DENSE;
  p.precision = in.ConsumeIntegralInRange<int>(0, 7) == 0 ? SAMPLEATTN_PRECISION_BF16 : SAMPLEATTN_PRECISION_F32;
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) p.softmax_scale = pick_float(in, {nan, inf, -1.f, 0.f}, 0.f, 2.f);
  sampleattn_sample_params& s = p.sample;
  s.alpha = pick_float(in, {nan, 0.f, 1.f, 1e-30f, 0.95f}, 0.f, 1.f);
  s.r_row = pick_float(in, {nan, 1.f, 0.05f}, 0.f, 1.f);
  s.r_w = pick_float(in, {nan, 0.f, 1.f, 0.08f}, 0.f, 1.f);
  s.min_window = in.ConsumeIntegralInRange<int32_t>(-1, 80);
  s.sample_block = in.ConsumeIntegralInRange<int32_t>(0, 64);
  s.min_stripes = in.ConsumeIntegralInRange<int32_t>(-1, 8);
  s.max_stripes = in.ConsumeIntegralInRange<int32_t>(-1, 16);
  s.sink_tokens = in.ConsumeIntegralInRange<int32_t>(-1, 8);
  s.dense_below = in.ConsumeIntegralInRange<int32_t>(0, 64);
  s.scope = in.ConsumeBool() ? SAMPLEATTN_STRIPES_PER_KV_GROUP : SAMPLEATTN_STRIPES_PER_HEAD;
  s.window_mass_counts = in.ConsumeIntegralInRange<int32_t>(0, 1);
  s.max_density = pick_float(in, {nan, 1.f, 0.5f, 0.f}, 0.f, 1.f);
  s.r_val = pick_float(in, {nan, 0.f, 0.5f, 1.f}, 0.f, 1.f);
  s.min_kept = pick_float(in, {nan, 0.f, 0.9f, 1.f}, 0.f, 1.f);
  s.max_lost = pick_float(in, {nan, 0.f, 0.01f, 1.f}, 0.f, 1.f);
  s.val_rows = in.ConsumeIntegralInRange<int32_t>(-1, 64);

  // The model's variants: each off most of the time.
  p.head_dim_v = dv_field;
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    static const int64_t kOddWindows[] = {-2, int64_t{1} << 31, INT64_MIN};
    p.window_left = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? kOddWindows[in.ConsumeIntegralInRange<int>(0, 2)]
                                                                : in.ConsumeIntegralInRange<int64_t>(0, 64);
  }
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) p.softcap = pick_float(in, {nan, inf, -1.f, 0.f, 1e-30f}, 0.f, 60.f);
  // Exactly num_q_heads floats each (none when there are no heads: the call fails before reading them).
  const size_t per_head = static_cast<size_t>(std::max(hq, 0));
  std::vector<float> slopes, sink_logits;
  if (per_head > 0 && in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    slopes.assign(per_head, 0.f);  // allocated at exactly this size
    for (float& x : slopes) x = pick_float(in, {nan, inf, -inf, 0.f}, -1.f, 1.f);
    p.alibi_slopes = slopes.data();
  }
  if (per_head > 0 && in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    sink_logits.assign(per_head, 0.f);
    for (float& x : sink_logits) x = pick_float(in, {-inf, nan, inf, 0.f}, -8.f, 8.f);
    p.sinks = sink_logits.data();
  }
  const int dv = dv_field != 0 ? dv_field : d;  // v's and o's rows

  // Tensors, each with its own dtype and padded strides, sized exactly (v and o: dv values a row).
  Tensor q, k, v, o;
  auto layout = [&](Tensor& t, int heads, int dim) {
    t.dtype = in.ConsumeIntegralInRange<int>(0, 2);
    t.head_stride = std::max(dim, 1) + in.ConsumeIntegralInRange<int>(0, 2) * 8;
    t.token_stride = std::max(heads, 1) * t.head_stride + in.ConsumeIntegralInRange<int>(0, 3);
  };
  layout(q, hq, d);
  layout(k, hkv, d);
  layout(v, hkv, dv);
  layout(o, hq, dv);
  const float amp = pick_float(in, {1e30f, 1e-30f, 0.f}, 0.f, 4.f);
  auto fill = [&](Tensor& t, int64_t tokens, int heads, int dim) {
    const int64_t n = span(tokens, heads, dim, t.token_stride, t.head_stride);
    if (n > (int64_t{1} << 22)) return false;
    t.bytes.assign(static_cast<size_t>(n) * dtype_bytes(t.dtype), 0);
    for (int64_t e = 0; e < n; ++e) {
      const float x = static_cast<float>(in.ConsumeIntegral<int8_t>()) / 64.f * amp;
      sampleattn::store_scalar(t.bytes.data(), static_cast<DType>(t.dtype), e, x);
    }
    return true;
  };
  if (!fill(q, total_q, hq, d) || !fill(k, total_k, hkv, d) || !fill(v, total_k, hkv, dv) || !fill(o, total_q, hq, dv)) {
    return 0;
  }
  // Occasionally a non-finite value somewhere in Q, K or V.
  bool non_finite = amp > 1e20f;
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    Tensor* t = in.ConsumeBool() ? &k : (in.ConsumeBool() ? &q : &v);
    const size_t n = t->bytes.size() / dtype_bytes(t->dtype);
    if (n > 0) {
      const float bad = in.ConsumeBool() ? nan : (in.ConsumeBool() ? inf : -inf);
      sampleattn::store_scalar(t->bytes.data(), static_cast<DType>(t->dtype),
                               static_cast<int64_t>(in.ConsumeIntegralInRange<size_t>(0, n - 1)), bad);
      non_finite = true;
    }
  }
  const std::vector<uint8_t> o_before = o.bytes;
  auto bind = [](const Tensor& t) {
    return sampleattn_tensor{t.bytes.empty() ? nullptr : t.bytes.data(), static_cast<sampleattn_dtype>(t.dtype),
                             t.token_stride, t.head_stride};
  };
  p.q = bind(q);
  p.k = bind(k);
  p.v = bind(v);
  p.o = sampleattn_output{o.bytes.empty() ? nullptr : o.bytes.data(), static_cast<sampleattn_dtype>(o.dtype),
                          o.token_stride, o.head_stride};
  std::vector<float> lse(static_cast<size_t>(std::max<int64_t>(0, total_q * std::max(hq, 0))));
  p.lse = lse.empty() ? nullptr : lse.data();

  const int heads_total = batch * std::max(hq, 0);
  std::vector<sampleattn_head_stats> head_stats(static_cast<size_t>(heads_total));
  std::vector<int32_t> offsets(static_cast<size_t>(heads_total) + 1);
  std::vector<int32_t> stripes(static_cast<size_t>(std::max<int64_t>(1, total_k) * std::max(1, heads_total)));
  sampleattn_stats stats;
  sampleattn_stats_init(&stats);
  stats.head_stats = head_stats.empty() ? nullptr : head_stats.data();
  stats.stripe_offsets = offsets.data();
  stats.stripes = stripes.data();
  stats.stripe_capacity = static_cast<int64_t>(stripes.size());

  sampleattn_plan_info info;
  sampleattn_plan_info_init(&info);
  const sampleattn_status planned = sampleattn_plan(context(), &p, &info);
  const sampleattn_status ran = sampleattn_forward(context(), &p, &stats);
  const bool data_missing = (total_q > 0 && (p.q.data == nullptr || p.o.data == nullptr)) ||
                            (total_k > 0 && (p.k.data == nullptr || p.v.data == nullptr));
  // forward() alone reads the data: only the data rules (pointers, aliasing, the input policy)
  // may fail a call that plan() accepted.
  const bool data_rule = ran == SAMPLEATTN_INVALID_ARGUMENT &&
                         (std::strstr(sampleattn_last_error(), "non-finite") != nullptr ||
                          std::strstr(sampleattn_last_error(), "too large") != nullptr);
  FUZZ_CHECK(planned == ran || (planned == SAMPLEATTN_SUCCESS && (data_missing || data_rule)), "plan %d, forward %d: %s",
             planned, ran, sampleattn_last_error());
  if (ran != SAMPLEATTN_SUCCESS) {
    FUZZ_CHECK(sampleattn_last_error() != nullptr && sampleattn_last_error()[0] != '\0', "no message");
    FUZZ_CHECK(o.bytes == o_before, "failure wrote O: %s", sampleattn_last_error());
    return 0;
  }
  if (non_finite || total_q * hq * static_cast<int64_t>(total_k) * d > (int64_t{1} << 21)) return 0;

  // Against the oracle over the reported mask.
  sampleattn::Problem problem;
  FUZZ_CHECK(sampleattn::build_problem(&p, true, &problem).is_ok(), "build_problem");
  std::map<std::pair<int, int>, sampleattn::reference::HeadMask> masks;
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < hq; ++h) {
      const size_t i = static_cast<size_t>(b) * hq + h;
      if (head_stats[i].dense) continue;
      sampleattn::reference::HeadMask m;
      m.window = head_stats[i].window;
      m.stripes.assign(stripes.begin() + offsets[i], stripes.begin() + offsets[i + 1]);
      masks[{b, h}] = std::move(m);
    }
  }
  const auto lookup = [&masks](int b, int h) -> const sampleattn::reference::HeadMask* {
    const auto it = masks.find({b, h});
    return it == masks.end() ? nullptr : &it->second;
  };
  std::vector<std::pair<int64_t, int>> rows;
  for (int64_t t = 0; t < total_q; ++t) {
    for (int h = 0; h < hq; ++h) rows.emplace_back(t, h);
  }
  const auto ref = sampleattn::reference::attention_rows(problem, rows, lookup);
  double vmax = 1e-30;
  for (int64_t e = 0; e < static_cast<int64_t>(v.bytes.size() / dtype_bytes(v.dtype)); ++e) {
    vmax = std::max(vmax, std::fabs(static_cast<double>(sampleattn::load_scalar(v.bytes.data(), static_cast<DType>(v.dtype), e))));
  }
  // bf16 products (precision BF16) round Q and K to bf16 (relative 2^-9 each), so a score moves by
  // up to 2^-8 |q| |k| (times the scale; a softcap only shrinks it), and the lse, 1-Lipschitz in
  // the scores' max norm, by as much: the bound per row, with 2^-7 for the f32 sums' rounding.
  const int q_per_kv = hq > 0 && hq % hkv == 0 ? hq / hkv : 1;  // a call that ran has hq a multiple of hkv
  const double scale = p.softmax_scale > 0.f ? p.softmax_scale : 1.0 / std::sqrt(static_cast<double>(d));
  const auto row_norm = [&](const Tensor& t, int64_t token, int head) {
    double s = 0;
    for (int c = 0; c < d; ++c) {
      const double x = sampleattn::load_scalar(t.bytes.data(), static_cast<DType>(t.dtype),
                                               token * t.token_stride + head * t.head_stride + c);
      s += x * x;
    }
    return std::sqrt(s);
  };
  std::vector<double> k_norm_max(static_cast<size_t>(hkv), 0.0);
  for (int64_t j = 0; j < total_k; ++j) {
    for (int h = 0; h < hkv; ++h) k_norm_max[h] = std::max(k_norm_max[h], row_norm(k, j, h));
  }
  const auto lse_tol = [&](int64_t token, int head, double lse_ref) {
    double tol = 1e-3 * (1 + std::fabs(lse_ref));
    if (p.precision == SAMPLEATTN_PRECISION_BF16) tol += 0x1p-7 * scale * row_norm(q, token, head) * k_norm_max[static_cast<size_t>(std::min(head / q_per_kv, hkv - 1))];
    return tol;
  };
  const double out_eps = o.dtype == SAMPLEATTN_DTYPE_F32 ? 2e-5 : (o.dtype == SAMPLEATTN_DTYPE_F16 ? 2e-3 : 1.6e-2);
  const double tol = (p.precision == SAMPLEATTN_PRECISION_BF16 ? 6e-2 : out_eps) * vmax + 1e-6;
  // bf16 products also get their documented bound (docs/ACCURACY.md, kernels_test): twice the
  // error of a plain bf16 implementation (Q, K, V and the probabilities rounded to bf16), here per
  // row. With large scores a bf16 rounding of Q and K moves them by whole nats (2^-8 |q| |k| x the
  // scale), and the softmax moves the output with them: a fixed share of max |V| is not a bound.
  std::vector<sampleattn::reference::RowResult> plain;
  if (p.precision == SAMPLEATTN_PRECISION_BF16) plain = sampleattn::reference::naive_attention_rows(problem, rows, true, lookup);
  for (size_t i = 0; i < ref.size(); ++i) {
    const auto& r = ref[i];
    double row_tol = tol;
    for (int c = 0; c < dv && !plain.empty(); ++c) row_tol = std::max(row_tol, tol + 2 * std::fabs(plain[i].o[c] - r.o[c]));
    for (int c = 0; c < dv; ++c) {
      const int64_t e = r.token * o.token_stride + r.head * o.head_stride + c;
      const double got = sampleattn::load_scalar(o.bytes.data(), static_cast<DType>(o.dtype), e);
      FUZZ_CHECK(std::fabs(got - r.o[c]) <= row_tol, "o[token %lld head %d dim %d] = %g, oracle %g, tol %g",
                 static_cast<long long>(r.token), r.head, c, got, r.o[c], row_tol);
    }
    const double got_lse = lse[static_cast<size_t>(r.token * hq + r.head)];
    if (std::isinf(r.lse)) {
      FUZZ_CHECK(std::isinf(got_lse) && got_lse < 0, "lse %g for a row that sees no key", got_lse);
    } else {
      const double tol_lse = lse_tol(r.token, r.head, r.lse);
      FUZZ_CHECK(std::fabs(got_lse - r.lse) <= tol_lse, "lse[token %lld head %d] = %g, oracle %g, tol %g",
                 static_cast<long long>(r.token), r.head, got_lse, r.lse, tol_lse);
    }
  }
  return 0;
}
