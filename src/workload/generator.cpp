// generate(): the structured inputs of generator.h, as a list of phases (generator_model.h
// declares them; generator_heads, _context, _tensors and _calibration.cpp hold them).
#include "workload/generator.h"

#include <cmath>
#include <string>
#include <utility>

#include "workload/generator_model.h"

namespace sampleattn::workload {
namespace {

Status validate(const GeneratorConfig& c) {
  if (c.seq < 1 || c.seq > kMaxGeneratedSeq) {
    return invalid_shape("generator: seq must be in [1, " + std::to_string(kMaxGeneratedSeq) + "]");
  }
  if (c.head_dim < kMinGeneratedHeadDim || c.head_dim > 256 || c.head_dim % 2 != 0) {
    return Status(SAMPLEATTN_UNSUPPORTED_HEAD_DIM,
                  "generator: head_dim must be even, " + std::to_string(kMinGeneratedHeadDim) + "..256");
  }
  if (c.num_q_heads < 1 || c.num_kv_heads < 1 || c.num_q_heads % c.num_kv_heads != 0) {
    return invalid_shape("generator: num_q_heads must be a positive multiple of num_kv_heads");
  }
  if (!(c.rope_base > 1.0) || !std::isfinite(c.rope_base)) {
    return invalid_argument("generator: rope_base must be finite and > 1");
  }
  if (!(c.stripe_fraction >= 0.0 && c.stripe_fraction <= 0.05)) {
    return invalid_argument("generator: stripe_fraction must be in [0, 0.05]");
  }
  if (!(c.band_width_scale > 0.0) || !std::isfinite(c.band_width_scale)) {
    return invalid_argument("generator: band_width_scale must be finite and > 0");
  }
  if (c.copied_spans < 0 || c.copied_span_length < 1) {
    return invalid_argument("generator: copied_spans must be >= 0 and copied_span_length >= 1");
  }
  if (!c.head_types.empty() && static_cast<int>(c.head_types.size()) != c.num_q_heads) {
    return invalid_argument("generator: head_types must be empty or have num_q_heads entries");
  }
  for (HeadType t : c.head_types) {
    if (static_cast<int>(t) < 0 || static_cast<int>(t) > 5) return invalid_argument("generator: bad head type");
  }
  if (static_cast<int>(c.mix) < 0 || static_cast<int>(c.mix) > static_cast<int>(HeadMix::kFar)) {
    return invalid_argument("generator: bad head mix");
  }
  if (c.head_dim_v < 0 || c.head_dim_v > 1024) {
    return Status(SAMPLEATTN_UNSUPPORTED_HEAD_DIM, "generator: head_dim_v must be 0 (head_dim) or 1..1024");
  }
  if (c.window_left < -1) return invalid_argument("generator: window_left must be -1 (none) or >= 0");
  if (!(c.softcap >= 0.0) || !std::isfinite(c.softcap)) {
    return invalid_argument("generator: softcap must be finite and >= 0 (0: none)");
  }
  if (!c.needles.empty() && c.seq < 16) {
    return invalid_shape("generator: needles need seq >= 16");
  }
  for (const NeedleSpec& n : c.needles) {
    if (!(n.depth >= 0.0 && n.depth <= 1.0)) return invalid_argument("generator: needle depth must be in [0, 1]");
    if (n.query >= c.seq || n.query < -1 || (n.query >= 0 && n.query < detail::kSinkTokens + 1)) {
      return invalid_argument("generator: needle query token out of range");
    }
    if (n.query_head < -1 || n.query_head >= c.num_q_heads) {
      return invalid_argument("generator: needle query_head out of range");
    }
  }
  return Status::ok();
}

}  // namespace

const char* head_type_name(HeadType t) {
  switch (t) {
    case HeadType::kLocal: return "local";
    case HeadType::kStripe: return "stripe";
    case HeadType::kSparse: return "sparse";
    case HeadType::kDiffuse: return "diffuse";
    case HeadType::kCopy: return "copy";
    case HeadType::kRetrieval: return "retrieval";
  }
  return "?";
}

const char* head_mix_name(HeadMix m) {
  switch (m) {
    case HeadMix::kDefault: return "default";
    case HeadMix::kReal: return "real";
    case HeadMix::kFar: return "far";
  }
  return "?";
}

Status generate(const GeneratorConfig& c, GeneratedData* out) {
  using namespace detail;
  if (out == nullptr) return null_pointer("generate: out is null");
  SAMPLEATTN_RETURN_IF_ERROR(validate(c));
  const Dims dims = Dims::of(c);
  GeneratedData g;
  g.softmax_scale = dims.scale;
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(dims.seq, dims.q_heads, dims.d, DType::kF32, &g.q));
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(dims.seq, dims.kv_heads, dims.d, DType::kF32, &g.k));
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(dims.seq, dims.kv_heads, dims.dv, DType::kF32, &g.v));
  float* Q = reinterpret_cast<float*>(g.q.data());
  float* K = reinterpret_cast<float*>(g.k.data());
  float* V = reinterpret_cast<float*>(g.v.data());

  Layout layout = make_layout(c);
  const std::vector<HeadDesign> heads = design_heads(c, &layout);
  const std::vector<CopySpan> spans = place_copied_spans(c);
  g.repeats = place_repeats(c, heads);
  const KeyLayout keys = lay_out_keys(c, layout, &g.stripes);
  std::vector<NeedleWork> needles;
  SAMPLEATTN_RETURN_IF_ERROR(place_needles(c, layout, &needles));
  {
    const std::vector<float> identity = write_keys_and_values(c, layout, spans, keys, needles, K, V);
    write_queries(c, layout, heads, spans, g.repeats, keys, identity, Q);
  }
  const std::vector<double> needle_row_log_sink = calibrate_needle_rows(c, needles, Q, K);
  calibrate_sinks(c, layout, heads, needles, needle_row_log_sink, Q, K);

  for (const HeadDesign& h : heads) g.heads.push_back(h.info);
  for (const NeedleWork& w : needles) g.needles.push_back({w.query, w.head, w.key, w.direction});
  *out = std::move(g);
  return Status::ok();
}

}  // namespace sampleattn::workload
