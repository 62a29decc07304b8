// sampleattn.hpp promises C++11: this program is compiled with -std=c++11 -pedantic -Werror and
// uses each part of it (Context, Params and its copies, Error) against the shared library.
#include <cmath>
#include <cstdio>
#include <vector>

#include "sampleattn/sampleattn.hpp"

#if __cplusplus != 201103L
#error "compile this test as C++11"
#endif

int main() {
  const int seq = 48, heads = 2, dim = 64;
  std::vector<float> q(seq * heads * dim), k(q.size()), v(q.size()), o(q.size(), -1.f);
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = 0.01f * static_cast<float>(i % 17);
    k[i] = 0.02f * static_cast<float>(i % 13);
    v[i] = static_cast<float>(i % 7);
  }
  sampleattn_context_options options = sampleattn::default_context_options();
  options.backend = SAMPLEATTN_BACKEND_CPU;
  options.num_threads = 1;
  sampleattn::Context ctx(options);
  sampleattn::Context moved(std::move(ctx));

  sampleattn::Params p;
  const sampleattn_tensor tq = {q.data(), SAMPLEATTN_DTYPE_F32, heads * dim, dim};
  const sampleattn_tensor tk = {k.data(), SAMPLEATTN_DTYPE_F32, heads * dim, dim};
  const sampleattn_tensor tv = {v.data(), SAMPLEATTN_DTYPE_F32, heads * dim, dim};
  const sampleattn_output to = {o.data(), SAMPLEATTN_DTYPE_F32, heads * dim, dim};
  p.q = tq;
  p.k = tk;
  p.v = tv;
  p.o = to;
  p.head_dim = dim;
  p.num_q_heads = p.num_kv_heads = heads;
  p.seqlen_q = p.seqlen_k = seq;
  p.sample.alpha = 0.9f;
  sampleattn::Params copy = p;  // its sample pointer is its own
  copy.sample.alpha = 0.5f;
  const sampleattn_params& base = copy;
  if (base.sample != &copy.sample || p.sample.alpha != 0.9f) {
    std::fprintf(stderr, "FAIL: Params copies share their sample parameters\n");
    return 1;
  }
  moved.forward(copy);
  // Row 0 sees key 0 only: its output is v's row 0.
  for (int d = 0; d < dim; ++d) {
    if (std::fabs(o[d] - v[d]) > 1e-6f) {
      std::fprintf(stderr, "FAIL: o[0][0][%d] = %g, expected %g\n", d, o[d], v[d]);
      return 1;
    }
  }
  copy.head_dim = 100;
  try {
    moved.forward(copy);
    std::fprintf(stderr, "FAIL: head_dim 100 did not throw\n");
    return 1;
  } catch (const sampleattn::Error& e) {
    if (e.status() != SAMPLEATTN_UNSUPPORTED_HEAD_DIM) return 1;
  }
  std::printf("cxx11_wrapper_test: ok\n");
  return 0;
}
