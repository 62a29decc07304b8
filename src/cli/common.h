// Pieces shared by the subcommands: reading method parameters from options, building params
// over tensors, and creating a context.
#pragma once

#include <string>

#include "cli/options.h"
#include "sampleattn/sampleattn.hpp"
#include "workload/generator.h"
#include "workload/npy.h"

namespace sampleattn::cli {

// Declares the options that set the method and its SampleAttention parameters.
void declare_method_options(Options& o);
// Reads them into params (method, precision, sample.*). false with error set on bad values.
bool read_method_options(const Options& o, sampleattn::Params* params, std::string* error);

// Declares --backend and --threads; creates the context.
void declare_context_options(Options& o);
bool make_context(const Options& o, sampleattn_context** ctx, std::string* error);

// The structured inputs every subcommand generates: the generator's defaults plus `needles`
// needles at evenly spaced depths, so bench, run, mask and generate see the same data.
workload::GeneratorConfig structured_config(int64_t seq, int heads, int kv_heads, int head_dim,
                                            uint64_t seed, int64_t needles);

// Q, K and V read from files must describe one call: K and V the same tokens and heads, one head
// dim, query heads a multiple of kv heads, and at least one token. Checked before any call, so a
// mismatched file never makes the library read past a buffer.
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

// Params for one sequence over [seq, heads, dim] tensors at the given (backend) addresses.
sampleattn_params tensor_params(const workload::Tensor3& q, const workload::Tensor3& k,
                                const workload::Tensor3& v, const void* q_data, const void* k_data, const void* v_data,
                                void* o_data, DType o_dtype);

}  // namespace sampleattn::cli
