// Pieces shared by the subcommands: reading method parameters from options, building params
// over tensors, and creating a context.
#pragma once

#include <string>

#include "cli/options.h"
#include "sampleattn/sampleattn.h"
#include "workload/generator.h"
#include "workload/npy.h"

namespace sampleattn::cli {

// Declares the options that set the method and its SampleAttention parameters.
void declare_method_options(Options& o);
// Reads them into params (method, precision, sample.*). false with error set on bad values.
bool read_method_options(const Options& o, sampleattn_params* params, std::string* error);

// Declares --backend and --threads; creates the context.
void declare_context_options(Options& o);
bool make_context(const Options& o, sampleattn_context** ctx, std::string* error);

// The structured inputs every subcommand generates: the generator's defaults plus `needles`
// needles at evenly spaced depths, so bench, run, mask and generate see the same data.
workload::GeneratorConfig structured_config(int64_t seq, int heads, int kv_heads, int head_dim,
                                            uint64_t seed, int64_t needles);

// Parses "f32" | "f16" | "bf16".
bool parse_dtype(const std::string& text, DType* out);

// Params for one sequence over [seq, heads, dim] tensors at the given (backend) addresses.
sampleattn_params tensor_params(const workload::Tensor3& q, const workload::Tensor3& k,
                                const workload::Tensor3& v, const void* q_data, const void* k_data, const void* v_data,
                                void* o_data, DType o_dtype);

}  // namespace sampleattn::cli
