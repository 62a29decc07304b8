// The sampleattn program: `bench` (the main job), `run` (a user's own .npy tensors), `mask` (a
// picture of one head's chosen mask), `profile` (attention statistics of generated inputs and
// real captures side by side), `generate` (inputs as .npy) and `info` (what this machine and
// build offer).
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "cli/bench.h"
#include "cli/common.h"
#include "cli/device_memory.h"
#include "cli/options.h"
#include "cpu/cgroup_limits.h"
#include "workload/attention_profile.h"
#include "workload/generator.h"
#include "workload/mask_image.h"
#include "workload/metrics.h"
#include "workload/npy.h"

namespace sampleattn::cli {
namespace {

// One line a command: `sampleattn help`, `sampleattn --help`, and (on stderr) a usage error.
constexpr const char* kUsage =
    "usage: sampleattn <command> [options]     (sampleattn <command> --help: its options)\n"
    "\n"
    "commands:\n"
    "  bench     time dense against SampleAttention (default: generated inputs, 4K-32K tokens), paged or quantized KV, decode\n"
    "  run       attention over your .npy tensors (or generated ones) into o.npy\n"
    "  mask      draw one head's chosen mask over its true attention as a PNG\n"
    "  profile   per-head attention statistics of generated inputs beside real captures\n"
    "  generate  write generated structured inputs as q.npy, k.npy, v.npy\n"
    "  info      version, CPU, kernel tables, backends, threads, head dims, memory ceiling, environment overrides\n"
    "  help      this list (sampleattn help <command>: that command's options)\n"
    "\n"
    "  --version prints the version\n"
    "\n"
    "exit status (every command):\n"
    "  0  success\n"
    "  1  the work failed: a library call, reading or writing a file, bad input data, a check\n"
    "  2  a usage error: no or unknown command, an unknown option, a bad value\n";

bool wants_help(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  }
  return false;
}

// The usage line and options of a command, on stdout for --help.
int print_help(const char* usage, const Options& o) {
  std::printf("usage: %s\n%s", usage, o.usage().c_str());
  return kExitOk;
}

// Inputs: --q/--k/--v files (run, mask, profile), or generated structured data.
void declare_file_inputs(Options& o) {
  o.value("q", "", "query .npy [seq, heads, dim] (f32, f16, or bf16 as <u2)");
  o.value("k", "", "key .npy [seq, kv_heads, dim]");
  o.value("v", "", "value .npy [seq, kv_heads, dim]");
}

constexpr const char* kGeneratedInputOptions[] = {"seq", "heads", "kv-heads", "head-dim", "seed", "needles", "mix"};

void declare_generated_inputs(Options& o, const char* prefix) {
  const std::string p = prefix;
  o.value("seq", "8192", p + "tokens");
  o.value("heads", "8", p + "query heads, a multiple of --kv-heads");
  o.value("kv-heads", "", p + "kv heads (default: as many as --heads)");
  o.value("head-dim", "128", p + "head dimension: " + supported_head_dims());
  o.value("seed", "1", p + "seed");
  o.value("needles", "8", p + "planted needles");
  o.value("mix", "default", p + kMixHelp);
}

// What the input options ask for, checked before anything is read or generated.
struct InputSpec {
  bool files = false;
  std::string q, k, v;
  int64_t seq = 0, heads = 0, kv_heads = 0, seed = 0, needles = 0;
  int head_dim = 0;
  workload::HeadMix mix = workload::HeadMix::kDefault;
  // The model generated inputs are made for (workload::GeneratorConfig): V's head size (0: head_dim;
  // --head-dim-v where the command has it), window and softcap (the command's variant options).
  int head_dim_v = 0;
  int64_t window_left = -1;
  double softcap = 0;
};

// --head-dim-v: V's own head size, for the commands that make or run generated inputs.
void declare_head_dim_v(Options& o, const char* prefix) {
  o.value("head-dim-v", "", std::string(prefix) + "value head dimension, one of --head-dim's list (default: --head-dim)");
}

// false with error set: a usage error.
bool read_input_spec(const Options& o, bool files_allowed, InputSpec* in, std::string* error) {
  if (files_allowed && (o.has("q") || o.has("k") || o.has("v"))) {
    if (!o.has("q") || !o.has("k") || !o.has("v")) {
      *error = "--q, --k and --v go together";
      return false;
    }
    for (const char* name : kGeneratedInputOptions) {
      if (o.has(name)) {
        *error = std::string("--") + name + " describes generated inputs; it does not go with --q, --k and --v";
        return false;
      }
    }
    if (o.has("head-dim-v")) {
      *error = "--head-dim-v describes generated inputs; with --q, --k and --v, v.npy's shape decides";
      return false;
    }
    in->files = true;
    in->q = o.get("q");
    in->k = o.get("k");
    in->v = o.get("v");
    return true;
  }
  if (!o.get_int("seq", 1, workload::kMaxGeneratedSeq, &in->seq, error) ||
      !o.get_int("heads", 1, 1024, &in->heads, error) ||
      !o.get_int(o.has("kv-heads") ? "kv-heads" : "heads", 1, 1024, &in->kv_heads, error) ||
      !read_head_dim(o, &in->head_dim, error) || !check_generated_head_dim(in->head_dim, error) ||
      !read_head_dim_v(o, &in->head_dim_v, error) || !o.get_int("seed", 0, INT64_MAX, &in->seed, error) ||
      !o.get_int("needles", 0, 64, &in->needles, error)) {
    return false;
  }
  if (!parse_head_mix(o.get("mix"), &in->mix)) {
    *error = "--mix must be default, real or far, got '" + o.get("mix") + "'";
    return false;
  }
  if (in->heads % in->kv_heads != 0) {
    *error = "--heads (" + std::to_string(in->heads) + ") must be a multiple of --kv-heads (" +
             std::to_string(in->kv_heads) + ")";
    return false;
  }
  return true;
}

uint64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const uintmax_t n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<uint64_t>(n);
}

Status read_input(const std::string& path, const Progress& progress, workload::Tensor3* t) {
  progress("reading " + path + " (" + mebibytes(file_bytes(path)) + ")");
  return workload::read_npy(path, t);
}

Status load_inputs(const InputSpec& in, const Progress& progress, workload::Tensor3* q, workload::Tensor3* k,
                   workload::Tensor3* v) {
  if (in.files) {
    SAMPLEATTN_RETURN_IF_ERROR(read_input(in.q, progress, q));
    SAMPLEATTN_RETURN_IF_ERROR(read_input(in.k, progress, k));
    SAMPLEATTN_RETURN_IF_ERROR(read_input(in.v, progress, v));
    return check_inputs_agree(*q, *k, *v);
  }
  // The generator builds f32 tensors and working copies of the same size.
  const uint64_t dv = static_cast<uint64_t>(in.head_dim_v > 0 ? in.head_dim_v : in.head_dim);
  const uint64_t bytes = 2ull * static_cast<uint64_t>(in.seq) *
                         (static_cast<uint64_t>(in.heads + in.kv_heads) * static_cast<uint64_t>(in.head_dim) +
                          static_cast<uint64_t>(in.kv_heads) * dv) *
                         4u;
  note_memory_need("the generated inputs of " + std::to_string(in.seq) + " tokens", bytes);
  progress("generating structured inputs: " + std::to_string(in.seq) + " tokens, " + std::to_string(in.heads) + "/" +
           std::to_string(in.kv_heads) + " heads, head dim " + std::to_string(in.head_dim));
  workload::GeneratedData g;
  SAMPLEATTN_RETURN_IF_ERROR(workload::generate(
      structured_config(in.seq, static_cast<int>(in.heads), static_cast<int>(in.kv_heads), in.head_dim,
                        static_cast<uint64_t>(in.seed), in.needles, in.mix, in.head_dim_v, in.window_left,
                        in.softcap),
      &g));
  *q = std::move(g.q);
  *k = std::move(g.k);
  *v = std::move(g.v);
  return Status::ok();
}

// The folder an output goes into must exist: checked before the inputs are read, so a typo does
// not cost a long run. (Writing can still fail; write_npy and the PNG writer say why.)
Status check_output_folder(const std::string& path) {
  const std::filesystem::path p(path);
  const std::filesystem::path folder = p.has_parent_path() ? p.parent_path() : ".";
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) {
    const bool exists = std::filesystem::exists(folder, ec);
    return {SAMPLEATTN_INVALID_ARGUMENT, "cannot create " + path + ": " + folder.string() +
                                             (exists ? " is not a folder" : " does not exist")};
  }
  return Status::ok();
}

// Runs one call over host tensors on the context's backend; O in `o_dtype`.
struct RunResult {
  workload::Tensor3 o;
  sampleattn_stats stats{};
  std::vector<sampleattn_head_stats> heads;
  std::vector<int32_t> offsets, stripes;
};

Status run_call(sampleattn_context* ctx, const sampleattn_params& method, const workload::ModelVariants& model,
                const workload::Tensor3& q, const workload::Tensor3& k, const workload::Tensor3& v, DType o_dtype,
                const Progress& progress, RunResult* r) {
  const sampleattn_context_info info = context_info(ctx);
  BackendMemory mem(info.backend);
  std::string error;
  SAMPLEATTN_RETURN_IF_ERROR(workload::make_tensor(q.seq, q.heads, v.dim, o_dtype, &r->o));
  const std::string variants = describe_variants(model, q.dim, v.dim);
  progress(std::string("running ") + (method.method == SAMPLEATTN_METHOD_DENSE ? "dense" : "sample") + " on " +
           std::to_string(q.seq) + " tokens (" + std::to_string(q.heads) + "/" + std::to_string(k.heads) +
           " heads, head dim " + std::to_string(q.dim) + ", " + dtype_name(q.dtype) +
           (variants.empty() ? "" : ", " + variants) + ") on " +
           (info.backend == SAMPLEATTN_BACKEND_CUDA ? "cuda" : "cpu") + ", " + std::to_string(info.num_threads) +
           " threads");
  void* dq = mem.upload(q.data(), q.bytes.size(), &error);
  void* dk = dq ? mem.upload(k.data(), k.bytes.size(), &error) : nullptr;
  void* dv = dk ? mem.upload(v.data(), v.bytes.size(), &error) : nullptr;
  void* dout = dv ? mem.allocate(r->o.bytes.size(), &error) : nullptr;
  if (dout == nullptr) return out_of_memory(error);
  sampleattn_params p = tensor_params(q, k, v, dq, dk, dv, dout, o_dtype);
  p.method = method.method;
  p.precision = method.precision;
  p.sample = method.sample;
  model.apply_to(&p);
  r->heads.assign(static_cast<size_t>(q.heads), {});
  r->offsets.assign(static_cast<size_t>(q.heads) + 1, 0);
  r->stripes.assign(static_cast<size_t>(q.heads * k.seq), 0);
  sampleattn_stats_init(&r->stats);
  r->stats.head_stats = r->heads.data();
  r->stats.stripe_offsets = r->offsets.data();
  r->stats.stripes = r->stripes.data();
  r->stats.stripe_capacity = static_cast<int64_t>(r->stripes.size());
  const sampleattn_status s = sampleattn_forward(ctx, &p, &r->stats);
  if (s != SAMPLEATTN_SUCCESS) {
    // The status name tells a user which rule failed; describe() names an allocation failure itself.
    return {s, s == SAMPLEATTN_OUT_OF_MEMORY ? std::string(sampleattn_last_error())
                                             : std::string(sampleattn_status_string(s)) + ": " + sampleattn_last_error()};
  }
  if (!mem.download(dout, r->o.bytes.size(), r->o.data(), &error)) return {SAMPLEATTN_DEVICE_ERROR, error};
  char done[96];
  std::snprintf(done, sizeof done, "done in %.3f s (%s)", r->stats.time_total_s, r->stats.isa ? r->stats.isa : "");
  progress(done);
  return Status::ok();
}

bool read_method(const Options& o, sampleattn::Params* p, std::string* error) {
  *p = sampleattn::Params();
  const std::string m = o.get("method");
  if (m == "dense") {
    p->method = SAMPLEATTN_METHOD_DENSE;
  } else if (m == "sample") {
    p->method = SAMPLEATTN_METHOD_SAMPLE;
  } else {
    *error = "--method must be dense or sample, got '" + m + "'";
    return false;
  }
  return read_method_options(o, p, error);
}

constexpr const char* kQuietHelp = "no progress lines on stderr";

int run_main(int argc, char** argv, int first) {
  Options o;
  declare_file_inputs(o);
  declare_generated_inputs(o, "generated inputs: ");
  o.value("out", "", "output .npy [seq, heads, dim] (required)");
  o.value("out-dtype", "", "f32, f16 or bf16 (default: the dtype of q)");
  declare_head_dim_v(o, "generated inputs: ");
  o.value("method", "sample", "dense or sample");
  o.flag("stats", "print per-head statistics");
  o.flag("quiet", kQuietHelp);
  declare_variant_options(o, SinksOption::kGiven);
  declare_context_options(o);
  declare_method_options(o);
  if (wants_help(argc, argv, first)) {
    return print_help("sampleattn run [--q q.npy --k k.npy --v v.npy | --seq N ...] --out o.npy [options]\n"
                      "Prints one line on stdout when done (with --stats, a table per head); progress goes to\n"
                      "stderr (--quiet: none). The model options (--window-left, --softcap, --alibi, --sinks) set\n"
                      "the attention's variants; generated inputs are made for that model.",
                      o);
  }
  // Every option is checked before any input is read or generated.
  std::string error;
  if (!o.parse(argc, argv, first, &error)) return usage_error("run", error);
  if (!o.has("out")) return usage_error("run", "needs --out o.npy");
  InputSpec in;
  if (!read_input_spec(o, true, &in, &error)) return usage_error("run", error);
  DType out_dtype = DType::kF32;
  if (o.has("out-dtype") && !parse_dtype(o.get("out-dtype"), &out_dtype)) {
    return usage_error("run", "--out-dtype must be f32, f16 or bf16, got '" + o.get("out-dtype") + "'");
  }
  sampleattn::Params method;
  if (!read_method(o, &method, &error)) return usage_error("run", error);
  VariantOptions variants;
  if (!read_variant_options(o, SinksOption::kGiven, &variants, &error)) return usage_error("run", error);
  in.window_left = variants.window_left;
  in.softcap = variants.softcap;
  workload::ModelVariants model;
  // The sinks against the query heads: generated inputs' now, files' once they are read.
  if (!in.files && !model_variants_for(variants, in.heads, &model, &error)) return usage_error("run", error);
  sampleattn_context_options context_options;
  if (!read_context_options(o, &context_options, &error)) return usage_error("run", error);

  Status st = check_output_folder(o.get("out"));
  if (!st.is_ok()) return fail("run", st.message());
  ContextHandle ctx;
  if (!create_context(context_options, &ctx, &error)) return fail("run", error);
  const Progress progress("run", o.has("quiet"));
  workload::Tensor3 q, k, v;
  st = load_inputs(in, progress, &q, &k, &v);
  if (!st.is_ok()) return fail("run", describe(st));
  if (!model_variants_for(variants, q.heads, &model, &error)) return usage_error("run", error);
  if (!o.has("out-dtype")) out_dtype = q.dtype;
  RunResult r;
  st = run_call(ctx.get(), method, model, q, k, v, out_dtype, progress, &r);
  ctx.reset();
  if (!st.is_ok()) return fail("run", describe(st));
  progress("writing " + o.get("out") + " (" + mebibytes(r.o.bytes.size()) + ")");
  st = workload::write_npy(o.get("out"), r.o);
  if (!st.is_ok()) return fail("run", describe(st));
  std::printf("wrote %s: [%lld, %lld, %lld] %s in %.4f s (%s), density %.4f, %d of %d heads dense\n",
              o.get("out").c_str(), static_cast<long long>(r.o.seq), static_cast<long long>(r.o.heads),
              static_cast<long long>(r.o.dim), dtype_name(r.o.dtype), r.stats.time_total_s, r.stats.isa,
              r.stats.density, r.stats.num_dense_heads, r.stats.num_heads_total);
  if (o.has("stats")) {
    // cra_*: the rows that chose the stripes (in-sample); val_*: the validation rows (docs/ALGORITHM.md).
    std::printf("%5s %8s %8s %8s %6s %9s %9s %9s %9s %9s %9s %9s %9s  %s\n", "head", "window", "stripes", "alpha_st",
                "dense", "density", "cra_min", "cra_mean", "val_min", "val_p5", "val_mean", "val_lost", "look_rows",
                "decision");
    for (size_t h = 0; h < r.heads.size(); ++h) {
      const sampleattn_head_stats& s = r.heads[h];
      std::printf("%5zu %8d %8d %8d %6d %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %9d  %s\n", h, s.window,
                  s.num_stripes, s.alpha_stripes, s.dense, s.density, s.cra_min, s.cra_mean, s.val_cra_min,
                  s.val_cra_p5, s.val_cra_mean, s.val_lost_rms, s.dense_rows, decision_name(s.decision));
    }
    std::printf("validation rows: min %.4f, worst head p5 %.4f, mean %.4f; %d heads widened\n", r.stats.val_cra_min,
                r.stats.val_cra_p5, r.stats.val_cra_mean, r.stats.num_widened_heads);
    std::printf("time: sampling %.4f s, selection %.4f s, attention %.4f s\n", r.stats.time_sampling_s,
                r.stats.time_selection_s, r.stats.time_attention_s);
  }
  return kExitOk;
}

int mask_main(int argc, char** argv, int first) {
  Options o;
  declare_file_inputs(o);
  declare_generated_inputs(o, "generated inputs: ");
  o.value("head", "0", "query head to draw, 0 .. heads - 1");
  o.value("out", "mask.png", "PNG file to write");
  o.value("pixels", "1024", "largest side of the picture, 16 .. 8192");
  o.value("method", "sample", "sample (dense draws no mask)");
  o.flag("quiet", kQuietHelp);
  declare_context_options(o);
  declare_method_options(o);
  if (wants_help(argc, argv, first)) {
    return print_help("sampleattn mask [--q --k --v | generated-input options] --head H --out mask.png", o);
  }
  std::string error;
  if (!o.parse(argc, argv, first, &error)) return usage_error("mask", error);
  InputSpec in;
  if (!read_input_spec(o, true, &in, &error)) return usage_error("mask", error);
  int64_t head, pixels;
  // The head is checked against generated inputs now, against files once they are read.
  if (!o.get_int("head", 0, in.files ? INT32_MAX : in.heads - 1, &head, &error)) {
    return usage_error("mask", in.files ? "--head must be a query head index >= 0, got '" + o.get("head") + "'" : error);
  }
  if (!o.get_int("pixels", 16, 8192, &pixels, &error)) return usage_error("mask", error);
  sampleattn::Params method;
  if (!read_method(o, &method, &error)) return usage_error("mask", error);
  sampleattn_context_options context_options;
  if (!read_context_options(o, &context_options, &error)) return usage_error("mask", error);

  Status st = check_output_folder(o.get("out"));
  if (!st.is_ok()) return fail("mask", st.message());
  ContextHandle ctx;
  if (!create_context(context_options, &ctx, &error)) return fail("mask", error);
  const Progress progress("mask", o.has("quiet"));
  workload::Tensor3 q, k, v;
  st = load_inputs(in, progress, &q, &k, &v);
  if (!st.is_ok()) return fail("mask", describe(st));
  if (head >= q.heads) {
    return usage_error("mask", "--head must be in [0, " + std::to_string(q.heads - 1) + "] (q has " +
                                   std::to_string(q.heads) + " heads), got '" + o.get("head") + "'");
  }
  RunResult r;
  st = run_call(ctx.get(), method, workload::ModelVariants(), q, k, v, DType::kF32, progress, &r);
  ctx.reset();
  if (!st.is_ok()) return fail("mask", describe(st));
  const sampleattn_head_stats& hs = r.heads[static_cast<size_t>(head)];
  std::vector<int32_t> stripes(r.stripes.begin() + r.offsets[head], r.stripes.begin() + r.offsets[head + 1]);
  const int64_t kv_head = head / (q.heads / k.heads);
  const std::vector<float> qh = workload::head_to_f32(q, head), kh = workload::head_to_f32(k, kv_head);
  workload::MaskImageOptions mo;
  mo.max_pixels = static_cast<int>(pixels);
  mo.draw_mask = !hs.dense;
  progress("drawing head " + std::to_string(head) + " into " + o.get("out"));
  st = workload::render_mask_png(o.get("out"), qh.data(), q.seq, kh.data(), k.seq, static_cast<int>(q.dim),
                                 hs.window, stripes, mo);
  if (!st.is_ok()) return fail("mask", describe(st));
  std::printf("wrote %s: head %lld, window %d, %d stripes, density %.4f, sampled-row CRA min %.4f%s\n",
              o.get("out").c_str(), static_cast<long long>(head), hs.window, hs.num_stripes, hs.density,
              hs.cra_min, hs.dense ? " (dense head: no mask drawn)" : "");
  return kExitOk;
}

int profile_main(int argc, char** argv, int first) {
  Options o;
  declare_file_inputs(o);
  declare_generated_inputs(o, "generated inputs: ");
  o.value("fixtures", "", "directory of the real captures (llama3-8b-layer10-{q,k,v}.npy, ...)");
  o.value("rows", "64", "sampled query rows per head, 1 .. 1048576");
  o.flag("quiet", kQuietHelp);
  if (wants_help(argc, argv, first)) {
    return print_help("sampleattn profile [--q --k --v | generated-input options] [--fixtures DIR]", o);
  }
  std::string error;
  if (!o.parse(argc, argv, first, &error)) return usage_error("profile", error);
  InputSpec in;
  if (!read_input_spec(o, true, &in, &error)) return usage_error("profile", error);
  int64_t rows;
  if (!o.get_int("rows", 1, 1 << 20, &rows, &error)) return usage_error("profile", error);
  workload::ProfileOptions po;
  po.rows = rows;
  const Progress progress("profile", o.has("quiet"));
  workload::Tensor3 q, k, v;
  Status st = load_inputs(in, progress, &q, &k, &v);
  if (!st.is_ok()) return fail("profile", describe(st));
  std::vector<workload::HeadProfile> profiles;
  progress("profiling " + std::to_string(q.heads) + " heads");
  st = workload::profile_attention(q, k, po, &profiles);
  if (!st.is_ok()) return fail("profile", describe(st));
  std::printf("%s\n", workload::format_profile_table(in.files ? in.q : "generated, N=" + std::to_string(in.seq),
                                                     profiles).c_str());
  if (o.has("fixtures")) {
    for (const char* model : {"llama3-8b-layer10", "llama2-7b-layer10"}) {
      const std::string base = o.get("fixtures") + "/" + model;
      workload::Tensor3 fq, fk;
      if (!workload::read_npy(base + "-q.npy", &fq).is_ok() || !workload::read_npy(base + "-k.npy", &fk).is_ok()) {
        std::printf("%s: not found under %s\n", model, o.get("fixtures").c_str());
        continue;
      }
      std::vector<workload::HeadProfile> fp;
      progress(std::string("profiling ") + model);
      st = workload::profile_attention(fq, fk, po, &fp);
      if (!st.is_ok()) return fail("profile", describe(st));
      std::printf("%s\n", workload::format_profile_table(std::string(model) + " (real capture)", fp).c_str());
    }
  }
  return kExitOk;
}

int generate_main(int argc, char** argv, int first) {
  Options o;
  declare_generated_inputs(o, "");
  declare_head_dim_v(o, "");
  o.value("window-left", "-1", "the model's sliding window: needles at their depth within it (-1: none)");
  o.value("softcap", "0", "the model's logit softcap: sink and needle calibrations on the capped scores (0: none)");
  o.value("dtype", "f32", "dtype of the files: f32, f16, bf16 (stored as <u2)");
  o.value("out", "", "existing directory to write q.npy, k.npy and v.npy into (required)");
  o.flag("quiet", kQuietHelp);
  if (wants_help(argc, argv, first)) return print_help("sampleattn generate --seq N [options] --out DIR", o);
  std::string error;
  if (!o.parse(argc, argv, first, &error)) return usage_error("generate", error);
  if (!o.has("out")) return usage_error("generate", "needs --out DIR");
  InputSpec in;
  if (!read_input_spec(o, false, &in, &error)) return usage_error("generate", error);
  VariantOptions variants;
  if (!read_variant_options(o, SinksOption::kGiven, &variants, &error)) return usage_error("generate", error);
  in.window_left = variants.window_left;
  in.softcap = variants.softcap;
  DType dtype;
  if (!parse_dtype(o.get("dtype"), &dtype)) {
    return usage_error("generate", "--dtype must be f32, f16 or bf16, got '" + o.get("dtype") + "'");
  }
  Status st = check_output_folder(o.get("out") + "/q.npy");
  if (!st.is_ok()) return fail("generate", st.message());
  const Progress progress("generate", o.has("quiet"));
  workload::Tensor3 q, k, v;
  st = load_inputs(in, progress, &q, &k, &v);
  for (auto [name, t] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}}) {
    workload::Tensor3 converted;
    if (st.is_ok()) st = workload::convert_tensor(*t, dtype, &converted);
    const std::string path = o.get("out") + "/" + name + ".npy";
    if (st.is_ok()) progress("writing " + path + " (" + mebibytes(converted.bytes.size()) + ")");
    if (st.is_ok()) st = workload::write_npy(path, converted);
  }
  if (!st.is_ok()) return fail("generate", describe(st));
  std::printf("wrote %s/{q,k,v}.npy: [%lld, %lld/%lld, %lld] %s%s\n", o.get("out").c_str(),
              static_cast<long long>(q.seq), static_cast<long long>(q.heads), static_cast<long long>(k.heads),
              static_cast<long long>(q.dim), dtype_name(dtype),
              v.dim == q.dim ? "" : (", v head dim " + std::to_string(v.dim)).c_str());
  return kExitOk;
}

const char* binding_name(sampleattn_binding binding) {
  return binding == SAMPLEATTN_BIND_NONE ? "none (workers float)" : "cores (one worker per core, bound)";
}

int info_main(int argc, char** argv, int first) {
  Options o;
  o.flag("json", "one JSON object on one line instead of the text");
  if (wants_help(argc, argv, first)) {
    return print_help("sampleattn info [--json]\n"
                      "The default context's backend and threads, this CPU and its kernel tables, the\n"
                      "backends compiled in and found, the head dims, the memory no buffer may pass (RAM and\n"
                      "swap, or the cgroup's limit: larger requests fail as out of memory) and the SAMPLEATTN_*\n"
                      "variables read or rejected.",
                      o);
  }
  std::string error;
  if (!o.parse(argc, argv, first, &error)) return usage_error("info", error);
  sampleattn_context_options opts;
  sampleattn_context_options_init(&opts);
  ContextHandle ctx;
  if (!create_context(opts, &ctx, &error)) return fail("info", error);
  const sampleattn_context_info info = context_info(ctx.get());
  auto text = [](const char* s) { return std::string(s ? s : ""); };
  const std::string backend = info.backend == SAMPLEATTN_BACKEND_CUDA ? "cuda" : "cpu";
  // The head dims this build's kernels take (head_dim and head_dim_v alike, any pair).
  std::string dims_json, dims_text;
  for (int d : head_dim_list()) {
    if (!dims_json.empty()) {
      dims_json += ',';
      dims_text += ' ';
    }
    dims_json += std::to_string(d);
    dims_text += std::to_string(d);
  }
  const int64_t ceiling = cpu::memory_ceiling();  // 0: unknown
  if (o.has("json")) {
    std::printf("{\"version\":%s,\"backend\":%s,\"device\":%s,\"isa\":%s,\"threads\":%d,\"numa_nodes\":%d,"
                "\"binding\":%s,\"cpu_model\":%s,\"cpu_tables\":%s,\"backends\":%s,\"environment\":%s,\"note\":%s,"
                "\"head_dims\":[%s],\"memory_ceiling_bytes\":%lld}\n",
                json_string(sampleattn_version()).c_str(), json_string(backend).c_str(),
                json_string(text(info.device_name)).c_str(), json_string(text(info.isa)).c_str(), info.num_threads,
                info.num_numa_nodes, json_string(info.binding == SAMPLEATTN_BIND_NONE ? "none" : "cores").c_str(),
                json_string(text(info.cpu_model)).c_str(), json_string(text(info.cpu_tables)).c_str(),
                json_string(text(info.backends)).c_str(), json_string(text(info.environment)).c_str(),
                json_string(text(info.note)).c_str(), dims_json.c_str(), static_cast<long long>(ceiling));
    return kExitOk;
  }
  const std::string device = text(info.device_name);
  const std::string environment = text(info.environment);
  std::printf("sampleattn %s\n", sampleattn_version());
  std::printf("backend:     %s%s%s\n", backend.c_str(), device.empty() ? "" : " ", device.c_str());
  std::printf("isa:         %s\n", text(info.isa).c_str());
  std::printf("cpu:         %s\n", text(info.cpu_model).c_str());
  std::printf("cpu tables:  %s\n", text(info.cpu_tables).c_str());
  std::printf("backends:    %s\n", text(info.backends).c_str());
  std::printf("threads:     %d\n", info.num_threads);
  std::printf("binding:     %s\n", binding_name(info.binding));
  std::printf("numa nodes:  %d\n", info.num_numa_nodes);
  std::printf("head dims:   %s (head_dim and head_dim_v, any pair)\n", dims_text.c_str());
  if (ceiling > 0) {
    std::printf("memory:      %.1f GiB (RAM and swap, or the cgroup's limit: no buffer may pass it)\n",
                static_cast<double>(ceiling) / (1 << 30));
  }
  std::printf("environment: %s\n", environment.empty() ? "no SAMPLEATTN_* variable set" : environment.c_str());
  if (info.note != nullptr && info.note[0] != '\0') std::printf("note:        %s\n", info.note);
  return kExitOk;
}

// `sampleattn help [command]`: the command list, or one command's options (as `command --help`).
int help_main(int argc, char** argv);

int dispatch_command(const std::string& command, int argc, char** argv, int first) {
  if (command == "bench") return bench_main(argc, argv, first);
  if (command == "run") return run_main(argc, argv, first);
  if (command == "mask") return mask_main(argc, argv, first);
  if (command == "profile") return profile_main(argc, argv, first);
  if (command == "generate") return generate_main(argc, argv, first);
  if (command == "info") return info_main(argc, argv, first);
  if (command == "help") return help_main(argc, argv);
  std::fprintf(stderr, "sampleattn: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return kExitUsage;
}

int help_main(int argc, char** argv) {
  if (argc == 2) {
    std::printf("%s", kUsage);
    return kExitOk;
  }
  if (argc > 3 || std::strcmp(argv[2], "help") == 0) {
    std::fprintf(stderr, "usage: sampleattn help [command]\n");
    return kExitUsage;
  }
  char help_flag[] = "--help";
  char* help_argv[] = {argv[0], argv[2], help_flag, nullptr};
  return dispatch_command(argv[2], 3, help_argv, 2);
}

int dispatch(int argc, char** argv) {
  if (argc < 2) {  // a usage error: the usage goes to stderr, as for an unknown command
    std::fprintf(stderr, "%s", kUsage);
    return kExitUsage;
  }
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::printf("%s", kUsage);
    return kExitOk;
  }
  if (std::strcmp(argv[1], "--version") == 0) {
    std::printf("sampleattn %s\n", sampleattn_version());
    return kExitOk;
  }
  return dispatch_command(argv[1], argc, argv, 2);
}

}  // namespace
}  // namespace sampleattn::cli

// Exit codes (kExit* in cli/common.h): 0 success, 1 the work failed (bad input data, a failed call,
// out of memory, a failed read or write), 2 a usage error (no or unknown command, an unknown
// option, a bad value). Every option is checked before any input is read or generated.
int main(int argc, char** argv) {
  // A write over the file size limit fails with EFBIG and is reported (the output stays intact)
  // instead of killing the program.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    return sampleattn::cli::dispatch(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "sampleattn %s: out of memory: could not allocate %s\n", argc > 1 ? argv[1] : "",
                 sampleattn::cli::memory_need().c_str());
    return sampleattn::cli::kExitFailure;
  }
}
