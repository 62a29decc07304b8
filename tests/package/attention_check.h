/* The consumers' check, in the consumer itself: a small dense causal attention (64 tokens, 2 query
 * heads sharing 1 kv head, head dim 64, f32) filled with a fixed-seed generator, and a naive
 * double-precision attention to compare the library's output with. Valid C and C++. */
#ifndef SAMPLEATTN_PACKAGE_ATTENTION_CHECK_H_
#define SAMPLEATTN_PACKAGE_ATTENTION_CHECK_H_

#include <math.h>

enum { kSeq = 64, kQHeads = 2, kKvHeads = 1, kDim = 64 };

typedef struct attention_case {
  float q[kSeq * kQHeads * kDim]; /* [token, head, dim] */
  float k[kSeq * kKvHeads * kDim];
  float v[kSeq * kKvHeads * kDim];
  float o[kSeq * kQHeads * kDim];
} attention_case;

static float attention_case_uniform(unsigned* state) {
  *state = *state * 1664525u + 1013904223u;
  return (float)((*state >> 8) & 0xffffu) / 65536.0f - 0.5f;
}

static void attention_case_fill(attention_case* c) {
  unsigned state = 2024u;
  int i;
  for (i = 0; i < kSeq * kQHeads * kDim; ++i) c->q[i] = attention_case_uniform(&state);
  for (i = 0; i < kSeq * kKvHeads * kDim; ++i) c->k[i] = attention_case_uniform(&state);
  for (i = 0; i < kSeq * kKvHeads * kDim; ++i) c->v[i] = attention_case_uniform(&state);
  for (i = 0; i < kSeq * kQHeads * kDim; ++i) c->o[i] = NAN;
}

/* The largest absolute difference between c->o and softmax(q k^T / sqrt(d)) v over the causal
 * keys, in double precision. */
static double attention_case_max_error(const attention_case* c) {
  double scores[kSeq];
  double worst = 0.0;
  int h, i, j, d;
  for (h = 0; h < kQHeads; ++h) {
    const int kv = h / (kQHeads / kKvHeads);
    for (i = 0; i < kSeq; ++i) {
      double max_score = -INFINITY, sum = 0.0;
      for (j = 0; j <= i; ++j) {
        double dot = 0.0;
        for (d = 0; d < kDim; ++d)
          dot += (double)c->q[(i * kQHeads + h) * kDim + d] * (double)c->k[(j * kKvHeads + kv) * kDim + d];
        scores[j] = dot / sqrt((double)kDim);
        if (scores[j] > max_score) max_score = scores[j];
      }
      for (j = 0; j <= i; ++j) {
        scores[j] = exp(scores[j] - max_score);
        sum += scores[j];
      }
      for (d = 0; d < kDim; ++d) {
        double expected = 0.0, error;
        for (j = 0; j <= i; ++j) expected += scores[j] * (double)c->v[(j * kKvHeads + kv) * kDim + d];
        error = fabs(expected / sum - (double)c->o[(i * kQHeads + h) * kDim + d]);
        if (!(error <= worst)) worst = error; /* NaN included */
      }
    }
  }
  return worst;
}

#endif /* SAMPLEATTN_PACKAGE_ATTENTION_CHECK_H_ */
