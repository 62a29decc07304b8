/* "The old caller": compiled against the frozen first ABI 1 header (tests/abi/v1.0, whose
 * sampleattn_context_info lacks the 1.1 fields) and linked against today's shared library. It
 * checks that the library honours the caller's struct sizes: *_init and the calls that fill a
 * struct never write past the caller's struct (guard bytes after each), a too-large struct_size
 * is refused with SAMPLEATTN_UNSUPPORTED_VERSION, and dense and sample calls still compute the
 * right thing (dense against a direct computation). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sampleattn/sampleattn.h"

#if SAMPLEATTN_ABI_REVISION != 0
#error "abi_old_caller.c must be compiled against the frozen 1.0 header (tests/abi/v1.0)"
#endif

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond,     \
              sampleattn_last_error());                                                \
      return 1;                                                                        \
    }                                                                                  \
  } while (0)

enum { kGuard = 64, kSeq = 300, kQHeads = 4, kKvHeads = 2, kDim = 64 };
static const unsigned char kPoison = 0xA5;

/* A struct followed by guard bytes, so a write past the caller's struct is seen. */
#define GUARDED(T) \
  struct {         \
    T s;           \
    unsigned char guard[kGuard]; \
  }

static int guard_intact(const unsigned char* guard) {
  int i;
  for (i = 0; i < kGuard; ++i) {
    if (guard[i] != kPoison) return 0;
  }
  return 1;
}

static float q[kSeq * kQHeads * kDim], k[kSeq * kKvHeads * kDim], v[kSeq * kKvHeads * kDim];
static float o[kSeq * kQHeads * kDim];

int main(void) {
  GUARDED(sampleattn_context_options) options;
  GUARDED(sampleattn_context_info) info;
  GUARDED(sampleattn_params) params;
  GUARDED(sampleattn_sample_params) sample;
  GUARDED(sampleattn_stats) stats;
  GUARDED(sampleattn_plan_info) plan;
  sampleattn_context* ctx = NULL;
  sampleattn_head_stats heads[kQHeads];
  unsigned state = 7u;
  int i, h, j, c;
  double worst = 0;

  memset(&options, kPoison, sizeof options);
  memset(&info, kPoison, sizeof info);
  memset(&params, kPoison, sizeof params);
  memset(&sample, kPoison, sizeof sample);
  memset(&stats, kPoison, sizeof stats);
  memset(&plan, kPoison, sizeof plan);

  for (i = 0; i < kSeq * kQHeads * kDim; ++i) {
    state = state * 1664525u + 1013904223u;
    q[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
  }
  for (i = 0; i < kSeq * kKvHeads * kDim; ++i) {
    state = state * 1664525u + 1013904223u;
    k[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
    state = state * 1664525u + 1013904223u;
    v[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
  }

  /* init writes exactly the caller's struct. */
  sampleattn_context_options_init(&options.s);
  sampleattn_context_info_init(&info.s);
  sampleattn_params_init(&params.s);
  sampleattn_sample_params_init(&sample.s);
  sampleattn_stats_init(&stats.s);
  sampleattn_plan_info_init(&plan.s);
  CHECK(options.s.struct_size == sizeof options.s && guard_intact(options.guard));
  CHECK(info.s.struct_size == sizeof info.s && guard_intact(info.guard));
  CHECK(params.s.struct_size == sizeof params.s && guard_intact(params.guard));
  CHECK(sample.s.struct_size == sizeof sample.s && guard_intact(sample.guard));
  CHECK(stats.s.struct_size == sizeof stats.s && guard_intact(stats.guard));
  CHECK(plan.s.struct_size == sizeof plan.s && guard_intact(plan.guard));
  CHECK(sample.s.alpha == 0.95f && params.s.causal == 1 && params.s.sample == NULL);

  options.s.backend = SAMPLEATTN_BACKEND_CPU;
  options.s.num_threads = 2;
  CHECK(sampleattn_context_create(&options.s, &ctx) == SAMPLEATTN_SUCCESS);

  /* The library's info struct is larger (1.1): it must write only the 1.0 part. */
  CHECK(sampleattn_context_get_info(ctx, &info.s) == SAMPLEATTN_SUCCESS);
  CHECK(guard_intact(info.guard));
  CHECK(info.s.struct_size == sizeof info.s);
  CHECK(info.s.backend == SAMPLEATTN_BACKEND_CPU && info.s.num_threads == 2);
  CHECK(info.s.isa != NULL && strlen(info.s.isa) > 0 && info.s.note != NULL);

  /* A struct_size from a header newer than the library is refused, with a message. */
  info.s.struct_size = (uint32_t)sizeof info.s + 4096;
  CHECK(sampleattn_context_get_info(ctx, &info.s) == SAMPLEATTN_UNSUPPORTED_VERSION);
  CHECK(strstr(sampleattn_last_error(), "newer") != NULL);
  info.s.struct_size = 8; /* below the first layout */
  CHECK(sampleattn_context_get_info(ctx, &info.s) == SAMPLEATTN_INVALID_ARGUMENT);
  CHECK(guard_intact(info.guard));

  /* Dense, GQA, causal: against a direct computation. */
  params.s.q.data = q;
  params.s.k.data = k;
  params.s.v.data = v;
  params.s.o.data = o;
  params.s.q.token_stride = params.s.o.token_stride = kQHeads * kDim;
  params.s.k.token_stride = params.s.v.token_stride = kKvHeads * kDim;
  params.s.q.head_stride = params.s.k.head_stride = params.s.v.head_stride = params.s.o.head_stride = kDim;
  params.s.head_dim = kDim;
  params.s.num_q_heads = kQHeads;
  params.s.num_kv_heads = kKvHeads;
  params.s.seqlen_q = kSeq;
  params.s.seqlen_k = kSeq;
  CHECK(sampleattn_plan(ctx, &params.s, &plan.s) == SAMPLEATTN_SUCCESS);
  CHECK(guard_intact(plan.guard) && plan.s.total_q_tokens == kSeq);
  stats.s.head_stats = heads;
  CHECK(sampleattn_forward(ctx, &params.s, &stats.s) == SAMPLEATTN_SUCCESS);
  CHECK(guard_intact(stats.guard) && guard_intact(params.guard));
  CHECK(stats.s.struct_size == sizeof stats.s && stats.s.num_heads_total == kQHeads);
  for (i = 0; i < kSeq; ++i) {
    for (h = 0; h < kQHeads; ++h) {
      const int kv = h / (kQHeads / kKvHeads);
      double m = -1e300, sum = 0, acc[kDim], scores[kSeq];
      for (c = 0; c < kDim; ++c) acc[c] = 0;
      for (j = 0; j <= i; ++j) {
        double dot = 0;
        for (c = 0; c < kDim; ++c) {
          dot += (double)q[(i * kQHeads + h) * kDim + c] * k[(j * kKvHeads + kv) * kDim + c];
        }
        scores[j] = dot / sqrt((double)kDim);
        if (scores[j] > m) m = scores[j];
      }
      for (j = 0; j <= i; ++j) {
        const double p = exp(scores[j] - m);
        sum += p;
        for (c = 0; c < kDim; ++c) acc[c] += p * v[(j * kKvHeads + kv) * kDim + c];
      }
      for (c = 0; c < kDim; ++c) {
        const double err = fabs(acc[c] / sum - o[(i * kQHeads + h) * kDim + c]);
        if (err > worst) worst = err;
      }
    }
  }
  CHECK(worst < 1e-5);

  /* Sample, with an old-layout sample struct reached through the pointer. */
  sample.s.dense_below = 0;
  sample.s.min_window = 16;
  sample.s.sample_block = 16;
  sample.s.max_density = 1.f;
  params.s.method = SAMPLEATTN_METHOD_SAMPLE;
  params.s.sample = &sample.s;
  CHECK(sampleattn_forward(ctx, &params.s, &stats.s) == SAMPLEATTN_SUCCESS);
  CHECK(guard_intact(stats.guard) && guard_intact(sample.guard));
  CHECK(stats.s.num_dense_heads == 0 && stats.s.density > 0 && stats.s.density < 1);
  for (h = 0; h < kQHeads; ++h) CHECK(heads[h].dense == 0 && heads[h].window >= 16 && heads[h].window < kSeq);

  /* Larger than the library knows (the library's own layout has grown past this old one, so go
   * well beyond any layout): refused before anything is read, and the output untouched. */
  sample.s.struct_size = (uint32_t)sizeof sample.s + 4096;
  o[0] = 12345.f;
  CHECK(sampleattn_forward(ctx, &params.s, NULL) == SAMPLEATTN_UNSUPPORTED_VERSION);
  CHECK(o[0] == 12345.f);

  sampleattn_context_destroy(ctx);
  printf("abi_old_caller: ok (dense max abs error %.2e)\n", worst);
  return 0;
}
