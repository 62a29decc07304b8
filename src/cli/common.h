// Pieces shared by the subcommands: reading method parameters from options, building params
// over tensors, and creating a context.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cli/options.h"
#include "sampleattn/sampleattn.hpp"
#include "workload/generator.h"
#include "workload/model_variants.h"
#include "workload/npy.h"

namespace sampleattn::cli {

// The exit status of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the work failed: a library call, reading or writing a file, a check
inline constexpr int kExitUsage = 2;    // the command line is wrong: no or unknown command, a bad option or value

// "sampleattn COMMAND: MESSAGE" on stderr; returns kExitFailure.
int fail(const std::string& command, const std::string& message);
// The same for a usage error, with a pointer to the command's --help; returns kExitUsage.
int usage_error(const std::string& command, const std::string& message);

// Declares the options that set the method and its SampleAttention parameters.
void declare_method_options(Options& o);
// Reads them into params (method, precision, sample.*). false with error set on bad values.
// Every value in the library's range, so that a bad one is a usage error before any input is read.
bool read_method_options(const Options& o, sampleattn::Params* params, std::string* error);
// Reads a fraction in (0, 1], or [0, 1] when zero is allowed.
bool read_fraction(const Options& o, const std::string& name, bool zero_allowed, float* out, std::string* error);

// Reads --head-dim: one of the library's head dims (core/problem.h kSupportedHeadDims).
bool read_head_dim(const Options& o, int* out, std::string* error);
// Reads --head-dim-v: absent, 0 (= head_dim); else one of the library's head dims.
bool read_head_dim_v(const Options& o, int* out, std::string* error);
// Generated (structured) inputs need a head_dim the generator makes (kMinGeneratedHeadDim and up).
bool check_generated_head_dim(int head_dim, std::string* error);

// The model's attention variants (ABI 1.3) on the command line: --window-left N, --softcap X,
// --alibi (the standard slopes for the query heads), and --sinks: generated for the inputs
// (bench: a flag; workload::generated_sinks) or given (run: a list of logits).
enum class SinksOption { kGenerated, kGiven };
void declare_variant_options(Options& o, SinksOption sinks);
struct VariantOptions {
  int64_t window_left = -1;  // -1: none
  double softcap = 0;        // 0: none
  bool alibi = false;
  bool generated_sinks = false;    // bench --sinks
  std::vector<float> sink_values;  // run --sinks: one per query head, or one for all
  bool any() const { return window_left >= 0 || softcap > 0 || alibi || generated_sinks || !sink_values.empty(); }
};
// Checks every value (a usage error: before any input is read).
bool read_variant_options(const Options& o, SinksOption sinks, VariantOptions* variants, std::string* error);
// The variants of a call with `q_heads` query heads: ALiBi slopes for that many heads, given
// sinks spread to them (generated ones are made by the caller, from the inputs). false with error
// when the given sinks are neither one nor q_heads values.
bool model_variants_for(const VariantOptions& v, int64_t q_heads, workload::ModelVariants* model, std::string* error);
// "window 4096, softcap 30, ALiBi, sinks, head_dim_v 128" (empty when none), for progress and titles.
std::string describe_variants(const workload::ModelVariants& model, int64_t head_dim, int64_t head_dim_v);
// "64, 80, 96, 128 or 256".
std::string supported_head_dims();
// The same list, ascending (core/problem.h kSupportedHeadDims: this build's kernel list).
std::vector<int> head_dim_list();

// Declares --backend, --threads, --no-bind and --max-workspace. Reading them is checking the
// command line (a usage error); creating the context is work that can fail (e.g. no CUDA device).
void declare_context_options(Options& o);
bool read_context_options(const Options& o, sampleattn_context_options* options, std::string* error);
struct ContextDeleter {
  void operator()(sampleattn_context* ctx) const { sampleattn_context_destroy(ctx); }
};
using ContextHandle = std::unique_ptr<sampleattn_context, ContextDeleter>;
bool create_context(const sampleattn_context_options& options, ContextHandle* ctx, std::string* error);
sampleattn_context_info context_info(const sampleattn_context* ctx);

// Progress lines on stderr, e.g. "[run] reading q.npy (64.0 MiB)", none when quiet. Never on
// stdout, which carries a command's results (a table, JSON, CSV).
class Progress {
 public:
  Progress(std::string command, bool quiet) : command_(std::move(command)), quiet_(quiet) {}
  void operator()(const std::string& line) const;

 private:
  std::string command_;
  bool quiet_;
};
// "12.3 MiB".
std::string mebibytes(uint64_t bytes);

// A JSON string literal: quoted, with quotes, backslashes and control characters escaped.
std::string json_string(const std::string& text);

// A sampleattn_head_decision's short name, e.g. "sparse", "widened", "dense:validation".
const char* decision_name(int32_t decision);

// The structured inputs every subcommand generates: the generator's defaults plus `needles`
// needles at evenly spaced depths and the head mix, so bench, run, mask and generate see the same
// data.
// The model the inputs are made for (workload::GeneratorConfig: V's head size, window, softcap)
// is what the command's variant options say.
workload::GeneratorConfig structured_config(int64_t seq, int heads, int kv_heads, int head_dim,
                                            uint64_t seed, int64_t needles, workload::HeadMix mix,
                                            int head_dim_v = 0, int64_t window_left = -1, double softcap = 0);
// --mix: "default", "real" or "far" (generator.h: HeadMix); false on anything else.
bool parse_head_mix(const std::string& text, workload::HeadMix* mix);
inline constexpr const char* kMixHelp =
    "generated head mix: default (local, stripe, sparse, diffuse), real (1 head in 8 a copy head, 1 a retrieval "
    "head) or far (real, plus rare rows fetching one far key in the local, stripe and sparse heads)";

// Q, K and V read from files must describe one call: K and V the same tokens and heads, Q and K
// one head dim (V's is head_dim_v, its own), query heads a multiple of kv heads, and at least one
// token. Checked before any call, so a mismatched file never makes the library read past a buffer.
Status check_inputs_agree(const workload::Tensor3& q, const workload::Tensor3& k, const workload::Tensor3& v);

// What the program is about to allocate, for the message when an allocation fails (main catches
// std::bad_alloc and prints it): e.g. note_memory_need("the generated inputs", 3 << 30).
void note_memory_need(const std::string& what, uint64_t bytes);
std::string memory_need();

// The words for a failed status on stderr: its message, led by "out of memory: " when it is one
// (the message says what did not fit), so every kind of allocation failure reads the same.
std::string describe(const Status& status);

// Parses "f32" | "f16" | "bf16".
bool parse_dtype(const std::string& text, DType* out);

// Params for one sequence over [seq, heads, dim] tensors at the given (backend) addresses; O is
// [q.seq, q.heads, v.dim] (head_dim_v is v's head dim when it differs from q's).
sampleattn_params tensor_params(const workload::Tensor3& q, const workload::Tensor3& k,
                                const workload::Tensor3& v, const void* q_data, const void* k_data, const void* v_data,
                                void* o_data, DType o_dtype);

}  // namespace sampleattn::cli
