// The sampleattn program: `bench` (the main job), `run` (a user's own .npy tensors), `mask` (a
// picture of one head's chosen mask), `profile` (attention statistics of generated inputs and
// real captures side by side) and `info` (what this machine and build offer).
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "cli/bench.h"
#include "cli/common.h"
#include "cli/device_memory.h"
#include "cli/options.h"
#include "workload/attention_profile.h"
#include "workload/generator.h"
#include "workload/mask_image.h"
#include "workload/metrics.h"
#include "workload/npy.h"

namespace sampleattn::cli {
namespace {

constexpr const char* kUsage =
    "usage: sampleattn <command> [options]\n"
    "\n"
    "commands:\n"
    "  bench    time dense against SampleAttention; with no options: generated structured inputs at\n"
    "           4K, 8K, 16K and 32K tokens, one table (see `sampleattn bench --help`)\n"
    "  run      attention over your own tensors: --q q.npy --k k.npy --v v.npy --out o.npy\n"
    "  mask     draw one head's chosen mask over its true attention: --head H --out mask.png\n"
    "  profile  per-head attention statistics of generated inputs beside the real fixtures\n"
    "  generate write generated structured inputs as .npy: --seq N --out DIR\n"
    "  info     backend, ISA, threads and NUMA nodes of this machine\n";

int fail(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "sampleattn %s: %s\n", command.c_str(), message.c_str());
  return 1;
}

bool wants_help(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  }
  return false;
}

// Inputs for run/mask/profile: --q/--k/--v files, or generated structured data.
void declare_inputs(Options& o) {
  o.value("q", "", "query .npy [seq, heads, dim] (f32, f16, or bf16 as <u2)");
  o.value("k", "", "key .npy [seq, kv_heads, dim]");
  o.value("v", "", "value .npy [seq, kv_heads, dim]");
  o.value("seq", "8192", "generated inputs: tokens (when no --q/--k/--v)");
  o.value("heads", "8", "generated inputs: query heads");
  o.value("kv-heads", "", "generated inputs: kv heads (default: as many as --heads)");
  o.value("head-dim", "128", "generated inputs: head dimension");
  o.value("seed", "1", "generated inputs: seed");
  o.value("needles", "8", "generated inputs: planted needles");
}

Status load_inputs(const Options& o, workload::Tensor3* q, workload::Tensor3* k, workload::Tensor3* v) {
  if (o.has("q") || o.has("k") || o.has("v")) {
    if (!o.has("q") || !o.has("k") || !o.has("v")) return invalid_argument("--q, --k and --v go together");
    SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(o.get("q"), q));
    SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(o.get("k"), k));
    SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(o.get("v"), v));
    return check_inputs_agree(*q, *k, *v);
  }
  std::string error;
  int64_t seq, heads, kv, dim, seed, needles;
  if (!o.has("kv-heads")) {
    Options with_kv = o;
    with_kv.set("kv-heads", o.get("heads"));
    return load_inputs(with_kv, q, k, v);
  }
  if (!o.get_int("seq", 1, workload::kMaxGeneratedSeq, &seq, &error) || !o.get_int("heads", 1, 1024, &heads, &error) ||
      !o.get_int("kv-heads", 1, 1024, &kv, &error) || !o.get_int("head-dim", 1, 1024, &dim, &error) ||
      !o.get_int("seed", 0, INT64_MAX, &seed, &error) || !o.get_int("needles", 0, 64, &needles, &error)) {
    return invalid_argument(error);
  }
  if (heads % kv != 0) {
    return invalid_argument("--heads (" + std::to_string(heads) + ") must be a multiple of --kv-heads (" +
                            std::to_string(kv) + ")");
  }
  // The generator builds f32 tensors and working copies of the same size.
  note_memory_need("the generated inputs of " + std::to_string(seq) + " tokens",
                   2ull * static_cast<uint64_t>(seq) * static_cast<uint64_t>(heads + 2 * kv) *
                       static_cast<uint64_t>(dim) * 4u);
  workload::GeneratedData g;
  SAMPLEATTN_RETURN_IF_ERROR(workload::generate(
      structured_config(seq, static_cast<int>(heads), static_cast<int>(kv), static_cast<int>(dim),
                        static_cast<uint64_t>(seed), needles),
      &g));
  *q = std::move(g.q);
  *k = std::move(g.k);
  *v = std::move(g.v);
  return Status::ok();
}

// Runs one call over host tensors on the context's backend; O in `o_dtype`.
struct RunResult {
  workload::Tensor3 o;
  sampleattn_stats stats{};
  std::vector<sampleattn_head_stats> heads;
  std::vector<int32_t> offsets, stripes;
};

Status run_call(sampleattn_context* ctx, const sampleattn_params& method, const workload::Tensor3& q,
                const workload::Tensor3& k, const workload::Tensor3& v, DType o_dtype, RunResult* r) {
  sampleattn_context_info info;
  sampleattn_context_info_init(&info);
  sampleattn_context_get_info(ctx, &info);
  BackendMemory mem(info.backend);
  std::string error;
  SAMPLEATTN_RETURN_IF_ERROR(workload::make_tensor(q.seq, q.heads, q.dim, o_dtype, &r->o));
  void* dq = mem.upload(q.data(), q.bytes.size(), &error);
  void* dk = dq ? mem.upload(k.data(), k.bytes.size(), &error) : nullptr;
  void* dv = dk ? mem.upload(v.data(), v.bytes.size(), &error) : nullptr;
  void* dout = dv ? mem.allocate(r->o.bytes.size(), &error) : nullptr;
  if (dout == nullptr) return out_of_memory(error);
  sampleattn_params p = tensor_params(q, k, v, dq, dk, dv, dout, o_dtype);
  p.method = method.method;
  p.precision = method.precision;
  p.sample = method.sample;
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
    *error = "--method must be dense or sample";
    return false;
  }
  return read_method_options(o, p, error);
}

int run_main(int argc, char** argv, int first) {
  Options o;
  declare_inputs(o);
  o.value("out", "", "output .npy [seq, heads, dim]");
  o.value("out-dtype", "", "f32, f16 or bf16 (default: the dtype of q)");
  o.value("method", "sample", "dense or sample");
  o.flag("stats", "print per-head statistics");
  declare_context_options(o);
  declare_method_options(o);
  std::string error;
  if (wants_help(argc, argv, first)) {
    std::printf("usage: sampleattn run [--q q.npy --k k.npy --v v.npy | --seq N ...] --out o.npy [options]\n%s",
                o.usage().c_str());
    return 0;
  }
  if (!o.parse(argc, argv, first, &error)) return fail("run", error + "\n" + o.usage());
  if (!o.has("out")) return fail("run", "needs --out (and --q, --k, --v, or generated-input options)");
  workload::Tensor3 q, k, v;
  Status st = load_inputs(o, &q, &k, &v);
  if (!st.is_ok()) return fail("run", describe(st));
  DType out_dtype = q.dtype;
  if (o.has("out-dtype") && !parse_dtype(o.get("out-dtype"), &out_dtype)) return fail("run", "bad --out-dtype");
  sampleattn::Params method;
  if (!read_method(o, &method, &error)) return fail("run", error);
  sampleattn_context* ctx = nullptr;
  if (!make_context(o, &ctx, &error)) return fail("run", error);
  RunResult r;
  st = run_call(ctx, method, q, k, v, out_dtype, &r);
  sampleattn_context_destroy(ctx);
  if (!st.is_ok()) return fail("run", describe(st));
  st = workload::write_npy(o.get("out"), r.o);
  if (!st.is_ok()) return fail("run", describe(st));
  std::printf("wrote %s: [%lld, %lld, %lld] %s in %.4f s (%s), density %.4f, %d of %d heads dense\n",
              o.get("out").c_str(), static_cast<long long>(r.o.seq), static_cast<long long>(r.o.heads),
              static_cast<long long>(r.o.dim), dtype_name(r.o.dtype), r.stats.time_total_s, r.stats.isa,
              r.stats.density, r.stats.num_dense_heads, r.stats.num_heads_total);
  if (o.has("stats")) {
    std::printf("%5s %8s %8s %6s %9s %9s %9s\n", "head", "window", "stripes", "dense", "density", "cra_min", "cra_mean");
    for (size_t h = 0; h < r.heads.size(); ++h) {
      const sampleattn_head_stats& s = r.heads[h];
      std::printf("%5zu %8d %8d %6d %9.4f %9.4f %9.4f\n", h, s.window, s.num_stripes, s.dense, s.density,
                  s.cra_min, s.cra_mean);
    }
    std::printf("time: sampling %.4f s, selection %.4f s, attention %.4f s\n", r.stats.time_sampling_s,
                r.stats.time_selection_s, r.stats.time_attention_s);
  }
  return 0;
}

int mask_main(int argc, char** argv, int first) {
  Options o;
  declare_inputs(o);
  o.value("head", "0", "query head to draw");
  o.value("out", "mask.png", "PNG file to write");
  o.value("pixels", "1024", "largest side of the picture");
  o.value("method", "sample", "sample (dense draws no mask)");
  declare_context_options(o);
  declare_method_options(o);
  std::string error;
  if (wants_help(argc, argv, first)) {
    std::printf("usage: sampleattn mask [--q --k --v | generated-input options] --head H --out mask.png\n%s",
                o.usage().c_str());
    return 0;
  }
  if (!o.parse(argc, argv, first, &error)) return fail("mask", error + "\n" + o.usage());
  workload::Tensor3 q, k, v;
  Status st = load_inputs(o, &q, &k, &v);
  if (!st.is_ok()) return fail("mask", describe(st));
  int64_t head, pixels;
  if (!o.get_int("head", 0, q.heads - 1, &head, &error) || !o.get_int("pixels", 16, 8192, &pixels, &error)) {
    return fail("mask", error);
  }
  sampleattn::Params method;
  if (!read_method(o, &method, &error)) return fail("mask", error);
  sampleattn_context* ctx = nullptr;
  if (!make_context(o, &ctx, &error)) return fail("mask", error);
  RunResult r;
  st = run_call(ctx, method, q, k, v, DType::kF32, &r);
  sampleattn_context_destroy(ctx);
  if (!st.is_ok()) return fail("mask", describe(st));
  const sampleattn_head_stats& hs = r.heads[static_cast<size_t>(head)];
  std::vector<int32_t> stripes(r.stripes.begin() + r.offsets[head], r.stripes.begin() + r.offsets[head + 1]);
  const int64_t kv_head = head / (q.heads / k.heads);
  const std::vector<float> qh = workload::head_to_f32(q, head), kh = workload::head_to_f32(k, kv_head);
  workload::MaskImageOptions mo;
  mo.max_pixels = static_cast<int>(pixels);
  mo.draw_mask = !hs.dense;
  st = workload::render_mask_png(o.get("out"), qh.data(), q.seq, kh.data(), k.seq, static_cast<int>(q.dim),
                                 hs.window, stripes, mo);
  if (!st.is_ok()) return fail("mask", describe(st));
  std::printf("wrote %s: head %lld, window %d, %d stripes, density %.4f, sampled-row CRA min %.4f%s\n",
              o.get("out").c_str(), static_cast<long long>(head), hs.window, hs.num_stripes, hs.density,
              hs.cra_min, hs.dense ? " (dense head: no mask drawn)" : "");
  return 0;
}

int profile_main(int argc, char** argv, int first) {
  Options o;
  declare_inputs(o);
  o.value("fixtures", "", "directory of the real captures (llama3-8b-layer10-{q,k,v}.npy, ...)");
  o.value("rows", "64", "sampled query rows per head");
  std::string error;
  if (wants_help(argc, argv, first)) {
    std::printf("usage: sampleattn profile [generated-input options] [--fixtures DIR]\n%s", o.usage().c_str());
    return 0;
  }
  if (!o.parse(argc, argv, first, &error)) return fail("profile", error + "\n" + o.usage());
  int64_t rows;
  if (!o.get_int("rows", 1, 1 << 20, &rows, &error)) return fail("profile", error);
  workload::ProfileOptions po;
  po.rows = rows;
  workload::Tensor3 q, k, v;
  Status st = load_inputs(o, &q, &k, &v);
  if (!st.is_ok()) return fail("profile", describe(st));
  std::vector<workload::HeadProfile> profiles;
  st = workload::profile_attention(q, k, po, &profiles);
  if (!st.is_ok()) return fail("profile", describe(st));
  std::printf("%s\n", workload::format_profile_table(o.has("q") ? o.get("q") : "generated, N=" + o.get("seq"),
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
      st = workload::profile_attention(fq, fk, po, &fp);
      if (!st.is_ok()) return fail("profile", describe(st));
      std::printf("%s\n", workload::format_profile_table(std::string(model) + " (real capture)", fp).c_str());
    }
  }
  return 0;
}

int generate_main(int argc, char** argv, int first) {
  Options o;
  declare_inputs(o);
  o.value("dtype", "f32", "dtype of the files: f32, f16, bf16 (stored as <u2)");
  o.value("out", "", "directory to write q.npy, k.npy and v.npy into (must exist)");
  std::string error;
  if (wants_help(argc, argv, first)) {
    std::printf("usage: sampleattn generate --seq N [options] --out DIR\n%s", o.usage().c_str());
    return 0;
  }
  if (!o.parse(argc, argv, first, &error)) return fail("generate", error + "\n" + o.usage());
  if (!o.has("out")) return fail("generate", "needs --out DIR");
  DType dtype;
  if (!parse_dtype(o.get("dtype"), &dtype)) return fail("generate", "--dtype must be f32, f16 or bf16");
  workload::Tensor3 q, k, v;
  Status st = load_inputs(o, &q, &k, &v);
  for (auto [name, t] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}}) {
    workload::Tensor3 converted;
    if (st.is_ok()) st = workload::convert_tensor(*t, dtype, &converted);
    if (st.is_ok()) st = workload::write_npy(o.get("out") + "/" + name + ".npy", converted);
  }
  if (!st.is_ok()) return fail("generate", describe(st));
  std::printf("wrote %s/{q,k,v}.npy: [%lld, %lld/%lld, %lld] %s\n", o.get("out").c_str(),
              static_cast<long long>(q.seq), static_cast<long long>(q.heads), static_cast<long long>(k.heads),
              static_cast<long long>(q.dim), dtype_name(dtype));
  return 0;
}

int info_main(int argc, char** argv, int first) {
  if (wants_help(argc, argv, first)) {
    std::printf("usage: sampleattn info\n  (no options)\n");
    return 0;
  }
  Options o;
  std::string error;
  if (!o.parse(argc, argv, first, &error)) return fail("info", error);
  sampleattn_context_options opts;
  sampleattn_context_options_init(&opts);
  sampleattn_context* ctx = nullptr;
  if (sampleattn_context_create(&opts, &ctx) != SAMPLEATTN_SUCCESS) return fail("info", sampleattn_last_error());
  sampleattn_context_info info;
  sampleattn_context_info_init(&info);
  sampleattn_context_get_info(ctx, &info);
  std::printf("sampleattn %s\nbackend: %s%s%s\nisa: %s\nthreads: %d\nnuma nodes: %d\nnote: %s\n", sampleattn_version(),
              info.backend == SAMPLEATTN_BACKEND_CUDA ? "cuda" : "cpu", info.device_name[0] ? " " : "",
              info.device_name, info.isa, info.num_threads, info.num_numa_nodes, info.note);
  sampleattn_context_destroy(ctx);
  return 0;
}

int dispatch(int argc, char** argv) {
  if (argc < 2) {  // a usage error: the usage goes to stderr, as for an unknown command
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::printf("%s", kUsage);
    return 0;
  }
  const std::string command = argv[1];
  if (command == "bench") return bench_main(argc, argv, 2);
  if (command == "run") return run_main(argc, argv, 2);
  if (command == "mask") return mask_main(argc, argv, 2);
  if (command == "profile") return profile_main(argc, argv, 2);
  if (command == "generate") return generate_main(argc, argv, 2);
  if (command == "info") return info_main(argc, argv, 2);
  std::fprintf(stderr, "sampleattn: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return 2;
}

}  // namespace
}  // namespace sampleattn::cli

// Exit codes: 0 success, 1 a failure (bad input, a failed call, out of memory, a failed write),
// 2 a usage error (no or unknown command).
int main(int argc, char** argv) {
  // A write over the file size limit fails with EFBIG and is reported (the output stays intact)
  // instead of killing the program.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    return sampleattn::cli::dispatch(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "sampleattn %s: out of memory: could not allocate %s\n", argc > 1 ? argv[1] : "",
                 sampleattn::cli::memory_need().c_str());
    return 1;
  }
}
