#include "cli/bench_inputs.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
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

// The last q_len positions of q (chunked prefill and decode: the library's rule for q_len < k_len).
Status keep_last_queries(int64_t q_len, workload::Tensor3* q) {
  if (q_len == q->seq) return Status::ok();
  if (q_len > q->seq) {
    return invalid_argument("--q-len " + std::to_string(q_len) + " is more than the inputs' " +
                            std::to_string(q->seq) + " queries");
  }
  workload::Tensor3 last;
  SAMPLEATTN_RETURN_IF_ERROR(workload::make_tensor(q_len, q->heads, q->dim, q->dtype, &last));
  const size_t row = last.bytes.size() / static_cast<size_t>(q_len);
  std::copy(q->bytes.end() - static_cast<std::ptrdiff_t>(row * static_cast<size_t>(q_len)), q->bytes.end(),
            last.bytes.begin());
  *q = std::move(last);
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
                          options.mix, options.head_dim_v, options.variants.window_left, options.variants.softcap),
        &g));
    q = std::move(g.q);
    k = std::move(g.k);
    v = std::move(g.v);
    in->needles = std::move(g.needles);
    for (workload::HeadInfo& h : g.heads) in->far_rows.push_back(std::move(h.far_rows));
    in->source = "structured";
  } else if (data == "random") {
    workload::Rng rng(options.seed);
    auto gaussian = [&](int64_t heads, int64_t dim, workload::Tensor3* t) -> Status {
      std::vector<float> values(static_cast<size_t>(seq * heads * dim));
      for (float& x : values) x = static_cast<float>(rng.normal());
      return workload::tensor_from_f32(seq, heads, dim, DType::kF32, values, t);
    };
    SAMPLEATTN_RETURN_IF_ERROR(gaussian(options.heads, options.head_dim, &q));
    SAMPLEATTN_RETURN_IF_ERROR(gaussian(options.kv_heads, options.head_dim, &k));
    SAMPLEATTN_RETURN_IF_ERROR(
        gaussian(options.kv_heads, options.head_dim_v > 0 ? options.head_dim_v : options.head_dim, &v));
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
  SAMPLEATTN_RETURN_IF_ERROR(build_kv_storage(options.page_size, options.kv_dtype, options.seed, &in->k, &in->v, &in->kv));
  std::string error;
  if (!model_variants_for(options.variants, in->q.heads, &in->model, &error)) return invalid_argument(error);
  if (options.variants.generated_sinks) {
    // Against the scores the model uses (window, cap, ALiBi), in the benchmark dtype.
    SAMPLEATTN_RETURN_IF_ERROR(workload::generated_sinks(in->q, in->k, 1.0 / std::sqrt(static_cast<double>(in->q.dim)),
                                                         in->model, options.seed, &in->model.sinks));
  }
  if (options.q_len > 0) SAMPLEATTN_RETURN_IF_ERROR(keep_last_queries(options.q_len, &in->q));
  return Status::ok();
}

}  // namespace sampleattn::cli
