// Internal to the generator (generator*.cpp): the constants of its attention model, the records
// its phases pass on, and one function per phase. generator.h describes the construction;
// generate() (generator.cpp) runs the phases in order.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/status.h"
#include "workload/generator.h"

namespace sampleattn::workload::detail {

inline constexpr double kPi = 3.14159265358979323846;
inline constexpr int kSinkTokens = 4;
// Relative strength of the sink keys 0..3 (token 0 is the main sink).
inline constexpr double kSinkKeyFactor[kSinkTokens] = {1.0, 0.8, 0.7, 0.6};
inline constexpr int kTopics = 4;
inline constexpr double kSinkKeyNorm = 4.0;  // sink keys' value in the slowest pair
inline constexpr double kBandKeyNorm = 5.0;  // |w_i|: the shared band vector of every key, per pair
inline constexpr double kOffsetKeyNorm = 4.0;  // stripe keys' value in the offset pair
inline constexpr double kStripeTopElevation = 7.0;  // nats, the heaviest stripe at eta = 1
// Distance decay: the shared component of the ordinary keys spans the pairs with
// theta >= 1 / kDecayMaxDistance, so a key's score falls like -beta ln(distance) out to this
// distance (a property of the "model": the same for every context length).
inline constexpr double kDecayMaxDistance = 131072.0;
// Stripe keys do not decay (heavy hitters are seen from everywhere): they stand their elevation
// above the ordinary keys at this distance, and further above the ones farther away.
inline constexpr double kStripeReferenceDistance = 512.0;
inline constexpr int kCalibrationGrid = 12;
// The sink calibration sums the nearest keys of every row exactly (they hold most of a local
// head's non-sink mass, and their scores vary from row to row); the rest comes from sample rows.
inline constexpr int64_t kNearExact = 32;
inline constexpr int kCalibrationRowsPerPoint = 4;
// Needle rows: shares of the row's mass.
inline constexpr double kNeedleMass = 0.75;
inline constexpr double kNeedleSinkMass = 0.10;

// Stream tags for derive_seed.
enum : uint64_t {
  kTagKeyLayout = 1,
  kTagIdentity,
  kTagValue,
  kTagQuery,
  kTagHeadParams,
  kTagHeadTypes,
  kTagSpans,
  kTagNeedles,
  kTagRepeats,  // after the others: their values (and so the default mix's bytes) stay
  kTagFarRows,
};
// Copy heads: the repeats cover about this share of the context; their lengths and offsets.
inline constexpr double kRepeatCoverage = 2.0 / 3.0;
inline constexpr int64_t kRepeatMinLength = 16, kRepeatMaxLength = 256;
inline constexpr double kRepeatMedianOffset = 0.15;  // of the context (before clamping)
inline constexpr double kRepeatOffsetSigma = 1.0;    // of ln(offset)
inline constexpr int64_t kRepeatMinOffset = 96;
// Retrieval heads: rows from this token on fetch 1-3 keys at distance >= kRetrievalMinDistance.
inline constexpr int64_t kRetrievalFirstRow = 256, kRetrievalMinDistance = 64;
// Rare far rows (the far mix): this share of a head's rows from kFarRowFirst on, in runs of
// 1 .. kFarRunMax rows, each run at one distance, its first row's key uniform in
// [kFarFirstKey, run start / 2]; the far key kFarMarginLo .. kFarMarginHi nats above the row's
// own key, the sink at kFarRowSink.
inline constexpr double kFarRowShare = 0.005;
inline constexpr int64_t kFarRowFirst = 1024, kFarRunMax = 4, kFarFirstKey = 64;
inline constexpr double kFarMarginLo = 6.0, kFarMarginHi = 8.0, kFarRowSink = 0.25;

// Sizes every phase uses, derived once from the config.
struct Dims {
  int64_t seq = 0;
  int d = 0;
  int dv = 0;  // V's head size
  int q_heads = 0, kv_heads = 0, group = 1;  // group: query heads per kv head
  float scale = 0.f;                          // 1/sqrt(d), the scale the calibration assumes
  float softcap = 0.f;                        // the model's logit cap the calibration solves under; 0: none

  static Dims of(const GeneratorConfig& c) {
    Dims s;
    s.seq = c.seq;
    s.d = c.head_dim;
    s.dv = c.head_dim_v > 0 ? c.head_dim_v : c.head_dim;
    s.softcap = static_cast<float>(c.softcap);
    s.q_heads = c.num_q_heads;
    s.kv_heads = c.num_kv_heads;
    s.group = c.num_q_heads / c.num_kv_heads;
    s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
    return s;
  }
};

struct SlashTerm {
  int64_t offset = 0;
  double strength = 0;  // nats at the reference position
  // Near offsets (1, 2) sit inside the band: their strength is a bump on top of the band's score
  // there, the same at every position. Far ones stand alone and follow the position shift.
  bool near = false;
};

// How one query head attends: its type's parameters, drawn from the seed.
struct HeadDesign {
  HeadInfo info;
  int band_pairs = 2;         // pairs 0 .. band_pairs-1 carry the band
  double beta = 0;            // distance decay exponent: scores fall like -beta ln(distance)
  std::vector<double> shared_weight;  // per pair: nats of the shared (band + decay) component
  double stripe_offset = 0;   // nats added to every stripe key (the decay at the reference)
  double eta = 0;             // stripe elevation multiplier
  double tau = 0;             // topic boost multiplier
  double copy_strength = -1;  // < 0: no copy attention
  std::vector<SlashTerm> slashes;
};

// Which RoPE pairs hold what (generator.h).
struct Layout {
  int d = 0, half = 0;
  int sink_pair = 0, heavy_pair = 0, offset_pair = 0, last_free = 0, band_limit = 0;
  int topic_pair[kTopics] = {};
  std::vector<int> identity_pairs;
  std::vector<int> decay_pairs;  // content pairs carrying the shared decay component
  std::vector<double> theta;
};

struct CopySpan {
  int64_t source = 0, target = 0, length = 0;
};

struct StripeKey {
  double elevation = 0;  // nats at eta = 1
  double boost = 0;      // nats at tau = 1, for queries engaged with its topic
  int topic = 0;
};

// Per kv head: the band phases and the stripe keys.
struct KeyLayout {
  std::vector<std::vector<double>> band_phase;      // [kv][pair]
  std::vector<std::vector<StripeKey>> stripe_of;    // [kv][stripe index], in the order drawn
  std::vector<std::vector<int>> stripe_index;       // [kv][token]: index into stripe_of, or -1
};

// A needle resolved to positions, head and content.
struct NeedleWork {
  int64_t query = 0;
  int head = 0;
  int64_t key = 0;
  std::vector<float> nu;         // pre-RoPE key content in identity dims
  std::vector<float> direction;  // unit value direction
};

// ---- Helpers shared by the phases (generator_calibration.cpp).
float dot(const float* a, const float* b, int d);
// The score the model's softmax sees: cap * tanh(s / cap) with a cap (> 0), else s itself.
inline float capped(float s, float cap) { return cap > 0.f ? cap * std::tanh(s / cap) : s; }
// ln sum_j exp(capped(scale * q . k_j)) over keys [begin, end) of one kv head, skipping `skip`.
double log_partition(const float* q, const float* k, int64_t k_stride, int d, float scale, int64_t begin,
                     int64_t end, int64_t skip = -1, float cap = 0.f);

// ---- The phases, in the order generate() runs them.

// The RoPE pair layout before the heads are known (generator_heads.cpp).
Layout make_layout(const GeneratorConfig& c);
// 1. Head types and parameters; narrows the layout's band pairs to the widest head's and places
//    the identity and decay pairs (generator_heads.cpp).
std::vector<HeadDesign> design_heads(const GeneratorConfig& c, Layout* layout);
// 2. Copied spans, shared by all kv heads as repeated text is (generator_context.cpp).
std::vector<CopySpan> place_copied_spans(const GeneratorConfig& c);
// 2b. Repeats the copy heads follow (empty when no head is a copy head; generator_context.cpp).
std::vector<RepeatSpan> place_repeats(const GeneratorConfig& c, const std::vector<HeadDesign>& heads);
// The repeat holding query token p, or null (spans ascending by target, disjoint).
const RepeatSpan* repeat_at(const std::vector<RepeatSpan>& repeats, int64_t p);
// Head h's far row at query token p, or null (far_rows ascending by row).
const FarRow* far_row_at(const HeadInfo& h, int64_t p);
// Head h's shared (band + decay) score of an ordinary key at `distance`, nats.
double shared_score(const Layout& L, const HeadDesign& h, int64_t distance);
// The token whose identity token j carries (itself, or its source inside a copied span).
int64_t identity_source(const std::vector<CopySpan>& spans, int64_t j);
// 3. Per kv head: band phases and stripe keys; `stripes` gets each kv head's stripe positions,
//    ascending (generator_context.cpp).
KeyLayout lay_out_keys(const GeneratorConfig& c, const Layout& layout,
                       std::vector<std::vector<int64_t>>* stripes);
// 4. Needles: positions, heads, key contents and value directions (generator_context.cpp).
Status place_needles(const GeneratorConfig& c, const Layout& layout, std::vector<NeedleWork>* needles);
// 5. Keys and values, RoPE applied to K. Returns the pre-RoPE identity vectors [seq, kv, d] that
//    the slash terms of the queries copy (generator_tensors.cpp).
std::vector<float> write_keys_and_values(const GeneratorConfig& c, const Layout& layout,
                                         const std::vector<CopySpan>& spans, const KeyLayout& keys,
                                         const std::vector<NeedleWork>& needles, float* K, float* V);
// 6. Queries without the calibrated sink and needle terms, RoPE applied (generator_tensors.cpp).
void write_queries(const GeneratorConfig& c, const Layout& layout, const std::vector<HeadDesign>& heads,
                   const std::vector<CopySpan>& spans, const std::vector<RepeatSpan>& repeats, const KeyLayout& keys,
                   const std::vector<float>& identity, float* Q);
// 7. Needle rows: the needle key takes kNeedleMass of its row. Returns, per needle, the log of
//    the score its row's sink must reach (generator_calibration.cpp).
std::vector<double> calibrate_needle_rows(const GeneratorConfig& c, const std::vector<NeedleWork>& needles,
                                          float* Q, const float* K);
// 8. The sink component of every query row, calibrated on sample rows per head
//    (generator_calibration.cpp).
void calibrate_sinks(const GeneratorConfig& c, const Layout& layout, const std::vector<HeadDesign>& heads,
                     const std::vector<NeedleWork>& needles, const std::vector<double>& needle_row_log_sink,
                     float* Q, const float* K);

}  // namespace sampleattn::workload::detail
