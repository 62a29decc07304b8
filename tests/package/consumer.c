/* A C program that uses the installed (or embedded) library: one dense causal attention call,
 * checked against a double-precision attention computed here. Prints PASS and exits 0 when the
 * largest error is below 1e-4. SAMPLEATTN_EXPECTED_VERSION, when defined, is the version the
 * build system found (package version, pkg-config --modversion): the library must report it. */
#include <stdio.h>
#include <string.h>

#include <sampleattn/sampleattn.h>

#include "attention_check.h"

static attention_case c;

int main(void) {
  sampleattn_context_options options;
  sampleattn_context* ctx = NULL;
  sampleattn_params p;
  sampleattn_status status;
  double error;

#ifdef SAMPLEATTN_EXPECTED_VERSION
  if (strcmp(sampleattn_version(), SAMPLEATTN_EXPECTED_VERSION) != 0) {
    fprintf(stderr, "FAIL: library version %s, package says %s\n", sampleattn_version(),
            SAMPLEATTN_EXPECTED_VERSION);
    return 1;
  }
#endif
  attention_case_fill(&c);

  sampleattn_context_options_init(&options);
  options.backend = SAMPLEATTN_BACKEND_CPU; /* the buffers are host memory */
  status = sampleattn_context_create(&options, &ctx);
  if (status != SAMPLEATTN_SUCCESS) {
    fprintf(stderr, "FAIL: context: %s: %s\n", sampleattn_status_string(status), sampleattn_last_error());
    return 1;
  }

  sampleattn_params_init(&p);
  p.q.data = c.q; p.q.dtype = SAMPLEATTN_DTYPE_F32; p.q.token_stride = kQHeads * kDim; p.q.head_stride = kDim;
  p.k.data = c.k; p.k.dtype = SAMPLEATTN_DTYPE_F32; p.k.token_stride = kKvHeads * kDim; p.k.head_stride = kDim;
  p.v.data = c.v; p.v.dtype = SAMPLEATTN_DTYPE_F32; p.v.token_stride = kKvHeads * kDim; p.v.head_stride = kDim;
  p.o.data = c.o; p.o.dtype = SAMPLEATTN_DTYPE_F32; p.o.token_stride = kQHeads * kDim; p.o.head_stride = kDim;
  p.head_dim = kDim;
  p.num_q_heads = kQHeads;
  p.num_kv_heads = kKvHeads;
  p.seqlen_q = kSeq;
  p.seqlen_k = kSeq;
  p.causal = 1;
  status = sampleattn_forward(ctx, &p, NULL);
  sampleattn_context_destroy(ctx);
  if (status != SAMPLEATTN_SUCCESS) {
    fprintf(stderr, "FAIL: forward: %s: %s\n", sampleattn_status_string(status), sampleattn_last_error());
    return 1;
  }

  error = attention_case_max_error(&c);
  if (!(error < 1e-4)) {
    fprintf(stderr, "FAIL: max abs error %.3g against the double-precision attention\n", error);
    return 1;
  }
  printf("PASS sampleattn %s (C): max abs error %.2g\n", sampleattn_version(), error);
  return 0;
}
