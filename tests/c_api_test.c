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

enum { kSeq = 37, kHeads = 2, kDim = 64, kPage = 16, kPages = 3 };

/* The largest difference between o and causal attention computed directly, each query seeing its
 * last window_left + 1 keys (window_left < 0: all before it). */
static double max_error(const float* q, const float* k, const float* v, const float* o, int window_left) {
  double worst = 0;
  int i, h, j, c;
  for (i = 0; i < kSeq; ++i) {
    for (h = 0; h < kHeads; ++h) {
      const int first = window_left >= 0 && i > window_left ? i - window_left : 0;
      double s[kSeq], m = -1e300, sum = 0;
      for (j = first; j <= i; ++j) {
        double dot = 0;
        for (c = 0; c < kDim; ++c) dot += (double)q[(i * kHeads + h) * kDim + c] * k[(j * kHeads + h) * kDim + c];
        s[j] = dot / sqrt((double)kDim);
        if (s[j] > m) m = s[j];
      }
      for (j = first; j <= i; ++j) { s[j] = exp(s[j] - m); sum += s[j]; }
      for (c = 0; c < kDim; ++c) {
        double ref = 0, err;
        for (j = first; j <= i; ++j) ref += s[j] * v[(j * kHeads + h) * kDim + c];
        ref /= sum;
        err = fabs(ref - o[(i * kHeads + h) * kDim + c]);
        if (err > worst) worst = err;
      }
    }
  }
  return worst;
}

int main(void) {
  static float q[kSeq * kHeads * kDim], k[kSeq * kHeads * kDim], v[kSeq * kHeads * kDim];
  static float o[kSeq * kHeads * kDim], o_packed[kSeq * kHeads * kDim];
  /* ABI 1.4: K and V again in shuffled pages of 16 (the last one a 5-key partial page, its other
   * slots NaN: never read), and as int8 codes. */
  static float k_pages[kPages * kPage * kHeads * kDim], v_pages[kPages * kPage * kHeads * kDim];
  static const int32_t block_table[kPages] = {2, 0, 1};
  static signed char k_i8[kSeq * kHeads * kDim];
  static const float i8_scales[kHeads] = {1.0f / 64, 1.0f / 32};
  sampleattn_kv_cache cache;
  int32_t seqused_k[1];
  static const float slopes[kHeads] = {0.5f, INFINITY}, sinks[kHeads] = {-INFINITY, INFINITY};
  unsigned state = 12345u;
  int i;
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

  worst = max_error(q, k, v, o, -1);
  CHECK(worst < 1e-5);

  p.head_dim = 72;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_UNSUPPORTED_HEAD_DIM);
  p.head_dim = kDim;
  p.softmax_scale = NAN;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT);
  p.softmax_scale = 0.f;

  /* ABI 1.3: the model's variants, from C. Their defaults are "none". */
  CHECK(p.head_dim_v == 0 && p.window_left == -1 && p.softcap == 0.f);
  CHECK(p.alibi_slopes == NULL && p.sinks == NULL);
  /* The sliding window: each query sees its last 5 keys and itself. */
  p.window_left = 5;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_SUCCESS);
  worst = max_error(q, k, v, o, 5);
  CHECK(worst < 1e-5);
  CHECK(max_error(q, k, v, o, -1) > 1e-3); /* the window changed the result */
  /* Each field's checks reach C callers as statuses. */
  p.window_left = -3;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT);
  p.window_left = 5;
  p.causal = 0;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT); /* a window needs causal */
  p.causal = 1;
  p.head_dim_v = 72;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_UNSUPPORTED_HEAD_DIM);
  p.head_dim_v = 0;
  p.softcap = NAN;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT);
  p.softcap = -1.f;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT);
  p.softcap = 0.f;
  p.alibi_slopes = slopes; /* slope 1 is not finite */
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT);
  CHECK(strstr(sampleattn_last_error(), "alibi_slopes[1]") != NULL);
  p.alibi_slopes = NULL;
  p.sinks = sinks; /* -inf: no sink; +inf is refused */
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT);
  CHECK(strstr(sampleattn_last_error(), "sinks[1]") != NULL);
  p.sinks = NULL;

  /* ABI 1.4: the KV cache, from C. The defaults are packed K/V and no scales. */
  CHECK(SAMPLEATTN_DTYPE_F32 == 0 && SAMPLEATTN_DTYPE_F16 == 1 && SAMPLEATTN_DTYPE_BF16 == 2);
  CHECK(SAMPLEATTN_DTYPE_I8 == 3 && SAMPLEATTN_DTYPE_FP8_E4M3 == 4);
  CHECK(SAMPLEATTN_ABI_REVISION >= 5);
  CHECK(p.kv_cache == NULL);
  CHECK(options.parallel_for == NULL && options.host_pool == NULL);
  sampleattn_kv_cache_init(&cache);
  CHECK(cache.struct_size == sizeof(cache));
  CHECK(cache.block_table == NULL && cache.seqused_k == NULL && cache.k_scale == NULL && cache.v_scale == NULL);
  CHECK(cache.page_size == 0 && cache.num_pages == 0 && cache.block_table_stride == 0);
  p.window_left = -1;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_SUCCESS);
  memcpy(o_packed, o, sizeof o);
  /* Paged: key j of the sequence is slot j % 16 of page block_table[j / 16]. */
  for (i = 0; i < kPages * kPage * kHeads * kDim; ++i) k_pages[i] = v_pages[i] = NAN;
  for (i = 0; i < kSeq; ++i) {
    const int at = (block_table[i / kPage] * kPage + i % kPage) * kHeads * kDim;
    memcpy(&k_pages[at], &k[i * kHeads * kDim], kHeads * kDim * sizeof(float));
    memcpy(&v_pages[at], &v[i * kHeads * kDim], kHeads * kDim * sizeof(float));
  }
  cache.block_table = block_table;
  cache.block_table_stride = kPages;
  cache.page_size = kPage;
  cache.num_pages = kPages;
  cache.k_page_stride = cache.v_page_stride = kPage * kHeads * kDim;
  p.k.data = k_pages;
  p.v.data = v_pages;
  p.kv_cache = &cache;
  memset(o, 0, sizeof o);
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_SUCCESS);
  CHECK(memcmp(o, o_packed, sizeof o) == 0); /* the packed call's output, bit for bit */
  /* Its checks reach C callers as statuses. */
  cache.page_size = 24;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_SHAPE);
  CHECK(strstr(sampleattn_last_error(), "page_size") != NULL);
  cache.page_size = kPage;
  cache.num_pages = 2; /* block_table[0] = 2 is no page of 2 */
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_SHAPE);
  CHECK(strstr(sampleattn_last_error(), "block_table[0][0]") != NULL);
  cache.num_pages = kPages;
  cache.struct_size = sizeof(cache) + 8; /* a newer header's */
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_UNSUPPORTED_VERSION);
  sampleattn_kv_cache_init(&cache);
  /* seqused_k on packed K/V: all 37 keys used is the plain call; 38 is refused. */
  p.k.data = k;
  p.v.data = v;
  seqused_k[0] = kSeq;
  cache.seqused_k = seqused_k;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_SUCCESS);
  CHECK(memcmp(o, o_packed, sizeof o) == 0);
  seqused_k[0] = kSeq + 1;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_SHAPE);
  cache.seqused_k = NULL;
  /* Quantized: int8 K with a scale per kv head; the result is attention over the scaled codes. */
  for (i = 0; i < kSeq * kHeads * kDim; ++i) {
    k_i8[i] = (signed char)((i * 37) % 255 - 127);
    k_pages[i] = (float)k_i8[i] * i8_scales[(i / kDim) % kHeads]; /* reused: the dequantized K */
  }
  p.k.data = k_i8;
  p.k.dtype = SAMPLEATTN_DTYPE_I8;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_NULL_POINTER); /* int8 needs its scales */
  CHECK(strstr(sampleattn_last_error(), "k_scale") != NULL);
  cache.k_scale = i8_scales;
  cache.scale_head_stride = 1;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_SUCCESS);
  worst = max_error(q, k_pages, v, o, -1);
  CHECK(worst < 1e-5);
  p.q.dtype = SAMPLEATTN_DTYPE_I8; /* K and V only */
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_UNSUPPORTED_DTYPE);
  p.q.dtype = SAMPLEATTN_DTYPE_F32;
  p.k.dtype = SAMPLEATTN_DTYPE_F32;
  p.k.data = k;
  CHECK(sampleattn_forward(ctx, &p, NULL) == SAMPLEATTN_INVALID_ARGUMENT); /* a scale for f32 K */
  p.kv_cache = NULL;

  sampleattn_context_destroy(ctx);
  printf("c_api_test_c: max abs error %.3g\n", worst);
  return 0;
}
