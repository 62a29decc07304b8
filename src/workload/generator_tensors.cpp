// Phases 5-6 of the generator: the key, value and query vectors (pre-RoPE construction, then
// RoPE), without the calibrated sink and needle terms of the queries.
#include <algorithm>
#include <cmath>

#include "workload/generator_model.h"

namespace sampleattn::workload::detail {

std::vector<float> write_keys_and_values(const GeneratorConfig& c, const Layout& L,
                                         const std::vector<CopySpan>& spans, const KeyLayout& keys,
                                         const std::vector<NeedleWork>& needles, float* K, float* V) {
  const int64_t N = c.seq;
  const int d = c.head_dim;
  const int dv = Dims::of(c).dv;
  const int Hkv = c.num_kv_heads, group = c.num_q_heads / c.num_kv_heads;
  std::vector<float> identity(static_cast<size_t>(N) * Hkv * d, 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < N; ++j) {
    for (int kv = 0; kv < Hkv; ++kv) {
      float* k = K + (j * Hkv + kv) * d;
      float* x = identity.data() + (j * Hkv + kv) * d;
      float* v = V + (j * Hkv + kv) * dv;
      Rng vr(derive_seed(c.seed, kTagValue, static_cast<uint64_t>(kv), static_cast<uint64_t>(j)));
      for (int i = 0; i < dv; ++i) v[i] = static_cast<float>(vr.normal());
      if (j < kSinkTokens) {
        // Sink keys: only the slowest pair.
        k[L.sink_pair] = static_cast<float>(kSinkKeyFactor[j] * kSinkKeyNorm);
        continue;
      }
      Rng ir(derive_seed(c.seed, kTagIdentity, static_cast<uint64_t>(kv),
                         static_cast<uint64_t>(identity_source(spans, j))));
      for (int pi : L.identity_pairs) {
        x[pi] = static_cast<float>(ir.normal());
        x[pi + L.half] = static_cast<float>(ir.normal());
      }
      for (int i = 0; i < d; ++i) k[i] = x[i];
      const int si = keys.stripe_index[kv][j];
      if (si >= 0) {
        // Stripe keys: no shared (band + decay) component, a heavy elevation, a constant in the
        // offset pair (which each query head scales by its decay at the reference distance).
        const StripeKey& s = keys.stripe_of[kv][si];
        k[L.heavy_pair] = static_cast<float>(s.elevation);
        k[L.offset_pair] = static_cast<float>(kOffsetKeyNorm);
        k[L.topic_pair[s.topic]] = static_cast<float>(s.boost);
        continue;
      }
      const std::vector<double>& band_phase = keys.band_phase[kv];
      auto shared = [&](int i) {
        k[i] += static_cast<float>(kBandKeyNorm * std::cos(band_phase[i]));
        k[i + L.half] += static_cast<float>(kBandKeyNorm * std::sin(band_phase[i]));
      };
      for (int i = 0; i < L.band_limit; ++i) shared(i);
      for (int i : L.decay_pairs) shared(i);
    }
  }
  for (const NeedleWork& w : needles) {
    const int kv = w.head / group;
    float* k = K + (w.key * Hkv + kv) * d;
    float* x = identity.data() + (w.key * Hkv + kv) * d;
    float* v = V + (w.key * Hkv + kv) * dv;
    for (int i = 0; i < d; ++i) {
      k[i] += w.nu[i];
      x[i] += w.nu[i];
    }
    // The norm of a typical value row (sqrt(dv) for N(0, 1) entries) along the needle's direction.
    for (int i = 0; i < dv; ++i) v[i] = static_cast<float>(std::sqrt(static_cast<double>(dv)) * w.direction[i]);
  }
  apply_rope(K, N, Hkv, d, c.rope_base);
  return identity;
}

void write_queries(const GeneratorConfig& c, const Layout& L, const std::vector<HeadDesign>& heads,
                   const std::vector<CopySpan>& spans, const std::vector<RepeatSpan>& repeats, const KeyLayout& keys,
                   const std::vector<float>& identity, float* Q) {
  const Dims dims = Dims::of(c);
  const int64_t N = dims.seq;
  const int d = dims.d;
  const int Hq = dims.q_heads, Hkv = dims.kv_heads, group = dims.group;
  const float scale = dims.scale;
  const int n_identity_dims = 2 * static_cast<int>(L.identity_pairs.size());
  const double noise_unit = 1.0 / (scale * std::sqrt(static_cast<double>(std::max(1, n_identity_dims))));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < N; ++p) {
    for (int h = 0; h < Hq; ++h) {
      const HeadDesign& hp = heads[h];
      const int kv = h / group;
      const std::vector<double>& band_phase = keys.band_phase[kv];
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
        q[i] += static_cast<float>(amp * std::cos(band_phase[i]));
        q[i + L.half] += static_cast<float>(amp * std::sin(band_phase[i]));
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
      // Copy and retrieval heads: a far key of the row's own, `margin` nats above the row's own
      // key (distance 0) once the shared score at the far key's distance is made up.
      auto add_far = [&](int64_t delta, double margin) {
        add_slash(delta, shared_score(L, hp, 0) - shared_score(L, hp, delta) + margin);
      };
      if (hp.info.type == HeadType::kCopy) {
        if (const RepeatSpan* r = repeat_at(repeats, p)) add_far(r->target - r->source - 1, r->margin);
      } else if (hp.info.type == HeadType::kRetrieval && p >= kRetrievalFirstRow) {
        // From the row's own stream, after its topic draws (the other types draw nothing more).
        const int count = 1 + static_cast<int>(rng.below(3));
        for (int t = 0; t < count; ++t) {
          const uint64_t span = static_cast<uint64_t>(p - kRetrievalMinDistance - kSinkTokens + 1);
          const int64_t j = kSinkTokens + static_cast<int64_t>(rng.below(span));
          add_far(p - j, 4.0 + 2.0 * rng.uniform());
        }
      }
      if (const FarRow* r = far_row_at(hp.info, p)) add_far(p - r->key, r->margin);
    }
  }
  apply_rope(Q, N, Hq, d, c.rope_base);
}

}  // namespace sampleattn::workload::detail
