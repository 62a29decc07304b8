// The CUDA backend against the CPU backend (the oracle for the GPU) and the double-precision
// reference, on the same inputs: dtypes, head dims, grouped-query ratios, causal and not, varlen
// batches with empty sequences, chunked prefill, lse, strided layouts, streams, SampleAttention
// with both stripe scopes, and bad inputs. Skips when no CUDA device is present; in a build
// without CUDA it checks that asking for the CUDA backend fails cleanly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "test_util.h"
#include "workload/generator.h"

#ifdef SAMPLEATTN_CUDA_RUNTIME
#include <cuda_runtime_api.h>
#endif

namespace sampleattn::testing {
namespace {

sampleattn_status create_cuda(sampleattn_context** ctx) {
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  o.backend = SAMPLEATTN_BACKEND_CUDA;
  return sampleattn_context_create(&o, ctx);
}

#ifndef SAMPLEATTN_CUDA_RUNTIME

TEST(CudaBackend, NotCompiledInReportsUnsupportedBackend) {
  sampleattn_context* ctx = nullptr;
  EXPECT_EQ(create_cuda(&ctx), SAMPLEATTN_UNSUPPORTED_BACKEND);
  EXPECT_EQ(ctx, nullptr);
  EXPECT_NE(std::string(sampleattn_last_error()).find("CUDA"), std::string::npos) << sampleattn_last_error();
}

#else

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_DEVICE()             \
  do {                                    \
    if (!have_device()) {                 \
      GTEST_SKIP() << "no CUDA device";   \
    }                                     \
  } while (0)

// Device memory owned by a test.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(std::max<size_t>(bytes, 16)) {
    EXPECT_EQ(cudaMalloc(&p_, bytes_), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  char* get() const { return static_cast<char*>(p_); }
  void upload(const void* src, size_t n, size_t offset = 0) {
    ASSERT_EQ(cudaMemcpy(get() + offset, src, n, cudaMemcpyHostToDevice), cudaSuccess);
  }
  void download(void* dst, size_t n, size_t offset = 0) const {
    ASSERT_EQ(cudaMemcpy(dst, get() + offset, n, cudaMemcpyDeviceToHost), cudaSuccess);
  }
  void poison() { ASSERT_EQ(cudaMemset(p_, 0xff, bytes_), cudaSuccess); }  // NaN in f32, f16 and bf16

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

// What a call produced: output bytes (laid out like Case::o), lse, statistics and masks.
struct Outcome {
  sampleattn_status status = SAMPLEATTN_SUCCESS;
  std::string error;
  std::vector<uint8_t> o;
  std::vector<float> lse;
  sampleattn_stats stats{};
  std::vector<sampleattn_head_stats> heads;
  MaskMap masks;
};

void attach_stats(Outcome& out, size_t num_heads, std::vector<int32_t>& offsets, std::vector<int32_t>& stripes) {
  sampleattn_stats_init(&out.stats);
  out.heads.resize(num_heads);
  offsets.assign(num_heads + 1, 0);
  stripes.assign(1 << 20, -1);
  out.stats.head_stats = out.heads.data();
  out.stats.stripe_offsets = offsets.data();
  out.stats.stripes = stripes.data();
  out.stats.stripe_capacity = static_cast<int64_t>(stripes.size());
}

// Runs `p` (host pointers of `c`) on the CPU.
Outcome run_cpu(Case& c, sampleattn::Params p) {
  Outcome out;
  std::vector<int32_t> offsets, stripes;
  attach_stats(out, (c.cu_q.size() - 1) * c.hq, offsets, stripes);
  sampleattn_context* ctx = cpu_context(2);
  out.status = sampleattn_forward(ctx, &p, &out.stats);
  out.error = sampleattn_last_error();
  sampleattn_context_destroy(ctx);
  out.o = c.o.bytes;
  out.lse = c.lse;
  if (out.status == SAMPLEATTN_SUCCESS) out.masks = masks_from_stats(out.heads, static_cast<int>(c.cu_q.size()) - 1, c.hq, offsets, stripes);
  return out;
}

struct DeviceLayout {
  int64_t q_pad = 0;        // extra elements per query token (a token stride not a multiple of 8)
  size_t misalign_bytes = 0;  // offset of the Q base pointer from 16-byte alignment
};

// Runs `p` on the CUDA backend with device copies of c's tensors (same strides unless `layout`
// pads Q's rows). stream: a cudaStream_t or null.
Outcome run_cuda(Case& c, sampleattn::Params p, const DeviceLayout& layout = {}, void* stream = nullptr) {
  Outcome out;
  sampleattn_context* ctx = nullptr;
  EXPECT_EQ(create_cuda(&ctx), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  if (ctx == nullptr) {
    out.status = SAMPLEATTN_UNSUPPORTED_BACKEND;
    return out;
  }
  const int64_t tq = c.cu_q.back();
  const size_t esize = dtype_size(c.in);
  const int64_t q_row = int64_t{c.hq} * c.d;
  const int64_t q_stride = q_row + layout.q_pad;
  DeviceBuffer q(static_cast<size_t>(std::max<int64_t>(tq, 1) * q_stride) * esize + 64);
  char* q_base = q.get() + layout.misalign_bytes;
  for (int64_t t = 0; t < tq; ++t) {
    q.upload(c.q.bytes.data() + t * q_row * esize, q_row * esize, layout.misalign_bytes + t * q_stride * esize);
  }
  DeviceBuffer k(c.k.bytes.size()), v(c.v.bytes.size()), o(c.o.bytes.size()), lse(c.lse.size() * sizeof(float) + 16);
  k.upload(c.k.bytes.data(), c.k.bytes.size());
  v.upload(c.v.bytes.data(), c.v.bytes.size());
  o.poison();
  lse.poison();
  p.q.data = q_base;
  p.q.token_stride = q_stride;
  p.k.data = k.get();
  p.v.data = v.get();
  p.o.data = o.get();
  p.lse = p.lse != nullptr ? reinterpret_cast<float*>(lse.get()) : nullptr;
  p.stream = stream;
  std::vector<int32_t> offsets, stripes;
  attach_stats(out, (c.cu_q.size() - 1) * c.hq, offsets, stripes);
  out.status = sampleattn_forward(ctx, &p, &out.stats);
  out.error = sampleattn_last_error();
  sampleattn_context_destroy(ctx);
  out.o.resize(c.o.bytes.size());
  out.lse.resize(c.lse.size());
  o.download(out.o.data(), out.o.size());
  lse.download(out.lse.data(), out.lse.size() * sizeof(float));
  if (out.status == SAMPLEATTN_SUCCESS) out.masks = masks_from_stats(out.heads, static_cast<int>(c.cu_q.size()) - 1, c.hq, offsets, stripes);
  return out;
}

std::vector<std::vector<double>> rows_of(const Case& c, const std::vector<uint8_t>& o,
                                         const std::vector<std::pair<int64_t, int>>& rows) {
  std::vector<std::vector<double>> out;
  for (const auto& [t, h] : rows) {
    std::vector<double> row(c.d);
    for (int x = 0; x < c.d; ++x) row[x] = load_scalar(o.data(), c.out, (t * c.hq + h) * c.d + x);
    out.push_back(std::move(row));
  }
  return out;
}

// The GPU output against the oracle under the GPU's own mask: its error is at most twice that of
// a naive attention with bf16 products (the GPU rounds Q, K and P to the operand type), and its
// lse agrees. Also against the CPU output when both ran the same mask.
void expect_matches_oracle(Case& c, const sampleattn_params& p, const Outcome& gpu, const Outcome* cpu) {
  Problem problem;
  ASSERT_TRUE(build_problem(&p, true, &problem).is_ok());
  const auto rows = all_rows(problem);
  if (rows.empty()) return;
  const auto mask = lookup(gpu.masks);
  const auto oracle = reference::attention_rows(problem, rows, mask);
  const auto naive = reference::naive_attention_rows(problem, rows, /*bf16_products=*/true, mask);
  const auto ours_rows = rows_of(c, gpu.o, rows);
  for (const auto& r : ours_rows) {
    for (double x : r) ASSERT_FALSE(std::isnan(x)) << "an output element was not written";
  }
  const Errors ours = errors_of(oracle, ours_rows);
  const Errors base = errors_of(oracle, stored(naive, c.out));
  EXPECT_LE(ours.rel_l2, 2 * base.rel_l2 + 1e-6) << "naive bf16 " << base.rel_l2;
  EXPECT_LE(ours.max_abs, 2 * base.max_abs + 1e-5) << "naive bf16 " << base.max_abs;
  for (size_t r = 0; r < rows.size(); ++r) {
    const float lse = gpu.lse[static_cast<size_t>(rows[r].first) * c.hq + rows[r].second];
    if (std::isinf(oracle[r].lse)) {
      EXPECT_TRUE(std::isinf(lse) && lse < 0) << "row " << r;
      for (double x : ours_rows[r]) EXPECT_EQ(x, 0.0);
    } else {
      EXPECT_NEAR(lse, oracle[r].lse, 1e-3) << "row " << r;
    }
  }
  if (cpu != nullptr) {
    // Same inputs, same mask: the outputs differ only by the GPU's operand rounding.
    const auto cpu_rows = rows_of(c, cpu->o, rows);
    double num = 0, den = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      for (int x = 0; x < c.d; ++x) {
        num += (ours_rows[r][x] - cpu_rows[r][x]) * (ours_rows[r][x] - cpu_rows[r][x]);
        den += cpu_rows[r][x] * cpu_rows[r][x];
      }
    }
    EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 2e-2) << "GPU vs CPU";
  }
}

TEST(CudaBackend, ContextReportsTheDevice) {
  SKIP_WITHOUT_DEVICE();
  sampleattn_context* ctx = nullptr;
  ASSERT_EQ(create_cuda(&ctx), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  sampleattn_context_info info;
  sampleattn_context_info_init(&info);
  ASSERT_EQ(sampleattn_context_get_info(ctx, &info), SAMPLEATTN_SUCCESS);
  EXPECT_EQ(info.backend, SAMPLEATTN_BACKEND_CUDA);
  EXPECT_GT(std::strlen(info.device_name), 0u);
  sampleattn_context_destroy(ctx);
  // AUTO picks the device.
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  ASSERT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_SUCCESS);
  ASSERT_EQ(sampleattn_context_get_info(ctx, &info), SAMPLEATTN_SUCCESS);
  EXPECT_EQ(info.backend, SAMPLEATTN_BACKEND_CUDA);
  sampleattn_context_destroy(ctx);
  // A device index past the last one is refused.
  o.backend = SAMPLEATTN_BACKEND_CUDA;
  o.cuda_device = 1000;
  EXPECT_EQ(sampleattn_context_create(&o, &ctx), SAMPLEATTN_UNSUPPORTED_BACKEND);
}

std::vector<DenseShape> dense_shapes() {
  return {
      {64, {{1, 1}, {200, 200}}, true},
      {80, {{33, 130}, {0, 0}, {65, 65}}, true},  // chunked prefill, empty sequence
      {96, {{129, 129}}, false},
      {128, {{300, 300}, {0, 0}, {1, 1}, {0, 5}, {45, 200}}, true},  // varlen with empty sequences
      {128, {{20, 9}, {3, 0}, {70, 140}}, false},  // non-causal: rows without keys
      {256, {{100, 100}, {17, 90}}, true},
  };
}

using DenseParam = std::tuple<DType, int /*group*/>;
class CudaDense : public ::testing::TestWithParam<DenseParam> {};

TEST_P(CudaDense, MatchesCpuAndOracle) {
  SKIP_WITHOUT_DEVICE();
  const auto [dtype, group] = GetParam();
  for (const DenseShape& shape : dense_shapes()) {
    SCOPED_TRACE("d=" + std::to_string(shape.d) + " causal=" + std::to_string(shape.causal));
    Case c = dense_case(shape, dtype, group, 99 + shape.d + group);
    const sampleattn::Params p = c.params();
    const Outcome gpu = run_cuda(c, p);
    ASSERT_EQ(gpu.status, SAMPLEATTN_SUCCESS) << gpu.error;
    EXPECT_STREQ(gpu.stats.isa, "cuda");
    EXPECT_EQ(gpu.stats.num_dense_heads, gpu.stats.num_heads_total);
    const Outcome cpu = run_cpu(c, p);
    ASSERT_EQ(cpu.status, SAMPLEATTN_SUCCESS) << cpu.error;
    expect_matches_oracle(c, p, gpu, &cpu);
  }
}

INSTANTIATE_TEST_SUITE_P(All, CudaDense,
                         ::testing::Combine(::testing::Values(DType::kF16, DType::kBF16), ::testing::Values(1, 4, 8)),
                         [](const auto& test_info) {
                           return std::string(dtype_name(std::get<0>(test_info.param))) + "_group" +
                                  std::to_string(std::get<1>(test_info.param));
                         });

TEST(CudaDenseLayout, OutputDtypesStridesAndStream) {
  SKIP_WITHOUT_DEVICE();
  for (DType out : {DType::kF32, DType::kF16, DType::kBF16}) {
    Case c;
    c.d = 128;
    c.hq = 4;
    c.hkv = 1;
    c.in = DType::kBF16;
    c.out = out;
    c.add_sequence(150, 150);
    c.add_sequence(40, 260);
    c.materialize(5 + static_cast<int>(out), 1.0f);
    const sampleattn::Params p = c.params();
    const Outcome cpu = run_cpu(c, p);
    ASSERT_EQ(cpu.status, SAMPLEATTN_SUCCESS);
    // Packed, then a Q token stride that is not a multiple of 8 from a misaligned base (repacked),
    // then on a stream of our own.
    const Outcome packed = run_cuda(c, p);
    ASSERT_EQ(packed.status, SAMPLEATTN_SUCCESS) << packed.error;
    expect_matches_oracle(c, p, packed, &cpu);
    const Outcome strided = run_cuda(c, p, DeviceLayout{3, 2});
    ASSERT_EQ(strided.status, SAMPLEATTN_SUCCESS) << strided.error;
    EXPECT_EQ(strided.o, packed.o) << "repacking changed the result";
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    const Outcome streamed = run_cuda(c, p, {}, stream);
    ASSERT_EQ(streamed.status, SAMPLEATTN_SUCCESS) << streamed.error;
    EXPECT_EQ(streamed.o, packed.o);
    cudaStreamDestroy(stream);
  }
}

TEST(CudaBadInput, NullPointersAndUnsupportedDtypes) {
  SKIP_WITHOUT_DEVICE();
  Case c;
  c.d = 64;
  c.in = DType::kF32;
  c.add_sequence(8, 8);
  c.materialize(1);
  sampleattn::Params p = c.params();
  const Outcome f32 = run_cuda(c, p);
  EXPECT_EQ(f32.status, SAMPLEATTN_UNSUPPORTED_DTYPE);
  EXPECT_NE(f32.error.find("f16 or bf16"), std::string::npos) << f32.error;

  Case mixed;
  mixed.d = 64;
  mixed.in = DType::kBF16;
  mixed.add_sequence(8, 8);
  mixed.materialize(2);
  sampleattn::Params pm = mixed.params();
  pm.v.dtype = SAMPLEATTN_DTYPE_F16;
  EXPECT_EQ(run_cuda(mixed, pm).status, SAMPLEATTN_UNSUPPORTED_DTYPE);

  sampleattn_context* ctx = nullptr;
  ASSERT_EQ(create_cuda(&ctx), SAMPLEATTN_SUCCESS);
  sampleattn::Params pn = mixed.params();
  pn.k.data = nullptr;
  EXPECT_EQ(sampleattn_forward(ctx, &pn, nullptr), SAMPLEATTN_NULL_POINTER);
  sampleattn_context_destroy(ctx);
}

// The input policy (docs/SECURITY.md) on the device: NaN/Inf in Q, K or V and inputs whose
// scores could overflow fail with the CPU's status and message, and O stays as it was.
TEST(CudaBadInput, NonFiniteAndOverflowingInputsAsOnTheCpu) {
  SKIP_WITHOUT_DEVICE();
  const float bad_values[] = {std::nanf(""), std::numeric_limits<float>::infinity(), 3e38f};
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (int which = 0; which < 3; ++which) {
      for (float bad : bad_values) {
        if (dtype == DType::kF16 && bad == 3e38f) continue;  // not representable: it is Inf
        Case c;
        c.d = 128;
        c.hq = 4;
        c.hkv = 2;
        c.in = dtype;
        c.out = DType::kF32;
        c.add_sequence(300, 300);
        c.materialize(3);
        Buffer& t = which == 0 ? c.q : (which == 1 ? c.k : c.v);
        const int heads = which == 0 ? c.hq : c.hkv;
        t.set((int64_t{211} * heads + heads - 1) * c.d + 9, bad);
        sampleattn::Params p = c.params();
        p.method = SAMPLEATTN_METHOD_SAMPLE;
        p.sample.dense_below = 64;
        const Outcome cpu = run_cpu(c, p);
        const Outcome gpu = run_cuda(c, p);
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + "qkv"[which] + " " + std::to_string(bad));
        EXPECT_EQ(cpu.status, SAMPLEATTN_INVALID_ARGUMENT) << cpu.error;
        EXPECT_EQ(gpu.status, cpu.status) << gpu.error;
        if (std::isfinite(bad)) {  // the message quotes norms summed in another order: compare its kind
          EXPECT_NE(gpu.error.find("could overflow"), std::string::npos) << gpu.error;
        } else {
          EXPECT_EQ(gpu.error, cpu.error);
        }
        for (size_t i = 0; i < gpu.o.size(); ++i) ASSERT_EQ(gpu.o[i], 0xff) << "O was written at byte " << i;
      }
    }
  }
}

struct SampleVariant {
  std::string name;
  sampleattn_stripe_scope scope;
  int window_mass_counts;
  int min_stripes, max_stripes, sink_tokens;
  float alpha;
  float max_density;  // 0: between the CPU's head densities, so that about half the heads run dense
  float r_val = 0.02f;  // validation rows (the default); 0: stripes as alpha chose them
};

class CudaSample : public ::testing::TestWithParam<std::tuple<DType, int, SampleVariant>> {};

// SampleAttention parameters of a CUDA-against-CPU case: small windows and blocks, the variant's
// options; max_density 0 picks a threshold between the heads' densities (about half run dense).
sampleattn::Params sample_params(Case& c, const SampleVariant& variant, float r_row) {
  sampleattn::Params p = c.params();
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  p.sample.dense_below = 256;
  p.sample.min_window = 16;
  p.sample.sample_block = 32;
  p.sample.r_row = r_row;
  p.sample.scope = variant.scope;
  p.sample.window_mass_counts = variant.window_mass_counts;
  p.sample.min_stripes = variant.min_stripes;
  p.sample.max_stripes = variant.max_stripes;
  p.sample.sink_tokens = variant.sink_tokens;
  p.sample.alpha = variant.alpha;
  p.sample.max_density = variant.max_density;
  p.sample.r_val = variant.r_val;
  if (variant.max_density == 0) {
    p.sample.max_density = 1;
    const Outcome all_sparse = run_cpu(c, p);
    EXPECT_EQ(all_sparse.status, SAMPLEATTN_SUCCESS) << all_sparse.error;
    std::vector<float> densities;
    for (const sampleattn_head_stats& h : all_sparse.heads) {
      if (!h.dense) densities.push_back(h.density);
    }
    std::sort(densities.begin(), densities.end());
    // The widest gap in the middle half: no head sits near the threshold, so stripe columns that
    // differ at exact ties cannot flip a decision.
    size_t cut = densities.size() / 2;
    for (size_t i = densities.size() / 4; i + 1 < densities.size() * 3 / 4; ++i) {
      if (densities[i + 1] - densities[i] > densities[cut] - densities[cut - 1]) cut = i + 1;
    }
    p.sample.max_density = 0.5f * (densities[cut - 1] + densities[cut]);
  }
  return p;
}

// The GPU's selection, validation decisions, statistics and output against the CPU's on the same
// inputs, and (with `oracle`) the GPU output against the oracle under the GPU's own mask. Returns
// the CPU's outcome.
Outcome expect_sample_matches_cpu(Case& c, const sampleattn::Params& p, const SampleVariant& variant,
                                  bool oracle = true) {
  const Outcome cpu = run_cpu(c, p);
  EXPECT_EQ(cpu.status, SAMPLEATTN_SUCCESS) << cpu.error;
  const Outcome gpu = run_cuda(c, p);
  EXPECT_EQ(gpu.status, SAMPLEATTN_SUCCESS) << gpu.error;
  if (cpu.status != SAMPLEATTN_SUCCESS || gpu.status != SAMPLEATTN_SUCCESS) return cpu;
  EXPECT_EQ(gpu.stats.num_dense_heads, cpu.stats.num_dense_heads);
  EXPECT_EQ(gpu.stats.num_heads_total, cpu.stats.num_heads_total);
  EXPECT_EQ(gpu.masks.size(), cpu.masks.size());
  if (gpu.masks.size() != cpu.masks.size()) return cpu;
  // Every sampled head dense: only validation may do that (no mask within the cost cap kept enough).
  if (gpu.masks.empty()) {
    EXPECT_GT(variant.r_val, 0.f) << "no sparse head to compare";
  }
  if (variant.max_density == 0) {
    EXPECT_GT(cpu.stats.num_dense_heads, c.hq) << "some sampled heads run dense";
  }

  // Selected stripe sets: equal except where column scores tie within float rounding (the CPU
  // sums in f32 with its own order, the GPU in another): allow 1% of the columns to differ.
  size_t differ = 0, total = 0;
  for (const auto& [key, cm] : cpu.masks) {
    const reference::HeadMask& gm = gpu.masks.at(key);
    EXPECT_EQ(gm.window, cm.window);
    std::vector<int32_t> sym;
    std::set_symmetric_difference(cm.stripes.begin(), cm.stripes.end(), gm.stripes.begin(), gm.stripes.end(),
                                  std::back_inserter(sym));
    differ += sym.size();
    total += std::max(cm.stripes.size(), gm.stripes.size());
    if (variant.max_stripes > 0) {
      EXPECT_LE(gm.stripes.size(), static_cast<size_t>(variant.max_stripes));
    }
    if (variant.min_stripes > 0) {
      EXPECT_GE(gm.stripes.size(), static_cast<size_t>(variant.min_stripes));
    }
    if (variant.scope == SAMPLEATTN_STRIPES_PER_KV_GROUP) {
      const int first = key.second / (c.hq / c.hkv) * (c.hq / c.hkv);
      EXPECT_EQ(gm.stripes, gpu.masks.at({key.first, first}).stripes) << "a kv group shares one stripe set";
    }
    for (int j = 0; j < std::min<int>(variant.sink_tokens, variant.max_stripes > 0 ? variant.max_stripes : 1 << 30); ++j) {
      EXPECT_TRUE(std::binary_search(gm.stripes.begin(), gm.stripes.end(), j)) << "sink " << j << " not kept";
    }
  }
  EXPECT_LE(differ, total / 100 + 1) << differ << " of " << total << " stripe columns differ";
  std::printf("[ info ] %s: %zu of %zu stripe columns differ between CPU and GPU\n", variant.name.c_str(), differ, total);

  // Statistics in the CPU's format, validation's decisions and figures among them: the same
  // shared decision (core/validation.h) on masses measured by each backend's own kernels.
  const int nseq = static_cast<int>(c.cu_q.size()) - 1;
  for (int i = 0; i < nseq * c.hq; ++i) {
    EXPECT_EQ(gpu.heads[i].dense, cpu.heads[i].dense);
    EXPECT_EQ(gpu.heads[i].window, cpu.heads[i].window);
    EXPECT_EQ(gpu.heads[i].decision, cpu.heads[i].decision) << "head " << i;
    EXPECT_EQ(gpu.heads[i].alpha_stripes, cpu.heads[i].alpha_stripes) << "head " << i;
    EXPECT_EQ(gpu.heads[i].num_stripes, cpu.heads[i].num_stripes) << "head " << i;
    EXPECT_NEAR(gpu.heads[i].val_cra_p5, cpu.heads[i].val_cra_p5, 1e-4) << "head " << i;
    EXPECT_NEAR(gpu.heads[i].val_cra_min, cpu.heads[i].val_cra_min, 1e-4) << "head " << i;
    EXPECT_NEAR(gpu.heads[i].val_cra_mean, cpu.heads[i].val_cra_mean, 1e-4) << "head " << i;
    EXPECT_NEAR(gpu.heads[i].val_lost_rms, cpu.heads[i].val_lost_rms, 1e-4) << "head " << i;
    if (variant.r_val == 0 && !cpu.heads[i].dense) {
      EXPECT_EQ(cpu.heads[i].decision, SAMPLEATTN_DECISION_SPARSE) << "head " << i;
      EXPECT_EQ(gpu.heads[i].val_cra_p5, -1.f) << "head " << i << ": no validation rows";
    }
    if (gpu.heads[i].num_stripes == cpu.heads[i].num_stripes && !gpu.heads[i].dense) {
      EXPECT_NEAR(gpu.heads[i].cra_mean, cpu.heads[i].cra_mean, 2e-3) << "head " << i;
      EXPECT_NEAR(gpu.heads[i].cra_min, cpu.heads[i].cra_min, 2e-3) << "head " << i;
      EXPECT_NEAR(gpu.heads[i].density, cpu.heads[i].density, 1e-2) << "head " << i;
    }
  }
  EXPECT_NEAR(gpu.stats.density, cpu.stats.density, 0.01);
  EXPECT_EQ(gpu.stats.num_widened_heads, cpu.stats.num_widened_heads);
  EXPECT_NEAR(gpu.stats.val_cra_p5, cpu.stats.val_cra_p5, 1e-4);

  // The sparse attention is exact attention under the GPU's mask.
  if (oracle) expect_matches_oracle(c, p, gpu, differ == 0 ? &cpu : nullptr);

  // Deterministic: a second run gives the same bits, the same mask and the same figures.
  const Outcome again = run_cuda(c, p);
  EXPECT_EQ(again.status, SAMPLEATTN_SUCCESS);
  if (again.status != SAMPLEATTN_SUCCESS) return cpu;
  EXPECT_EQ(again.o, gpu.o);
  for (const auto& [key, gm] : gpu.masks) EXPECT_EQ(again.masks.at(key).stripes, gm.stripes);
  for (int i = 0; i < nseq * c.hq; ++i) {
    EXPECT_EQ(again.heads[i].val_cra_p5, gpu.heads[i].val_cra_p5) << "head " << i;
    EXPECT_EQ(again.heads[i].val_cra_mean, gpu.heads[i].val_cra_mean) << "head " << i;
  }
  return cpu;
}

TEST_P(CudaSample, SelectionAndOutputMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  const auto& [dtype, d, variant] = GetParam();
  Case c;
  c.d = d;
  c.hkv = 2;
  c.hq = 8;
  c.in = c.out = dtype;
  c.add_sequence(700, 700);
  c.add_sequence(0, 0);
  c.add_sequence(100, 100);  // below dense_below: dense fallback
  c.add_sequence(230, 900);  // chunked prefill
  c.add_sequence(1, 1);
  c.materialize(2024 + d, 0.7f);
  plant(c, {3, 150, 151, 420, 600}, 2.0f);
  const sampleattn::Params p = sample_params(c, variant, 0.15f);
  expect_sample_matches_cpu(c, p, variant);
}

// Long enough that the sm_90a kernels' shared-memory rings wrap several times (attention: 3 stages
// of 128 keys; column scores: 6 stages of 64 sampled rows), in both the dense and the sampled path.
TEST(CudaSampleLong, PipelineRingsWrapAndMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  Case c;
  c.d = 128;
  c.hkv = 1;
  c.hq = 2;
  c.in = c.out = DType::kBF16;
  c.add_sequence(2560, 2560);
  c.add_sequence(600, 2000);  // chunked prefill
  c.materialize(77, 0.7f);
  plant(c, {5, 700, 701, 1900, 2300}, 2.0f);
  sampleattn::Params dense = c.params();
  const Outcome gpu_dense = run_cuda(c, dense);
  ASSERT_EQ(gpu_dense.status, SAMPLEATTN_SUCCESS) << gpu_dense.error;
  const Outcome cpu_dense = run_cpu(c, dense);
  ASSERT_EQ(cpu_dense.status, SAMPLEATTN_SUCCESS) << cpu_dense.error;
  expect_matches_oracle(c, dense, gpu_dense, &cpu_dense);
  const SampleVariant variant{"long", SAMPLEATTN_STRIPES_PER_HEAD, 0, 0, 0, 4, 0.95f, 1.f};
  sampleattn::Params p = sample_params(c, variant, 0.3f);
  p.sample.sample_block = 64;
  expect_sample_matches_cpu(c, p, variant);
}

// Validation where it matters: the structured generator's "real" mix (copy and retrieval heads,
// whose far keys no column mask holds) at 4096 tokens, with the default parameters. The GPU must
// decide as the CPU does per head: alpha's stripes, more of the ranking (a stricter min_kept widens
// the stripe heads) or dense (cost, validation), and without validation rows keep alpha's
// stripes.
TEST(CudaSampleReal, ValidationDecisionsMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  workload::GeneratorConfig cfg;
  cfg.seq = 4096;
  cfg.num_q_heads = 8;
  cfg.num_kv_heads = 2;
  cfg.head_dim = 128;
  cfg.seed = 1;
  cfg.mix = workload::HeadMix::kReal;
  workload::GeneratedData g;
  ASSERT_TRUE(workload::generate(cfg, &g).is_ok());
  Case c;
  c.d = cfg.head_dim;
  c.hq = cfg.num_q_heads;
  c.hkv = cfg.num_kv_heads;
  c.in = c.out = DType::kBF16;
  c.add_sequence(static_cast<int32_t>(cfg.seq), static_cast<int32_t>(cfg.seq));
  c.materialize(1);
  const auto* q = reinterpret_cast<const float*>(g.q.bytes.data());
  const auto* k = reinterpret_cast<const float*>(g.k.bytes.data());
  const auto* v = reinterpret_cast<const float*>(g.v.bytes.data());
  for (int64_t i = 0; i < c.q.size(); ++i) c.q.set(i, q[i]);
  for (int64_t i = 0; i < c.k.size(); ++i) {
    c.k.set(i, k[i]);
    c.v.set(i, v[i]);
  }
  struct Run {
    std::string name;
    sampleattn_stripe_scope scope;
    float r_val, min_kept;
    int widened, validation_dense;  // at least this many heads, on the CPU
  };
  const Run runs[] = {
      {"defaults", SAMPLEATTN_STRIPES_PER_HEAD, 0.02f, 0.9f, 0, 1},
      {"strict", SAMPLEATTN_STRIPES_PER_HEAD, 0.02f, 0.995f, 1, 1},
      {"per_kv_group", SAMPLEATTN_STRIPES_PER_KV_GROUP, 0.02f, 0.9f, 0, 1},
      {"no_validation", SAMPLEATTN_STRIPES_PER_HEAD, 0.f, 0.9f, 0, 0},
  };
  for (const Run& run : runs) {
    SCOPED_TRACE(run.name);
    sampleattn::Params p = c.params();
    p.method = SAMPLEATTN_METHOD_SAMPLE;
    p.softmax_scale = g.softmax_scale;
    p.sample.scope = run.scope;
    p.sample.r_val = run.r_val;
    p.sample.min_kept = run.min_kept;
    const SampleVariant variant{run.name, run.scope, 0, 0, 0, p.sample.sink_tokens, p.sample.alpha, p.sample.max_density,
                                run.r_val};
    const Outcome cpu = expect_sample_matches_cpu(c, p, variant, /*oracle=*/false);
    int widened = 0, validation_dense = 0;
    for (const sampleattn_head_stats& h : cpu.heads) {
      widened += h.decision == SAMPLEATTN_DECISION_SPARSE_WIDENED;
      validation_dense += h.decision == SAMPLEATTN_DECISION_DENSE_VALIDATION;
    }
    EXPECT_GE(widened, run.widened);
    EXPECT_GE(validation_dense, run.validation_dense);
    std::printf("[ info ] real mix, %s: %d widened, %d dense by validation of %d heads\n", run.name.c_str(), widened,
                validation_dense, c.hq);
  }
}

// What validation costs at 32K tokens, 32 query heads (8 kv heads), d = 128, on the generated
// inputs: the call with the default r_val against r_val = 0, stage by stage. Runs only when
// SAMPLEATTN_CUDA_TIMING is set (a measurement, not a check).
TEST(CudaSampleTiming, ValidationCostAt32K) {
  SKIP_WITHOUT_DEVICE();
  if (std::getenv("SAMPLEATTN_CUDA_TIMING") == nullptr) GTEST_SKIP() << "set SAMPLEATTN_CUDA_TIMING to measure";
  workload::GeneratorConfig cfg;
  cfg.seq = 32768;
  cfg.num_q_heads = 32;
  cfg.num_kv_heads = 8;
  cfg.head_dim = 128;
  workload::GeneratedData g;
  ASSERT_TRUE(workload::generate(cfg, &g).is_ok());
  auto to_bf16 = [](const workload::Tensor3& t) {
    Buffer b(DType::kBF16, t.seq, static_cast<int>(t.heads), static_cast<int>(t.dim));
    const auto* f = reinterpret_cast<const float*>(t.bytes.data());
    for (int64_t i = 0; i < b.size(); ++i) b.set(i, f[i]);
    return b;
  };
  const Buffer hq = to_bf16(g.q), hk = to_bf16(g.k), hv = to_bf16(g.v);
  DeviceBuffer q(hq.bytes.size()), k(hk.bytes.size()), v(hv.bytes.size()), o(hq.bytes.size());
  q.upload(hq.bytes.data(), hq.bytes.size());
  k.upload(hk.bytes.data(), hk.bytes.size());
  v.upload(hv.bytes.data(), hv.bytes.size());
  sampleattn::Params p;
  const int64_t d = cfg.head_dim;
  p.q = {q.get(), SAMPLEATTN_DTYPE_BF16, cfg.num_q_heads * d, d};
  p.k = {k.get(), SAMPLEATTN_DTYPE_BF16, cfg.num_kv_heads * d, d};
  p.v = {v.get(), SAMPLEATTN_DTYPE_BF16, cfg.num_kv_heads * d, d};
  p.o = {o.get(), SAMPLEATTN_DTYPE_BF16, cfg.num_q_heads * d, d};
  p.head_dim = cfg.head_dim;
  p.num_q_heads = cfg.num_q_heads;
  p.num_kv_heads = cfg.num_kv_heads;
  p.seqlen_q = p.seqlen_k = static_cast<int32_t>(cfg.seq);
  p.softmax_scale = g.softmax_scale;
  p.method = SAMPLEATTN_METHOD_SAMPLE;
  sampleattn_context* ctx = nullptr;
  ASSERT_EQ(create_cuda(&ctx), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  for (float r_val : {0.02f, 0.f, 0.02f, 0.f}) {
    p.sample.r_val = r_val;
    double best[4] = {1e9, 1e9, 1e9, 1e9};
    sampleattn_stats stats;
    for (int rep = 0; rep < 5; ++rep) {
      sampleattn_stats_init(&stats);
      ASSERT_EQ(sampleattn_forward(ctx, &p, &stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
      best[0] = std::min(best[0], stats.time_sampling_s);
      best[1] = std::min(best[1], stats.time_selection_s);
      best[2] = std::min(best[2], stats.time_attention_s);
      best[3] = std::min(best[3], stats.time_total_s);
    }
    std::printf("[ info ] 32K x 32 heads, r_val %.2f: sampling %.3f ms, selection %.3f ms, attention %.3f ms, "
                "total %.3f ms (best of 5); density %.3f, %d dense, %d widened heads\n",
                r_val, best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, best[3] * 1e3, stats.density, stats.num_dense_heads,
                stats.num_widened_heads);
  }
  sampleattn_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(
    All, CudaSample,
    ::testing::Combine(
        ::testing::Values(DType::kBF16, DType::kF16), ::testing::Values(64, 128),
        ::testing::Values(SampleVariant{"per_head", SAMPLEATTN_STRIPES_PER_HEAD, 0, 0, 0, 4, 0.95f, 1.f},
                          SampleVariant{"per_kv_group", SAMPLEATTN_STRIPES_PER_KV_GROUP, 0, 0, 0, 4, 0.95f, 1.f},
                          SampleVariant{"window_mass", SAMPLEATTN_STRIPES_PER_HEAD, 1, 0, 0, 2, 0.9f, 1.f},
                          SampleVariant{"min_stripes", SAMPLEATTN_STRIPES_PER_HEAD, 0, 40, 0, 4, 0.5f, 1.f},
                          // 12 stripes keep too little of these diffuse rows: validation makes every
                          // head dense, so the clamp itself is checked without validation rows.
                          SampleVariant{"max_stripes", SAMPLEATTN_STRIPES_PER_KV_GROUP, 0, 0, 12, 4, 0.99f, 1.f, 0.f},
                          SampleVariant{"max_stripes_validated", SAMPLEATTN_STRIPES_PER_KV_GROUP, 0, 0, 12, 4, 0.99f, 1.f},
                          SampleVariant{"max_density", SAMPLEATTN_STRIPES_PER_HEAD, 0, 0, 0, 4, 0.95f, 0.f},
                          SampleVariant{"max_density_group", SAMPLEATTN_STRIPES_PER_KV_GROUP, 0, 0, 0, 4, 0.95f, 0.f},
                          SampleVariant{"no_validation", SAMPLEATTN_STRIPES_PER_HEAD, 0, 0, 0, 4, 0.95f, 1.f, 0.f})),
    [](const auto& test_info) {
      return std::string(dtype_name(std::get<0>(test_info.param))) + "_d" + std::to_string(std::get<1>(test_info.param)) + "_" +
             std::get<2>(test_info.param).name;
    });

#endif  // SAMPLEATTN_CUDA_RUNTIME

}  // namespace
}  // namespace sampleattn::testing
