#include "workload/generator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace sampleattn::workload {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kSinkTokens = 4;
// Relative strength of the sink keys 0..3 (token 0 is the main sink).
constexpr double kSinkKeyFactor[kSinkTokens] = {1.0, 0.8, 0.7, 0.6};
constexpr int kTopics = 4;
constexpr double kSinkKeyNorm = 4.0;  // sink keys' value in the slowest pair
constexpr double kBandKeyNorm = 5.0;  // |w_i|: the shared band vector of every key, per pair
constexpr double kOffsetKeyNorm = 4.0;  // stripe keys' value in the offset pair
constexpr double kStripeTopElevation = 7.0;  // nats, the heaviest stripe at eta = 1
// Distance decay: the shared component of the ordinary keys spans the pairs with
// theta >= 1 / kDecayMaxDistance, so a key's score falls like -beta ln(distance) out to this
// distance (a property of the "model": the same for every context length).
constexpr double kDecayMaxDistance = 131072.0;
// Stripe keys do not decay (heavy hitters are seen from everywhere): they stand their elevation
// above the ordinary keys at this distance, and further above the ones farther away.
constexpr double kStripeReferenceDistance = 512.0;
constexpr int kCalibrationGrid = 12;
// The sink calibration sums the nearest keys of every row exactly (they hold most of a local
// head's non-sink mass, and their scores vary from row to row); the rest comes from sample rows.
constexpr int64_t kNearExact = 32;
constexpr int kCalibrationRowsPerPoint = 4;
// Needle rows: shares of the row's mass.
constexpr double kNeedleMass = 0.75;
constexpr double kNeedleSinkMass = 0.10;

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
};

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

struct SlashTerm {
  int64_t offset = 0;
  double strength = 0;  // nats at the reference position
  // Near offsets (1, 2) sit inside the band: their strength is a bump on top of the band's score
  // there, the same at every position. Far ones stand alone and follow the position shift.
  bool near = false;
};

struct HeadPlan {
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

inline float dot(const float* a, const float* b, int d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= d; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

// ln sum_j exp(scale * q . k_j) over keys [begin, end) of one kv head, skipping `skip`.
double log_partition(const float* q, const float* k, int64_t k_stride, int d, float scale,
                     int64_t begin, int64_t end, int64_t skip = -1) {
  if (end <= begin) return -std::numeric_limits<double>::infinity();
  std::vector<float> s(static_cast<size_t>(end - begin));
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = begin; j < end; ++j) {
    const float v = j == skip ? -std::numeric_limits<float>::infinity()
                              : scale * dot(q, k + j * k_stride, d);
    s[j - begin] = v;
    mx = std::max(mx, v);
  }
  if (!std::isfinite(mx)) return -std::numeric_limits<double>::infinity();
  double sum = 0;
  for (float v : s) sum += std::exp(static_cast<double>(v - mx));
  return mx + std::log(sum);
}

// Sink amplitude L such that sum_t exp(L * c[t]) = target (c[t] > 0, c[0] the largest).
double solve_sink_logit(const double* c, int count, double log_target) {
  double L = log_target / c[0];
  for (int it = 0; it < 30; ++it) {
    double mx = -1e300;
    for (int t = 0; t < count; ++t) mx = std::max(mx, L * c[t]);
    double sum = 0, dsum = 0;
    for (int t = 0; t < count; ++t) {
      const double e = std::exp(L * c[t] - mx);
      sum += e;
      dsum += e * c[t];
    }
    const double f = mx + std::log(sum) - log_target;
    const double step = f / (dsum / sum);
    L -= step;
    if (std::fabs(step) < 1e-9 * (1 + std::fabs(L))) break;
  }
  return L;
}

Status validate(const GeneratorConfig& c) {
  if (c.seq < 1 || c.seq > 131072) return invalid_shape("generator: seq must be in [1, 131072]");
  if (c.head_dim < 64 || c.head_dim > 256 || c.head_dim % 2 != 0) {
    return Status(SAMPLEATTN_UNSUPPORTED_HEAD_DIM, "generator: head_dim must be even, 64..256");
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
    if (static_cast<int>(t) < 0 || static_cast<int>(t) > 3) return invalid_argument("generator: bad head type");
  }
  if (!c.needles.empty() && c.seq < 16) {
    return invalid_shape("generator: needles need seq >= 16");
  }
  for (const NeedleSpec& n : c.needles) {
    if (!(n.depth >= 0.0 && n.depth <= 1.0)) return invalid_argument("generator: needle depth must be in [0, 1]");
    if (n.query >= c.seq || n.query < -1 || (n.query >= 0 && n.query < kSinkTokens + 1)) {
      return invalid_argument("generator: needle query token out of range");
    }
    if (n.query_head < -1 || n.query_head >= c.num_q_heads) {
      return invalid_argument("generator: needle query_head out of range");
    }
  }
  return Status::ok();
}

Layout make_layout(const GeneratorConfig& c) {
  Layout L;
  L.d = c.head_dim;
  L.half = c.head_dim / 2;
  L.theta.resize(L.half);
  for (int i = 0; i < L.half; ++i) L.theta[i] = std::pow(c.rope_base, -2.0 * i / c.head_dim);
  L.sink_pair = L.half - 1;
  L.heavy_pair = L.half - 2;
  L.offset_pair = L.half - 3;
  for (int t = 0; t < kTopics; ++t) L.topic_pair[t] = L.half - 4 - t;
  L.last_free = L.half - 4 - kTopics;
  L.band_limit = L.last_free;  // narrowed to the widest head's band once the heads are planned
  return L;
}

// Content pairs: the token identities (and the queries' random, slash and needle components)
// live only above the band pairs and away from the reserved pairs. Keeping them out of the band
// pairs matters: every key holds the large shared band vector there, and a random query
// component would project onto it and add a large score that changes from row to row.
// Between the band pairs and the reserved slow pairs, the content pairs alternate: identity
// pairs (the token identities, the queries' random, slash and needle components) and decay pairs
// (the shared distance-decay component of every ordinary key). The two must not share a pair:
// every key holds the large shared vector there, and a random query component would project onto
// it and add a large score that changes from row to row. Pairs slower than 1/kDecayMaxDistance
// would only add a constant, so they all go to the identities.
void finish_layout(const std::vector<HeadPlan>& plans, Layout* L) {
  int widest = 2;
  for (const HeadPlan& p : plans) widest = std::max(widest, p.band_pairs);
  L->band_limit = std::min(widest, L->last_free);
  L->identity_pairs.clear();
  L->decay_pairs.clear();
  for (int i = L->band_limit; i <= L->last_free; ++i) {
    const bool decay = (i - L->band_limit) % 2 == 1 && L->theta[i] * kDecayMaxDistance >= 1.0;
    (decay ? L->decay_pairs : L->identity_pairs).push_back(i);
  }
}

// The shared component of head h: pairs 0..m-1 carry the band (peak / m each: a score that
// falls like peak (1 - ln distance / ln width) and decoheres at the width); the pairs beyond, up
// to theta = 1 / kDecayMaxDistance, each carry beta times the stretch of ln(1/theta) it stands
// for, so that sum_i w_i cos(distance theta_i) ~ beta ln(kDecayMaxDistance / distance): the pairs
// still coherent at a distance add up, the others average out (RoPE's own long-term decay).
void plan_shared(const Layout& L, HeadPlan* p) {
  p->shared_weight.assign(L.half, 0.0);
  const double peak = p->info.band_peak;
  for (int i = 0; i < p->band_pairs; ++i) p->shared_weight[i] = peak / p->band_pairs;
  std::vector<int> decay;
  for (int i = p->band_pairs; i < L.band_limit; ++i) decay.push_back(i);
  for (int i : L.decay_pairs) decay.push_back(i);
  const double lo = std::log(std::max(2.0, p->info.band_width)), hi = std::log(kDecayMaxDistance);
  for (size_t k = 0; k < decay.size(); ++k) {
    // x = ln(1 / theta): the distance where the pair decoheres, in log scale.
    auto x_of = [&](size_t kk) { return -std::log(L.theta[decay[kk]]); };
    const double x = x_of(k);
    const double left = k == 0 ? std::min(x, lo) : 0.5 * (x + x_of(k - 1));
    const double right = k + 1 == decay.size() ? std::min(hi, x + (x - left)) : 0.5 * (x + x_of(k + 1));
    p->shared_weight[decay[k]] = p->beta * std::max(0.0, right - left);
  }
  // Stripe keys hold none of the shared component: lift them by the shared score at the
  // reference distance (averaged over a few distances around it, the sum oscillates).
  double off = 0;
  const int n = 16;
  for (int t = 0; t < n; ++t) {
    const double dist = kStripeReferenceDistance * std::pow(2.0, (t - n / 2.0) / n);
    for (int i = 0; i < L.half; ++i) off += p->shared_weight[i] * std::cos(dist * L.theta[i]);
  }
  p->stripe_offset = off / n;
}

std::vector<HeadType> assign_types(const GeneratorConfig& c) {
  if (!c.head_types.empty()) return c.head_types;
  static constexpr HeadType kPattern[8] = {HeadType::kLocal,  HeadType::kStripe, HeadType::kSparse,
                                           HeadType::kLocal,  HeadType::kStripe, HeadType::kDiffuse,
                                           HeadType::kSparse, HeadType::kStripe};
  std::vector<HeadType> types(c.num_q_heads);
  for (int h = 0; h < c.num_q_heads; ++h) types[h] = kPattern[h % 8];
  Rng rng(derive_seed(c.seed, kTagHeadTypes));
  for (int h = c.num_q_heads - 1; h > 0; --h) std::swap(types[h], types[rng.below(h + 1)]);
  return types;
}

HeadPlan plan_head(const GeneratorConfig& c, const Layout& L, int h, HeadType type) {
  Rng rng(derive_seed(c.seed, kTagHeadParams, static_cast<uint64_t>(h)));
  HeadPlan p;
  p.info.type = type;
  auto uni = [&](double a, double b) { return a + (b - a) * rng.uniform(); };
  double width_lo = 64, width_hi = 512;
  switch (type) {
    case HeadType::kLocal:
      p.info.sink_target = uni(0.60, 0.85);
      width_lo = 48, width_hi = 256;
      p.info.band_peak = uni(6.5, 7.5);
      p.beta = uni(1.3, 1.6);
      p.eta = 0.3, p.tau = 0.5;
      p.info.background_sigma = 1.0;
      p.slashes = {{1, 3.0, true}, {2, 2.0, true}};
      for (int f = 0; f < 2; ++f) {
        const int64_t off = 32 + static_cast<int64_t>(rng.below(2016));
        p.slashes.push_back({off, p.info.band_peak - 3.0 - 0.5 * f, false});
      }
      p.copy_strength = p.info.band_peak - 2.0;
      break;
    case HeadType::kStripe:
      p.info.sink_target = uni(0.55, 0.80);
      width_lo = 32, width_hi = 128;
      p.info.band_peak = uni(5.0, 6.0);
      p.beta = uni(1.1, 1.3);
      p.eta = 1.0, p.tau = 1.0;
      p.info.background_sigma = 1.0;
      p.slashes = {{1, 2.0, true}};
      p.copy_strength = p.info.band_peak - 3.0;
      break;
    case HeadType::kSparse:
      p.info.sink_target = uni(0.85, 0.95);
      width_lo = 16, width_hi = 64;
      p.info.band_peak = uni(7.0, 8.0);
      p.beta = uni(1.5, 1.8);
      p.eta = 0.3, p.tau = 0.3;
      p.info.background_sigma = 0.9;
      p.slashes = {{1, 3.0, true}};
      break;
    case HeadType::kDiffuse:
      p.info.sink_target = uni(0.50, 0.65);
      width_lo = 128, width_hi = 256;
      p.info.band_peak = uni(3.0, 4.0);
      p.beta = uni(0.2, 0.4);
      p.eta = 0.2, p.tau = 0.3;
      p.info.background_sigma = 1.6;
      break;
  }
  p.info.band_width = c.band_width_scale * width_lo * std::pow(width_hi / width_lo, rng.uniform());
  // Pairs 0..m-1 with theta_i >= 1 / width stay coherent up to `width` tokens.
  const int m = static_cast<int>(std::floor(L.half * std::log(std::max(2.0, p.info.band_width)) /
                                            std::log(c.rope_base))) + 1;
  p.band_pairs = std::clamp(m, 2, std::max(2, L.band_limit));
  p.info.stripe_elevation = p.eta * kStripeTopElevation;
  return p;
}

}  // namespace

const char* head_type_name(HeadType t) {
  switch (t) {
    case HeadType::kLocal: return "local";
    case HeadType::kStripe: return "stripe";
    case HeadType::kSparse: return "sparse";
    case HeadType::kDiffuse: return "diffuse";
  }
  return "?";
}

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t s = seed;
  uint64_t h = splitmix64(&s);
  s = h ^ (a * 0xd1b54a32d192ed03ull);
  h = splitmix64(&s);
  s = h ^ (b * 0x8cb92ba72f3d8dd7ull);
  h = splitmix64(&s);
  s = h ^ (c * 0xa0761d6478bd642full);
  return splitmix64(&s);
}

Rng::Rng(uint64_t seed) {
  uint64_t s = seed;
  for (auto& w : s_) w = splitmix64(&s);
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * kPi * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * kPi * u2);
}

uint64_t Rng::below(uint64_t n) {
  if (n <= 1) return 0;
  // Lemire's multiply-shift with rejection: unbiased.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = next_u64();
    const unsigned __int128 m = static_cast<unsigned __int128>(x) * n;
    if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
  }
}

void apply_rope(float* data, int64_t seq, int heads, int head_dim, double base, int64_t first_position) {
  const int half = head_dim / 2;
  std::vector<double> theta(half);
  for (int i = 0; i < half; ++i) theta[i] = std::pow(base, -2.0 * i / head_dim);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < seq; ++t) {
    const double pos = static_cast<double>(first_position + t);
    for (int i = 0; i < half; ++i) {
      const double a = pos * theta[i];
      const double cs = std::cos(a), sn = std::sin(a);
      for (int h = 0; h < heads; ++h) {
        float* row = data + (t * heads + h) * head_dim;
        const double x = row[i], y = row[i + half];
        row[i] = static_cast<float>(x * cs - y * sn);
        row[i + half] = static_cast<float>(y * cs + x * sn);
      }
    }
  }
}

Status generate(const GeneratorConfig& c, GeneratedData* out) {
  if (out == nullptr) return null_pointer("generate: out is null");
  SAMPLEATTN_RETURN_IF_ERROR(validate(c));
  const int64_t N = c.seq;
  const int d = c.head_dim;
  const int Hq = c.num_q_heads, Hkv = c.num_kv_heads, group = Hq / Hkv;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  Layout L = make_layout(c);

  GeneratedData g;
  g.softmax_scale = scale;
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(N, Hq, d, DType::kF32, &g.q));
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(N, Hkv, d, DType::kF32, &g.k));
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(N, Hkv, d, DType::kF32, &g.v));
  float* Q = reinterpret_cast<float*>(g.q.data());
  float* K = reinterpret_cast<float*>(g.k.data());
  float* V = reinterpret_cast<float*>(g.v.data());

  // ---- Head plans.
  const std::vector<HeadType> types = assign_types(c);
  std::vector<HeadPlan> plans(Hq);
  for (int h = 0; h < Hq; ++h) plans[h] = plan_head(c, L, h, types[h]);
  finish_layout(plans, &L);
  for (HeadPlan& p : plans) plan_shared(L, &p);
  const int n_identity_dims = 2 * static_cast<int>(L.identity_pairs.size());

  // ---- Copied spans (shared by all kv heads, as repeated text is).
  std::vector<CopySpan> spans;
  {
    Rng rng(derive_seed(c.seed, kTagSpans));
    const int64_t len = c.copied_span_length;
    for (int s = 0; s < c.copied_spans; ++s) {
      // The target lies in the second half; the source lies before it.
      if (N < 4 * len + 2 * kSinkTokens) break;
      const int64_t target = N / 2 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(N / 2 - len)));
      const int64_t source = kSinkTokens + static_cast<int64_t>(rng.below(static_cast<uint64_t>(target - len - kSinkTokens)));
      bool overlaps = false;
      for (const CopySpan& o : spans)
        if (target < o.target + o.length && o.target < target + len) overlaps = true;
      if (!overlaps) spans.push_back({source, target, len});
    }
  }
  // identity_source[j]: the token whose identity token j carries.
  auto identity_source = [&](int64_t j) {
    for (const CopySpan& s : spans)
      if (j >= s.target && j < s.target + s.length) return s.source + (j - s.target);
    return j;
  };

  // ---- Per kv head key layout: band phases, stripes.
  std::vector<std::vector<double>> band_phase(Hkv, std::vector<double>(L.half, 0.0));
  std::vector<std::vector<StripeKey>> stripe_of(Hkv);  // indexed by token, only for stripes
  std::vector<std::vector<int>> stripe_index(Hkv);      // token -> index into stripe_of, or -1
  g.stripes.assign(Hkv, {});
  for (int kv = 0; kv < Hkv; ++kv) {
    Rng rng(derive_seed(c.seed, kTagKeyLayout, static_cast<uint64_t>(kv)));
    for (int i = 0; i < L.half; ++i) band_phase[kv][i] = 2.0 * kPi * rng.uniform();
    stripe_index[kv].assign(static_cast<size_t>(N), -1);
    const int64_t candidates = N - kSinkTokens;
    int64_t count = candidates > 0 ? static_cast<int64_t>(std::llround(c.stripe_fraction * N)) : 0;
    if (c.stripe_fraction > 0 && candidates > 0) count = std::max<int64_t>(count, 1);
    count = std::min(count, std::max<int64_t>(candidates, 0));
    // Floyd's algorithm: `count` distinct positions in [4, N) in O(count log count).
    std::vector<int64_t> chosen;
    chosen.reserve(static_cast<size_t>(count));
    {
      std::vector<int64_t> sorted;
      for (int64_t jj = candidates - count; jj < candidates; ++jj) {
        const int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(jj + 1)));
        const auto it = std::lower_bound(sorted.begin(), sorted.end(), t);
        const int64_t pick = (it != sorted.end() && *it == t) ? jj : t;
        sorted.insert(std::lower_bound(sorted.begin(), sorted.end(), pick), pick);
        chosen.push_back(pick + kSinkTokens);
      }
    }
    // Zipf ranks in the order drawn (the draw order is random): mass of rank r ~ 1/r.
    for (size_t r = 0; r < chosen.size(); ++r) {
      StripeKey s;
      s.elevation = std::max(0.5, kStripeTopElevation - std::log(static_cast<double>(r + 1)));
      s.boost = 2.0 + 3.0 * rng.uniform();
      s.topic = static_cast<int>(rng.below(kTopics));
      stripe_index[kv][chosen[r]] = static_cast<int>(stripe_of[kv].size());
      stripe_of[kv].push_back(s);
    }
    g.stripes[kv] = chosen;
    std::sort(g.stripes[kv].begin(), g.stripes[kv].end());
  }

  // ---- Needles: resolve positions, heads, directions.
  struct NeedleWork {
    int64_t query = 0;
    int head = 0;
    int64_t key = 0;
    std::vector<float> nu;         // pre-RoPE key content in identity dims
    std::vector<float> direction;  // unit value direction
  };
  std::vector<NeedleWork> needles;
  {
    Rng rng(derive_seed(c.seed, kTagNeedles));
    std::vector<std::vector<float>> basis;
    for (size_t n = 0; n < c.needles.size(); ++n) {
      const NeedleSpec& spec = c.needles[n];
      NeedleWork w;
      w.query = spec.query >= 0 ? spec.query : N - 1 - static_cast<int64_t>(n % 64);
      w.head = spec.query_head >= 0 ? spec.query_head : static_cast<int>((n * 7 + 3) % Hq);
      w.key = static_cast<int64_t>(std::llround(spec.depth * static_cast<double>(N - 1)));
      w.key = std::clamp<int64_t>(w.key, kSinkTokens, w.query - 1);
      for (const NeedleWork& o : needles) {
        if (o.query == w.query && o.head == w.head) {
          return invalid_argument("generator: two needles share query token " + std::to_string(w.query) +
                                  " and head " + std::to_string(w.head));
        }
        if (o.key == w.key && o.head / group == w.head / group) {
          return invalid_argument("generator: two needles share key position " + std::to_string(w.key));
        }
      }
      w.nu.assign(d, 0.f);
      for (int pi : L.identity_pairs) {
        w.nu[pi] = static_cast<float>(2.0 * rng.normal());
        w.nu[pi + L.half] = static_cast<float>(2.0 * rng.normal());
      }
      // Value direction: orthonormal to the earlier needles' while there is room.
      std::vector<double> u(d);
      for (;;) {
        for (int i = 0; i < d; ++i) u[i] = rng.normal();
        if (basis.size() < static_cast<size_t>(d)) {
          for (const auto& b : basis) {
            double p = 0;
            for (int i = 0; i < d; ++i) p += u[i] * b[i];
            for (int i = 0; i < d; ++i) u[i] -= p * b[i];
          }
        }
        double nrm = 0;
        for (double x : u) nrm += x * x;
        nrm = std::sqrt(nrm);
        if (nrm > 1e-3) {
          for (double& x : u) x /= nrm;
          break;
        }
      }
      w.direction.assign(u.begin(), u.end());
      basis.push_back(w.direction);
      needles.push_back(std::move(w));
    }
  }

  // ---- Keys (pre-RoPE), the identity vectors (kept for the slash terms), values.
  std::vector<float> identity(static_cast<size_t>(N) * Hkv * d, 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < N; ++j) {
    for (int kv = 0; kv < Hkv; ++kv) {
      float* k = K + (j * Hkv + kv) * d;
      float* x = identity.data() + (j * Hkv + kv) * d;
      float* v = V + (j * Hkv + kv) * d;
      Rng vr(derive_seed(c.seed, kTagValue, static_cast<uint64_t>(kv), static_cast<uint64_t>(j)));
      for (int i = 0; i < d; ++i) v[i] = static_cast<float>(vr.normal());
      if (j < kSinkTokens) {
        // Sink keys: only the slowest pair.
        k[L.sink_pair] = static_cast<float>(kSinkKeyFactor[j] * kSinkKeyNorm);
        continue;
      }
      Rng ir(derive_seed(c.seed, kTagIdentity, static_cast<uint64_t>(kv), static_cast<uint64_t>(identity_source(j))));
      for (int pi : L.identity_pairs) {
        x[pi] = static_cast<float>(ir.normal());
        x[pi + L.half] = static_cast<float>(ir.normal());
      }
      for (int i = 0; i < d; ++i) k[i] = x[i];
      const int si = stripe_index[kv][j];
      if (si >= 0) {
        // Stripe keys: no shared (band + decay) component, a heavy elevation, a constant in the
        // offset pair (which each query head scales by its decay at the reference distance).
        const StripeKey& s = stripe_of[kv][si];
        k[L.heavy_pair] = static_cast<float>(s.elevation);
        k[L.offset_pair] = static_cast<float>(kOffsetKeyNorm);
        k[L.topic_pair[s.topic]] = static_cast<float>(s.boost);
        continue;
      }
      auto shared = [&](int i) {
        k[i] += static_cast<float>(kBandKeyNorm * std::cos(band_phase[kv][i]));
        k[i + L.half] += static_cast<float>(kBandKeyNorm * std::sin(band_phase[kv][i]));
      };
      for (int i = 0; i < L.band_limit; ++i) shared(i);
      for (int i : L.decay_pairs) shared(i);
    }
  }
  for (const NeedleWork& w : needles) {
    const int kv = w.head / group;
    float* k = K + (w.key * Hkv + kv) * d;
    float* x = identity.data() + (w.key * Hkv + kv) * d;
    float* v = V + (w.key * Hkv + kv) * d;
    for (int i = 0; i < d; ++i) {
      k[i] += w.nu[i];
      x[i] += w.nu[i];
      v[i] = static_cast<float>(std::sqrt(static_cast<double>(d)) * w.direction[i]);
    }
  }
  apply_rope(K, N, Hkv, d, c.rope_base);

  // ---- Queries (pre-RoPE, without the calibrated sink and needle terms).
  // cos/sin of offset * theta for the fixed slash offsets of each head.
  const double noise_unit = 1.0 / (scale * std::sqrt(static_cast<double>(std::max(1, n_identity_dims))));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < N; ++p) {
    for (int h = 0; h < Hq; ++h) {
      const HeadPlan& hp = plans[h];
      const int kv = h / group;
      float* q = Q + (p * Hq + h) * d;
      Rng rng(derive_seed(c.seed, kTagQuery, static_cast<uint64_t>(h), static_cast<uint64_t>(p)));
      // Background: random against the identities, sigma nats per score.
      const double sigma = hp.info.background_sigma * noise_unit;
      for (int pi : L.identity_pairs) {
        q[pi] = static_cast<float>(sigma * rng.normal());
        q[pi + L.half] = static_cast<float>(sigma * rng.normal());
      }
      // Local band and distance decay: score(delta) = sum_i w_i cos(delta theta_i).
      for (int i = 0; i < L.half; ++i) {
        if (hp.shared_weight[i] == 0) continue;
        const double amp = hp.shared_weight[i] / (scale * kBandKeyNorm);
        q[i] += static_cast<float>(amp * std::cos(band_phase[kv][i]));
        q[i + L.half] += static_cast<float>(amp * std::sin(band_phase[kv][i]));
      }
      // Stripes: elevation for every query, topic boosts for the engaged ones.
      q[L.heavy_pair] = static_cast<float>(hp.eta / scale);
      q[L.offset_pair] = static_cast<float>(hp.stripe_offset / (scale * kOffsetKeyNorm));
      for (int t = 0; t < kTopics; ++t)
        if (rng.uniform() < 0.5) q[L.topic_pair[t]] = static_cast<float>(hp.tau / scale);
      // Slash lines and copied spans: the identity of the key at offset delta, pre-rotated by
      // -delta so that after RoPE it aligns with that key.
      auto add_slash = [&](int64_t delta, double nats) {
        const int64_t j = p - delta;
        if (j < kSinkTokens || nats <= 0) return;
        const float* x = identity.data() + (j * Hkv + kv) * d;
        // Normalized by the key's own |x|^2, so the line has exactly `nats` (no chi-square spread).
        double norm2 = 0;
        for (int pi : L.identity_pairs) norm2 += double(x[pi]) * x[pi] + double(x[pi + L.half]) * x[pi + L.half];
        if (norm2 <= 0) return;
        const double gamma = nats / (scale * norm2);
        for (int pi : L.identity_pairs) {
          const double a = static_cast<double>(delta) * L.theta[pi];
          const double cs = std::cos(a), sn = std::sin(a);
          // (x + iy) * e^{-i a}
          q[pi] += static_cast<float>(gamma * (x[pi] * cs + x[pi + L.half] * sn));
          q[pi + L.half] += static_cast<float>(gamma * (x[pi + L.half] * cs - x[pi] * sn));
        }
      };
      for (const SlashTerm& s : hp.slashes) add_slash(s.offset, s.strength);
      if (hp.copy_strength > 0) {
        for (const CopySpan& s : spans)
          if (p >= s.target && p < s.target + s.length) add_slash(s.target - s.source, hp.copy_strength);
      }
    }
  }
  identity.clear();
  identity.shrink_to_fit();
  apply_rope(Q, N, Hq, d, c.rope_base);

  // ---- Needle rows: the needle key takes kNeedleMass of the row, the sink kNeedleSinkMass.
  std::vector<double> needle_row_log_sink(needles.size(), 0.0);
  for (size_t n = 0; n < needles.size(); ++n) {
    const NeedleWork& w = needles[n];
    const int kv = w.head / group;
    float* q = Q + (w.query * Hq + w.head) * d;
    const float* kn = K + (w.key * Hkv + kv) * d;
    // The needle content after RoPE at the key's position: adding gamma * nu_post to the
    // post-RoPE query is the same as adding the pre-RoPE term pre-rotated by the distance.
    std::vector<float> nu_post = w.nu;
    apply_rope(nu_post.data(), 1, 1, d, c.rope_base, w.key);
    const double along = scale * dot(nu_post.data(), kn, d);
    double log_other = 0;
    for (int it = 0; it < 4; ++it) {
      log_other = log_partition(q, K + kv * d, static_cast<int64_t>(Hkv) * d, d, scale, kSinkTokens, w.query + 1, w.key);
      const double target = log_other + std::log(kNeedleMass / (1.0 - kNeedleMass - kNeedleSinkMass));
      const double current = scale * dot(q, kn, d);
      const double gamma = (target - current) / along;
      for (int i = 0; i < d; ++i) q[i] += static_cast<float>(gamma * nu_post[i]);
    }
    needle_row_log_sink[n] = log_other + std::log(kNeedleSinkMass / (1.0 - kNeedleMass - kNeedleSinkMass));
  }

  // ---- Sink calibration per head on sample rows, then the sink component of every row.
  std::vector<int64_t> grid_rows;
  if (N > kSinkTokens) {
    for (int gi = 0; gi < kCalibrationGrid; ++gi) {
      const double f = kCalibrationGrid == 1 ? 1.0 : static_cast<double>(gi) / (kCalibrationGrid - 1);
      const int64_t p = static_cast<int64_t>(std::llround(kSinkTokens * std::pow(static_cast<double>(N - 1) / kSinkTokens, f)));
      for (int r = 0; r < kCalibrationRowsPerPoint; ++r) {
        const int64_t row = std::max<int64_t>(kSinkTokens, p - r * (1 + p / 37));
        grid_rows.push_back(row);
      }
    }
    std::sort(grid_rows.begin(), grid_rows.end());
    grid_rows.erase(std::unique(grid_rows.begin(), grid_rows.end()), grid_rows.end());
  }
  std::vector<double> grid_logz(grid_rows.size() * Hq, 0.0);
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int h = 0; h < Hq; ++h) {
    for (size_t r = 0; r < grid_rows.size(); ++r) {
      const int64_t p = grid_rows[r];
      const int kv = h / group;
      // The far part only: keys kSinkTokens .. p - kNearExact.
      grid_logz[h * grid_rows.size() + r] =
          log_partition(Q + (p * Hq + h) * d, K + kv * d, static_cast<int64_t>(Hkv) * d, d, scale, kSinkTokens,
                        std::max<int64_t>(kSinkTokens, p + 1 - kNearExact));
    }
  }
  // Per head: ln Z_far as a piecewise-linear function of ln(far keys) through the grid points
  // (the rows of one grid point averaged).
  std::vector<std::vector<std::pair<double, double>>> curve(Hq);
  for (int h = 0; h < Hq; ++h) {
    for (size_t r = 0; r < grid_rows.size();) {
      if (!std::isfinite(grid_logz[h * grid_rows.size() + r])) {  // no far part
        ++r;
        continue;
      }
      size_t e = r;
      double sx = 0, sy = 0;
      // Rows closer than 5% in position share a grid point.
      while (e < grid_rows.size() && grid_rows[e] <= grid_rows[r] * 1.05 + 1) {
        sx += std::log(static_cast<double>(grid_rows[e] + 1 - kNearExact - kSinkTokens));
        // The mean of Z (not of ln Z): rows whose far mass varies (stripe topics engaged or
        // not) then keep the sink at its target on average.
        sy += std::exp(grid_logz[h * grid_rows.size() + e] - grid_logz[h * grid_rows.size() + r]);
        ++e;
      }
      curve[h].push_back({sx / (e - r), grid_logz[h * grid_rows.size() + r] + std::log(sy / (e - r))});
      r = e;
    }
  }
  auto log_z_far = [&](int h, int64_t p) {
    const auto& cv = curve[h];
    if (cv.empty() || p + 1 - kNearExact <= kSinkTokens) return -std::numeric_limits<double>::infinity();
    const double x = std::log(static_cast<double>(p + 1 - kNearExact - kSinkTokens));
    if (cv.size() == 1 || x <= cv.front().first) return cv.front().second + (x - cv.front().first);
    if (x >= cv.back().first) return cv.back().second + (x - cv.back().first);
    size_t i = 1;
    while (cv[i].first < x) ++i;
    const double t = (x - cv[i - 1].first) / (cv[i].first - cv[i - 1].first);
    return cv[i - 1].second + t * (cv[i].second - cv[i - 1].second);
  };
  const double theta_sink = L.theta[L.sink_pair];
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < N; ++p) {
    for (int h = 0; h < Hq; ++h) {
      float* q = Q + (p * Hq + h) * d;
      if (p < kSinkTokens) continue;  // only sink keys and themselves: nothing to calibrate
      const int kv = h / group;
      double near_max = -std::numeric_limits<double>::infinity();
      double near_s[kNearExact];
      const int64_t near_begin = std::max<int64_t>(kSinkTokens, p + 1 - kNearExact);
      for (int64_t j = near_begin; j <= p; ++j) {
        near_s[j - near_begin] = scale * dot(q, K + (j * Hkv + kv) * d, d);
        near_max = std::max(near_max, near_s[j - near_begin]);
      }
      const double far = log_z_far(h, p);
      const double mx = std::max(near_max, far);
      double z = std::isfinite(far) ? std::exp(far - mx) : 0.0;
      for (int64_t j = near_begin; j <= p; ++j) z += std::exp(near_s[j - near_begin] - mx);
      double log_target = std::log(plans[h].info.sink_target / (1.0 - plans[h].info.sink_target)) + mx + std::log(z);
      for (size_t n = 0; n < needles.size(); ++n)
        if (needles[n].query == p && needles[n].head == h) log_target = needle_row_log_sink[n];
      // Scores of the sink keys: L * f_t * cos((p - t) theta) (the slowest pair barely rotates).
      // Where it rotates too far (tiny base, long context), the query pre-rotates instead.
      double cf[kSinkTokens];
      bool prerotate = std::cos(static_cast<double>(p) * theta_sink) < 0.3;
      for (int t = 0; t < kSinkTokens; ++t)
        cf[t] = kSinkKeyFactor[t] * (prerotate ? std::cos(t * theta_sink) : std::cos((p - t) * theta_sink));
      const double Ls = solve_sink_logit(cf, kSinkTokens, log_target);
      const double amp = Ls / (scale * kSinkKeyNorm);
      // Pre-RoPE e^{ia}: after RoPE the sink key t scores Ls f_t cos(a + (p - t) theta).
      const double a = prerotate ? -static_cast<double>(p) * theta_sink : 0.0;
      q[L.sink_pair] += static_cast<float>(amp * std::cos(a));
      q[L.sink_pair + L.half] += static_cast<float>(amp * std::sin(a));
    }
  }

  for (int h = 0; h < Hq; ++h) g.heads.push_back(plans[h].info);
  for (const NeedleWork& w : needles) g.needles.push_back({w.query, w.head, w.key, w.direction});
  *out = std::move(g);
  return Status::ok();
}

}  // namespace sampleattn::workload
