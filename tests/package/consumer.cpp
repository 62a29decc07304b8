// A C++ program that uses the library through sampleattn.hpp (the RAII context, exceptions): the
// same check as consumer.c.
#include <cstdio>
#include <cstring>
#include <memory>

#include <sampleattn/sampleattn.hpp>

#include "attention_check.h"

int main() {
#ifdef SAMPLEATTN_EXPECTED_VERSION
  if (std::strcmp(sampleattn_version(), SAMPLEATTN_EXPECTED_VERSION) != 0) {
    std::fprintf(stderr, "FAIL: library version %s, package says %s\n", sampleattn_version(),
                 SAMPLEATTN_EXPECTED_VERSION);
    return 1;
  }
#endif
  auto c = std::make_unique<attention_case>();
  attention_case_fill(c.get());
  try {
    sampleattn_context_options options;
    sampleattn_context_options_init(&options);
    options.backend = SAMPLEATTN_BACKEND_CPU;  // the buffers are host memory
    sampleattn::Context ctx(options);

    sampleattn_params p;
    sampleattn_params_init(&p);
    auto describe = [](auto& tensor, float* data, int heads) {  // [token, head, dim], f32
      tensor.data = data;
      tensor.dtype = SAMPLEATTN_DTYPE_F32;
      tensor.token_stride = heads * kDim;
      tensor.head_stride = kDim;
    };
    describe(p.q, c->q, kQHeads);
    describe(p.k, c->k, kKvHeads);
    describe(p.v, c->v, kKvHeads);
    describe(p.o, c->o, kQHeads);
    p.head_dim = kDim;
    p.num_q_heads = kQHeads;
    p.num_kv_heads = kKvHeads;
    p.seqlen_q = kSeq;
    p.seqlen_k = kSeq;
    p.causal = 1;
    ctx.forward(p);
  } catch (const sampleattn::Error& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }

  const double error = attention_case_max_error(c.get());
  if (!(error < 1e-4)) {
    std::fprintf(stderr, "FAIL: max abs error %.3g against the double-precision attention\n", error);
    return 1;
  }
  std::printf("PASS sampleattn %s (C++): max abs error %.2g\n", sampleattn_version(), error);
  return 0;
}
