// The accuracy evidence at a size CI can afford: SampleAttention with default parameters on the
// generated structured inputs (4096 tokens, 8 heads, d = 128) against dense through the public
// API, with the metrics of docs/ACCURACY.md. Deterministic: the generator is seeded.
#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"
#include "workload/attention_profile.h"
#include "workload/generator.h"
#include "workload/metrics.h"

namespace sampleattn::testing {
namespace {

struct MethodRun {
  workload::Tensor3 o;
  std::vector<sampleattn_head_stats> heads;
  std::vector<int32_t> offsets, stripes;
  sampleattn_stats stats{};
};

void run(const workload::GeneratedData& g, sampleattn_method method, MethodRun* r) {
  ASSERT_TRUE(workload::make_tensor(g.q.seq, g.q.heads, g.q.dim, DType::kF32, &r->o).is_ok());
  sampleattn::Params p;
  p.q = {g.q.data(), SAMPLEATTN_DTYPE_F32, g.q.token_stride(), g.q.head_stride()};
  p.k = {g.k.data(), SAMPLEATTN_DTYPE_F32, g.k.token_stride(), g.k.head_stride()};
  p.v = {g.v.data(), SAMPLEATTN_DTYPE_F32, g.v.token_stride(), g.v.head_stride()};
  p.o = {r->o.data(), SAMPLEATTN_DTYPE_F32, g.q.token_stride(), g.q.head_stride()};
  p.head_dim = static_cast<int32_t>(g.q.dim);
  p.num_q_heads = static_cast<int32_t>(g.q.heads);
  p.num_kv_heads = static_cast<int32_t>(g.k.heads);
  p.seqlen_q = p.seqlen_k = g.q.seq;
  p.method = method;
  r->heads.resize(static_cast<size_t>(g.q.heads));
  r->offsets.resize(r->heads.size() + 1);
  r->stripes.resize(r->heads.size() * static_cast<size_t>(g.q.seq));
  sampleattn_stats_init(&r->stats);
  r->stats.head_stats = r->heads.data();
  r->stats.stripe_offsets = r->offsets.data();
  r->stats.stripes = r->stripes.data();
  r->stats.stripe_capacity = static_cast<int64_t>(r->stripes.size());
  sampleattn_context* ctx = cpu_context(2);
  ASSERT_EQ(sampleattn_forward(ctx, &p, &r->stats), SAMPLEATTN_SUCCESS) << sampleattn_last_error();
  sampleattn_context_destroy(ctx);
}

TEST(StructuredAccuracy, DefaultsAgainstDense) {
  workload::GeneratorConfig cfg;
  cfg.seq = 4096;
  cfg.num_q_heads = cfg.num_kv_heads = 8;
  cfg.head_dim = 128;
  cfg.seed = 1;
  for (double depth : {0.1, 0.3, 0.5, 0.7, 0.9}) cfg.needles.push_back({depth, -1, -1});
  workload::GeneratedData g;
  ASSERT_TRUE(workload::generate(cfg, &g).is_ok());
  MethodRun dense, sparse;
  run(g, SAMPLEATTN_METHOD_DENSE, &dense);
  run(g, SAMPLEATTN_METHOD_SAMPLE, &sparse);
  // 4096 keys are above dense_below; only the diffuse head runs dense (its mask is over the cost
  // budget, or its validation rows lose too much).
  for (int h = 0; h < 8; ++h) {
    EXPECT_EQ(sparse.heads[h].dense, g.heads[h].type == workload::HeadType::kDiffuse ? 1 : 0) << "head " << h;
  }

  workload::RelErrorResult err;
  ASSERT_TRUE(workload::rel_l2_error(sparse.o, dense.o, {}, &err).is_ok());
  EXPECT_LT(err.median, 0.02) << "median relative L2 error over heads";
  EXPECT_GT(err.median, 0.0) << "a sparse mask that drops nothing would be suspicious here";

  workload::NeedleResult ns, nd;
  ASSERT_TRUE(workload::needle_recall(sparse.o, g.needles, 0.5, &ns).is_ok());
  ASSERT_TRUE(workload::needle_recall(dense.o, g.needles, 0.5, &nd).is_ok());
  EXPECT_EQ(nd.recall, 1.0);
  EXPECT_EQ(ns.recall, nd.recall);

  const auto masks = workload::masks_from_stats(sparse.heads.data(), sparse.offsets.data(),
                                                sparse.stripes.data(), 8, cfg.seq);
  workload::KeptMassResult kept;
  ASSERT_TRUE(workload::kept_mass(g.q, g.k, g.softmax_scale, masks, workload::strided_rows(cfg.seq, 64),
                                  &kept).is_ok());
  // Every head keeps >= 0.9 of every evaluated row (the min CRA); the mean is above alpha.
  for (int h = 0; h < 8; ++h) EXPECT_GE(kept.head_min[h], 0.9) << "head " << h;
  EXPECT_GE(kept.min, 0.9);
  EXPECT_GE(kept.mean, 0.95);
  EXPECT_LT(sparse.stats.density, 0.5);
  EXPECT_NEAR(workload::mask_density(masks, cfg.seq, cfg.seq), sparse.stats.density, 1e-6);
}

// The real mix (one head in 8 a copy head, one a retrieval head: each query needs far keys of its
// own, which no column set chosen from sampled rows covers): validation (docs/ALGORITHM.md) must
// catch them, so that every head stays near dense and needles are recalled as dense.
TEST(StructuredAccuracy, RealMixCopyAndRetrievalHeadsAgainstDense) {
  workload::GeneratorConfig cfg;
  cfg.seq = 4096;
  cfg.num_q_heads = cfg.num_kv_heads = 8;
  cfg.head_dim = 128;
  cfg.seed = 1;
  cfg.mix = workload::HeadMix::kReal;
  for (double depth : {0.1, 0.3, 0.5, 0.7, 0.9}) cfg.needles.push_back({depth, -1, -1});
  workload::GeneratedData g;
  ASSERT_TRUE(workload::generate(cfg, &g).is_ok());
  MethodRun dense, sparse;
  run(g, SAMPLEATTN_METHOD_DENSE, &dense);
  run(g, SAMPLEATTN_METHOD_SAMPLE, &sparse);
  int far_heads = 0;
  for (int h = 0; h < 8; ++h) {
    const sampleattn_head_stats& hs = sparse.heads[h];
    const bool far = g.heads[h].type == workload::HeadType::kCopy || g.heads[h].type == workload::HeadType::kRetrieval;
    far_heads += far ? 1 : 0;
    if (far) {
      EXPECT_NE(hs.decision, SAMPLEATTN_DECISION_SPARSE) << "head " << h << ": alpha's stripes cannot hold it";
    }
    if (!hs.dense) {
      EXPECT_GE(hs.val_cra_p5, 0.9f) << "head " << h;
      EXPECT_LE(hs.val_lost_rms, 0.01f) << "head " << h;
    }
  }
  EXPECT_EQ(far_heads, 2);

  workload::RelErrorResult err;
  ASSERT_TRUE(workload::rel_l2_error(sparse.o, dense.o, {}, &err).is_ok());
  EXPECT_LE(err.median, 0.01) << "median head";
  EXPECT_LE(err.max, 0.05) << "worst head";
  EXPECT_GE(sparse.stats.val_cra_p5, 0.9f);

  workload::NeedleResult ns, nd;
  ASSERT_TRUE(workload::needle_recall(sparse.o, g.needles, 0.5, &ns).is_ok());
  ASSERT_TRUE(workload::needle_recall(dense.o, g.needles, 0.5, &nd).is_ok());
  EXPECT_EQ(ns.recall, nd.recall);

  // The kept mass on rows the library never saw (every 64th row) agrees: >= 0.9 for every head.
  const auto masks = workload::masks_from_stats(sparse.heads.data(), sparse.offsets.data(),
                                                sparse.stripes.data(), 8, cfg.seq);
  workload::KeptMassResult kept;
  ASSERT_TRUE(workload::kept_mass(g.q, g.k, g.softmax_scale, masks, workload::strided_rows(cfg.seq, 64),
                                  &kept).is_ok());
  for (int h = 0; h < 8; ++h) EXPECT_GE(kept.head_min[h], 0.85) << "head " << h;
}

}  // namespace
}  // namespace sampleattn::testing
