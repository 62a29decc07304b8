// .npy I/O, metrics on hand-computed cases (plain, and under a model's variants), the model
// variants the tools make themselves (ALiBi slopes, generated sinks), and the mask picture.
#include <gtest/gtest.h>
#include <png.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/dtype_convert.h"
#include "workload/attention_profile.h"
#include "workload/mask_image.h"
#include "workload/metrics.h"
#include "workload/model_variants.h"
#include "workload/npy.h"

namespace sampleattn::workload {
namespace {

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "sampleattn_workload_test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A v1.0 file with the given header dict and `data_bytes` bytes of data.
std::string npy_bytes(const std::string& dict, size_t data_bytes, int major = 1) {
  std::string h = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64 != 0) h.push_back(' ');
  h.push_back('\n');
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  out.push_back(static_cast<char>(h.size() & 0xff));
  out.push_back(static_cast<char>((h.size() >> 8) & 0xff));
  if (major != 1) out.append(2, '\0');
  out += h;
  out.append(data_bytes, '\x01');
  return out;
}

std::vector<float> ramp_values(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(std::sin(0.37 * i) * 3.0 + 0.001 * i);
  return v;
}

class NpyRoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(NpyRoundTrip, SameBytesBack) {
  const DType dt = GetParam();
  Tensor3 t;
  ASSERT_TRUE(tensor_from_f32(5, 3, 64, dt, ramp_values(5 * 3 * 64), &t).is_ok());
  const std::string path = temp_path(std::string("rt_") + dtype_name(dt) + ".npy");
  const Status w = write_npy(path, t);
  ASSERT_TRUE(w.is_ok()) << w.message();
  Tensor3 back;
  const Status r = read_npy(path, &back);
  ASSERT_TRUE(r.is_ok()) << r.message();
  EXPECT_EQ(back.seq, 5);
  EXPECT_EQ(back.heads, 3);
  EXPECT_EQ(back.dim, 64);
  EXPECT_EQ(back.dtype, dt);
  EXPECT_EQ(back.bytes, t.bytes);
  // The header is 64-byte aligned and says what the docs say.
  std::ifstream f(path, std::ios::binary);
  std::string head(128, '\0');
  f.read(head.data(), 128);
  const char* descr = dt == DType::kF32 ? "'<f4'" : dt == DType::kF16 ? "'<f2'" : "'<u2'";
  EXPECT_NE(head.find(descr), std::string::npos);
  EXPECT_NE(head.find("(5, 3, 64)"), std::string::npos);
  EXPECT_EQ(std::filesystem::file_size(path) % 64, t.bytes.size() % 64);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, NpyRoundTrip, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& param_info) {
                           return std::string(dtype_name(param_info.param));
                         });

TEST(Npy, Bf16StoresUpperHalfOfF32) {
  Tensor3 t;
  ASSERT_TRUE(tensor_from_f32(1, 1, 2, DType::kBF16, {1.0f, -2.5f}, &t).is_ok());
  uint16_t bits[2];
  std::memcpy(bits, t.bytes.data(), 4);
  EXPECT_EQ(bits[0], 0x3f80);  // 1.0f = 0x3f800000
  EXPECT_EQ(bits[1], 0xc020);  // -2.5f = 0xc0200000
  EXPECT_FLOAT_EQ(t.at(0, 0, 1), -2.5f);
}

TEST(Npy, ReadsFixtureLayoutAndVersion2) {
  // 2 x 1 x 2 little-endian f2 values 1, 2, 3, 4 in a version 2.0 file.
  std::string bytes = npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 1, 2), }", 0, 2);
  for (float f : {1.f, 2.f, 3.f, 4.f}) {
    const uint16_t h = f32_to_f16(f);
    bytes.push_back(static_cast<char>(h & 0xff));
    bytes.push_back(static_cast<char>(h >> 8));
  }
  bytes += "trailing garbage is ignored";
  const std::string path = temp_path("v2.npy");
  write_bytes(path, bytes);
  Tensor3 t;
  const Status s = read_npy(path, &t);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(t.dtype, DType::kF16);
  EXPECT_FLOAT_EQ(t.at(1, 0, 1), 4.f);
  EXPECT_FLOAT_EQ(t.at(0, 0, 1), 2.f);
}

struct BadCase {
  const char* name;
  std::string bytes;
  sampleattn_status code;
  const char* message_part;
};

TEST(Npy, BadFilesGiveClearErrors) {
  const std::string good_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }";
  std::string wrong_version = npy_bytes(good_dict, 96);
  wrong_version[6] = 9;
  const std::vector<BadCase> cases = {
      {"wrong_magic", std::string("PK\x03\x04 not numpy at all, just some bytes here"), SAMPLEATTN_INVALID_ARGUMENT,
       "magic"},
      {"unsupported_version", wrong_version, SAMPLEATTN_INVALID_ARGUMENT, "version 9"},
      {"f8", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3, 4), }", 192),
       SAMPLEATTN_UNSUPPORTED_DTYPE, "'<f8'"},
      {"big_endian", npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3, 4), }", 96),
       SAMPLEATTN_UNSUPPORTED_DTYPE, "'>f4'"},
      {"fortran", npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", 96),
       SAMPLEATTN_INVALID_ARGUMENT, "Fortran"},
      {"two_d", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6, 4), }", 96),
       SAMPLEATTN_INVALID_SHAPE, "2 dimensions"},
      {"four_d", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3, 4), }", 96),
       SAMPLEATTN_INVALID_SHAPE, "4 dimensions"},
      {"truncated_data", npy_bytes(good_dict, 95), SAMPLEATTN_INVALID_ARGUMENT, "truncated"},
      {"truncated_header", npy_bytes(good_dict, 0).substr(0, 30), SAMPLEATTN_INVALID_ARGUMENT, "truncated"},
      {"no_shape", npy_bytes("{'descr': '<f4', 'fortran_order': False, }", 96), SAMPLEATTN_INVALID_ARGUMENT,
       "shape"},
  };
  for (const BadCase& c : cases) {
    const std::string path = temp_path(std::string("bad_") + c.name + ".npy");
    write_bytes(path, c.bytes);
    Tensor3 t;
    const Status s = read_npy(path, &t);
    EXPECT_FALSE(s.is_ok()) << c.name;
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.message();
    EXPECT_NE(s.message().find(c.message_part), std::string::npos) << c.name << ": " << s.message();
  }
  // The good dict with enough data reads (so the cases above fail for their stated reason).
  const std::string path = temp_path("good.npy");
  write_bytes(path, npy_bytes(good_dict, 96));
  Tensor3 t;
  EXPECT_TRUE(read_npy(path, &t).is_ok());
}

TEST(Npy, MissingFile) {
  Tensor3 t;
  const Status s = read_npy(temp_path("does_not_exist.npy"), &t);
  EXPECT_EQ(s.code(), SAMPLEATTN_INVALID_ARGUMENT);
  EXPECT_NE(s.message().find("cannot open"), std::string::npos) << s.message();
  Tensor3 small;
  ASSERT_TRUE(make_tensor(1, 1, 1, DType::kF32, &small).is_ok());
  EXPECT_FALSE(write_npy("/nonexistent_dir_sampleattn/x.npy", small).is_ok());
}

// ---- Metrics.

Tensor3 tensor_of(int64_t seq, int64_t heads, int64_t dim, const std::vector<float>& v) {
  Tensor3 t;
  EXPECT_TRUE(tensor_from_f32(seq, heads, dim, DType::kF32, v, &t).is_ok());
  return t;
}

TEST(Metrics, RelativeL2ByHand) {
  // Two heads, two tokens, dim 2. Head 0 exact; head 1 off by (3, 4) on a reference of norm 10.
  const Tensor3 ref = tensor_of(2, 2, 2, {6, 8, 0, 0, 0, 0, 6, 8});
  const Tensor3 out = tensor_of(2, 2, 2, {6, 8, 3, 4, 0, 0, 6, 8});
  RelErrorResult r;
  ASSERT_TRUE(rel_l2_error(out, ref, {}, &r).is_ok());
  ASSERT_EQ(r.per_head.size(), 2u);
  EXPECT_DOUBLE_EQ(r.per_head[0], 0.0);
  EXPECT_DOUBLE_EQ(r.per_head[1], 0.5);                       // 5 / 10
  EXPECT_DOUBLE_EQ(r.overall, std::sqrt(25.0 / 200.0));        // 5 / sqrt(200)
  EXPECT_DOUBLE_EQ(r.max, 0.5);
  EXPECT_DOUBLE_EQ(r.median, 0.25);
  EXPECT_DOUBLE_EQ(r.p90, 0.45);
  // Only token 1: head 1 is exact there.
  ASSERT_TRUE(rel_l2_error(out, ref, {1}, &r).is_ok());
  EXPECT_DOUBLE_EQ(r.per_head[1], 0.0);
  EXPECT_FALSE(rel_l2_error(out, tensor_of(1, 2, 2, {0, 0, 0, 0}), {}, &r).is_ok());
}

TEST(Metrics, KeptMassByHand) {
  // dim 1, one head, scale 1: q = 1 everywhere, keys k_j = ln(j + 1), so at row p the
  // probabilities are (j + 1) / sum_{i<=p} (i + 1).
  const int64_t n = 6;
  std::vector<float> qv(n, 1.f), kv(n);
  for (int64_t j = 0; j < n; ++j) kv[j] = static_cast<float>(std::log(j + 1.0));
  const Tensor3 q = tensor_of(n, 1, 1, qv), k = tensor_of(n, 1, 1, kv);
  HeadMask m;
  m.window = 2;
  m.stripes = {0, 4};  // 4 is inside the window for p = 5: counted once
  KeptMassResult r;
  ASSERT_TRUE(kept_mass(q, k, 1.0, {m}, {5, 3}, &r).is_ok());
  // p = 5: weights 1..6 (sum 21), window {4, 5} -> 5 + 6, stripe 0 -> 1: 12/21.
  // p = 3: weights 1..4 (sum 10), window {2, 3} -> 3 + 4, stripe 0 -> 1: 8/10.
  EXPECT_NEAR(r.head_min[0], 12.0 / 21.0, 1e-6);
  EXPECT_NEAR(r.head_mean[0], 0.5 * (12.0 / 21.0 + 0.8), 1e-6);
  EXPECT_NEAR(r.min, 12.0 / 21.0, 1e-6);
  EXPECT_NEAR(r.p1, 12.0 / 21.0 + 0.01 * (0.8 - 12.0 / 21.0), 1e-6);
  EXPECT_EQ(r.rows, 2);
  // A full window keeps everything.
  m.window = n;
  ASSERT_TRUE(kept_mass(q, k, 1.0, {m}, strided_rows(n, 100), &r).is_ok());
  EXPECT_NEAR(r.min, 1.0, 1e-12);
  // Bad masks are rejected.
  m.stripes = {3, 1};
  EXPECT_FALSE(kept_mass(q, k, 1.0, {m}, {5}, &r).is_ok());
  EXPECT_FALSE(kept_mass(q, k, 1.0, {}, {5}, &r).is_ok());
}

TEST(Metrics, DensityByHand) {
  // 4 queries over 4 keys (10 causal pairs); window 2: rows see 1, 2, 2, 2 window keys, and
  // stripe 0 adds a pair for p = 2, 3 (0 <= p - 2): 1 + 2 + 3 + 3 = 9 of 10.
  HeadMask m;
  m.window = 2;
  m.stripes = {0};
  EXPECT_DOUBLE_EQ(mask_density(m, 4, 4), 9.0 / 10.0);
  // Chunked: 2 queries at positions 2, 3: causal 3 + 4 = 7; computed 3 + 3 = 6.
  EXPECT_DOUBLE_EQ(mask_density(m, 2, 4), 6.0 / 7.0);
  HeadMask dense;
  dense.window = 4;
  EXPECT_DOUBLE_EQ(mask_density({m, dense}, 4, 4), (9.0 + 10.0) / 20.0);
}

TEST(Metrics, MasksFromStats) {
  sampleattn_head_stats hs[2] = {};
  hs[0].window = 3;
  hs[1].dense = 1;
  const int32_t offsets[3] = {0, 2, 2};
  const int32_t stripes[2] = {1, 5};
  const auto m = masks_from_stats(hs, offsets, stripes, 2, 100);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].window, 3);
  EXPECT_EQ(m[0].stripes, (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(m[1].window, 100);
}

TEST(Metrics, NeedleRecall) {
  // Output rows: token 1 head 0 along e0 (retrieved), token 1 head 1 mostly e1 with some e0 (not
  // the e0 needle).
  const Tensor3 o = tensor_of(2, 2, 2, {0, 0, 0, 0, 2, 0.1f, 1, 2});
  std::vector<PlantedNeedle> needles = {{1, 0, 0, {1, 0}}, {1, 1, 0, {1, 0}}};
  NeedleResult r;
  ASSERT_TRUE(needle_recall(o, needles, 0.5, &r).is_ok());
  EXPECT_NEAR(r.cosine[0], 2 / std::sqrt(4.01), 1e-6);
  EXPECT_NEAR(r.cosine[1], 1 / std::sqrt(5.0), 1e-6);
  EXPECT_EQ(r.retrieved[0], 1);
  EXPECT_EQ(r.retrieved[1], 0);
  EXPECT_DOUBLE_EQ(r.recall, 0.5);
  needles[0].query_head = 7;
  EXPECT_FALSE(needle_recall(o, needles, 0.5, &r).is_ok());
}

TEST(Metrics, NeedleRecallOfAChunk) {
  // The same two output rows as the last two positions of 10 (a chunk of a prefill: q_offset 8):
  // a needle asked at position 9 reads row 1; one asked at position 3, before the chunk, is
  // skipped; one past the chunk's rows, or a negative offset, is an error.
  const Tensor3 o = tensor_of(2, 2, 2, {0, 0, 0, 0, 2, 0.1f, 1, 2});
  std::vector<PlantedNeedle> needles = {{9, 0, 0, {1, 0}}, {3, 1, 0, {0, 1}}, {9, 1, 0, {1, 0}}};
  NeedleResult r;
  ASSERT_TRUE(needle_recall(o, needles, 0.5, &r, kNoModelWindow, 8).is_ok());
  ASSERT_EQ(r.cosine.size(), 2u);
  EXPECT_NEAR(r.cosine[0], 2 / std::sqrt(4.01), 1e-6);
  EXPECT_NEAR(r.cosine[1], 1 / std::sqrt(5.0), 1e-6);
  EXPECT_EQ(r.counted, 2);
  EXPECT_DOUBLE_EQ(r.recall, 0.5);
  needles[0].query_token = 10;
  EXPECT_FALSE(needle_recall(o, needles, 0.5, &r, kNoModelWindow, 8).is_ok());
  EXPECT_FALSE(needle_recall(o, {}, 0.5, &r, kNoModelWindow, -1).is_ok());
}

// ---- Under a model's variants (ABI 1.3).

// dim 1, one head, scale 1, q = 1, k_j = ln(j + 1): plain row weights j + 1, as above.
struct LogRampHead {
  int64_t n;
  Tensor3 q, k;
  explicit LogRampHead(int64_t n_) : n(n_) {
    std::vector<float> qv(n, 1.f), kv(n);
    for (int64_t j = 0; j < n; ++j) kv[j] = static_cast<float>(std::log(j + 1.0));
    q = tensor_of(n, 1, 1, qv);
    k = tensor_of(n, 1, 1, kv);
  }
  const float* keys() const { return static_cast<const float*>(k.data()); }
};

TEST(ModelMetrics, RowProbabilitiesOfEachVariantByHand) {
  // Keys are ln(j + 1) rounded to float: probabilities within 1e-6 of the exact fractions.
  const LogRampHead r(8);
  const float one = 1.f;
  std::vector<double> P;
  // A window of 2: the row at p = 5 sees keys 3, 4, 5 (weights 4, 5, 6), nothing before.
  ModelVariants window;
  window.window_left = 2;
  model_row_probabilities(&one, r.keys(), 1, 1, 5, 1.0, window, 0.0, &P);
  ASSERT_EQ(P.size(), 6u);
  for (int j = 0; j < 3; ++j) EXPECT_EQ(P[j], 0.0);
  EXPECT_NEAR(P[3], 4.0 / 15, 1e-6);
  EXPECT_NEAR(P[5], 6.0 / 15, 1e-6);
  EXPECT_NEAR(model_row_log_partition(&one, r.keys(), 1, 1, 5, 1.0, window, 0.0), std::log(15.0), 1e-6);
  // A cap of 1: weights exp(tanh(ln(j + 1))).
  ModelVariants cap;
  cap.softcap = 1.0;
  model_row_probabilities(&one, r.keys(), 1, 1, 3, 1.0, cap, 0.0, &P);
  double z = 0;
  for (int j = 0; j <= 3; ++j) z += std::exp(std::tanh(std::log(j + 1.0)));
  for (int j = 0; j <= 3; ++j) EXPECT_NEAR(P[j], std::exp(std::tanh(std::log(j + 1.0))) / z, 1e-6) << j;
  // ALiBi slope ln 2: weights (j + 1) / 2^(p - j).
  ModelVariants alibi;
  alibi.alibi_slopes = {static_cast<float>(std::log(2.0))};
  model_row_probabilities(&one, r.keys(), 1, 1, 2, 1.0, alibi, alibi.alibi_slopes[0], &P);
  z = 1.0 / 4 + 2.0 / 2 + 3.0;
  EXPECT_NEAR(P[0], 0.25 / z, 1e-6);
  EXPECT_NEAR(P[2], 3.0 / z, 1e-6);
}

TEST(ModelMetrics, KeptMassCountsOnlyWhatTheModelShows) {
  const LogRampHead r(8);
  HeadMask m;
  m.window = 2;
  m.stripes = {0, 3};
  ModelVariants model;
  model.window_left = 3;
  KeptMassResult kept;
  // p = 7 sees keys 4..7 (weights 5..8, sum 26): window {6, 7} -> 7 + 8; stripe 0 is older than
  // the model's window (not counted), stripe 3 too (3 < 7 - 3). 15/26.
  ASSERT_TRUE(kept_mass(r.q, r.k, 1.0, {m}, {7}, &kept, model).is_ok());
  EXPECT_NEAR(kept.min, 15.0 / 26, 1e-6);
  // p = 5 sees keys 2..5 (weights 3..6, sum 18): window {4, 5} -> 5 + 6, stripe 3 -> 4. 15/18.
  ASSERT_TRUE(kept_mass(r.q, r.k, 1.0, {m}, {5}, &kept, model).is_ok());
  EXPECT_NEAR(kept.min, 15.0 / 18, 1e-6);
  // Without the model window the same mask keeps a smaller share of a wider row: p = 5 sees
  // weights 1..6 (sum 21): window 5 + 6, stripes 1 + 4. 16/21.
  ASSERT_TRUE(kept_mass(r.q, r.k, 1.0, {m}, {5}, &kept).is_ok());
  EXPECT_NEAR(kept.min, 16.0 / 21, 1e-6);
  // A mask covering the model's window keeps everything, whatever the cap and slopes.
  model.softcap = 0.5;
  model.alibi_slopes = {0.3f};
  m.window = 4;
  ASSERT_TRUE(kept_mass(r.q, r.k, 1.0, {m}, strided_rows(8, 8), &kept, model).is_ok());
  EXPECT_NEAR(kept.min, 1.0, 1e-12);
  model.alibi_slopes = {0.3f, 0.3f};
  EXPECT_FALSE(kept_mass(r.q, r.k, 1.0, {m}, {5}, &kept, model).is_ok());
}

TEST(ModelMetrics, DensityAndDenseMasksWithinTheModelWindow) {
  // 6 queries over 6 keys, model window 2 (3 keys a row): 1 + 2 + 3 + 3 + 3 + 3 = 15 pairs.
  // Window 2 (1 + 2 + 2 + 2 + 2 + 2 = 11 pairs) and stripe 1, visible to p = 3 only (p - 2 >= 1
  // and p - 2 <= 1): 12 of 15.
  HeadMask m;
  m.window = 2;
  m.stripes = {1};
  EXPECT_DOUBLE_EQ(mask_density(m, 6, 6, 2), 12.0 / 15.0);
  sampleattn_head_stats hs[1] = {};
  hs[0].dense = 1;
  hs[0].window = 6;
  const int32_t offsets[2] = {0, 0};
  const auto masks = masks_from_stats(hs, offsets, nullptr, 1, 6, 2);
  EXPECT_EQ(masks[0].window, 3);  // all the model shows
  EXPECT_DOUBLE_EQ(mask_density(masks, 6, 6, 2), 1.0);
  EXPECT_EQ(masks_from_stats(hs, offsets, nullptr, 1, 6)[0].window, 6);
}

TEST(ModelMetrics, NeedleRecallCountsOnlyNeedlesTheWindowShows) {
  // Token 9, head 0 points along e0. Needles at keys 2 (older than the window of 4: hidden) and 6.
  std::vector<float> ov(10 * 1 * 2, 0.f);
  ov[9 * 2] = 1.f;
  const Tensor3 o = tensor_of(10, 1, 2, ov);
  const std::vector<PlantedNeedle> needles = {{9, 0, 2, {0, 1}}, {9, 0, 6, {1, 0}}};
  NeedleResult r;
  ASSERT_TRUE(needle_recall(o, needles, 0.5, &r, 4).is_ok());
  EXPECT_EQ(r.visible, (std::vector<char>{0, 1}));
  EXPECT_EQ(r.counted, 1);
  EXPECT_DOUBLE_EQ(r.recall, 1.0);  // the hidden one, missed, does not count
  ASSERT_TRUE(needle_recall(o, needles, 0.5, &r).is_ok());
  EXPECT_EQ(r.counted, 2);
  EXPECT_DOUBLE_EQ(r.recall, 0.5);
  ASSERT_TRUE(needle_recall(o, {needles[0]}, 0.5, &r, 4).is_ok());
  EXPECT_EQ(r.counted, 0);
  EXPECT_DOUBLE_EQ(r.recall, 1.0);
}

// BLOOM's build_alibi_tensor, restated in its own terms.
std::vector<double> bloom_slopes(int n) {
  const int closest = 1 << static_cast<int>(std::floor(std::log2(n)));
  const double base = std::pow(2.0, -std::pow(2.0, -(std::log2(closest) - 3)));
  std::vector<double> s;
  for (int p = 1; p <= closest; ++p) s.push_back(std::pow(base, p));
  if (closest != n) {
    const double extra = std::pow(2.0, -std::pow(2.0, -(std::log2(2.0 * closest) - 3)));
    for (int p = 1; p < 1 + 2 * std::min(closest, n - closest); p += 2) s.push_back(std::pow(extra, p));
  }
  return s;
}

TEST(ModelVariants, StandardAlibiSlopes) {
  const std::vector<float> eight = standard_alibi_slopes(8);
  ASSERT_EQ(eight.size(), 8u);
  for (int h = 0; h < 8; ++h) EXPECT_EQ(eight[h], std::ldexp(1.f, -(h + 1)));
  for (int n = 1; n <= 96; ++n) {
    const std::vector<float> got = standard_alibi_slopes(n);
    const std::vector<double> want = bloom_slopes(n);
    ASSERT_EQ(got.size(), want.size()) << n;
    for (int h = 0; h < n; ++h) EXPECT_NEAR(got[h], want[h], 1e-6 * want[h]) << n << " heads, head " << h;
  }
  EXPECT_NEAR(standard_alibi_slopes(12)[8], std::pow(2.0, -0.5), 1e-7);  // 8 + every other of 16
  EXPECT_TRUE(standard_alibi_slopes(0).empty());
}

TEST(ModelVariants, ApplyToParamsAndTheOracle) {
  ModelVariants m;
  m.window_left = 100;
  m.softcap = 30;
  m.alibi_slopes = {0.5f, 0.25f};
  m.sinks = {1.f, -INFINITY};
  sampleattn_params p;
  sampleattn_params_init(&p);
  m.apply_to(&p);
  EXPECT_EQ(p.window_left, 100);
  EXPECT_EQ(p.softcap, 30.f);
  EXPECT_EQ(p.alibi_slopes, m.alibi_slopes.data());
  EXPECT_EQ(p.sinks, m.sinks.data());
  reference::Call call;
  m.apply_to(&call);
  EXPECT_EQ(call.window_left, 100);
  EXPECT_EQ(call.softcap, 30.0);
  EXPECT_EQ(call.alibi_slopes, m.alibi_slopes);
  EXPECT_EQ(call.sinks, m.sinks);
  const ModelVariants none;
  EXPECT_FALSE(none.any());
  none.apply_to(&p);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_EQ(p.softcap, 0.f);
  EXPECT_EQ(p.alibi_slopes, nullptr);
  EXPECT_EQ(p.sinks, nullptr);
}

TEST(ModelVariants, GeneratedSinksTakeTheirShareOfTheRows) {
  // 2 query heads over 1 kv head, 64 tokens of smooth values: each head's sink, against the
  // median of its rows' partitions, takes a share in [0.05, 0.5).
  const int64_t n = 64, d = 4;
  std::vector<float> qv(n * 2 * d), kv(n * d);
  for (size_t i = 0; i < qv.size(); ++i) qv[i] = static_cast<float>(std::sin(0.7 * i));
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = static_cast<float>(std::cos(0.3 * i));
  const Tensor3 q = tensor_of(n, 2, d, qv), k = tensor_of(n, 1, d, kv);
  ModelVariants model;
  model.window_left = 20;
  model.softcap = 2.0;
  std::vector<float> sinks, again, other;
  ASSERT_TRUE(generated_sinks(q, k, 0.5, model, 7, &sinks).is_ok());
  ASSERT_TRUE(generated_sinks(q, k, 0.5, model, 7, &again).is_ok());
  ASSERT_TRUE(generated_sinks(q, k, 0.5, model, 8, &other).is_ok());
  ASSERT_EQ(sinks.size(), 2u);
  EXPECT_EQ(sinks, again);
  EXPECT_NE(sinks, other);
  for (int h = 0; h < 2; ++h) {
    std::vector<double> log_z;
    const std::vector<float> qh = head_to_f32(q, h), kh = head_to_f32(k, 0);
    for (int64_t row : strided_rows(n, kGeneratedSinkRows)) {
      log_z.push_back(model_row_log_partition(qh.data() + row * d, kh.data(), d, d, row, 0.5, model, 0.0));
    }
    const double share = 1.0 / (1.0 + std::exp(quantile(log_z, 0.5) - sinks[h]));
    EXPECT_GE(share, kGeneratedSinkShareMin - 1e-6) << h;
    EXPECT_LT(share, kGeneratedSinkShareMax + 1e-6) << h;
  }
  EXPECT_FALSE(generated_sinks(q, tensor_of(n, 3, d, std::vector<float>(n * 3 * d)), 0.5, model, 7, &sinks).is_ok());
}

TEST(Metrics, Quantile) {
  EXPECT_DOUBLE_EQ(quantile({3, 1, 2}, 0.5), 2);
  EXPECT_DOUBLE_EQ(quantile({1, 2}, 0.9), 1.9);
  EXPECT_DOUBLE_EQ(quantile({}, 0.5), 0);
}

TEST(Profile, HandComputedHead) {
  // dim 1, scale 1: row p attends with weights (j + 1) as above; 8 keys, window 8% -> 1 key,
  // top 1% -> 1 column.
  const int64_t n = 8;
  std::vector<float> qv(n, 1.f), kv(n);
  for (int64_t j = 0; j < n; ++j) kv[j] = static_cast<float>(std::log(j + 1.0));
  ProfileOptions o;
  o.rows = 1;  // only the last row
  o.scale = 1.0;
  std::vector<HeadProfile> ps;
  ASSERT_TRUE(profile_attention(tensor_of(n, 1, 1, qv), tensor_of(n, 1, 1, kv), o, &ps).is_ok());
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NEAR(ps[0].sink_mass, 10.0 / 36.0, 1e-6);  // keys 0..3: 1+2+3+4
  EXPECT_NEAR(ps[0].window_mass, 8.0 / 36.0, 1e-6);
  EXPECT_NEAR(ps[0].top_columns_mass, 8.0 / 36.0, 1e-6);  // the heaviest column is the last
  double ent = 0;
  for (int j = 1; j <= 8; ++j) ent -= (j / 36.0) * std::log(j / 36.0);
  EXPECT_NEAR(ps[0].entropy, ent, 1e-6);
}

// ---- Mask picture.

TEST(MaskImage, WritesAPngOfTheRightSizeWithTheMaskDrawn) {
  const int64_t n = 300;
  const int d = 64;
  std::vector<float> q(n * d), k(n * d);
  for (int64_t i = 0; i < n * d; ++i) {
    q[i] = static_cast<float>(std::sin(0.01 * i));
    k[i] = static_cast<float>(std::cos(0.013 * i));
  }
  MaskImageOptions o;
  o.max_pixels = 100;
  RgbImage img;
  ASSERT_TRUE(render_mask_rgb(q.data(), n, k.data(), n, d, 30, {5, 100}, o, &img).is_ok());
  EXPECT_EQ(img.width, 100);
  EXPECT_EQ(img.height, 100);
  auto px = [&](int x, int y) { return img.pixels.data() + (static_cast<size_t>(y) * img.width + x) * 3; };
  // Above the diagonal: dark grey.
  EXPECT_EQ(px(90, 10)[0], 40);
  o.draw_mask = false;
  RgbImage plain;
  ASSERT_TRUE(render_mask_rgb(q.data(), n, k.data(), n, d, 30, {5, 100}, o, &plain).is_ok());
  auto plain_px = [&](int x, int y) { return plain.pixels.data() + (static_cast<size_t>(y) * plain.width + x) * 3; };
  // The window band on the diagonal is tinted cyan: less red, more blue than the plain heat map.
  EXPECT_LE(px(80, 80)[0], plain_px(80, 80)[0]);
  EXPECT_GT(px(80, 80)[2], plain_px(80, 80)[2]);
  // The stripe at key 100 (pixel column 33) below the window: magenta (red and blue high).
  EXPECT_GT(px(33, 90)[0], 90);
  EXPECT_GT(px(33, 90)[2], 80);
  EXPECT_NE(std::memcmp(px(33, 90), plain_px(33, 90), 3), 0);
  // Outside the mask (key 50, row 90) the pixel is the plain heat map.
  EXPECT_EQ(std::memcmp(px(17, 90), plain_px(17, 90), 3), 0);

  const std::string path = temp_path("mask.png");
  o.draw_mask = true;
  ASSERT_TRUE(render_mask_png(path, q.data(), n, k.data(), n, d, 30, {5, 100}, o).is_ok());
  png_image back;
  std::memset(&back, 0, sizeof back);
  back.version = PNG_IMAGE_VERSION;
  ASSERT_TRUE(png_image_begin_read_from_file(&back, path.c_str()));
  EXPECT_EQ(back.width, 100u);
  EXPECT_EQ(back.height, 100u);
  png_image_free(&back);

  EXPECT_FALSE(write_png("/nonexistent_dir_sampleattn/m.png", img).is_ok());
  EXPECT_FALSE(render_mask_rgb(q.data(), n, k.data(), n, d, 30, {100, 5}, o, &img).is_ok());
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Noise does not compress: a 256x256 picture is about 192 KiB of PNG.
RgbImage noise_image(int side) {
  RgbImage img;
  img.width = img.height = side;
  img.pixels.resize(static_cast<size_t>(side) * side * 3);
  uint32_t x = 12345;
  for (uint8_t& p : img.pixels) {
    x = x * 1664525u + 1013904223u;
    p = static_cast<uint8_t>(x >> 24);
  }
  return img;
}

// As for .npy files (npy_hostile_test): a PNG write that fails part way (here: the file size
// limit, as a full disk or quota would) leaves the previous picture intact and no temporary file.
TEST(MaskImage, FailedWriteKeepsThePreviousPicture) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("sampleattn_png_write_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "mask.png").string();
  ASSERT_TRUE(write_png(path, noise_image(16)).is_ok());
  const std::string before = file_bytes(path);
  ASSERT_FALSE(before.empty());

  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const Status s = write_png(path, noise_image(256));
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();

  EXPECT_EQ(file_bytes(path), before);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files += entry.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 1) << "a temporary file was left behind";
  std::filesystem::remove_all(dir);
}

TEST(MaskImage, ReplacesAnExistingPictureAndKeepsItsMode) {
  const std::string path = temp_path("replace.png");
  ASSERT_TRUE(write_png(path, noise_image(16)).is_ok());
  EXPECT_EQ(std::filesystem::status(path).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                std::filesystem::perms::group_read | std::filesystem::perms::others_read)
      << "a new picture is rw-r--r--, not mkstemp's rw-------";
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  ASSERT_TRUE(write_png(path, noise_image(32)).is_ok());
  EXPECT_EQ(std::filesystem::status(path).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  png_image back;
  std::memset(&back, 0, sizeof back);
  back.version = PNG_IMAGE_VERSION;
  ASSERT_TRUE(png_image_begin_read_from_file(&back, path.c_str()));
  EXPECT_EQ(back.width, 32u);
  png_image_free(&back);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace sampleattn::workload
