// The structured long-context generator: determinism, shapes, RoPE, calibration at a size CI can
// afford, needles, and the real fixtures' statistics.
//
// The full calibration table (generated at 16K-32K next to the Llama-3 fixture) is a disabled
// test, run on demand:
//   SAMPLEATTN_CALIBRATION_SEQ=32768 ./generator_test --gtest_also_run_disabled_tests
//       --gtest_filter='*CalibrationTable*'
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <numbers>
#include <numeric>
#include <set>
#include <string>

#include "workload/attention_profile.h"
#include "workload/generator.h"
#include "workload/metrics.h"
#include "workload/model_variants.h"
#include "workload/npy.h"

namespace sampleattn::workload {
namespace {

GeneratorConfig small_config(int64_t seq = 1024) {
  GeneratorConfig c;
  c.seq = seq;
  c.head_dim = 64;
  c.num_q_heads = 4;
  c.num_kv_heads = 2;
  c.seed = 7;
  return c;
}

TEST(Generator, DeterministicBySeed) {
  GeneratorConfig c = small_config(700);
  c.needles = {{0.3, -1, -1}};
  GeneratedData a, b, other;
  ASSERT_TRUE(generate(c, &a).is_ok());
  ASSERT_TRUE(generate(c, &b).is_ok());
  EXPECT_EQ(a.q.bytes, b.q.bytes);
  EXPECT_EQ(a.k.bytes, b.k.bytes);
  EXPECT_EQ(a.v.bytes, b.v.bytes);
  EXPECT_EQ(a.stripes, b.stripes);
  c.seed = 8;
  ASSERT_TRUE(generate(c, &other).is_ok());
  EXPECT_NE(a.q.bytes, other.q.bytes);
  EXPECT_NE(a.k.bytes, other.k.bytes);
  EXPECT_NE(a.v.bytes, other.v.bytes);
}

TEST(Generator, ShapesGroupedHeadsAndStripes) {
  GeneratorConfig c = small_config(2000);
  c.head_dim = 128;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.stripe_fraction = 0.01;
  GeneratedData g;
  ASSERT_TRUE(generate(c, &g).is_ok());
  EXPECT_EQ(g.q.seq, 2000);
  EXPECT_EQ(g.q.heads, 8);
  EXPECT_EQ(g.q.dim, 128);
  EXPECT_EQ(g.k.heads, 2);
  EXPECT_EQ(g.v.heads, 2);
  EXPECT_EQ(g.q.dtype, DType::kF32);
  EXPECT_EQ(g.heads.size(), 8u);
  ASSERT_EQ(g.stripes.size(), 2u);
  for (const auto& s : g.stripes) {
    EXPECT_EQ(s.size(), 20u);
    EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
    EXPECT_EQ(std::set<int64_t>(s.begin(), s.end()).size(), s.size());
    EXPECT_GE(s.front(), 4);
    EXPECT_LT(s.back(), 2000);
  }
  // All four head types appear in a mix of 8.
  std::set<HeadType> types;
  for (const auto& h : g.heads) types.insert(h.type);
  EXPECT_EQ(types.size(), 4u);
  for (const float f : tensor_to_f32(g.q)) ASSERT_TRUE(std::isfinite(f));
  for (const float f : tensor_to_f32(g.k)) ASSERT_TRUE(std::isfinite(f));
}

TEST(Generator, RejectsBadConfigs) {
  GeneratedData g;
  GeneratorConfig c = small_config();
  c.seq = 0;
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_INVALID_SHAPE);
  c = small_config();
  c.head_dim = 65;
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_UNSUPPORTED_HEAD_DIM);
  c = small_config();
  c.num_kv_heads = 3;
  EXPECT_FALSE(generate(c, &g).is_ok());
  c = small_config();
  c.needles = {{1.5, -1, -1}};
  EXPECT_FALSE(generate(c, &g).is_ok());
  c = small_config();
  c.needles = {{0.2, 1000, 1}, {0.4, 1000, 1}};
  EXPECT_FALSE(generate(c, &g).is_ok());
  c = small_config();
  c.head_dim = 32;  // too few RoPE pairs for the structure
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_UNSUPPORTED_HEAD_DIM);
  c = small_config();
  c.head_dim_v = -1;
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_UNSUPPORTED_HEAD_DIM);
  c.head_dim_v = 1025;
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_UNSUPPORTED_HEAD_DIM);
  c = small_config();
  c.window_left = -2;
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_INVALID_ARGUMENT);
  c = small_config();
  c.softcap = std::nan("");
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_INVALID_ARGUMENT);
  c.softcap = -1;
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_INVALID_ARGUMENT);
  c.softcap = INFINITY;
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_INVALID_ARGUMENT);
  // Tiny sequences work.
  c = small_config(1);
  EXPECT_TRUE(generate(c, &g).is_ok());
  c = small_config(5);
  EXPECT_TRUE(generate(c, &g).is_ok());
}

TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  const int d = 128;
  Rng rng(3);
  std::vector<float> a(d), b(d);
  for (int i = 0; i < d; ++i) a[i] = static_cast<float>(rng.normal()), b[i] = static_cast<float>(rng.normal());
  auto score = [&](int64_t p, int64_t j) {
    std::vector<float> qa = a, kb = b;
    apply_rope(qa.data(), 1, 1, d, 500000.0, p);
    apply_rope(kb.data(), 1, 1, d, 500000.0, j);
    double s = 0;
    for (int i = 0; i < d; ++i) s += static_cast<double>(qa[i]) * kb[i];
    return s;
  };
  EXPECT_NEAR(score(10, 3), score(1010, 1003), 1e-3);
  EXPECT_NEAR(score(20000, 100), score(19950, 50), 1e-3);
  EXPECT_GT(std::fabs(score(10, 3) - score(10, 9)), 1e-2);  // and it does depend on the distance
  // Position 0 is the identity.
  std::vector<float> c = a;
  apply_rope(c.data(), 1, 1, d, 500000.0, 0);
  EXPECT_EQ(c, a);
}

TEST(Generator, RopeReallyAppliedToKeys) {
  // Every non-sink key carries the same pre-RoPE vector in the fastest pair (the band), so after
  // RoPE pair 0 of key j is that vector turned by j radians (theta_0 = 1): the ratio of
  // consecutive keys' pair-0 values is e^{i}. Pair 0 = dims (0, d/2), Hugging Face rotate_half.
  GeneratedData g;
  ASSERT_TRUE(generate(small_config(300), &g).is_ok());
  const int64_t half = g.k.dim / 2;
  for (int64_t j = 10; j < 300; j += 37) {
    const double x1 = g.k.at(j, 0, 0), y1 = g.k.at(j, 0, half);
    const double x0 = g.k.at(j - 1, 0, 0), y0 = g.k.at(j - 1, 0, half);
    double turn = std::atan2(y1, x1) - std::atan2(y0, x0);
    turn = std::remainder(turn, 2 * std::numbers::pi);
    EXPECT_NEAR(turn, 1.0, 1e-4) << "key " << j;
    EXPECT_NEAR(std::hypot(x1, y1), std::hypot(x0, y0), 1e-4);
  }
}

// Exact probabilities of one (token, head) row.
std::vector<double> row_probs(const GeneratedData& g, int64_t token, int head) {
  const int group = static_cast<int>(g.q.heads / g.k.heads);
  const std::vector<float> keys = head_to_f32(g.k, head / group);
  std::vector<float> q(g.q.dim);
  for (int64_t i = 0; i < g.q.dim; ++i) q[i] = g.q.at(token, head, i);
  std::vector<double> P;
  row_probabilities(q.data(), keys.data(), g.k.dim, static_cast<int>(g.k.dim), token + 1, g.softmax_scale, &P);
  return P;
}

class Calibration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    GeneratorConfig c;
    c.seq = 4096;
    c.head_dim = 128;
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.seed = 11;
    c.needles = {{0.1, -1, -1}, {0.5, -1, -1}, {0.9, -1, -1}};
    data_ = new GeneratedData;
    ASSERT_TRUE(generate(c, data_).is_ok());
    ProfileOptions o;
    o.rows = 48;
    profiles_ = new std::vector<HeadProfile>;
    ASSERT_TRUE(profile_attention(data_->q, data_->k, o, profiles_).is_ok());
  }
  static void TearDownTestSuite() {
    delete data_;
    delete profiles_;
  }
  static GeneratedData* data_;
  static std::vector<HeadProfile>* profiles_;
};
GeneratedData* Calibration::data_ = nullptr;
std::vector<HeadProfile>* Calibration::profiles_ = nullptr;

TEST_F(Calibration, SinkMassInRangeAndNearTarget) {
  for (size_t h = 0; h < profiles_->size(); ++h) {
    const double sink = (*profiles_)[h].sink_mass;
    EXPECT_GE(sink, 0.45) << "head " << h;
    EXPECT_LE(sink, 0.97) << "head " << h;
    EXPECT_NEAR(sink, data_->heads[h].sink_target, 0.15) << "head " << h;
  }
}

TEST_F(Calibration, SparseHeadsAreCoverableDiffuseHeadsAreNot) {
  int sparse_heads = 0;
  for (size_t h = 0; h < profiles_->size(); ++h) {
    const HeadProfile& p = (*profiles_)[h];
    const HeadType t = data_->heads[h].type;
    if (t == HeadType::kDiffuse) {
      EXPECT_LT(p.covered_mass, 0.93) << "head " << h;
      EXPECT_GT(p.entropy, 2.0) << "head " << h;
    } else {
      ++sparse_heads;
      EXPECT_GT(p.covered_mass, 0.95) << "head " << h << " " << head_type_name(t);
      EXPECT_LT(p.entropy, 2.0) << "head " << h;
    }
  }
  EXPECT_GE(sparse_heads, 5);
}

TEST_F(Calibration, StripeHeadsAttendToTheGeneratedStripes) {
  const GeneratedData& g = *data_;
  const int group = static_cast<int>(g.q.heads / g.k.heads);
  const int64_t n = g.q.seq;
  const int64_t window = static_cast<int64_t>(std::ceil(0.08 * n));
  int checked = 0;
  for (int h = 0; h < g.q.heads; ++h) {
    if (g.heads[h].type != HeadType::kStripe) continue;
    const auto& stripes = g.stripes[h / group];
    std::set<int64_t> is_stripe(stripes.begin(), stripes.end());
    // Mass outside the window on the stripes vs on as many other columns (the first non-stripe
    // columns after each stripe), over late rows.
    double on_stripes = 0, on_others = 0;
    for (int64_t p = n - 1; p > n - 200; p -= 20) {
      const auto P = row_probs(g, p, h);
      for (int64_t s : stripes) {
        if (s > p - window) continue;
        on_stripes += P[s];
        int64_t o = s + 1;
        while (is_stripe.count(o)) ++o;
        on_others += P[o];
      }
    }
    EXPECT_GT(on_stripes, 20 * on_others) << "head " << h;
    EXPECT_GT(on_stripes / 10, 0.03) << "head " << h;  // a few % of each row's mass
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST_F(Calibration, NeedleQueriesRetrieveTheirNeedles) {
  const GeneratedData& g = *data_;
  ASSERT_EQ(g.needles.size(), 3u);
  std::set<int64_t> depths;
  for (const PlantedNeedle& nd : g.needles) {
    const auto P = row_probs(g, nd.query_token, nd.query_head);
    EXPECT_GT(P[nd.key_position], 0.5) << "needle at " << nd.key_position;
    depths.insert(nd.key_position);
    // The dense output of that row points along the needle's value; masking the needle out
    // (the row without its key) does not.
    const int group = static_cast<int>(g.q.heads / g.k.heads);
    std::vector<double> with(g.v.dim, 0.0), without(g.v.dim, 0.0);
    const double rest = 1.0 - P[nd.key_position];
    for (int64_t j = 0; j <= nd.query_token; ++j)
      for (int64_t i = 0; i < g.v.dim; ++i) {
        const double v = g.v.at(j, nd.query_head / group, i);
        with[i] += P[j] * v;
        if (j != nd.key_position) without[i] += P[j] / rest * v;
      }
    Tensor3 o;
    ASSERT_TRUE(make_tensor(g.q.seq, g.q.heads, g.q.dim, DType::kF32, &o).is_ok());
    float* od = reinterpret_cast<float*>(o.data());
    for (int64_t i = 0; i < g.v.dim; ++i) od[(nd.query_token * g.q.heads + nd.query_head) * g.q.dim + i] = static_cast<float>(with[i]);
    NeedleResult r;
    ASSERT_TRUE(needle_recall(o, {nd}, 0.5, &r).is_ok());
    EXPECT_EQ(r.recall, 1.0);
    EXPECT_GT(r.cosine[0], 0.8);
    for (int64_t i = 0; i < g.v.dim; ++i) od[(nd.query_token * g.q.heads + nd.query_head) * g.q.dim + i] = static_cast<float>(without[i]);
    ASSERT_TRUE(needle_recall(o, {nd}, 0.5, &r).is_ok());
    EXPECT_EQ(r.recall, 0.0);
    EXPECT_LT(std::fabs(r.cosine[0]), 0.35);
  }
  EXPECT_EQ(depths.size(), 3u);
  // Needle keys at the requested depths, queries among the last tokens.
  EXPECT_NEAR(static_cast<double>(g.needles[1].key_position) / (g.q.seq - 1), 0.5, 1e-3);
  for (const PlantedNeedle& nd : g.needles) EXPECT_GE(nd.query_token, g.q.seq - 64);
}

// The fraction of keys a head needs for 95% of a row's mass: the 8% local window plus the fewest
// columns (ranked by their mass outside the rows' windows) reaching 0.95 on average over the rows.
// In real long-context models it shrinks as the context grows (sink, local window and a few heavy
// hitters hold the mass; attention to unrelated far tokens decays with distance).
double needed_fraction(const GeneratedData& g, int head, int64_t rows) {
  const int64_t n = g.q.seq;
  const int d = static_cast<int>(g.q.dim);
  const int group = static_cast<int>(g.q.heads / g.k.heads);
  const int64_t window = static_cast<int64_t>(std::ceil(0.08 * n));
  const std::vector<float> keys = head_to_f32(g.k, head / group);
  const std::vector<float> queries = head_to_f32(g.q, head);
  const std::vector<int64_t> rs = strided_rows(n, rows);
  std::vector<double> col(static_cast<size_t>(n), 0.0);
  double covered = 0;
  for (int64_t p : rs) {
    std::vector<double> P;
    row_probabilities(queries.data() + p * d, keys.data(), d, d, p + 1, g.softmax_scale, &P);
    for (int64_t j = 0; j <= p; ++j) (j > p - window ? covered : col[j]) += P[j];
  }
  std::sort(col.begin(), col.end(), std::greater<>());
  const double target = 0.95 * static_cast<double>(rs.size());
  int64_t k = 0;
  while (covered < target && k < n) covered += col[k++];
  return static_cast<double>(window + k) / static_cast<double>(n);
}

TEST(Generator, NeededFractionDoesNotGrowWithContext) {
  // One head of each type (4 q heads, 2 kv heads, d 128) at 4K and 16K.
  GeneratorConfig c;
  c.head_dim = 128;
  c.num_q_heads = 4;
  c.num_kv_heads = 2;
  c.seed = 5;
  c.head_types = {HeadType::kLocal, HeadType::kStripe, HeadType::kSparse, HeadType::kDiffuse};
  std::vector<double> f4(4), f16(4);
  for (int64_t seq : {4096, 16384}) {
    c.seq = seq;
    GeneratedData g;
    ASSERT_TRUE(generate(c, &g).is_ok());
    for (int h = 0; h < 4; ++h) (seq == 4096 ? f4 : f16)[h] = needed_fraction(g, h, 24);
  }
  for (int h = 0; h < 3; ++h) {
    SCOPED_TRACE(head_type_name(c.head_types[h]));
    EXPECT_LE(f16[h], f4[h] + 1e-9);
    EXPECT_LE(f16[h], 0.08 + 0.02);  // the 8% window plus at most 2% columns
  }
  // The diffuse head stays diffuse.
  EXPECT_GT(f16[3], 0.2);
}

TEST(Generator, GeneratedTensorsRoundTripThroughNpyAsF16) {
  GeneratedData g;
  ASSERT_TRUE(generate(small_config(256), &g).is_ok());
  Tensor3 h;
  ASSERT_TRUE(convert_tensor(g.q, DType::kF16, &h).is_ok());
  const std::string path = (std::filesystem::temp_directory_path() / "sampleattn_gen_q.npy").string();
  ASSERT_TRUE(write_npy(path, h).is_ok());
  Tensor3 back;
  ASSERT_TRUE(read_npy(path, &back).is_ok());
  EXPECT_EQ(back.bytes, h.bytes);
  // f16 keeps the generated magnitudes (no overflow): relative error of rounding only.
  const auto a = tensor_to_f32(g.q), b = tensor_to_f32(back);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-3 * std::fabs(a[i]) + 1e-4);
}

// ---- The real fixtures.

std::string fixture(const std::string& name) { return std::string(SAMPLEATTN_FIXTURES_DIR) + "/" + name; }

bool have_fixtures() {
  for (const char* f : {"llama3-8b-layer10-q.npy", "llama3-8b-layer10-k.npy", "llama3-8b-layer10-v.npy"})
    if (!std::filesystem::exists(fixture(f))) return false;
  return true;
}

// FNV-1a over the bytes of q, k and v.
uint64_t tensor_hash(const GeneratedData& g) {
  uint64_t h = 1469598103934665603ull;
  for (const Tensor3* t : {&g.q, &g.k, &g.v})
    for (uint8_t b : t->bytes) h = (h ^ b) * 1099511628211ull;
  return h;
}

TEST(Generator, DefaultMixBytesAreUnchanged) {
  // The default mix must give the tensors every published figure was measured on: this hash was
  // taken from the generator before the copy and retrieval heads existed (commit 32a2ec2, GCC 12,
  // glibc's libm, x86-64); another libm may round a cosine differently and change it.
  GeneratorConfig c = small_config(1500);
  c.num_q_heads = 8;
  c.needles = {{0.3, -1, -1}, {0.7, -1, -1}};
  GeneratedData g;
  ASSERT_TRUE(generate(c, &g).is_ok());
  EXPECT_EQ(tensor_hash(g), 16952431840383523939ull);
  EXPECT_TRUE(g.repeats.empty());
  for (const HeadInfo& h : g.heads) EXPECT_LE(static_cast<int>(h.type), static_cast<int>(HeadType::kDiffuse));
}

TEST(Generator, RealMixHasCopyAndRetrievalHeads) {
  GeneratorConfig c = small_config(1500);
  c.num_q_heads = 16;
  c.mix = HeadMix::kReal;
  GeneratedData g;
  ASSERT_TRUE(generate(c, &g).is_ok());
  int copy = 0, retrieval = 0;
  for (const HeadInfo& h : g.heads) {
    copy += h.type == HeadType::kCopy;
    retrieval += h.type == HeadType::kRetrieval;
  }
  EXPECT_EQ(copy, 2);
  EXPECT_EQ(retrieval, 2);
  EXPECT_FALSE(g.repeats.empty());
  GeneratedData again;
  ASSERT_TRUE(generate(c, &again).is_ok());
  EXPECT_EQ(tensor_hash(g), tensor_hash(again));
  c.mix = static_cast<HeadMix>(3);
  EXPECT_EQ(generate(c, &g).code(), SAMPLEATTN_INVALID_ARGUMENT);
}

// The far mix: the real mix's heads, and in its local, stripe and sparse heads about 0.5% of the
// rows past token 1024 put most of their mass on one key at least half their position back; the copy,
// retrieval and diffuse heads, K and V stay the real mix's.
TEST(Generator, FarMixRowsFetchOneFarKey) {
  GeneratorConfig c = small_config(6000);
  c.num_q_heads = 8;
  c.head_dim = 128;
  c.mix = HeadMix::kReal;
  GeneratedData real, far;
  ASSERT_TRUE(generate(c, &real).is_ok());
  c.mix = HeadMix::kFar;
  ASSERT_TRUE(generate(c, &far).is_ok());
  EXPECT_EQ(far.k.bytes, real.k.bytes);
  EXPECT_EQ(far.v.bytes, real.v.bytes);
  const int64_t d = far.q.dim;
  int heads_with_rows = 0;
  for (int h = 0; h < 8; ++h) {
    const HeadInfo& info = far.heads[h];
    ASSERT_EQ(info.type, real.heads[h].type);
    EXPECT_TRUE(real.heads[h].far_rows.empty());
    const bool has = info.type == HeadType::kLocal || info.type == HeadType::kStripe || info.type == HeadType::kSparse;
    if (!has) {
      EXPECT_TRUE(info.far_rows.empty()) << h;
      for (int64_t t = 0; t < c.seq; t += 97)
        for (int64_t i = 0; i < d; ++i) ASSERT_EQ(far.q.at(t, h, i), real.q.at(t, h, i)) << h;
      continue;
    }
    ++heads_with_rows;
    const double share = static_cast<double>(info.far_rows.size()) / static_cast<double>(c.seq - 1024);
    EXPECT_GT(share, 0.0025) << h;
    EXPECT_LT(share, 0.0075) << h;
    std::vector<double> p_far;
    for (size_t r = 0; r < info.far_rows.size(); ++r) {
      const FarRow& f = info.far_rows[r];
      if (r > 0) {
        ASSERT_LT(info.far_rows[r - 1].row, f.row);
      }
      ASSERT_GE(f.row, 1024);
      ASSERT_GE(f.key, 64);
      ASSERT_GE(f.row - f.key, f.row / 2 - 4);
      // The row's exact softmax: the share of its mass on its far key.
      std::vector<double> s(static_cast<size_t>(f.row + 1));
      for (int64_t j = 0; j <= f.row; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += static_cast<double>(far.q.at(f.row, h, i)) * far.k.at(j, h / 4, i);
        s[static_cast<size_t>(j)] = dot * far.softmax_scale;
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double z = 0;
      for (double x : s) z += std::exp(x - mx);
      p_far.push_back(std::exp(s[static_cast<size_t>(f.key)] - mx) / z);
    }
    // Most far rows put a large share on their far key (the other keys' own structure, slash
    // terms and stripes, competes with it: the share varies from row to row, as in a real model).
    std::sort(p_far.begin(), p_far.end());
    EXPECT_GT(p_far[p_far.size() / 2], 0.3) << "head " << h << " (" << head_type_name(info.type) << ")";
    EXPECT_GT(p_far[p_far.size() * 2 / 5], 0.2) << "head " << h << " (" << head_type_name(info.type) << ")";
  }
  EXPECT_GE(heads_with_rows, 4);
}

// ---- The model the inputs are made for (head_dim_v, window_left, softcap).

TEST(Generator, ValueHeadSizeOfItsOwn) {
  GeneratorConfig c = small_config(600);
  c.needles = {{0.3, -1, -1}, {0.6, -1, -1}};
  GeneratedData plain, same, wide;
  ASSERT_TRUE(generate(c, &plain).is_ok());
  c.head_dim_v = c.head_dim;  // the default, spelled out
  ASSERT_TRUE(generate(c, &same).is_ok());
  EXPECT_EQ(tensor_hash(same), tensor_hash(plain));
  c.head_dim_v = 96;
  ASSERT_TRUE(generate(c, &wide).is_ok());
  EXPECT_EQ(wide.v.dim, 96);
  EXPECT_EQ(wide.v.seq, 600);
  EXPECT_EQ(wide.v.heads, 2);
  EXPECT_EQ(wide.q.bytes, plain.q.bytes);  // Q and K do not depend on V's size
  EXPECT_EQ(wide.k.bytes, plain.k.bytes);
  std::set<std::pair<int64_t, int64_t>> needle_keys;
  for (const PlantedNeedle& n : wide.needles) {
    ASSERT_EQ(n.value_direction.size(), 96u);
    double norm = 0;
    for (float x : n.value_direction) norm += static_cast<double>(x) * x;
    EXPECT_NEAR(norm, 1.0, 1e-5);
    needle_keys.insert({n.key_position, n.query_head / 2});
  }
  // Ordinary value rows begin as the plain ones do (the same stream, drawn further).
  for (int64_t j = 0; j < 600; j += 41) {
    for (int64_t kv = 0; kv < 2; ++kv) {
      if (needle_keys.count({j, kv})) continue;
      for (int64_t i = 0; i < 64; ++i) ASSERT_EQ(wide.v.at(j, kv, i), plain.v.at(j, kv, i)) << j;
    }
  }
}

// The model's probabilities of one row (window, cap) of generated data.
std::vector<double> model_probs(const GeneratedData& g, const ModelVariants& m, int64_t token, int head) {
  const int group = static_cast<int>(g.q.heads / g.k.heads);
  const std::vector<float> keys = head_to_f32(g.k, head / group);
  std::vector<float> q(g.q.dim);
  for (int64_t i = 0; i < g.q.dim; ++i) q[i] = g.q.at(token, head, i);
  std::vector<double> P;
  model_row_probabilities(q.data(), keys.data(), g.k.dim, static_cast<int>(g.k.dim), token, g.softmax_scale, m, 0.0,
                          &P);
  return P;
}

TEST(Generator, ModelWindowPutsTheNeedlesWhereTheModelSeesThem) {
  GeneratorConfig c;
  c.seq = 4096;
  c.head_dim = 128;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.seed = 11;
  c.window_left = 1024;
  c.needles = {{0.1, -1, -1}, {0.5, -1, -1}, {0.9, -1, -1}};
  GeneratedData g;
  ASSERT_TRUE(generate(c, &g).is_ok());
  ModelVariants model;
  model.window_left = c.window_left;
  int64_t previous = 0;
  for (const PlantedNeedle& n : g.needles) {
    EXPECT_GE(n.key_position, n.query_token - c.window_left);
    EXPECT_LT(n.key_position, n.query_token);
    EXPECT_GT(n.key_position, previous);  // deeper needles further along the window
    previous = n.key_position;
    const auto P = model_probs(g, model, n.query_token, n.query_head);
    EXPECT_GT(P[n.key_position], 0.5) << "needle at " << n.key_position;
  }
  // The window's depth 0.5 is the middle of what the query sees.
  EXPECT_NEAR(static_cast<double>(g.needles[1].query_token - g.needles[1].key_position), 512, 2);
  NeedleResult counted;
  Tensor3 o;
  ASSERT_TRUE(make_tensor(g.q.seq, g.q.heads, g.v.dim, DType::kF32, &o).is_ok());
  ASSERT_TRUE(needle_recall(o, g.needles, 0.5, &counted, c.window_left).is_ok());
  EXPECT_EQ(counted.counted, 3);
  // Without the window, depth is over the context: the needle at 0.1 lies far beyond a window of
  // 1024 and would not count.
  c.window_left = -1;
  GeneratedData whole;
  ASSERT_TRUE(generate(c, &whole).is_ok());
  ASSERT_TRUE(needle_recall(o, whole.needles, 0.5, &counted, 1024).is_ok());
  EXPECT_EQ(counted.counted, 1);
  // Attention within the window is local: the local and sparse heads keep nearly all of a late
  // row's mass on its nearest 256 keys (the sink keys lie outside the window).
  for (int h = 0; h < 8; ++h) {
    const HeadType t = g.heads[h].type;
    if (t != HeadType::kLocal && t != HeadType::kSparse) continue;
    double near = 0;
    int rows = 0;
    for (int64_t p = 4095; p > 2048; p -= 211, ++rows) {
      const auto P = model_probs(g, model, p, h);
      for (int64_t j = p - 255; j <= p; ++j) near += P[j];
    }
    EXPECT_GT(near / rows, 0.9) << "head " << h << " " << head_type_name(t);
  }
}

TEST(Generator, SoftcapCalibratesTheCappedAttention) {
  GeneratorConfig c;
  c.seq = 4096;
  c.head_dim = 128;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.seed = 11;
  c.softcap = 30;
  c.needles = {{0.3, -1, -1}, {0.8, -1, -1}};
  GeneratedData g;
  ASSERT_TRUE(generate(c, &g).is_ok());
  ModelVariants capped, raw;
  capped.softcap = c.softcap;
  const int group = 4;
  for (int h = 0; h < 8; ++h) {
    SCOPED_TRACE(std::string("head ") + std::to_string(h) + " " + head_type_name(g.heads[h].type));
    double sink_capped = 0, sink_raw = 0, num = 0, den = 0, sink_logit = 0;
    int rows = 0;
    for (int64_t p = 4095; p > 512; p -= 257, ++rows) {
      const auto Pc = model_probs(g, capped, p, h), Pr = model_probs(g, raw, p, h);
      for (int j = 0; j < 4; ++j) sink_capped += Pc[j], sink_raw += Pr[j];
      for (int64_t i = 0; i < g.v.dim; ++i) {
        double oc = 0, orw = 0;
        for (int64_t j = 0; j <= p; ++j) {
          oc += Pc[j] * g.v.at(j, h / group, i);
          orw += Pr[j] * g.v.at(j, h / group, i);
        }
        num += (oc - orw) * (oc - orw);
        den += oc * oc;
      }
      double s = 0;
      for (int64_t i = 0; i < g.q.dim; ++i) s += static_cast<double>(g.q.at(p, h, i)) * g.k.at(0, h / group, i);
      sink_logit = std::max(sink_logit, s * g.softmax_scale);  // the raw score of key 0
    }
    // The capped attention has the designed sink mass ...
    EXPECT_NEAR(sink_capped / rows, g.heads[h].sink_target, 0.15);
    // ... while the raw logits reach where the cap bends them, and ignoring it moves the output.
    if (g.heads[h].type != HeadType::kDiffuse) {
      EXPECT_GT(sink_logit, 0.6 * c.softcap);
    }
    EXPECT_GT(sink_raw / rows, sink_capped / rows + 0.02);
    EXPECT_GT(std::sqrt(num / den), 0.1);
  }
  for (const PlantedNeedle& n : g.needles) {
    EXPECT_GT(model_probs(g, capped, n.query_token, n.query_head)[n.key_position], 0.5);
  }
  // Without a cap, the same seed gives the plain inputs' keys: only the calibrated query terms
  // (sink, needles) change.
  c.softcap = 0;
  GeneratedData plain;
  ASSERT_TRUE(generate(c, &plain).is_ok());
  EXPECT_EQ(plain.k.bytes, g.k.bytes);
  EXPECT_EQ(plain.v.bytes, g.v.bytes);
  EXPECT_NE(plain.q.bytes, g.q.bytes);
}

// A copy head and a retrieval head at 8K, on 128 exactly computed rows each.
class FarHeads : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    GeneratorConfig c;
    c.seq = 8192;
    c.head_dim = 128;
    c.num_q_heads = 2;
    c.num_kv_heads = 1;
    c.seed = 5;
    c.head_types = {HeadType::kCopy, HeadType::kRetrieval};
    data_ = new GeneratedData;
    ASSERT_TRUE(generate(c, data_).is_ok());
  }
  static void TearDownTestSuite() { delete data_; }
  static int64_t window() { return static_cast<int64_t>(std::ceil(0.08 * data_->q.seq)); }
  static GeneratedData* data_;
};
GeneratedData* FarHeads::data_ = nullptr;

TEST_F(FarHeads, CopyHeadAttendsToTheTokenAfterThePreviousOccurrence) {
  const GeneratedData& g = *data_;
  const int64_t n = g.q.seq, w = window();
  ASSERT_FALSE(g.repeats.empty());
  // The repeats cover about 2/3 of the context.
  int64_t covered = 0;
  for (const RepeatSpan& r : g.repeats) {
    EXPECT_GE(r.source, 4);
    EXPECT_LT(r.source, r.target);
    covered += r.length;
  }
  EXPECT_NEAR(static_cast<double>(covered) / n, 2.0 / 3.0, 0.1);
  const std::vector<int64_t> rows = strided_rows(n, 128);
  int on_target = 0;
  std::vector<int64_t> distance;
  std::set<int64_t> argmax_keys;
  double window_mass = 0;
  for (int64_t p : rows) {
    const std::vector<double> P = row_probs(g, p, 0);
    const int64_t top = std::max_element(P.begin(), P.end()) - P.begin();
    argmax_keys.insert(top);
    for (int64_t j = std::max<int64_t>(0, p - w + 1); j <= p; ++j) window_mass += P[j];
    for (const RepeatSpan& r : g.repeats) {
      if (p < r.target || p >= r.target + r.length) continue;
      const int64_t target = r.source + (p - r.target) + 1;
      distance.push_back(p - target);
      on_target += top == target;
    }
  }
  const double share = static_cast<double>(on_target) / static_cast<double>(rows.size());
  std::nth_element(distance.begin(), distance.begin() + distance.size() / 2, distance.end());
  const int64_t median = distance[distance.size() / 2];
  window_mass /= static_cast<double>(rows.size());
  std::printf("copy head: argmax on the copy target in %.2f of the rows (%zu with a target), median distance %lld "
              "(window %lld), window mass %.3f, %zu distinct argmax keys\n",
              share, distance.size(), static_cast<long long>(median), static_cast<long long>(w), window_mass,
              argmax_keys.size());
  EXPECT_GE(share, 0.5);
  EXPECT_GT(median, w);
  EXPECT_LT(window_mass, 0.6);
  EXPECT_GT(argmax_keys.size(), rows.size() / 2);  // no small set of columns covers them
}

TEST_F(FarHeads, RetrievalHeadFetchesFarKeysOfItsOwn) {
  const GeneratedData& g = *data_;
  const int64_t n = g.q.seq, w = window();
  const std::vector<int64_t> rows = strided_rows(n, 128);
  int far_top = 0, counted = 0;
  std::set<int64_t> argmax_keys;
  double top3_far_mass = 0;
  for (int64_t p : rows) {
    if (p < 2 * w) continue;
    const std::vector<double> P = row_probs(g, p, 1);
    ++counted;
    // The heaviest key past the sink (the sink is a column any mask keeps).
    const int64_t top = std::max_element(P.begin() + 4, P.end()) - P.begin();
    argmax_keys.insert(top);
    far_top += top <= p - w;
    // The three heaviest keys outside the window and the sink.
    std::vector<double> far(P.begin() + 4, P.begin() + (p - w + 1));
    std::partial_sort(far.begin(), far.begin() + 3, far.end(), std::greater<>());
    top3_far_mass += far[0] + far[1] + far[2];
  }
  ASSERT_GT(counted, 64);
  top3_far_mass /= counted;
  std::printf("retrieval head: heaviest non-sink key outside the window in %d of %d rows, top-3 far keys' mass %.3f, "
              "%zu distinct heaviest keys\n",
              far_top, counted, top3_far_mass, argmax_keys.size());
  // The keys are uniform over [4, p - 64], so some rows' keys fall inside the window.
  EXPECT_GE(far_top, counted / 2);
  EXPECT_GT(top3_far_mass, 0.3);
  EXPECT_GT(argmax_keys.size(), static_cast<size_t>(counted) * 3 / 4);
}

TEST(Fixtures, Llama3StatisticsShowAStrongSink) {
  if (!have_fixtures()) GTEST_SKIP() << "fixtures not found in " << SAMPLEATTN_FIXTURES_DIR;
  Tensor3 q, k, v;
  ASSERT_TRUE(read_npy(fixture("llama3-8b-layer10-q.npy"), &q).is_ok());
  ASSERT_TRUE(read_npy(fixture("llama3-8b-layer10-k.npy"), &k).is_ok());
  ASSERT_TRUE(read_npy(fixture("llama3-8b-layer10-v.npy"), &v).is_ok());
  EXPECT_EQ(q.dtype, DType::kF16);
  EXPECT_EQ(q.seq, 45);
  EXPECT_EQ(q.heads, 32);
  EXPECT_EQ(q.dim, 128);
  EXPECT_EQ(k.heads, 8);
  EXPECT_EQ(v.heads, 8);
  ProfileOptions o;
  o.rows = 45;
  std::vector<HeadProfile> ps;
  ASSERT_TRUE(profile_attention(q, k, o, &ps).is_ok());
  ASSERT_EQ(ps.size(), 32u);
  // The README: token 0 holds 0.55-0.99 of each head's mass (first 4 tokens here, all rows).
  for (const HeadProfile& p : ps) {
    EXPECT_GT(p.sink_mass, 0.5);
    EXPECT_LE(p.sink_mass, 1.0);
  }
  EXPECT_GT(median_profile(ps).sink_mass, 0.8);
  std::printf("%s", format_profile_table("llama3-8b layer 10 (45 tokens, all rows)", ps).c_str());
}

// Generated (at SAMPLEATTN_CALIBRATION_SEQ, default 16384, 32 q heads / 8 kv heads, d 128)
// next to the Llama-3 fixture; prints both tables and the medians side by side.
TEST(Fixtures, DISABLED_CalibrationTable) {
  GeneratorConfig c;
  c.seq = 16384;
  if (const char* s = std::getenv("SAMPLEATTN_CALIBRATION_SEQ")) c.seq = std::atoll(s);
  c.head_dim = 128;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  c.seed = 1;
  GeneratedData g;
  ASSERT_TRUE(generate(c, &g).is_ok());
  ProfileOptions o;
  o.rows = 64;
  std::vector<HeadProfile> gen;
  ASSERT_TRUE(profile_attention(g.q, g.k, o, &gen).is_ok());
  std::vector<std::string> labels;
  for (const HeadInfo& h : g.heads) labels.push_back(head_type_name(h.type));
  std::printf("%s\n", format_profile_table("generated, seq " + std::to_string(c.seq) + " (64 strided rows)", gen, labels).c_str());
  if (!have_fixtures()) GTEST_SKIP() << "fixtures not found";
  Tensor3 q, k;
  ASSERT_TRUE(read_npy(fixture("llama3-8b-layer10-q.npy"), &q).is_ok());
  ASSERT_TRUE(read_npy(fixture("llama3-8b-layer10-k.npy"), &k).is_ok());
  std::vector<HeadProfile> real;
  o.rows = 45;
  ASSERT_TRUE(profile_attention(q, k, o, &real).is_ok());
  std::printf("%s\n", format_profile_table("llama3-8b layer 10 fixture (45 tokens, all rows)", real).c_str());
  auto summary = [](const char* name, const std::vector<HeadProfile>& ps) {
    std::vector<double> sink, cov, ent;
    for (const auto& p : ps) sink.push_back(p.sink_mass), cov.push_back(p.covered_mass), ent.push_back(p.entropy);
    std::printf("%-10s sink min/median/max %.2f/%.2f/%.2f  covered(8%% win + top 1%%) median %.3f, heads >= 0.95: %d/%zu  entropy median %.2f\n",
                name, quantile(sink, 0), quantile(sink, 0.5), quantile(sink, 1), quantile(cov, 0.5),
                static_cast<int>(std::count_if(cov.begin(), cov.end(), [](double x) { return x >= 0.95; })), ps.size(),
                quantile(ent, 0.5));
  };
  summary("generated", gen);
  summary("fixture", real);
}

}  // namespace
}  // namespace sampleattn::workload
