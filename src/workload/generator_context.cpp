// Phases 2-4 of the generator: what the context holds before any vector is written: copied
// spans, each kv head's band phases and stripe keys, and the planted needles.
#include <algorithm>
#include <cmath>
#include <string>

#include "workload/generator_model.h"

namespace sampleattn::workload::detail {

std::vector<CopySpan> place_copied_spans(const GeneratorConfig& c) {
  const int64_t N = c.seq;
  std::vector<CopySpan> spans;
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
  return spans;
}

std::vector<RepeatSpan> place_repeats(const GeneratorConfig& c, const std::vector<HeadDesign>& heads) {
  std::vector<RepeatSpan> repeats;
  bool copy_head = false;
  for (const HeadDesign& h : heads) copy_head = copy_head || h.info.type == HeadType::kCopy;
  if (!copy_head) return repeats;
  const int64_t N = c.seq;
  Rng rng(derive_seed(c.seed, kTagRepeats));
  // Lengths log-uniform in [kRepeatMinLength, kRepeatMaxLength]; the gaps between repeats uniform,
  // with the mean that makes the repeats cover kRepeatCoverage of the context.
  const double lmin = std::log(static_cast<double>(kRepeatMinLength));
  const double lmax = std::log(static_cast<double>(kRepeatMaxLength));
  const double mean_length = static_cast<double>(kRepeatMaxLength - kRepeatMinLength) / (lmax - lmin);
  const double mean_gap = mean_length * (1.0 - kRepeatCoverage) / kRepeatCoverage;
  const double median_offset = kRepeatMedianOffset * static_cast<double>(N);
  // The first repeat needs a source kRepeatMinOffset tokens back, past the sink.
  int64_t t = kSinkTokens + kRepeatMinOffset + 1;
  for (;;) {
    t += static_cast<int64_t>(2.0 * mean_gap * rng.uniform());
    const int64_t length = std::llround(std::exp(lmin + (lmax - lmin) * rng.uniform()));
    if (t + length > N) break;
    // The offset: log-normal, redrawn a few times while it reaches past the start, then clamped.
    const double hi = static_cast<double>(t - kSinkTokens - 1);
    double offset = hi;
    for (int attempt = 0; attempt < 8; ++attempt) {
      offset = median_offset * std::exp(kRepeatOffsetSigma * rng.normal());
      if (offset >= kRepeatMinOffset && offset <= hi) break;
    }
    const int64_t off = std::llround(std::clamp(offset, static_cast<double>(kRepeatMinOffset), hi));
    const double margin = 3.0 + 2.0 * rng.uniform();
    repeats.push_back({t - off, t, length, margin});
    t += length;
  }
  return repeats;
}

const RepeatSpan* repeat_at(const std::vector<RepeatSpan>& repeats, int64_t p) {
  auto it = std::upper_bound(repeats.begin(), repeats.end(), p,
                             [](int64_t x, const RepeatSpan& r) { return x < r.target; });
  if (it == repeats.begin()) return nullptr;
  --it;
  return p < it->target + it->length ? &*it : nullptr;
}

int64_t identity_source(const std::vector<CopySpan>& spans, int64_t j) {
  for (const CopySpan& s : spans)
    if (j >= s.target && j < s.target + s.length) return s.source + (j - s.target);
  return j;
}

KeyLayout lay_out_keys(const GeneratorConfig& c, const Layout& L, std::vector<std::vector<int64_t>>* stripes) {
  const int64_t N = c.seq;
  const int Hkv = c.num_kv_heads;
  KeyLayout keys;
  keys.band_phase.assign(Hkv, std::vector<double>(L.half, 0.0));
  keys.stripe_of.assign(Hkv, {});
  keys.stripe_index.assign(Hkv, {});
  stripes->assign(Hkv, {});
  for (int kv = 0; kv < Hkv; ++kv) {
    Rng rng(derive_seed(c.seed, kTagKeyLayout, static_cast<uint64_t>(kv)));
    for (int i = 0; i < L.half; ++i) keys.band_phase[kv][i] = 2.0 * kPi * rng.uniform();
    keys.stripe_index[kv].assign(static_cast<size_t>(N), -1);
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
      keys.stripe_index[kv][chosen[r]] = static_cast<int>(keys.stripe_of[kv].size());
      keys.stripe_of[kv].push_back(s);
    }
    (*stripes)[kv] = chosen;
    std::sort((*stripes)[kv].begin(), (*stripes)[kv].end());
  }
  return keys;
}

namespace {

// The key of a needle at `depth` whose query is `query`: over the context, or with a model window
// over the keys the query sees before itself (model_lo .. query - 1, past the sink tokens), moved
// to the nearest earlier free one when a needle of the same kv head holds it (short windows).
int64_t needle_key(const GeneratorConfig& c, double depth, int64_t query, int kv_group,
                   const std::vector<NeedleWork>& placed, int group) {
  if (c.window_left < 0) {
    const auto key = static_cast<int64_t>(std::llround(depth * static_cast<double>(c.seq - 1)));
    return std::clamp<int64_t>(key, kSinkTokens, query - 1);
  }
  const int64_t lo = std::max<int64_t>(kSinkTokens, query - c.window_left), hi = query - 1;
  if (hi < lo) return std::clamp<int64_t>(query - 1, kSinkTokens, query - 1);  // no key to see: hidden
  int64_t key = lo + static_cast<int64_t>(std::llround(depth * static_cast<double>(hi - lo)));
  auto taken = [&](int64_t j) {
    for (const NeedleWork& o : placed)
      if (o.key == j && o.head / group == kv_group) return true;
    return false;
  };
  for (int64_t j = key; j >= lo; --j)
    if (!taken(j)) return j;
  return key;  // every visible key taken: the duplicate is reported
}

// A unit direction of `dim` values: orthonormal to the earlier ones in `basis` while there is room
// (then appended to it).
std::vector<float> value_direction(Rng& rng, int dim, std::vector<std::vector<float>>* basis) {
  std::vector<double> u(static_cast<size_t>(dim));
  for (;;) {
    for (int i = 0; i < dim; ++i) u[i] = rng.normal();
    if (basis->size() < static_cast<size_t>(dim)) {
      for (const auto& b : *basis) {
        double p = 0;
        for (int i = 0; i < dim; ++i) p += u[i] * b[i];
        for (int i = 0; i < dim; ++i) u[i] -= p * b[i];
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
  basis->emplace_back(u.begin(), u.end());
  return basis->back();
}

}  // namespace

Status place_needles(const GeneratorConfig& c, const Layout& L, std::vector<NeedleWork>* needles) {
  const int64_t N = c.seq;
  const int d = c.head_dim;
  const int dv = Dims::of(c).dv;
  const int Hq = c.num_q_heads, group = c.num_q_heads / c.num_kv_heads;
  needles->clear();
  Rng rng(derive_seed(c.seed, kTagNeedles));
  // Value directions of V's own head size come from a stream of their own; `rng` still draws the
  // head_dim ones it would draw without head_dim_v (and drops them), so the needles' key contents,
  // drawn from it in between, stay those of the config without head_dim_v.
  Rng own_value_rng(derive_seed(c.seed, kTagNeedles, 1));
  std::vector<std::vector<float>> basis, own_basis;
  for (size_t n = 0; n < c.needles.size(); ++n) {
    const NeedleSpec& spec = c.needles[n];
    NeedleWork w;
    w.query = spec.query >= 0 ? spec.query : N - 1 - static_cast<int64_t>(n % 64);
    w.head = spec.query_head >= 0 ? spec.query_head : static_cast<int>((n * 7 + 3) % Hq);
    w.key = needle_key(c, spec.depth, w.query, w.head / group, *needles, group);
    for (const NeedleWork& o : *needles) {
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
    w.direction = value_direction(rng, d, &basis);
    if (dv != d) w.direction = value_direction(own_value_rng, dv, &own_basis);
    needles->push_back(std::move(w));
  }
  return Status::ok();
}

}  // namespace sampleattn::workload::detail
