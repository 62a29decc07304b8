/* Compiled as C (-std=c11 -pedantic -Werror): keeps the public header valid C, and checks the
 * library from C end to end on one small problem against a direct computation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampleattn/sampleattn.h"

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond, \
              sampleattn_last_error());                               \
      return 1;                                                      \
    }                                                                \
  } while (0)

enum { kSeq = 37, kHeads = 2, kDim = 64 };

int main(void) {
  static float q[kSeq * kHeads * kDim], k[kSeq * kHeads * kDim], v[kSeq * kHeads * kDim];
  static float o[kSeq * kHeads * kDim];
  unsigned state = 12345u;
  int i, h, j, c;
  double worst = 0;
  sampleattn_context* ctx = NULL;
  sampleattn_context_options options;
  sampleattn_params p;
  sampleattn_stats stats;

  for (i = 0; i < kSeq * kHeads * kDim; ++i) {
    state = state * 1664525u + 1013904223u; q[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
    state = state * 1664525u + 1013904223u; k[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
    state = state * 1664525u + 1013904223u; v[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
  }

  CHECK(strcmp(sampleattn_status_string(SAMPLEATTN_INVALID_SHAPE), "SAMPLEATTN_INVALID_SHAPE") == 0);
  CHECK(sampleattn_context_create(NULL, NULL) == SAMPLEATTN_NULL_POINTER);
  CHECK(strlen(sampleattn_last_error()) > 0);

  sampleattn_context_options_init(&options);
  options.backend = SAMPLEATTN_BACKEND_CPU;
  options.num_threads = 2;
  CHECK(sampleattn_context_create(&options, &ctx) == SAMPLEATTN_SUCCESS);

  sampleattn_params_init(&p);
  p.q.data = q; p.k.data = k; p.v.data = v; p.o.data = o;
  p.q.token_stride = p.k.token_stride = p.v.token_stride = p.o.token_stride = kHeads * kDim;
  p.q.head_stride = p.k.head_stride = p.v.head_stride = p.o.head_stride = kDim;
  p.head_dim = kDim;
  p.num_q_heads = kHeads;
  p.num_kv_heads = kHeads;
  p.seqlen_q = kSeq;
  p.seqlen_k = kSeq;
  sampleattn_stats_init(&stats);
  CHECK(sampleattn_forward(ctx, &p, &stats) == SAMPLEATTN_SUCCESS);
  CHECK(stats.isa != NULL && strlen(stats.isa) > 0);

  for (i = 0; i < kSeq; ++i) {
    for (h = 0; h < kHeads; ++h) {
      double s[kSeq], m = -1e300, sum = 0;
      for (j = 0; j <= i; ++j) {
        double dot = 0;
        for (c = 0; c < kDim; ++c) dot += (double)q[(i * kHeads + h) * kDim + c] * k[(j * kHeads + h) * kDim + c];
        s[j] = dot / sqrt((double)kDim);
        if (s[j] > m) m = s[j];
      }
      for (j = 0; j <= i; ++j) { s[j] = exp(s[j] - m); sum += s[j]; }
      for (c = 0; c < kDim; ++c) {
        double ref = 0, err;
        for (j = 0; j <= i; ++j) ref += s[j] * v[(j * kHeads + h) * kDim + c];
        ref /= sum;
        err = fabs(ref - o[(i * kHeads + h) * kDim + c]);
        if (err > worst) worst = err;
      }
    }
  }
  CHECK(worst < 1e-5);

  p.head_dim = 72;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_UNSUPPORTED_HEAD_DIM);
  p.head_dim = kDim;
  p.softmax_scale = NAN;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT);

  sampleattn_context_destroy(ctx);
  printf("c_api_test_c: max abs error %.3g\n", worst);
  return 0;
}
