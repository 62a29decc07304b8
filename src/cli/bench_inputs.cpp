#include "cli/bench_inputs.h"

#include <utility>

#include "cli/common.h"

namespace sampleattn::cli {
namespace {

// Moves a tensor already in `dtype` (no second copy of large files), converts otherwise.
Status into_dtype(workload::Tensor3&& t, DType dtype, workload::Tensor3* out) {
  if (t.dtype != dtype) return workload::convert_tensor(t, dtype, out);
  *out = std::move(t);
  return Status::ok();
}

}  // namespace

Status load_bench_inputs(const BenchOptions& options, int64_t seq, BenchInputs* in) {
  const std::string& data = options.data;
  workload::Tensor3 q, k, v;
  if (data == "structured") {
    workload::GeneratedData g;
    SAMPLEATTN_RETURN_IF_ERROR(workload::generate(
        structured_config(seq, options.heads, options.kv_heads, options.head_dim, options.seed, options.needles,
                                                  options.mix),
        &g));
    q = std::move(g.q);
    k = std::move(g.k);
    v = std::move(g.v);
    in->needles = std::move(g.needles);
    in->source = "structured";
  } else if (data == "random") {
    workload::Rng rng(options.seed);
    auto gaussian = [&](int64_t heads, workload::Tensor3* t) -> Status {
      std::vector<float> values(static_cast<size_t>(seq * heads * options.head_dim));
      for (float& x : values) x = static_cast<float>(rng.normal());
      return workload::tensor_from_f32(seq, heads, options.head_dim, DType::kF32, values, t);
    };
    SAMPLEATTN_RETURN_IF_ERROR(gaussian(options.heads, &q));
    SAMPLEATTN_RETURN_IF_ERROR(gaussian(options.kv_heads, &k));
    SAMPLEATTN_RETURN_IF_ERROR(gaussian(options.kv_heads, &v));
    in->source = "random";
  } else {
    const std::string dir = data.substr(4);
    SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(dir + "/q.npy", &q));
    SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(dir + "/k.npy", &k));
    SAMPLEATTN_RETURN_IF_ERROR(workload::read_npy(dir + "/v.npy", &v));
    SAMPLEATTN_RETURN_IF_ERROR(check_inputs_agree(q, k, v));
    in->source = data;
  }
  DType dtype = options.dtype;
  if (in->source == data && !options.dtype_given) {
    // The files' dtype, unless --dtype asks for another. One dtype for the three, as every row
    // reports one.
    if (k.dtype != q.dtype || v.dtype != q.dtype) {
      return invalid_argument(std::string("the files' dtypes differ (q ") + dtype_name(q.dtype) + ", k " +
                              dtype_name(k.dtype) + ", v " + dtype_name(v.dtype) +
                              "): pass --dtype to convert them to one");
    }
    dtype = q.dtype;
  }
  in->dtype = dtype;
  SAMPLEATTN_RETURN_IF_ERROR(into_dtype(std::move(q), dtype, &in->q));
  SAMPLEATTN_RETURN_IF_ERROR(into_dtype(std::move(k), dtype, &in->k));
  SAMPLEATTN_RETURN_IF_ERROR(into_dtype(std::move(v), dtype, &in->v));
  return Status::ok();
}

}  // namespace sampleattn::cli
