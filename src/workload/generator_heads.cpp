// Phase 1 of the generator: the RoPE pair layout, and each query head's type and parameters.
#include <algorithm>
#include <cmath>

#include "workload/generator_model.h"

namespace sampleattn::workload::detail {
namespace {

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
void finish_layout(const std::vector<HeadDesign>& heads, Layout* L) {
  int widest = 2;
  for (const HeadDesign& p : heads) widest = std::max(widest, p.band_pairs);
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
void design_shared_component(const Layout& L, HeadDesign* p) {
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
  // The real mix: the second local head a copy head, the third stripe head a retrieval head.
  static constexpr HeadType kRealPattern[8] = {HeadType::kLocal,  HeadType::kStripe, HeadType::kSparse,
                                               HeadType::kCopy,   HeadType::kStripe, HeadType::kDiffuse,
                                               HeadType::kSparse, HeadType::kRetrieval};
  const HeadType* pattern = c.mix == HeadMix::kDefault ? kPattern : kRealPattern;
  std::vector<HeadType> types(c.num_q_heads);
  for (int h = 0; h < c.num_q_heads; ++h) types[h] = pattern[h % 8];
  Rng rng(derive_seed(c.seed, kTagHeadTypes));
  for (int h = c.num_q_heads - 1; h > 0; --h) std::swap(types[h], types[rng.below(h + 1)]);
  return types;
}

HeadDesign design_head(const GeneratorConfig& c, const Layout& L, int h, HeadType type) {
  Rng rng(derive_seed(c.seed, kTagHeadParams, static_cast<uint64_t>(h)));
  HeadDesign p;
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
    case HeadType::kCopy:
      // A low sink and a weak band: most of a row with a repeat goes to its far key.
      p.info.sink_target = uni(0.15, 0.30);
      width_lo = 32, width_hi = 96;
      p.info.band_peak = uni(3.5, 4.5);
      p.beta = uni(1.3, 1.6);
      p.eta = 0.3, p.tau = 0.3;
      p.info.background_sigma = 0.6;
      break;
    case HeadType::kRetrieval:
      p.info.sink_target = uni(0.15, 0.30);
      width_lo = 16, width_hi = 64;
      p.info.band_peak = uni(4.0, 5.0);
      p.beta = uni(1.0, 1.3);
      p.eta = 0.3, p.tau = 0.3;
      p.info.background_sigma = 0.8;
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
  L.band_limit = L.last_free;  // narrowed to the widest head's band once the heads are designed
  return L;
}

double shared_score(const Layout& L, const HeadDesign& h, int64_t distance) {
  double s = 0;
  for (int i = 0; i < L.half; ++i) {
    if (h.shared_weight[i] != 0) s += h.shared_weight[i] * std::cos(static_cast<double>(distance) * L.theta[i]);
  }
  return s;
}

const FarRow* far_row_at(const HeadInfo& h, int64_t p) {
  const auto it = std::lower_bound(h.far_rows.begin(), h.far_rows.end(), p,
                                   [](const FarRow& r, int64_t row) { return r.row < row; });
  return it != h.far_rows.end() && it->row == p ? &*it : nullptr;
}

namespace {

// The far mix's rare rows of a local, stripe or sparse head (generator.h): runs of 1 ..
// kFarRunMax rows at uniform starts from kFarRowFirst, as many as make kFarRowShare of the rows,
// each run at one distance; rows drawn twice keep their first run.
std::vector<FarRow> place_far_rows(const GeneratorConfig& c, int h) {
  std::vector<FarRow> rows;
  if (c.seq <= kFarRowFirst + kFarRunMax) return rows;
  Rng rng(derive_seed(c.seed, kTagFarRows, static_cast<uint64_t>(h)));
  const int64_t span = c.seq - kFarRunMax - kFarRowFirst;
  const auto runs = static_cast<int64_t>(std::llround(kFarRowShare * static_cast<double>(c.seq - kFarRowFirst) /
                                                      (0.5 * (1 + kFarRunMax))));
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t start = kFarRowFirst + static_cast<int64_t>(rng.below(static_cast<uint64_t>(span)));
    const int64_t length = 1 + static_cast<int64_t>(rng.below(kFarRunMax));
    const int64_t key = kFarFirstKey + static_cast<int64_t>(rng.below(static_cast<uint64_t>(start / 2 - kFarFirstKey + 1)));
    const int64_t distance = start - key;
    const double margin = kFarMarginLo + (kFarMarginHi - kFarMarginLo) * rng.uniform();
    for (int64_t i = 0; i < length; ++i) rows.push_back({start + i, start + i - distance, margin});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const FarRow& a, const FarRow& b) { return a.row < b.row; });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const FarRow& a, const FarRow& b) { return a.row == b.row; }),
             rows.end());
  return rows;
}

}  // namespace

std::vector<HeadDesign> design_heads(const GeneratorConfig& c, Layout* layout) {
  const std::vector<HeadType> types = assign_types(c);
  std::vector<HeadDesign> heads(c.num_q_heads);
  for (int h = 0; h < c.num_q_heads; ++h) {
    heads[h] = design_head(c, *layout, h, types[h]);
    const bool far = types[h] == HeadType::kLocal || types[h] == HeadType::kStripe || types[h] == HeadType::kSparse;
    if (c.mix == HeadMix::kFar && far) heads[h].info.far_rows = place_far_rows(c, h);
  }
  finish_layout(heads, layout);
  for (HeadDesign& p : heads) design_shared_component(*layout, &p);
  return heads;
}

}  // namespace sampleattn::workload::detail
