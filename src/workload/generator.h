// Structured long-context Q/K/V: random Gaussian inputs have no sparse structure (sampling finds
// no stripes), so speed and accuracy measured on them mean nothing. This generator builds inputs
// whose attention looks like a real LLM's at long context, deterministically from a seed.
//
// Construction (RoPE convention of Llama / Hugging Face `rotate_half`: dims i and i + d/2 form
// pair i, rotated by angle pos * base^(-2i/d); pair 0 is the fastest, pair d/2-1 the slowest).
// Pre-RoPE content is built per token, then RoPE is applied for real to Q and K. The score of
// query p and key j is then a sum over pairs of Re(q~ conj(k~) e^{i (p-j) theta}), so:
//  - sink: the first 4 keys carry only a component in the slowest pair, which every query shares;
//    the slowest pair barely rotates over the context, so the sink is seen from everywhere. Each
//    query's sink component is calibrated (on exactly computed sample rows) so that the head's
//    sink mass (first 4 tokens) is its target, 0.5-0.95.
//  - local band: every key holds the same vector in the fastest pairs; a query's component there
//    gives a score that is a sum of cosines of (p-j) theta_i, decaying with distance (power law in
//    the distance) until the slowest pair used decoheres: the width is set by how many pairs.
//  - distance decay: the same shared vector continues in "decay" pairs (alternating with the
//    identity pairs below) up to theta = 1/131072, each weighted by beta times the stretch of
//    ln(1/theta) it stands for; sum_i w_i cos((p-j) theta_i) ~ -beta ln(p-j) (RoPE's own
//    long-term decay), so the mass of unrelated keys falls like a power law (p-j)^-beta beyond
//    the band, as in real models, and the same at every context length: beta 1.1-1.8 for
//    local / stripe / sparse heads (their far mass shrinks as the context grows), 0.2-0.4 for
//    diffuse heads (which stay diffuse).
//  - vertical stripes: 0.2-1% of positions (per kv head) are heavy keys with a Zipf-distributed
//    elevation seen by every query, plus one of a few "topics"; each query engages each topic
//    with probability 1/2, which boosts the topic's stripes by 2-5 nats for those queries. Both
//    live in slow pairs so they act across the context (and fade slowly, as in real models).
//    Stripe keys do not hold the shared band/decay vector (they do not decay with distance); a
//    constant in another slow pair, scaled per query head, puts them their elevation above the
//    ordinary keys at distance 512.
//  - slash lines and copied spans: each key holds a random identity vector (in "content" pairs,
//    between the band pairs and the reserved slow pairs); a query holding the identity of the key
//    at offset delta (pre-rotated by delta) scores it highly: bumps of 2-3 nats at offsets 1 and 2
//    on top of the band, two far offsets, and copied spans (a later span repeats an earlier
//    span's identities and its queries attend to the source, a diagonal segment).
//  - background: a random query component against the identities, sigma nats per score, on top
//    of the decay; the band's far sidelobes and the slash terms add to it.
//  - sink calibration: per row, the nearest 32 keys summed exactly plus the rest of the row's
//    partition interpolated from sample rows.
//  - copy (induction) heads, only in the "real" mix or by override: "repeats" cover about 2/3 of
//    the context, each a run of 16-256 tokens that repeats the text at an earlier offset
//    (log-normal, median 15% of the context, clamped to 96 .. the position); the copy head's query
//    at token T+i of a repeat holds the identity of key S+i+1, the token after its context's
//    previous occurrence, strong enough to put that key 3-5 nats above the query's own key
//    (distance 0). Each query has a different far key (a diagonal segment per repeat, not a
//    column). The keys are not changed (the repeat is implicit in the query), so the other heads
//    see the same keys as without copy heads.
//  - retrieval heads, the same way: each query past the first 256 tokens fetches 1-3 keys of its
//    own, uniform over [4, p - 64], each 4-6 nats above the query's own key. Both have a low sink
//    (0.15-0.3), calibrated per row on the row's exact partition (their rows differ too much for
//    the sample-row curve), which costs O(seq^2 d) per such head. The far keys' identity terms
//    project onto every other key's identity too (a few nats of extra background per row).
//  - rare far rows, only in the "far" mix: in each local, stripe and sparse head, 0.5% of the rows
//    from token 1024 on (runs of 1-4 consecutive rows, each run at one distance: a short slash
//    segment) fetch one key at least half their position back (the run's first key uniform in
//    64 .. start / 2), 6-8 nats above the row's own key, with a sink of 0.25 (calibrated on the
//    row's exact partition). Such a row puts a large share of its mass on that key (median
//    0.4-0.6 at head_dim 128; the other keys' slash terms and stripes compete, and the identity
//    term's cross-talk with other keys grows at smaller head dims), while the head's other rows
//    look as before. This is what the small real model of docs/ACCURACY.md shows in otherwise
//    sparse heads: rows too rare for sampling or validation to meet, whose far key no column
//    ranking keeps.
// The model the inputs are made for (all off by default; the default bytes do not change):
//  - head_dim_v: V (and the needles' values) get a head size of their own.
//  - window_left (a sliding-window model): each needle's key lies at its depth within the keys its
//    query sees (keys q - window_left .. q - 1), so the recall metric has needles to count; the
//    heads are unchanged: a row sees the band, stripes and background of its window (the sink
//    keys only in the first window), i.e. attention local within the window.
//  - softcap (a Gemma 2 style logit cap): the sink and needle calibrations solve for their targets
//    on the capped scores, so the capped attention keeps the designed sink mass and needle share,
//    while the raw logits the kernels see reach where the cap bends them (sink logits of about 30
//    at 8K). Attention that ignored the cap would differ: measured at 8K, 128 dims, 8 heads, the
//    output rows move by 14-38% (relative L2, per head) for a cap of 30, 6-13% for 50.
// Heads mix four types, assigned deterministically from the seed: local/slash-dominated,
// stripe-dominated, very sparse (sink + local) and diffuse; the "real" mix (HeadMix::kReal) turns
// one head in 8 into a copy head and one in 8 into a retrieval head; the "far" mix (HeadMix::kFar)
// is the real mix with rare far rows in its local, stripe and sparse heads. V is Gaussian N(0, 1); planted
// needle values are distinct unit directions scaled to the norm of a typical value row.
// Cost: O(seq * heads * head_dim * 32) for the exact near part of the sink calibration plus the
// calibration rows, O(calibration_rows * seq * d) per head (about 48 rows): 32K x 32 heads x 128
// takes a few seconds on 2 cores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "workload/npy.h"

namespace sampleattn::workload {

enum class HeadType : int { kLocal = 0, kStripe = 1, kSparse = 2, kDiffuse = 3, kCopy = 4, kRetrieval = 5 };
const char* head_type_name(HeadType t);

// Which head types the deterministic mix draws from. kDefault: local, stripe, sparse, diffuse
// (the tensors every published figure was measured on); kReal: one head in 8 a copy head and one
// in 8 a retrieval head instead of a local and a stripe head, as in a small real model; kFar: the
// real mix (the same head types) with rare far rows in its local, stripe and sparse heads.
enum class HeadMix : int { kDefault = 0, kReal = 1, kFar = 2 };
const char* head_mix_name(HeadMix m);

// A repeat of earlier text that copy heads follow: tokens target .. target+length-1 repeat tokens
// source .. source+length-1, and the copy head's query at target+i attends to key source+i+1.
struct RepeatSpan {
  int64_t source = 0, target = 0, length = 0;
  double margin = 0;  // nats key source+i+1 stands above the query's own key (distance 0)
};

// A rare row of the "far" mix: query token `row` puts `margin` nats more on key `key` than on
// its own key (distance 0).
struct FarRow {
  int64_t row = 0, key = 0;
  double margin = 0;
};

// A key/value pair planted in the context and the query that retrieves it.
struct NeedleSpec {
  // Key position as a fraction of the context, [0, 1]; with a model window, of the keys the
  // needle's query sees (its last window_left keys before it).
  double depth = 0.5;
  int64_t query = -1;   // query token; -1: one of the last 64 tokens, distinct per needle
  int query_head = -1;  // -1: spread over the heads round-robin
};

struct PlantedNeedle {
  int64_t query_token = 0;
  int query_head = 0;
  int64_t key_position = 0;
  std::vector<float> value_direction;  // unit vector of head_dim_v: the value stored at the key
};

// The longest sequence the generator makes (its decay and RoPE tables are laid out for it).
inline constexpr int64_t kMaxGeneratedSeq = 131072;
// The smallest head_dim it makes: its structure needs RoPE pairs for the sink, stripes, topics,
// band, decay and identities; at 32 (16 pairs) the calibrations run out of room (scores of 100+).
inline constexpr int kMinGeneratedHeadDim = 48;

struct GeneratorConfig {
  int64_t seq = 4096;  // 1 .. kMaxGeneratedSeq
  int head_dim = 128;  // even, kMinGeneratedHeadDim .. 256
  int num_q_heads = 32;
  int num_kv_heads = 8;  // divides num_q_heads
  double rope_base = 500000.0;
  uint64_t seed = 1;
  // Fraction of positions that are stripes (per kv head), [0.002, 0.01].
  double stripe_fraction = 0.005;
  // Scales every head's local band width (1 = the per-type defaults, 16..256 tokens).
  double band_width_scale = 1.0;
  // Copied spans: count and length (tokens) of spans that repeat an earlier span.
  int copied_spans = 4;
  int64_t copied_span_length = 64;
  std::vector<NeedleSpec> needles;
  // Optional per-head type override (size num_q_heads); empty: the deterministic mix.
  std::vector<HeadType> head_types;
  HeadMix mix = HeadMix::kDefault;
  // The model the inputs are made for (see above): V's head size (0: head_dim; else 1 .. 1024),
  // its sliding window (-1: none; else >= 0) and its logit softcap (0: none; else finite > 0).
  int head_dim_v = 0;
  int64_t window_left = -1;
  double softcap = 0;
};

struct HeadInfo {
  HeadType type = HeadType::kLocal;
  double sink_target = 0.7;      // target sink mass (first 4 tokens)
  double band_width = 64;        // tokens where the band decoheres
  double band_peak = 10;         // band score at distance 0, nats above the decay there
  double stripe_elevation = 0;   // heaviest stripe's elevation for this head, nats
  double background_sigma = 0.6; // std of the background scores, nats
  std::vector<FarRow> far_rows;  // the "far" mix's rare far rows of this head, ascending by row
};

struct GeneratedData {
  Tensor3 q, k, v;  // f32, [seq, heads, head_dim] (v: head_dim_v), RoPE applied to q and k
  float softmax_scale = 0.f;  // 1/sqrt(head_dim), the scale the calibration assumed
  std::vector<HeadInfo> heads;                // per query head
  std::vector<std::vector<int64_t>> stripes;  // per kv head: stripe key positions, ascending
  std::vector<PlantedNeedle> needles;
  std::vector<RepeatSpan> repeats;  // what the copy heads follow (empty without copy heads)
};

// Validates the config and generates. Deterministic: the same config gives the same bytes.
Status generate(const GeneratorConfig& config, GeneratedData* out);

// Applies RoPE in place to rows [seq, heads, head_dim] (f32) whose token t sits at position
// first_position + t; the convention above. Exposed for tests.
void apply_rope(float* data, int64_t seq, int heads, int head_dim, double base,
                int64_t first_position = 0);

// Deterministic random numbers (independent of the standard library implementation).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next_u64();    // xoshiro256**
  double uniform();       // [0, 1)
  double normal();        // Box-Muller
  uint64_t below(uint64_t n);  // [0, n)
 private:
  uint64_t s_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

// Seed for an independent stream derived from a seed and a few indices (splitmix64 mixing).
uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

}  // namespace sampleattn::workload
