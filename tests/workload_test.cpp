// .npy I/O, metrics on hand-computed cases, and the mask picture.
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
