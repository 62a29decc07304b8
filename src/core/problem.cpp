#include "core/problem.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/abi.h"
#include "core/enum_value.h"
#include "core/mask.h"

namespace sampleattn {
namespace {

std::string str(int64_t v) { return std::to_string(v); }
// A float as the user wrote it (1e-50 -> "0", 1e-30 -> "1e-30", NaN -> "nan"), not "0.000000".
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// "64, 80, 96, 128 or 256", from the head-dim list.
std::string supported_head_dims_text() {
  const size_t n = std::size(kSupportedHeadDims);
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) text += i + 1 == n ? " or " : ", ";
    text += str(kSupportedHeadDims[i]);
  }
  return text;
}

bool valid_dtype(int32_t t, bool quantized_ok) {
  return t == SAMPLEATTN_DTYPE_F32 || t == SAMPLEATTN_DTYPE_F16 || t == SAMPLEATTN_DTYPE_BF16 ||
         (quantized_ok && (t == SAMPLEATTN_DTYPE_I8 || t == SAMPLEATTN_DTYPE_FP8_E4M3));
}

// The strides of `tokens` rows x `heads` heads of head_dim elements: positive, rows disjoint, and
// byte offsets within int64. For K and V, quantized dtypes are allowed (with scales, checked by
// the caller).
Status check_tensor(const char* name, int32_t dtype, int64_t token_stride,
                    int64_t head_stride, int heads, int64_t tokens, int head_dim, bool kv = false) {
  if (!valid_dtype(dtype, kv)) {
    return {SAMPLEATTN_UNSUPPORTED_DTYPE,
            std::string(name) + ".dtype " + str(dtype) +
                (kv ? " is not f32, f16, bf16, int8 or fp8 e4m3" : " is not f32, f16 or bf16")};
  }
  if (token_stride < 1 || head_stride < 1) {
    return invalid_shape(std::string(name) + " strides must be positive (token_stride " +
                         str(token_stride) + ", head_stride " + str(head_stride) + ")");
  }
  // Each (token, head) row holds head_dim contiguous elements that must not overlap another row.
  const bool token_outer = token_stride >= head_stride;
  const int64_t inner = token_outer ? head_stride : token_stride;
  const int64_t inner_count = token_outer ? heads : tokens;
  const int64_t outer = token_outer ? token_stride : head_stride;
  const int64_t outer_count = token_outer ? tokens : heads;
  if ((inner_count > 1 && inner < head_dim) || (outer_count > 1 && outer < inner * inner_count) ||
      (inner_count <= 1 && outer_count > 1 && outer < head_dim)) {
    return invalid_shape(std::string(name) + " strides (token " + str(token_stride) + ", head " +
                         str(head_stride) + ") make rows of " + str(head_dim) +
                         " elements overlap for " + str(tokens) + " tokens x " + str(heads) +
                         " heads");
  }
  // The largest byte offset must fit int64 comfortably (kernels compute byte addresses).
  const double last = static_cast<double>(std::max<int64_t>(tokens - 1, 0)) * token_stride +
                      static_cast<double>(heads - 1) * head_stride + head_dim;
  if (last * dtype_size(static_cast<DType>(dtype)) > 4.0e18) {
    return invalid_shape(std::string(name) + " extent (" + num(last) + " elements) overflows int64 byte offsets");
  }
  return Status::ok();
}

bool finite_in(float x, float lo, float hi, bool lo_open) {
  if (!std::isfinite(x)) return false;
  return (lo_open ? x > lo : x >= lo) && x <= hi;
}

Status check_sample(const sampleattn_sample_params& s) {
  if (!finite_in(s.alpha, 0.f, 1.f, true)) {
    return invalid_argument("sample.alpha must be in (0, 1], got " + num(s.alpha));
  }
  if (!finite_in(s.r_row, 0.f, 1.f, true)) {
    return invalid_argument("sample.r_row must be in (0, 1], got " + num(s.r_row));
  }
  if (!finite_in(s.r_w, 0.f, 1.f, false)) {
    return invalid_argument("sample.r_w must be in [0, 1], got " + num(s.r_w));
  }
  if (s.min_window < 0) return invalid_argument("sample.min_window must be >= 0");
  if (s.sample_block < 1) return invalid_argument("sample.sample_block must be >= 1");
  if (s.min_stripes < 0) return invalid_argument("sample.min_stripes must be >= 0");
  if (s.max_stripes < 0) return invalid_argument("sample.max_stripes must be >= 0 (0 = no limit)");
  if (s.max_stripes > 0 && s.max_stripes < s.min_stripes) {
    return invalid_argument("sample.max_stripes (" + str(s.max_stripes) +
                            ") is below sample.min_stripes (" + str(s.min_stripes) + ")");
  }
  if (s.sink_tokens < 0) return invalid_argument("sample.sink_tokens must be >= 0");
  if (s.dense_below < 0) return invalid_argument("sample.dense_below must be >= 0");
  const int32_t scope = enum_value(s.scope);
  if (scope != SAMPLEATTN_STRIPES_PER_HEAD && scope != SAMPLEATTN_STRIPES_PER_KV_GROUP) {
    return invalid_argument("sample.scope " + str(scope) + " is not a sampleattn_stripe_scope");
  }
  if (s.window_mass_counts != 0 && s.window_mass_counts != 1) {
    return invalid_argument("sample.window_mass_counts must be 0 or 1");
  }
  if (!finite_in(s.max_density, 0.f, 1.f, true)) {
    return invalid_argument("sample.max_density must be in (0, 1] (1 = never run a sampled head dense), got " +
                            num(s.max_density));
  }
  if (!finite_in(s.r_val, 0.f, 1.f, false) || s.r_val >= 1.f) {
    return invalid_argument("sample.r_val must be in [0, 1) (0 = no validation rows), got " + num(s.r_val));
  }
  if (s.val_rows < 0) return invalid_argument("sample.val_rows must be >= 0 (0 = no validation rows)");
  if (!finite_in(s.min_kept, 0.f, 1.f, false)) {
    return invalid_argument("sample.min_kept must be in [0, 1], got " + num(s.min_kept));
  }
  if (!finite_in(s.max_lost, 0.f, 1.f, false)) {
    return invalid_argument("sample.max_lost must be in [0, 1] (1 = no bound), got " + num(s.max_lost));
  }
  if (!(s.look >= 0.f) || !std::isfinite(s.look)) {
    return invalid_argument("sample.look must be finite and >= 0 nats (0 = no look), got " + num(s.look));
  }
  return Status::ok();
}

// The bytes a strided tensor spans: [begin, end), empty when it has no rows.
struct ByteRange {
  uintptr_t begin = 0, end = 0;
  bool overlaps(const ByteRange& o) const { return begin < o.end && o.begin < end; }
};

ByteRange byte_range(const void* data, DType dtype, int64_t token_stride, int64_t head_stride,
                     int64_t tokens, int heads, int head_dim) {
  if (data == nullptr || tokens <= 0 || heads <= 0) return {};
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const int64_t last = (tokens - 1) * token_stride + (heads - 1) * head_stride + head_dim;
  return {begin, begin + static_cast<uintptr_t>(last * dtype_size(dtype))};
}

// The output (O and lse) may not overlap any input, nor each other: workers write O while others
// still read Q, K and V. Exact aliasing of O and Q (in-place attention) is rejected too, since
// sampled rows of Q are read again after the attention writes O (docs/SECURITY.md).
Status check_no_aliasing(const Problem& p) {
  const ByteRange q = byte_range(p.q.data, p.q.dtype, p.q.token_stride, p.q.head_stride, p.total_q, p.num_q_heads, p.head_dim);
  // A paged K or V spans its pages: num_pages pages, the last one page_size rows long.
  const auto kv_range = [&](const TensorView& t, int64_t token_stride, int64_t head_stride, int64_t page_stride, int dim) {
    if (!p.paged()) return byte_range(t.data, t.dtype, token_stride, head_stride, p.total_k, p.num_kv_heads, dim);
    ByteRange r = byte_range(t.data, t.dtype, token_stride, head_stride, p.kv.page_size, p.num_kv_heads, dim);
    r.end += static_cast<uintptr_t>((p.kv.num_pages - 1) * page_stride * dtype_size(t.dtype));
    return r;
  };
  const ByteRange k = kv_range(p.k, p.kv.k_token_stride, p.kv.k_head_stride, p.kv.k_page_stride, p.head_dim);
  const ByteRange v = kv_range(p.v, p.kv.v_token_stride, p.kv.v_head_stride, p.kv.v_page_stride, p.head_dim_v);
  const ByteRange o = byte_range(p.o.data, p.o.dtype, p.o.token_stride, p.o.head_stride, p.total_q, p.num_q_heads, p.head_dim_v);
  ByteRange lse;
  if (p.lse != nullptr && p.total_q > 0) {
    lse.begin = reinterpret_cast<uintptr_t>(p.lse);
    lse.end = lse.begin + static_cast<uintptr_t>(p.total_q * p.num_q_heads) * sizeof(float);
  }
  const struct {
    const char* name;
    const ByteRange& range;
  } inputs[] = {{"q", q}, {"k", k}, {"v", v}};
  for (const auto& in : inputs) {
    if (o.overlaps(in.range)) {
      return invalid_argument(std::string("o overlaps ") + in.name +
                              " in memory; the output must not alias an input (docs/SECURITY.md)");
    }
    if (lse.overlaps(in.range)) {
      return invalid_argument(std::string("lse overlaps ") + in.name + " in memory; the output must not alias an input");
    }
  }
  if (lse.overlaps(o)) return invalid_argument("lse overlaps o in memory");
  return Status::ok();
}

// K and V as the kv_cache describes them: packed (rows of the total_k tokens) or paged (rows of a
// page, pages page_stride apart, a block table of pages per sequence); quantized dtypes with scales
// and plain ones without. Fills out->kv and, paged, out->total_k (the keys the sequences use).
Status check_kv_cache(const sampleattn_params& p, const sampleattn_kv_cache& c, Problem* out) {
  if (c.block_table != nullptr) {  // the page shape first: the tensors' rows are a page's
    if (c.page_size < 16 || c.page_size % 16 != 0) {
      return invalid_shape("kv_cache.page_size must be a positive multiple of 16, got " + str(c.page_size));
    }
    if (c.num_pages < 1) return invalid_shape("kv_cache.num_pages must be >= 1 with a block_table");
    if (c.block_table_stride < 1 || c.block_table_stride > INT32_MAX) {
      return invalid_shape("kv_cache.block_table_stride must be in [1, 2^31), got " + str(c.block_table_stride));
    }
  } else if (c.page_size != 0 || c.num_pages != 0) {
    return invalid_argument("kv_cache.page_size and num_pages need a block_table (NULL = packed K/V)");
  }
  const int64_t tokens = c.block_table == nullptr ? out->total_k : c.page_size;
  SAMPLEATTN_RETURN_IF_ERROR(check_tensor("k", enum_value(p.k.dtype), p.k.token_stride, p.k.head_stride,
                                          p.num_kv_heads, tokens, p.head_dim, true));
  SAMPLEATTN_RETURN_IF_ERROR(check_tensor("v", enum_value(p.v.dtype), p.v.token_stride, p.v.head_stride,
                                          p.num_kv_heads, tokens, out->head_dim_v, true));
  const bool k_quant = p.k.dtype == SAMPLEATTN_DTYPE_I8 || p.k.dtype == SAMPLEATTN_DTYPE_FP8_E4M3;
  const bool v_quant = p.v.dtype == SAMPLEATTN_DTYPE_I8 || p.v.dtype == SAMPLEATTN_DTYPE_FP8_E4M3;
  if ((c.k_scale != nullptr && !k_quant) || (c.v_scale != nullptr && !v_quant)) {
    return invalid_argument(std::string("kv_cache.") + (c.k_scale != nullptr && !k_quant ? "k_scale" : "v_scale") +
                            " is set but that tensor is not int8 or fp8 e4m3");
  }
  if ((k_quant || v_quant) && (c.scale_token_stride < 0 || c.scale_head_stride < 0 || c.scale_page_stride < 0)) {
    return invalid_shape("kv_cache scale strides must be >= 0");
  }
  KvLayout& kv = out->kv;
  kv.k_scale = c.k_scale;
  kv.v_scale = c.v_scale;
  kv.scale_token_stride = c.scale_token_stride;
  kv.scale_head_stride = c.scale_head_stride;
  kv.scale_page_stride = c.scale_page_stride;
  if (c.block_table == nullptr) return Status::ok();
  // A page holds page_size rows of every head; pages must not overlap.
  const auto page_extent = [&](int64_t token_stride, int64_t head_stride, int dim) {
    return (c.page_size - 1) * token_stride + (p.num_kv_heads - 1) * head_stride + dim;
  };
  const struct {
    const char* name;
    int64_t stride, extent;
    int32_t dtype;
  } pools[] = {{"k_page_stride", c.k_page_stride, page_extent(p.k.token_stride, p.k.head_stride, p.head_dim), p.k.dtype},
               {"v_page_stride", c.v_page_stride, page_extent(p.v.token_stride, p.v.head_stride, out->head_dim_v), p.v.dtype}};
  for (const auto& pool : pools) {
    if (c.num_pages > 1 && pool.stride < pool.extent) {
      return invalid_shape(std::string("kv_cache.") + pool.name + " (" + str(pool.stride) +
                           ") is smaller than a page's rows (" + str(pool.extent) + " elements): pages would overlap");
    }
    if (static_cast<double>(c.num_pages) * static_cast<double>(std::max(pool.stride, pool.extent)) *
            dtype_size(static_cast<DType>(pool.dtype)) > 4.0e18) {
      return invalid_shape(std::string("kv_cache: ") + str(c.num_pages) + " pages of " + pool.name + " " +
                           str(pool.stride) + " overflow int64 byte offsets");
    }
  }
  out->total_k = 0;
  for (size_t b = 0; b < out->sequences.size(); ++b) {
    Sequence& s = out->sequences[b];
    const int64_t pages = (s.k_len + c.page_size - 1) / c.page_size;
    if (pages > c.block_table_stride) {
      return invalid_shape("sequence " + str(static_cast<int64_t>(b)) + " has " + str(s.k_len) + " keys: " +
                           str(pages) + " pages of " + str(c.page_size) + ", more than block_table_stride (" +
                           str(c.block_table_stride) + ")");
    }
    for (int64_t i = 0; i < pages; ++i) {
      const int32_t page = c.block_table[static_cast<int64_t>(b) * c.block_table_stride + i];
      if (page < 0 || page >= c.num_pages) {
        return invalid_shape("kv_cache.block_table[" + str(static_cast<int64_t>(b)) + "][" + str(i) + "] = " +
                             str(page) + " is not a page in [0, " + str(c.num_pages) + ")");
      }
    }
    s.k_begin = 0;  // paged keys are addressed by position, not by a token offset
    out->total_k += s.k_len;
  }
  kv.block_table = c.block_table;
  kv.table_stride = c.block_table_stride;
  kv.page_size = c.page_size;
  kv.num_pages = c.num_pages;
  kv.k_page_stride = c.k_page_stride;
  kv.v_page_stride = c.v_page_stride;
  return Status::ok();
}

}  // namespace

double Problem::dense_pairs() const {
  double pairs = 0;
  for (const Sequence& s : sequences) {
    pairs += static_cast<double>(causal ? model_pairs(s.q_len, s.k_len, window_left) : s.q_len * s.k_len);
  }
  return pairs * num_q_heads;
}

ScoreMod Problem::score_mod(int q_head) const {
  ScoreMod m;
  m.softcap_log2 = softcap * kLog2e;
  if (!alibi_slopes.empty()) m.alibi_log2 = alibi_slopes[static_cast<size_t>(q_head)] * kLog2e;
  if (!sinks.empty()) m.sink_log2 = sinks[static_cast<size_t>(q_head)] * kLog2e;
  return m;
}

sampleattn_sample_params default_sample_params() {
  sampleattn_sample_params p{};
  p.struct_size = sizeof(p);
  p.alpha = 0.95f;
  p.r_row = 0.05f;
  p.r_w = 0.08f;
  p.min_window = 64;
  p.sample_block = 64;
  p.min_stripes = 0;
  p.max_stripes = 0;
  p.sink_tokens = 4;
  p.dense_below = 2048;
  p.scope = SAMPLEATTN_STRIPES_PER_HEAD;
  p.window_mass_counts = 0;
  p.max_density = 0.8f;
  p.r_val = 0.02f;
  p.val_rows = 384;
  p.min_kept = 0.9f;
  p.max_lost = 0.01f;
  p.look = 0.f;
  return p;
}

sampleattn_kv_cache default_kv_cache() {
  sampleattn_kv_cache c{};
  c.struct_size = sizeof(c);
  return c;
}

sampleattn_params default_params() {
  sampleattn_params p{};
  p.struct_size = sizeof(p);
  p.q.dtype = p.k.dtype = p.v.dtype = SAMPLEATTN_DTYPE_F32;
  p.o.dtype = SAMPLEATTN_DTYPE_F32;
  p.batch = 1;
  p.softmax_scale = 0.f;
  p.causal = 1;
  p.method = SAMPLEATTN_METHOD_DENSE;
  p.precision = SAMPLEATTN_PRECISION_AUTO;
  p.sample = nullptr;
  p.head_dim_v = 0;
  p.window_left = kNoModelWindow;
  p.softcap = 0.f;
  p.alibi_slopes = nullptr;
  p.sinks = nullptr;
  p.kv_cache = nullptr;
  return p;
}

Status build_problem(const sampleattn_params* params, bool check_data, Problem* problem) {
  if (params == nullptr) return null_pointer("params is NULL");
  if (problem == nullptr) return null_pointer("problem is NULL");
  sampleattn_params p;
  SAMPLEATTN_RETURN_IF_ERROR(abi::read(*params, "params", "sampleattn_params_init", default_params(), &p));
  Problem out;
  const auto supported = [](int32_t d) {
    return std::find(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims), d) != std::end(kSupportedHeadDims);
  };
  if (!supported(p.head_dim)) {
    return {SAMPLEATTN_UNSUPPORTED_HEAD_DIM,
            "head_dim " + str(p.head_dim) + " is not supported (" + supported_head_dims_text() + ")"};
  }
  if (p.head_dim_v != 0 && !supported(p.head_dim_v)) {
    return {SAMPLEATTN_UNSUPPORTED_HEAD_DIM, "head_dim_v " + str(p.head_dim_v) + " is not supported (0 = head_dim, or " +
                                                 supported_head_dims_text() + ")"};
  }
  if (p.num_q_heads < 1 || p.num_kv_heads < 1) {
    return invalid_shape("num_q_heads (" + str(p.num_q_heads) + ") and num_kv_heads (" +
                         str(p.num_kv_heads) + ") must be >= 1");
  }
  if (p.num_q_heads % p.num_kv_heads != 0) {
    return invalid_shape("num_q_heads (" + str(p.num_q_heads) +
                         ") must be a multiple of num_kv_heads (" + str(p.num_kv_heads) + ")");
  }
  out.head_dim = p.head_dim;
  out.head_dim_v = p.head_dim_v == 0 ? p.head_dim : p.head_dim_v;
  out.num_q_heads = p.num_q_heads;
  out.num_kv_heads = p.num_kv_heads;
  out.group = p.num_q_heads / p.num_kv_heads;

  if (p.causal != 0 && p.causal != 1) return invalid_argument("causal must be 0 or 1");
  out.causal = p.causal == 1;
  if (std::isnan(p.softmax_scale) || std::isinf(p.softmax_scale) || p.softmax_scale < 0) {
    return invalid_argument("softmax_scale must be finite and >= 0 (0 = 1/sqrt(head_dim)), got " +
                            num(p.softmax_scale));
  }
  out.scale = p.softmax_scale == 0 ? 1.0f / std::sqrt(static_cast<float>(p.head_dim))
                                   : p.softmax_scale;
  const int32_t method = enum_value(p.method);
  if (method != SAMPLEATTN_METHOD_DENSE && method != SAMPLEATTN_METHOD_SAMPLE) {
    return invalid_argument("method " + str(method) + " is not a sampleattn_method");
  }
  out.method = p.method;
  if (p.method == SAMPLEATTN_METHOD_SAMPLE && p.causal != 1) {
    return invalid_argument("method sample needs causal = 1 (the window and stripes are causal)");
  }
  const int32_t precision = enum_value(p.precision);
  if (precision != SAMPLEATTN_PRECISION_F32 && precision != SAMPLEATTN_PRECISION_BF16 &&
      precision != SAMPLEATTN_PRECISION_AUTO) {
    return invalid_argument("precision " + str(precision) + " is not a sampleattn_precision");
  }
  out.precision = p.precision;
  out.sample = default_sample_params();
  if (p.sample != nullptr) {
    SAMPLEATTN_RETURN_IF_ERROR(
        abi::read(*p.sample, "sample", "sampleattn_sample_params_init", default_sample_params(), &out.sample));
  }
  SAMPLEATTN_RETURN_IF_ERROR(check_sample(out.sample));

  // The model's variants (ABI 1.3).
  if (p.window_left < kNoModelWindow || p.window_left > INT32_MAX) {
    return invalid_argument("window_left must be -1 (none) or in [0, 2^31), got " + str(p.window_left));
  }
  if (p.window_left >= 0 && !out.causal) return invalid_argument("window_left needs causal = 1");
  out.window_left = p.window_left;
  if (!std::isfinite(p.softcap) || p.softcap < 0) {
    return invalid_argument("softcap must be finite and >= 0 (0 = none), got " + num(p.softcap));
  }
  out.softcap = p.softcap;
  if (p.alibi_slopes != nullptr) {
    out.alibi_slopes.assign(p.alibi_slopes, p.alibi_slopes + p.num_q_heads);
    for (int h = 0; h < p.num_q_heads; ++h) {
      if (!std::isfinite(out.alibi_slopes[h])) {
        return invalid_argument("alibi_slopes[" + str(h) + "] must be finite, got " + num(out.alibi_slopes[h]));
      }
    }
  }
  if (p.sinks != nullptr) {
    out.sinks.assign(p.sinks, p.sinks + p.num_q_heads);
    for (int h = 0; h < p.num_q_heads; ++h) {
      const float v = out.sinks[h];
      if (std::isnan(v) || v == INFINITY) {
        return invalid_argument("sinks[" + str(h) + "] must be finite or -inf (no sink), got " + num(v));
      }
    }
  }

  // Sequences.
  if (p.batch < 1) return invalid_shape("batch must be >= 1, got " + str(p.batch));
  if ((p.cu_seqlens_q == nullptr) != (p.cu_seqlens_k == nullptr)) {
    return null_pointer("cu_seqlens_q and cu_seqlens_k must both be set or both be NULL");
  }
  if (p.cu_seqlens_q == nullptr) {
    if (p.batch != 1) {
      return null_pointer("batch " + str(p.batch) + " needs cu_seqlens_q and cu_seqlens_k");
    }
    if (p.seqlen_q < 0 || p.seqlen_k < 0 || p.seqlen_q > INT32_MAX || p.seqlen_k > INT32_MAX) {
      return invalid_shape("seqlen_q (" + str(p.seqlen_q) + ") and seqlen_k (" + str(p.seqlen_k) +
                           ") must be in [0, 2^31)");
    }
    out.sequences.push_back({0, p.seqlen_q, 0, p.seqlen_k});
  } else {
    if (p.cu_seqlens_q[0] != 0 || p.cu_seqlens_k[0] != 0) {
      return invalid_shape("cu_seqlens_q[0] and cu_seqlens_k[0] must be 0");
    }
    out.sequences.reserve(p.batch);
    for (int b = 0; b < p.batch; ++b) {
      const int64_t q0 = p.cu_seqlens_q[b], q1 = p.cu_seqlens_q[b + 1];
      const int64_t k0 = p.cu_seqlens_k[b], k1 = p.cu_seqlens_k[b + 1];
      if (q1 < q0 || k1 < k0) {
        return invalid_shape("cu_seqlens must be non-decreasing (sequence " + str(b) + ")");
      }
      out.sequences.push_back({q0, q1 - q0, k0, k1 - k0});
    }
  }
  // The KV cache (ABI 1.4): used key counts, paging, scales.
  sampleattn_kv_cache cache = default_kv_cache();
  if (p.kv_cache != nullptr) {
    SAMPLEATTN_RETURN_IF_ERROR(
        abi::read(*p.kv_cache, "kv_cache", "sampleattn_kv_cache_init", default_kv_cache(), &cache));
  }
  if (cache.seqused_k != nullptr) {
    for (size_t b = 0; b < out.sequences.size(); ++b) {
      const int64_t used = cache.seqused_k[b];
      // Packed, a sequence uses the first seqused_k of the keys cu_seqlens_k gives it.
      if (used < 0 || (cache.block_table == nullptr && used > out.sequences[b].k_len)) {
        return invalid_shape("kv_cache.seqused_k[" + str(static_cast<int64_t>(b)) + "] = " + str(used) +
                             (used < 0 ? " is negative" : " exceeds the sequence's " + str(out.sequences[b].k_len) + " keys"));
      }
      out.sequences[b].k_len = used;
    }
  }
  for (size_t b = 0; b < out.sequences.size(); ++b) {
    const Sequence& s = out.sequences[b];
    if (out.causal && s.q_len > s.k_len) {
      return invalid_shape("sequence " + str(static_cast<int64_t>(b)) + " has " + str(s.q_len) +
                           " queries but only " + str(s.k_len) +
                           " keys; causal chunked prefill needs q_len <= k_len");
    }
  }
  out.total_q = out.sequences.back().q_begin + out.sequences.back().q_len;
  out.total_k = 0;
  for (const Sequence& s : out.sequences) out.total_k = std::max(out.total_k, s.k_begin + s.k_len);

  SAMPLEATTN_RETURN_IF_ERROR(check_tensor("q", enum_value(p.q.dtype), p.q.token_stride, p.q.head_stride,
                                          p.num_q_heads, out.total_q, p.head_dim));
  SAMPLEATTN_RETURN_IF_ERROR(check_kv_cache(p, cache, &out));
  SAMPLEATTN_RETURN_IF_ERROR(check_tensor("o", enum_value(p.o.dtype), p.o.token_stride, p.o.head_stride,
                                          p.num_q_heads, out.total_q, out.head_dim_v));
  out.q = {p.q.data, static_cast<DType>(p.q.dtype), p.q.token_stride, p.q.head_stride};
  out.k = {p.k.data, static_cast<DType>(p.k.dtype), p.k.token_stride, p.k.head_stride};
  out.v = {p.v.data, static_cast<DType>(p.v.dtype), p.v.token_stride, p.v.head_stride};
  out.kv.k_token_stride = p.k.token_stride, out.kv.k_head_stride = p.k.head_stride;
  out.kv.v_token_stride = p.v.token_stride, out.kv.v_head_stride = p.v.head_stride;
  out.o = {p.o.data, static_cast<DType>(p.o.dtype), p.o.token_stride, p.o.head_stride};
  out.lse = p.lse;
  out.stream = p.stream;

  if (check_data) {
    if (out.total_q > 0 && (p.q.data == nullptr || p.o.data == nullptr)) {
      return null_pointer(p.q.data == nullptr ? "q.data is NULL" : "o.data is NULL");
    }
    if (out.total_k > 0 && (p.k.data == nullptr || p.v.data == nullptr)) {
      return null_pointer(p.k.data == nullptr ? "k.data is NULL" : "v.data is NULL");
    }
    if (out.total_k > 0 && ((dtype_quantized(out.k.dtype) && out.kv.k_scale == nullptr) ||
                            (dtype_quantized(out.v.dtype) && out.kv.v_scale == nullptr))) {
      return null_pointer(std::string("kv_cache.") + (dtype_quantized(out.k.dtype) && out.kv.k_scale == nullptr ? "k_scale" : "v_scale") +
                          " is NULL but that tensor is quantized (int8 / fp8 e4m3 need their scales)");
    }
    SAMPLEATTN_RETURN_IF_ERROR(check_no_aliasing(out));
  }
  *problem = std::move(out);
  return Status::ok();
}

}  // namespace sampleattn
