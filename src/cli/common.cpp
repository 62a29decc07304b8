#include "cli/common.h"

#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>

#include "core/problem.h"

namespace sampleattn::cli {
namespace {

// "123", "64K", "256M", "2G" (powers of 1024).
bool parse_bytes(const std::string& text, uint64_t* out) {
  if (text.empty() || text[0] < '0' || text[0] > '9') return false;
  size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &used);
  } catch (...) {
    return false;
  }
  int shift = 0;
  const std::string suffix = text.substr(used);
  if (suffix == "K") shift = 10;
  else if (suffix == "M") shift = 20;
  else if (suffix == "G") shift = 30;
  else if (!suffix.empty()) return false;
  if (shift > 0 && v > (~0ull >> shift)) return false;
  *out = static_cast<uint64_t>(v) << shift;
  return true;
}

std::string g_memory_need = "its inputs";

}  // namespace

int fail(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "sampleattn %s: %s\n", command.c_str(), message.c_str());
  return kExitFailure;
}

int usage_error(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "sampleattn %s: %s\n(the options: sampleattn %s --help)\n", command.c_str(), message.c_str(),
               command.c_str());
  return kExitUsage;
}

void note_memory_need(const std::string& what, uint64_t bytes) {
  g_memory_need = what + " (about " + std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB)";
}

std::string memory_need() { return g_memory_need; }

std::string describe(const Status& status) {
  return status.code() == SAMPLEATTN_OUT_OF_MEMORY ? "out of memory: " + status.message() : status.message();
}

workload::GeneratorConfig structured_config(int64_t seq, int heads, int kv_heads, int head_dim,
                                            uint64_t seed, int64_t needles, workload::HeadMix mix,
                                            int head_dim_v, int64_t window_left, double softcap) {
  workload::GeneratorConfig cfg;
  cfg.mix = mix;
  cfg.head_dim_v = head_dim_v;
  cfg.window_left = window_left;
  cfg.softcap = softcap;
  cfg.seq = seq;
  cfg.head_dim = head_dim;
  cfg.num_q_heads = heads;
  cfg.num_kv_heads = kv_heads;
  cfg.seed = seed;
  for (int64_t i = 0; i < needles; ++i) {
    workload::NeedleSpec n;
    n.depth = (static_cast<double>(i) + 0.5) / static_cast<double>(needles);
    cfg.needles.push_back(n);
  }
  return cfg;
}

bool parse_head_mix(const std::string& text, workload::HeadMix* mix) {
  for (workload::HeadMix m : {workload::HeadMix::kDefault, workload::HeadMix::kReal, workload::HeadMix::kFar}) {
    if (text == workload::head_mix_name(m)) {
      *mix = m;
      return true;
    }
  }
  return false;
}

Status check_inputs_agree(const workload::Tensor3& q, const workload::Tensor3& k, const workload::Tensor3& v) {
  std::string shapes = " (";
  const struct {
    const char* name;
    const workload::Tensor3& t;
  } all[] = {{"q", q}, {"k", k}, {"v", v}};
  for (const auto& [name, t] : all) {
    shapes.append(name).append(" [").append(std::to_string(t.seq)).append(", ").append(std::to_string(t.heads));
    shapes.append(", ").append(std::to_string(t.dim)).append(name[0] == 'v' ? "])" : "], ");
  }
  if (q.seq < 1 || k.seq < 1) return invalid_shape("q and k need at least one token" + shapes);
  if (k.seq != v.seq) return invalid_shape("k and v must have the same number of tokens" + shapes);
  if (k.heads != v.heads) return invalid_shape("k and v must have the same number of heads" + shapes);
  if (q.dim != k.dim) return invalid_shape("q and k must have the same head dim" + shapes);
  if (k.heads < 1 || q.heads % k.heads != 0) {
    return invalid_shape("the query heads must be a multiple of the kv heads" + shapes);
  }
  if (q.seq > k.seq) return invalid_shape("q has more tokens than k (causal chunked prefill needs q <= k)" + shapes);
  return Status::ok();
}

const char* decision_name(int32_t decision) {
  switch (decision) {
    case SAMPLEATTN_DECISION_SPARSE: return "sparse";
    case SAMPLEATTN_DECISION_SPARSE_WIDENED: return "widened";
    case SAMPLEATTN_DECISION_DENSE_METHOD: return "dense:method";
    case SAMPLEATTN_DECISION_DENSE_SHORT: return "dense:short";
    case SAMPLEATTN_DECISION_DENSE_COST: return "dense:cost";
    case SAMPLEATTN_DECISION_DENSE_VALIDATION: return "dense:validation";
    case SAMPLEATTN_DECISION_DENSE_WINDOW: return "dense:window";
    case SAMPLEATTN_DECISION_DENSE_LOOK: return "dense:look";
    default: return "unknown";
  }
}

bool parse_dtype(const std::string& text, DType* out) {
  if (text == "f32") { *out = DType::kF32; return true; }
  if (text == "f16") { *out = DType::kF16; return true; }
  if (text == "bf16") { *out = DType::kBF16; return true; }
  return false;
}

void declare_method_options(Options& o) {
  sampleattn_sample_params d;
  sampleattn_sample_params_init(&d);
  o.value("precision", "auto",
          "products: auto (bf16 inputs on bf16 products where those are the CPU's fastest: AMX, AMD's vdpbf16ps; "
          "else f32), f32, or bf16 (f32 accumulation)");
  o.value("alpha", std::to_string(d.alpha), "SampleAttention: cumulative score threshold, in (0, 1]");
  o.value("r-row", std::to_string(d.r_row), "SampleAttention: fraction of query rows sampled, in (0, 1]");
  o.value("r-w", std::to_string(d.r_w), "SampleAttention: local window as a fraction of the keys, in [0, 1]");
  o.value("min-window", std::to_string(d.min_window), "SampleAttention: smallest window, keys");
  o.value("sample-block", std::to_string(d.sample_block), "SampleAttention: rows per sampled block, >= 1");
  o.value("sink-tokens", std::to_string(d.sink_tokens), "SampleAttention: first keys always kept");
  o.value("min-stripes", std::to_string(d.min_stripes), "SampleAttention: fewest stripes");
  o.value("max-stripes", std::to_string(d.max_stripes), "SampleAttention: most stripes (0: no limit; else >= --min-stripes)");
  o.value("dense-below", std::to_string(d.dense_below), "SampleAttention: shorter sequences run dense");
  o.value("scope", "head", "SampleAttention: stripes per 'head' or per kv 'group'");
  o.flag("window-mass-counts", "SampleAttention: count the window's mass as covered");
  o.value("max-density", std::to_string(d.max_density),
          "SampleAttention: a head whose mask would compute more of its pairs runs dense, in (0, 1] (1: never)");
  o.value("val-rows", std::to_string(d.val_rows),
          "SampleAttention: query rows kept aside to validate the mask, >= 0 (0: no validation)");
  o.value("r-val", std::to_string(d.r_val),
          "SampleAttention: the most validation rows as a fraction of the query rows, in [0, 1) (0: no validation)");
  o.value("min-kept", std::to_string(d.min_kept),
          "SampleAttention: kept mass the validation rows' 5th percentile must reach (else more stripes, or dense), in [0, 1]");
  o.value("max-lost", std::to_string(d.max_lost),
          "SampleAttention: most root-mean-square lost mass of the validation rows (else more stripes, or dense), in [0, 1]");
  o.value("look", std::to_string(d.look),
          "SampleAttention: the look at every row, nats: a row whose largest score outside its band and stripes comes "
          "this close to its mask's largest (band, stripes, sinks) runs dense; a head is looked at whole when a probe of "
          "every 8th row flags 1 row in 1,024, >= 0 (0: no look)");
}

bool read_method_options(const Options& o, sampleattn::Params* p, std::string* error) {
  const std::string precision = o.get("precision");
  if (precision == "auto") {
    p->precision = SAMPLEATTN_PRECISION_AUTO;
  } else if (precision == "f32") {
    p->precision = SAMPLEATTN_PRECISION_F32;
  } else if (precision == "bf16") {
    p->precision = SAMPLEATTN_PRECISION_BF16;
  } else {
    *error = "--precision must be auto, f32 or bf16, got '" + precision + "'";
    return false;
  }
  // The library's ranges (sampleattn.h), checked here so that a bad value is a usage error
  // before any input is read or generated, not a failed call afterwards.
  int64_t n;
  sampleattn_sample_params& s = p->sample;
  if (!read_fraction(o, "alpha", false, &s.alpha, error) || !read_fraction(o, "r-row", false, &s.r_row, error) ||
      !read_fraction(o, "r-w", true, &s.r_w, error)) {
    return false;
  }
  if (!o.get_int("min-window", 0, INT32_MAX, &n, error)) return false;
  s.min_window = static_cast<int32_t>(n);
  if (!o.get_int("sample-block", 1, INT32_MAX, &n, error)) return false;
  s.sample_block = static_cast<int32_t>(n);
  if (!o.get_int("sink-tokens", 0, INT32_MAX, &n, error)) return false;
  s.sink_tokens = static_cast<int32_t>(n);
  if (!o.get_int("min-stripes", 0, INT32_MAX, &n, error)) return false;
  s.min_stripes = static_cast<int32_t>(n);
  if (!o.get_int("max-stripes", 0, INT32_MAX, &n, error)) return false;
  s.max_stripes = static_cast<int32_t>(n);
  if (s.max_stripes > 0 && s.max_stripes < s.min_stripes) {
    *error = "--max-stripes (" + o.get("max-stripes") + ") is below --min-stripes (" + o.get("min-stripes") +
             "); 0 means no limit";
    return false;
  }
  if (!o.get_int("dense-below", 0, INT32_MAX, &n, error)) return false;
  s.dense_below = static_cast<int32_t>(n);
  const std::string scope = o.get("scope");
  if (scope == "head") {
    s.scope = SAMPLEATTN_STRIPES_PER_HEAD;
  } else if (scope == "group") {
    s.scope = SAMPLEATTN_STRIPES_PER_KV_GROUP;
  } else {
    *error = "--scope must be head or group, got '" + scope + "'";
    return false;
  }
  s.window_mass_counts = o.has("window-mass-counts") ? 1 : 0;
  if (!read_fraction(o, "max-density", false, &s.max_density, error) ||
      !read_fraction(o, "r-val", true, &s.r_val, error) || !read_fraction(o, "min-kept", true, &s.min_kept, error) ||
      !read_fraction(o, "max-lost", true, &s.max_lost, error)) {
    return false;
  }
  if (!o.get_int("val-rows", 0, INT32_MAX, &n, error)) return false;
  s.val_rows = static_cast<int32_t>(n);
  double look = 0;
  if (!o.get_double("look", 0, std::numeric_limits<float>::max(), &look, error)) return false;
  s.look = static_cast<float>(look);
  if (s.r_val >= 1.f) {
    *error = "--r-val must be below 1 (rows are needed to choose the stripes), got " + o.get("r-val");
    return false;
  }
  return true;
}

bool read_fraction(const Options& o, const std::string& name, bool zero_allowed, float* out, std::string* error) {
  const std::string text = o.get(name);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v <= 1) || !(zero_allowed ? v >= 0 : v > 0)) {
    *error = "--" + name + " must be a number in " + (zero_allowed ? "[0, 1]" : "(0, 1]") + ", got '" + text + "'";
    return false;
  }
  *out = static_cast<float>(v);
  return true;
}

std::string supported_head_dims() {
  std::string list;
  const size_t n = std::size(kSupportedHeadDims);
  for (size_t i = 0; i < n; ++i) {
    list += (i == 0 ? "" : i + 1 == n ? " or " : ", ") + std::to_string(kSupportedHeadDims[i]);
  }
  return list;
}

std::vector<int> head_dim_list() { return {std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims)}; }

bool read_head_dim(const Options& o, int* out, std::string* error) {
  int64_t dim = 0;
  std::string unused;
  if (o.get_int("head-dim", 1, INT32_MAX, &dim, &unused)) {
    for (int d : kSupportedHeadDims) {
      if (d == dim) {
        *out = d;
        return true;
      }
    }
  }
  *error = "--head-dim must be one of the library's head dims, " + supported_head_dims() + ", got '" +
           o.get("head-dim") + "'";
  return false;
}

bool read_head_dim_v(const Options& o, int* out, std::string* error) {
  *out = 0;
  if (!o.has("head-dim-v") || o.get("head-dim-v") == "0") return true;
  int64_t dim = 0;
  std::string unused;
  if (o.get_int("head-dim-v", 1, INT32_MAX, &dim, &unused)) {
    for (int d : kSupportedHeadDims) {
      if (d == dim) {
        *out = d;
        return true;
      }
    }
  }
  *error = "--head-dim-v must be one of the library's head dims, " + supported_head_dims() + " (0: --head-dim), got '" +
           o.get("head-dim-v") + "'";
  return false;
}

bool check_generated_head_dim(int head_dim, std::string* error) {
  if (head_dim >= workload::kMinGeneratedHeadDim) return true;
  *error = "generated inputs need --head-dim " + std::to_string(workload::kMinGeneratedHeadDim) +
           " or more (the generator's structure needs the RoPE pairs), got " + std::to_string(head_dim) +
           "; the library runs it: use --data random or --data npy:DIR";
  return false;
}

void declare_variant_options(Options& o, SinksOption sinks) {
  o.value("window-left", "-1",
          "model: sliding window, the query at p sees keys p - N .. p; generated needles lie within it (-1: none)");
  o.value("softcap", "0",
          "model: logit softcap, s -> X tanh(s / X) (Gemma 2: 50); generated inputs are calibrated under it (0: none)");
  o.flag("alibi", "model: ALiBi with the standard slopes for the query heads, 2^(-8(h+1)/n) (BLOOM's for other n)");
  if (sinks == SinksOption::kGenerated) {
    o.flag("sinks", "model: learned sinks, one logit per query head, made so head h's sink takes a share "
                    "u_h ~ U[0.05, 0.5) (from --seed) of its median row's mass");
  } else {
    o.value("sinks", "", "model: learned sink logits (natural log; -inf: none), one per query head or one for all");
  }
}

bool read_variant_options(const Options& o, SinksOption sinks, VariantOptions* v, std::string* error) {
  *v = VariantOptions();
  std::string unused;
  if (!o.get_int("window-left", -1, INT32_MAX, &v->window_left, &unused)) {
    *error = "--window-left must be -1 (no window) or a number of keys in [0, " + std::to_string(INT32_MAX) +
             "], got '" + o.get("window-left") + "'";
    return false;
  }
  if (!o.get_double("softcap", 0, 1e30, &v->softcap, &unused)) {
    *error = "--softcap must be a finite number >= 0 (0: no cap), got '" + o.get("softcap") + "'";
    return false;
  }
  v->alibi = o.has("alibi");
  if (!o.has("sinks")) return true;
  if (sinks == SinksOption::kGenerated) {
    v->generated_sinks = true;
    return true;
  }
  // Natural-log logits: finite, or -inf for a head without a sink (strtod reads "-inf").
  for (const std::string& item : o.get_list("sinks")) {
    char* end = nullptr;
    const double x = std::strtod(item.c_str(), &end);
    const float logit = static_cast<float>(x);
    const bool no_sink = std::isinf(x) && x < 0;
    if (*end != '\0' || !(std::isfinite(logit) || no_sink)) {
      *error = "--sinks takes sink logits (natural log), finite or -inf, comma-separated, got '" + item + "'";
      return false;
    }
    v->sink_values.push_back(logit);
  }
  if (v->sink_values.empty()) {
    *error = "--sinks needs one logit per query head, or one for all";
    return false;
  }
  return true;
}

bool model_variants_for(const VariantOptions& v, int64_t q_heads, workload::ModelVariants* model, std::string* error) {
  *model = workload::ModelVariants();
  model->window_left = v.window_left;
  model->softcap = v.softcap;
  if (v.alibi) model->alibi_slopes = workload::standard_alibi_slopes(static_cast<int>(q_heads));
  if (v.sink_values.size() == 1) {
    model->sinks.assign(static_cast<size_t>(q_heads), v.sink_values.front());
  } else if (!v.sink_values.empty()) {
    if (static_cast<int64_t>(v.sink_values.size()) != q_heads) {
      *error = "--sinks has " + std::to_string(v.sink_values.size()) + " logits for " + std::to_string(q_heads) +
               " query heads: give one per query head, or one for all";
      return false;
    }
    model->sinks = v.sink_values;
  }
  return true;
}

std::string describe_variants(const workload::ModelVariants& model, int64_t head_dim, int64_t head_dim_v) {
  std::string text;
  auto add = [&text](const std::string& part) {
    if (!text.empty()) text += ", ";
    text += part;
  };
  if (model.window_left >= 0) add("window " + std::to_string(model.window_left));
  if (model.softcap > 0) {
    char cap[32];
    std::snprintf(cap, sizeof cap, "softcap %g", model.softcap);
    add(cap);
  }
  if (!model.alibi_slopes.empty()) add("ALiBi");
  if (!model.sinks.empty()) add("sinks");
  if (head_dim_v != head_dim) add("head_dim_v " + std::to_string(head_dim_v));
  return text;
}

void declare_context_options(Options& o) {
  o.value("backend", "cpu", "cpu, cuda or auto");
  o.value("threads", "0", "CPU worker threads (0: SAMPLEATTN_NUM_THREADS or one per core)");
  o.flag("no-bind", "do not bind CPU workers to cores");
  o.value("max-workspace", "0", "bytes of workspace a call may use (suffix K, M or G; 0: no limit)");
}

bool read_context_options(const Options& o, sampleattn_context_options* opts, std::string* error) {
  sampleattn_context_options_init(opts);
  const std::string backend = o.get("backend");
  if (backend == "cpu") {
    opts->backend = SAMPLEATTN_BACKEND_CPU;
  } else if (backend == "cuda") {
    opts->backend = SAMPLEATTN_BACKEND_CUDA;
  } else if (backend == "auto") {
    opts->backend = SAMPLEATTN_BACKEND_AUTO;
  } else {
    *error = "--backend must be cpu, cuda or auto, got '" + backend + "'";
    return false;
  }
  int64_t threads;
  if (!o.get_int("threads", 0, 4096, &threads, error)) return false;
  opts->num_threads = static_cast<int32_t>(threads);
  opts->binding = o.has("no-bind") ? SAMPLEATTN_BIND_NONE : SAMPLEATTN_BIND_CORES;
  if (!parse_bytes(o.get("max-workspace"), &opts->max_workspace_bytes)) {
    *error = "--max-workspace must be a byte count, e.g. 268435456, 256M or 2G (got '" + o.get("max-workspace") + "')";
    return false;
  }
  return true;
}

bool create_context(const sampleattn_context_options& opts, ContextHandle* ctx, std::string* error) {
  sampleattn_context* raw = nullptr;
  const sampleattn_status s = sampleattn_context_create(&opts, &raw);
  if (s != SAMPLEATTN_SUCCESS) {
    *error = std::string(sampleattn_status_string(s)) + ": " + sampleattn_last_error();
    return false;
  }
  ctx->reset(raw);
  return true;
}

sampleattn_context_info context_info(const sampleattn_context* ctx) {
  sampleattn_context_info info;
  sampleattn_context_info_init(&info);
  sampleattn_context_get_info(ctx, &info);
  return info;
}

void Progress::operator()(const std::string& line) const {
  if (!quiet_) std::fprintf(stderr, "[%s] %s\n", command_.c_str(), line.c_str());
}

std::string mebibytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", u);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

sampleattn_params tensor_params(const workload::Tensor3& q, const workload::Tensor3& k,
                                const workload::Tensor3& v, const void* q_data, const void* k_data, const void* v_data,
                                void* o_data, DType o_dtype) {
  sampleattn_params p;
  sampleattn_params_init(&p);
  p.q = {q_data, static_cast<sampleattn_dtype>(q.dtype), q.token_stride(), q.head_stride()};
  p.k = {k_data, static_cast<sampleattn_dtype>(k.dtype), k.token_stride(), k.head_stride()};
  p.v = {v_data, static_cast<sampleattn_dtype>(v.dtype), v.token_stride(), v.head_stride()};
  p.o = {o_data, static_cast<sampleattn_dtype>(o_dtype), q.heads * v.dim, v.dim};
  p.head_dim = static_cast<int32_t>(q.dim);
  p.head_dim_v = v.dim == q.dim ? 0 : static_cast<int32_t>(v.dim);
  p.num_q_heads = static_cast<int32_t>(q.heads);
  p.num_kv_heads = static_cast<int32_t>(k.heads);
  p.seqlen_q = q.seq;
  p.seqlen_k = k.seq;
  return p;
}

}  // namespace sampleattn::cli
