#include "cli/bench_options.h"

#include <algorithm>

#include "cli/common.h"
#include "core/mask.h"

namespace sampleattn::cli {

void declare_bench_options(Options& o) {
  o.value("method", "both", "dense, sample, or both (sample compared against dense)");
  o.value("seq", "", "sequence lengths, comma-separated (default 4096,8192,16384,32768)");
  o.value("heads", "8", "query heads, a multiple of --kv-heads");
  o.value("kv-heads", "", "key/value heads (default: as many as --heads)");
  o.value("head-dim", "128", "head dimension: " + supported_head_dims());
  o.value("head-dim-v", "", "value (and output) head dimension, one of the same list (default: --head-dim)");
  o.value("dtype", "", "input dtype: f32, f16, bf16 (default f32; with --data npy:DIR the files' dtype)");
  o.value("repeat", "3", "timed runs per configuration (the median is reported)");
  o.value("warmup", "0", "untimed runs after the (untimed) statistics run");
  o.value("data", "structured",
          "structured | random | npy:DIR (DIR/q.npy, k.npy, v.npy: their shape; no --seq, --heads, ...)");
  o.value("seed", "1", "input seed (also draws the shares of --sinks)");
  o.value("needles", "8", "needles planted in structured inputs");
  o.value("mix", "default", std::string("structured inputs' ") + kMixHelp);
  o.value("kv-layout", "packed",
          "K/V storage: packed, or paged:PAGE (PAGE tokens a page, a multiple of 16; pages [num_pages, PAGE, "
          "kv_heads, dim] in a shuffled order through a block table)");
  o.value("kv-dtype", "same",
          "K/V element type: same (the --dtype), int8 (a scale per token and kv head) or fp8 (e4m3fn, a scale per "
          "kv head); --check's oracle reads the dequantized values");
  o.value("q-len", "", "queries per sequence, the last N of the --seq positions (1: decode; default: --seq)");
  o.flag("host-pool", "also run on a spinning host pool of --threads threads through parallel_for, and report its "
                      "time against the library's own pool (host_pool_ratio) and the own pool beside the spinning "
                      "host threads");
  o.flag("json", "one JSON object per line per configuration (not with --csv)");
  o.flag("csv", "CSV rows (for plots; not with --json)");
  o.flag("check", "add rel_l2_err against a double-precision result on sampled rows");
  o.flag("peak", "time an OpenBLAS SGEMM of 4096^3 (sgemm_gflops), AMX tile products where the CPU has them (amx_gflops) and a threaded read of the K/V's bytes "
                 "after each timed call (read_gbs: the median pass) in the same run");
  o.flag("quiet", "no progress on stderr");
  declare_variant_options(o, SinksOption::kGenerated);
  declare_context_options(o);
  declare_method_options(o);
}

namespace {

bool read_kv_options(const Options& o, bool files, BenchOptions* b, std::string* error) {
  const std::string layout = o.get("kv-layout");
  if (layout == "packed") {
    b->page_size = 0;
  } else {
    const std::string page = layout.rfind("paged:", 0) == 0 ? layout.substr(6) : std::string();
    Options one;
    one.value("page", page, "");
    std::string unused;
    if (page.empty() || !one.get_int("page", 16, 1 << 20, &b->page_size, &unused) || b->page_size % 16 != 0) {
      *error = "--kv-layout must be packed or paged:PAGE with PAGE tokens a page, a multiple of 16 in [16, " +
               std::to_string(1 << 20) + "] (e.g. paged:16, paged:256), got '" + layout + "'";
      return false;
    }
  }
  const std::string kv_dtype = o.get("kv-dtype");
  if (kv_dtype == "same") {
    b->kv_dtype = KvDtype::kSame;
  } else if (kv_dtype == "int8") {
    b->kv_dtype = KvDtype::kInt8;
  } else if (kv_dtype == "fp8") {
    b->kv_dtype = KvDtype::kFp8;
  } else {
    *error = "--kv-dtype must be same, int8 or fp8, got '" + kv_dtype + "'";
    return false;
  }
  b->host_pool = o.has("host-pool");
  b->q_len = 0;
  if (!o.has("q-len")) return true;
  const int64_t most = files ? INT32_MAX : *std::min_element(b->seqs.begin(), b->seqs.end());
  std::string unused;
  if (!o.get_int("q-len", 1, INT64_MAX, &b->q_len, &unused) || b->q_len > most) {
    *error = "--q-len must be an integer in [1, " + std::string(files ? "q.npy's tokens" : "--seq") +
             "] (queries against the --seq keys; 1: decode), got '" + o.get("q-len") + "'";
    if (!files && b->seqs.size() > 1) *error += " (the smallest --seq is " + std::to_string(most) + ")";
    return false;
  }
  // A chunk of a prefill against its cache runs SampleAttention on its own rows (docs/ALGORITHM.md);
  // a step of at most kShortQueryRows queries (decode) runs dense under either method.
  const bool below_seq =
      files || std::any_of(b->seqs.begin(), b->seqs.end(), [&](int64_t seq) { return seq > b->q_len; });
  if (below_seq && b->method != "dense" && b->q_len <= kShortQueryRows) {
    *error = "--q-len " + std::to_string(b->q_len) + " below --seq is a decode step (at most " +
             std::to_string(kShortQueryRows) + " queries), which runs dense attention: add --method dense";
    return false;
  }
  return true;
}

}  // namespace

bool read_bench_options(Options& o, BenchOptions* b, std::string* error) {
  const std::string m = o.get("method");
  if (m != "dense" && m != "sample" && m != "both") {
    *error = "--method must be dense, sample or both, got '" + m + "'";
    return false;
  }
  b->method = m;
  b->data = o.get("data");
  const bool files = b->data.rfind("npy:", 0) == 0;
  if (b->data != "structured" && b->data != "random" && !files) {
    *error = "--data must be structured, random or npy:DIR, got '" + b->data + "'";
    return false;
  }
  if (files) {
    // The files decide the shape: an option that would describe another one is a mistake.
    for (const std::string name : {"seq", "heads", "kv-heads", "head-dim", "head-dim-v", "seed", "needles", "mix"}) {
      if (name == "seed" && o.has("sinks")) continue;  // it draws the generated sinks' shares
      if (o.has(name)) {
        *error = "--" + name + " describes generated inputs; with --data npy:DIR the files decide";
        return false;
      }
    }
    if (b->data.size() == 4) {
      *error = "--data npy:DIR needs a directory";
      return false;
    }
  }
  if (o.has("seq")) {
    if (!o.get_int_list("seq", 1, workload::kMaxGeneratedSeq, &b->seqs, error)) return false;
  } else {
    b->seqs = {4096, 8192, 16384, 32768};
  }
  if (files) b->seqs = {0};  // the files decide
  int64_t v;
  if (!o.get_int("heads", 1, 1024, &v, error)) return false;
  b->heads = static_cast<int>(v);
  if (!o.has("kv-heads")) o.set("kv-heads", o.get("heads"));
  if (!o.get_int("kv-heads", 1, 1024, &v, error)) return false;
  b->kv_heads = static_cast<int>(v);
  if (b->heads % b->kv_heads != 0) {
    *error = "--heads (" + std::to_string(b->heads) + ") must be a multiple of --kv-heads (" +
             std::to_string(b->kv_heads) + ")";
    return false;
  }
  if (!read_head_dim(o, &b->head_dim, error) || !read_head_dim_v(o, &b->head_dim_v, error)) return false;
  if (b->data == "structured" && !check_generated_head_dim(b->head_dim, error)) return false;
  if (!read_variant_options(o, SinksOption::kGenerated, &b->variants, error)) return false;
  if (!o.get_int("repeat", 1, 1000, &b->repeat, error)) return false;
  if (!o.get_int("warmup", 0, 1000, &b->warmup, error)) return false;
  if (!o.get_int("seed", 0, INT64_MAX, &v, error)) return false;
  b->seed = static_cast<uint64_t>(v);
  if (!o.get_int("needles", 0, 64, &b->needles, error)) return false;
  if (!parse_head_mix(o.get("mix"), &b->mix)) {
    *error = "--mix must be default, real or far, got '" + o.get("mix") + "'";
    return false;
  }
  b->dtype_given = o.has("dtype");
  if (b->dtype_given && !parse_dtype(o.get("dtype"), &b->dtype)) {
    *error = "--dtype must be f32, f16 or bf16, got '" + o.get("dtype") + "'";
    return false;
  }
  if (!read_kv_options(o, files, b, error)) return false;
  b->json = o.has("json");
  b->csv = o.has("csv");
  if (b->json && b->csv) {
    *error = "--json and --csv do not go together: choose one format";
    return false;
  }
  b->quiet = o.has("quiet");
  b->check = o.has("check");
  b->peak = o.has("peak");
  // --alpha may list several thresholds: dense runs once per length, sample once per alpha.
  b->alphas.clear();
  for (const std::string& a : o.get_list("alpha")) {
    Options one = o;
    one.set("alpha", a);
    float alpha;
    if (!read_fraction(one, "alpha", false, &alpha, error)) return false;
    b->alphas.push_back(alpha);
  }
  if (b->alphas.empty()) {
    *error = "--alpha needs a value";
    return false;
  }
  o.set("alpha", std::to_string(b->alphas.front()));
  return read_method_options(o, &b->method_params, error);
}

}  // namespace sampleattn::cli
