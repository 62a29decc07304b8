// Kernel table tests: every table of the dispatch chain (skipped when the CPU lacks its ISA), both
// flash paths (f32; bf16 when the table has it), every entry, against double-precision oracles
// and against the scalar table. Sizes are equal to, smaller than, larger than and not multiples
// of each ISA's register block and tile.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "simd/dispatch.h"
#include "simd/cpu_features.h"
#include "simd/flash/entry_points.h"
#include "core/dtype_convert.h"
#include "core/problem.h"
#include "core/row_scan.h"
#include "simd/kernels.h"

namespace sampleattn {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr DType kDTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// 64-byte aligned, exactly `bytes` long (so the address sanitizer sees any overrun).
struct Buffer {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> mem;
  size_t bytes = 0;
  explicit Buffer(size_t n) : mem(std::aligned_alloc(64, std::max<size_t>(n, 64))), bytes(n) {
    std::memset(mem.get(), 0xcd, std::max<size_t>(n, 64));
  }
  void* get() const { return mem.get(); }
};

// A row-major matrix stored in a dtype, with the exact values the kernels read.
struct Source {
  DType dtype;
  int rows = 0;
  int64_t stride = 0;
  std::vector<float> f32;
  std::vector<uint16_t> half;
  std::vector<double> exact;
  const void* base() const {
    return dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : static_cast<const void*>(half.data());
  }
  const void* row_ptr(int64_t row) const {
    return static_cast<const char*>(base()) + row * stride * dtype_size(dtype);
  }
  double at(int64_t row, int c) const { return exact[row * stride + c]; }
};

Source make_source(DType t, int rows, int d, std::mt19937& rng, double amplitude) {
  Source s;
  s.dtype = t;
  s.rows = rows;
  s.stride = d + 8;  // a row stride larger than d
  std::normal_distribution<float> dist(0.0f, static_cast<float>(amplitude));
  const size_t count = static_cast<size_t>(rows) * s.stride;
  s.exact.resize(count);
  if (t == DType::kF32) s.f32.resize(count); else s.half.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const float x = dist(rng);
    switch (t) {
      case DType::kF32: s.f32[i] = x; s.exact[i] = x; break;
      case DType::kF16: s.half[i] = f32_to_f16(x); s.exact[i] = f16_to_f32(s.half[i]); break;
      case DType::kBF16: s.half[i] = f32_to_bf16(x); s.exact[i] = bf16_to_f32(s.half[i]); break;
      case DType::kI8:
      case DType::kFP8: break;  // quantized sources: see PackDequantizes
    }
  }
  return s;
}

float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

struct Param {
  Isa isa;
  Precision precision;
};

std::string param_name(const testing::TestParamInfo<Param>& info) {
  return std::string(isa_name(info.param.isa)) + "_" + precision_name(info.param.precision);
}

struct AttendCase;

class KernelsTest : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    table_ = kernel_table_for(GetParam().isa);
    if (table_ == nullptr) GTEST_SKIP() << isa_name(GetParam().isa) << " not supported by this CPU";
    path_ = table_->path(GetParam().precision);
    if (path_ == nullptr) GTEST_SKIP() << "no " << precision_name(GetParam().precision) << " path in " << table_->name;
    scalar_ = kernel_table_for(Isa::kScalar);
    ASSERT_NE(scalar_, nullptr);
  }
  bool bf16() const { return GetParam().precision == Precision::kBF16; }
  void expect_attend_matches(const std::vector<AttendCase>& cases, const char* label);
  // Tile sizes to try: around 1, vector and register block edges, and the table's own tiles.
  std::vector<std::pair<int, int>> sizes() const {
    // The table's tile, with its rows capped at 256: a kernel's own row blocks are at most 32 rows
    // (14 on avx512, 32 on amx), so 256 rows reach every path a longer task does (several full
    // blocks, the amx pipeline across them, a short last block), and the avx512 and amx tables'
    // 1024-row tasks would only multiply the oracle's work (the ASan stage of CI).
    const int br = std::min(table_->block_rows, 256), kt = table_->key_tile;
    return {{1, 1}, {7, 16}, {16, 17}, {17, 100}, {14, 32}, {15, 33}, {29, 7}, {br, kt}, {br + 3, kt - 5}, {br - 1, 64}};
  }

  const KernelTable* table_ = nullptr;
  const KernelTable* scalar_ = nullptr;
  const FlashPath* path_ = nullptr;
};

TEST_P(KernelsTest, TableIsConsistent) {
  EXPECT_EQ(path_->q_elem_bytes, bf16() ? 2 : 4);
  EXPECT_EQ(table_->isa, GetParam().isa);
  EXPECT_STREQ(table_->name, isa_name(GetParam().isa));
  EXPECT_GT(table_->block_rows, 0);
  EXPECT_GT(table_->key_tile, 0);
  for (auto* f : {(void*)path_->packed_bytes, (void*)path_->scratch_bytes, (void*)path_->pack_q,
                  (void*)path_->pack_k, (void*)path_->pack_v, (void*)path_->attend, (void*)path_->scores,
                  (void*)table_->row_stats, (void*)table_->accumulate_columns, (void*)table_->bucket_masses,
                  (void*)table_->store_rows,
                  (void*)table_->modify_scores}) {
    EXPECT_NE(f, nullptr);
  }
  for (int d : kSupportedHeadDims) {
    for (int rows : {1, 7, 16, 17, 100, 256}) {
      EXPECT_EQ(path_->packed_bytes(rows, d) % 64, 0u);
      EXPECT_GE(path_->packed_bytes(rows, d), size_t(rows) * d * (bf16() ? 2 : 4));
      EXPECT_EQ(path_->scratch_bytes(rows, rows) % 64, 0u);
    }
  }
}

TEST_P(KernelsTest, ScoresMatchOracle) {
  std::mt19937 rng(1234);
  int index = 0;
  for (int d : kSupportedHeadDims) {
    for (auto [m, n] : sizes()) {
      const DType dt = kDTypes[index++ % 3];
      const Source q = make_source(dt, m, d, rng, 1.0);
      const Source k = make_source(dt, n, d, rng, 1.0);
      const float scale = 0.3f;
      Buffer qp(path_->packed_bytes(m, d)), kp(path_->packed_bytes(n, d));
      path_->pack_q(RowSource{q.base(), dt, q.stride, nullptr}, m, d, pack_q_scale(*path_, scale), qp.get());
      path_->pack_k(RowSource{k.base(), dt, k.stride, nullptr}, n, d, kp.get());
      const int64_t lds = n + 3;
      std::vector<float> s(static_cast<size_t>(m) * lds, 12345.0f);
      path_->scores(qp.get(), m, kp.get(), n, d, s.data(), lds, qk_scale(*path_, scale));
      for (int r = 0; r < m; ++r) {
        for (int j = 0; j < lds; ++j) {
          const float got = s[r * lds + j];
          if (j >= n) {
            ASSERT_EQ(got, 12345.0f) << "wrote past n: r=" << r << " j=" << j;
            continue;
          }
          // The f32 path scales Q before its products; the bf16 path rounds Q and K to bf16 and
          // scales the f32 product (kernels.h, defer_scale).
          double ref = 0, mag = 0;
          for (int c = 0; c < d; ++c) {
            double qc = static_cast<float>(q.at(r, c)) * scale, kc = k.at(j, c);
            if (bf16()) {
              qc = static_cast<double>(round_bf16(static_cast<float>(q.at(r, c)))) * scale;
              kc = round_bf16(static_cast<float>(kc));
            }
            ref += qc * kc;
            mag += std::abs(qc * kc);
          }
          ASSERT_NEAR(got, ref, 1e-6 * mag + 1e-30) << "d=" << d << " m=" << m << " n=" << n << " r=" << r << " j=" << j
                                                    << " " << dtype_name(dt);
        }
      }
    }
  }
}

// The mask of the multi-tile attend test: row r sees global keys [lo_r, hi_r).
enum class Spans { kNone, kCausal, kWindows };

// The score variants of an attend case (ScoreModArgs): none, a softcap, ALiBi, or both.
enum class Mods { kNone, kSoftcap, kAlibi, kBoth };
bool has_softcap(Mods m) { return m == Mods::kSoftcap || m == Mods::kBoth; }
bool has_alibi(Mods m) { return m == Mods::kAlibi || m == Mods::kBoth; }

struct AttendCase {
  int d, m, n, tiles;
  DType dtype;
  Spans spans;
  bool gather;
  double q_amplitude;
  int dv = 0;  // the value head size; 0 = d
  Mods mods = Mods::kNone;
  double softcap = 0;  // natural-log units, with Mods::kSoftcap / kBoth
  int value_dim() const { return dv > 0 ? dv : d; }
};

struct AttendState {
  std::vector<float> row_max, row_sum, acc;
};

struct AttendInputs {
  Source q, k, v;
  std::vector<int32_t> q_rows, kv_rows;  // gather indices (identity when not gathering)
  std::vector<int64_t> q_offsets, k_offsets, v_offsets;  // the same as element offsets
  std::vector<int32_t> lo, hi;           // global spans
  int keys = 0;
  float scale = 0;
  // The score variants in log2 units, as the kernels get them: the cap, a slope per row (rows
  // differ, as the heads of a kv group do), query positions and key positions (increasing with
  // gaps, like stripe columns; rows sit before, among and after them).
  float softcap_log2 = 0;
  std::vector<float> slopes_log2;
  std::vector<int32_t> row_pos, key_pos;
};

constexpr double kLog2e = 1.4426950408889634;

// The modified score of row r and global key j in double, from the definition (core/score_mod.h
// in log2 units: cap * tanh(s / cap), then minus slope * |p - j|).
double oracle_modified(const AttendInputs& in, int r, int j, double s) {
  if (in.softcap_log2 > 0) s = in.softcap_log2 * std::tanh(s / in.softcap_log2);
  if (!in.slopes_log2.empty()) s -= in.slopes_log2[r] * std::abs(static_cast<double>(in.row_pos[r]) - in.key_pos[j]);
  return s;
}

AttendInputs make_inputs(const AttendCase& c, std::mt19937& rng) {
  AttendInputs in;
  in.keys = c.n * c.tiles - (c.tiles > 1 && c.n > 4 ? 3 : 0);  // a short last tile
  const int q_source_rows = c.gather ? c.m + 5 : c.m;
  const int kv_source_rows = c.gather ? in.keys + 9 : in.keys;
  in.q = make_source(c.dtype, q_source_rows, c.d, rng, c.q_amplitude);
  in.k = make_source(c.dtype, kv_source_rows, c.d, rng, 1.0);
  in.v = make_source(c.dtype, kv_source_rows, c.value_dim(), rng, 1.0);
  in.q_rows.resize(c.m);
  in.kv_rows.resize(in.keys);
  for (int r = 0; r < c.m; ++r) in.q_rows[r] = c.gather ? (r * 7 + 3) % q_source_rows : r;
  std::vector<int32_t> perm(kv_source_rows);
  for (int i = 0; i < kv_source_rows; ++i) perm[i] = i;
  if (c.gather) std::shuffle(perm.begin(), perm.end(), rng);
  for (int j = 0; j < in.keys; ++j) in.kv_rows[j] = perm[j];
  for (int r = 0; r < c.m; ++r) in.q_offsets.push_back(in.q_rows[r] * in.q.stride);
  for (int j = 0; j < in.keys; ++j) {
    in.k_offsets.push_back(in.kv_rows[j] * in.k.stride);
    in.v_offsets.push_back(in.kv_rows[j] * in.v.stride);
  }
  in.scale = static_cast<float>(1.0 / std::sqrt(c.d) * kLog2e);
  in.lo.assign(c.m, 0);
  in.hi.assign(c.m, in.keys);
  std::uniform_int_distribution<int> key(0, in.keys);
  for (int r = 0; r < c.m; ++r) {
    if (c.spans == Spans::kCausal) {
      in.hi[r] = std::min(in.keys, 1 + (r * in.keys) / std::max(1, c.m - 1) - (r % 3));
      if (r == 0) in.hi[r] = 0;  // a row that sees nothing
    } else if (c.spans == Spans::kWindows) {
      int a = key(rng), b = key(rng);
      if (a > b) std::swap(a, b);
      if (r % 5 == 1) b = a;  // empty everywhere
      if (r % 5 == 2) { a = 0; b = in.keys; }
      in.lo[r] = a;
      in.hi[r] = b;
    }
  }
  if (has_softcap(c.mods)) in.softcap_log2 = static_cast<float>(c.softcap * kLog2e);
  if (has_alibi(c.mods)) {
    std::uniform_int_distribution<int> gap(1, 6);
    int32_t pos = gap(rng);
    for (int j = 0; j < in.keys; ++j) {
      in.key_pos.push_back(pos);
      pos += gap(rng) + (j % 32 == 31 ? 40 : 0);  // runs of stripes, then a jump
    }
    // Each row a few positions from a key it sees (after its last one, like a causal row, or
    // among and before its keys), as in a model: a row whose every key is thousands of positions
    // away has scores of magnitude ~1e3 whose f32 rounding alone exceeds the tolerance.
    std::uniform_int_distribution<int32_t> offset(-8, 8);
    for (int r = 0; r < c.m; ++r) {
      const int hi = std::max(1, std::min(in.hi[r], in.keys)), lo = std::min(std::max(in.lo[r], 0), hi - 1);
      const int near = r % 3 == 0 ? hi - 1 : lo + (r * 7919) % (hi - lo);
      in.row_pos.push_back(std::max(0, in.key_pos[near] + (r % 3 == 0 ? std::abs(offset(rng)) : offset(rng))));
      in.slopes_log2.push_back(static_cast<float>(std::exp2(-1.0 - r % 8) * kLog2e));  // ALiBi's geometric slopes
    }
  }
  return in;
}

// Runs the tile loop with `path`, checking that rows with empty spans stay untouched.
AttendState run_attend(const FlashPath& path, const AttendCase& c, const AttendInputs& in) {
  const int d = c.d, dv = c.value_dim(), m = c.m;
  AttendState st;
  st.row_max.assign(m, kNegInf);
  st.row_sum.assign(m, 0.0f);
  st.acc.assign(static_cast<size_t>(m) * dv, 0.0f);
  Buffer qp(path.packed_bytes(m, d));
  RowSource qs{in.q.base(), c.dtype, in.q.stride, c.gather ? in.q_offsets.data() : nullptr};
  path.pack_q(qs, m, d, pack_q_scale(path, in.scale), qp.get());
  for (int t0 = 0; t0 < in.keys; t0 += c.n) {
    const int n = std::min(c.n, in.keys - t0);
    Buffer kp(path.packed_bytes(n, d)), vp(path.packed_bytes(n, dv)), scratch(path.scratch_bytes(m, n));
    RowSource ks{c.gather ? in.k.base() : in.k.row_ptr(t0), c.dtype, in.k.stride,
                 c.gather ? in.k_offsets.data() + t0 : nullptr};
    RowSource vs{c.gather ? in.v.base() : in.v.row_ptr(t0), c.dtype, in.v.stride,
                 c.gather ? in.v_offsets.data() + t0 : nullptr};
    path.pack_k(ks, n, d, kp.get());
    path.pack_v(vs, n, dv, vp.get());
    // Tile-local spans, deliberately not clipped to [0, n): the kernels clip.
    std::vector<int32_t> lo(m), hi(m);
    for (int r = 0; r < m; ++r) {
      lo[r] = in.lo[r] - t0;
      hi[r] = in.hi[r] - t0;
    }
    const bool use_lo = c.spans == Spans::kWindows, use_hi = c.spans != Spans::kNone;
    const AttendState before = st;
    ScoreModArgs mod;
    mod.softcap = in.softcap_log2;
    if (!in.slopes_log2.empty()) {
      mod.alibi = in.slopes_log2.data();
      mod.row_pos = in.row_pos.data();
      mod.key_pos = in.key_pos.data() + t0;
    }
    AttendTileArgs args{qp.get(), m, kp.get(), vp.get(), n, d, dv, use_lo ? lo.data() : nullptr,
                        use_hi ? hi.data() : nullptr, st.row_max.data(), st.row_sum.data(),
                        st.acc.data(), scratch.get(), mod, qk_scale(path, in.scale)};
    path.attend(args);
    for (int r = 0; r < m; ++r) {
      const int l = use_lo ? std::max(lo[r], 0) : 0, h = use_hi ? std::min(hi[r], n) : n;
      if (l < h) continue;
      EXPECT_EQ(0, std::memcmp(&before.row_max[r], &st.row_max[r], 4)) << "row " << r;
      EXPECT_EQ(0, std::memcmp(&before.row_sum[r], &st.row_sum[r], 4)) << "row " << r;
      EXPECT_EQ(0, std::memcmp(&before.acc[static_cast<size_t>(r) * dv], &st.acc[static_cast<size_t>(r) * dv], 4 * dv))
          << "row " << r << " of tile at " << t0;
    }
  }
  return st;
}

// The double oracle's operands of a case, built once per case (not per row and key): the Q rows
// scaled, the K and V rows in gather order; `bf16` rounds Q, K and V to bf16 first (Q before its
// scale), as a plain bf16 implementation does.
struct OracleOperands {
  bool bf16 = false;
  std::vector<double> q, k, v;  // [row][d], [key][d], [key][dv]
};

OracleOperands oracle_operands(const AttendCase& c, const AttendInputs& in, bool bf16) {
  const int d = c.d, dv = c.value_dim();
  auto rd = [&](double x) { return bf16 ? static_cast<double>(round_bf16(static_cast<float>(x))) : x; };
  OracleOperands op;
  op.bf16 = bf16;
  op.q.resize(static_cast<size_t>(c.m) * d);
  op.k.resize(static_cast<size_t>(in.keys) * d);
  op.v.resize(static_cast<size_t>(in.keys) * dv);
  for (int r = 0; r < c.m; ++r) {
    for (int x = 0; x < d; ++x) {
      const double qx = in.q.at(in.q_rows[r], x);
      op.q[static_cast<size_t>(r) * d + x] = bf16 ? rd(static_cast<float>(qx)) * in.scale : qx * in.scale;
    }
  }
  for (int j = 0; j < in.keys; ++j) {
    for (int x = 0; x < d; ++x) op.k[static_cast<size_t>(j) * d + x] = rd(in.k.at(in.kv_rows[j], x));
    for (int x = 0; x < dv; ++x) op.v[static_cast<size_t>(j) * dv + x] = rd(in.v.at(in.kv_rows[j], x));
  }
  return op;
}

// Output row r of the double oracle on `op` (oracle_operands); with bf16 operands the
// probabilities are rounded to bf16 too and Q.K is scaled exactly (a plain bf16 implementation as
// flash-attention does it, the yardstick for the bf16 path's error).
std::vector<double> oracle_row(const AttendCase& c, const AttendInputs& in, const OracleOperands& op, int r) {
  const int d = c.d, dv = c.value_dim();
  const int lo = in.lo[r], hi = in.hi[r];
  std::vector<double> out(dv, 0.0);
  if (lo >= hi) return out;
  const double* q = op.q.data() + static_cast<size_t>(r) * d;
  std::vector<double> s(hi - lo);
  double mx = -INFINITY;
  for (int j = lo; j < hi; ++j) {
    const double* k = op.k.data() + static_cast<size_t>(j) * d;
    double dot = 0;
    for (int x = 0; x < d; ++x) dot += q[x] * k[x];
    s[j - lo] = oracle_modified(in, r, j, dot);
    mx = std::max(mx, s[j - lo]);
  }
  double sum = 0;
  for (int j = lo; j < hi; ++j) {
    const double e = std::exp2(s[j - lo] - mx);
    const double p = op.bf16 ? static_cast<double>(round_bf16(static_cast<float>(e))) : e;
    sum += p;
    const double* v = op.v.data() + static_cast<size_t>(j) * dv;
    for (int x = 0; x < dv; ++x) out[x] += p * v[x];
  }
  for (double& o : out) o /= sum;
  return out;
}

struct ErrorStats {
  double max_abs = 0, ref_max = 0, sq_err = 0, sq_ref = 0;
  void add(double got, double ref) {
    max_abs = std::max(max_abs, std::abs(got - ref));
    ref_max = std::max(ref_max, std::abs(ref));
    sq_err += (got - ref) * (got - ref);
    sq_ref += ref * ref;
  }
  double rel() const { return max_abs / std::max(ref_max, 1e-30); }
  double nmse() const { return sq_err / std::max(sq_ref, 1e-30); }
};

std::vector<AttendCase> attend_cases(const std::vector<std::pair<int, int>>& sizes) {
  std::vector<AttendCase> cases;
  int i = 0;
  for (int d : kSupportedHeadDims) {
    for (auto [m, n] : sizes) {
      cases.push_back({d, m, n, 3, kDTypes[i % 3], static_cast<Spans>(i % 3), i % 2 == 1, i % 4 == 3 ? 4.0 : 1.0});
      ++i;
    }
    // Every dtype with every span kind, gathered and not, at a small size.
    for (DType dt : kDTypes) {
      for (int sp = 0; sp < 3; ++sp) cases.push_back({d, 9, 21, 2, dt, static_cast<Spans>(sp), sp == 1, 1.0});
    }
  }
  return cases;
}

// Runs every case with this path and with the scalar f32 path and checks both against the
// double oracle; prints the worst errors under `label`.
void KernelsTest::expect_attend_matches(const std::vector<AttendCase>& cases, const char* label) {
  std::mt19937 rng(42);
  double worst_ratio = 0, worst_rel = 0, worst_nmse = 0, worst_plain = 0, worst_vs_scalar = 0;
  for (const AttendCase& c : cases) {
    const int dv = c.value_dim();
    SCOPED_TRACE(testing::Message() << "d=" << c.d << " dv=" << dv << " m=" << c.m << " n=" << c.n
                                    << " dtype=" << dtype_name(c.dtype) << " spans=" << static_cast<int>(c.spans)
                                    << " gather=" << c.gather << " amp=" << c.q_amplitude
                                    << " mods=" << static_cast<int>(c.mods) << " softcap=" << c.softcap);
    const AttendInputs in = make_inputs(c, rng);
    const AttendState got = run_attend(*path_, c, in);
    const AttendState ref_scalar = run_attend(*scalar_->path(Precision::kF32), c, in);
    const OracleOperands exact = oracle_operands(c, in, false);
    const OracleOperands plain_bf16 = bf16() ? oracle_operands(c, in, true) : OracleOperands{};
    ErrorStats err, plain, vs_scalar;
    for (int r = 0; r < c.m; ++r) {
      if (in.lo[r] >= in.hi[r]) {  // sees nothing at all: state as it started
        EXPECT_EQ(got.row_max[r], kNegInf);
        EXPECT_EQ(got.row_sum[r], 0.0f);
        for (int x = 0; x < dv; ++x) ASSERT_EQ(got.acc[static_cast<size_t>(r) * dv + x], 0.0f);
        continue;
      }
      ASSERT_GT(got.row_sum[r], 0.0f) << "row " << r;
      const std::vector<double> ref = oracle_row(c, in, exact, r);
      const std::vector<double> ref_plain = bf16() ? oracle_row(c, in, plain_bf16, r) : ref;
      for (int x = 0; x < dv; ++x) {
        const double o = got.acc[static_cast<size_t>(r) * dv + x] / static_cast<double>(got.row_sum[r]);
        const double os = ref_scalar.acc[static_cast<size_t>(r) * dv + x] / static_cast<double>(ref_scalar.row_sum[r]);
        ASSERT_TRUE(std::isfinite(o)) << "row " << r;
        err.add(o, ref[x]);
        plain.add(ref_plain[x], ref[x]);
        vs_scalar.add(o, os);
      }
    }
    if (!bf16()) {
      EXPECT_LE(err.rel(), 1e-5);
      EXPECT_LE(vs_scalar.rel(), 1e-5);
    } else {
      // The bf16 path: at most 2x the error of a plain bf16 implementation (Q, K, V and P
      // rounded to bf16, everything else exact), plus a floor for cases where both are ~0.
      EXPECT_LE(err.max_abs, 2.0 * plain.max_abs + 1e-6 * err.ref_max);
      EXPECT_LE(err.nmse(), 5e-4);
      EXPECT_LE(vs_scalar.rel(), 2.0 * plain.rel() + 1e-6);
      if (plain.max_abs > 0) worst_ratio = std::max(worst_ratio, err.max_abs / plain.max_abs);
    }
    worst_rel = std::max(worst_rel, err.rel());
    worst_nmse = std::max(worst_nmse, err.nmse());
    worst_plain = std::max(worst_plain, plain.rel());
    worst_vs_scalar = std::max(worst_vs_scalar, vs_scalar.rel());
  }
  std::printf("[ %s %s ] %zu cases: worst max|err|/max|ref| %.3g, worst NMSE %.3g, vs scalar %.3g", table_->name,
              label, cases.size(), worst_rel, worst_nmse, worst_vs_scalar);
  if (bf16()) std::printf(", plain-bf16 %.3g, worst err / plain-bf16 err %.3g", worst_plain, worst_ratio);
  std::printf("\n");
}

TEST_P(KernelsTest, AttendMatchesOracleAndScalar) { expect_attend_matches(attend_cases(sizes()), "attend"); }

// V and the output with another head size than Q and K: the pairs of the issue, both orders of
// the extremes, and every dim of the list as d and as dv (each with a partner that differs).
TEST_P(KernelsTest, AttendValueHeadSizeMatchesOracleAndScalar) {
  const std::vector<std::pair<int, int>> size_list = sizes();
  std::vector<std::pair<int, int>> dims = {{192, 128}, {128, 192}, {32, 256}, {256, 32}, {48, 80}, {80, 48}, {112, 144}};
  for (int dim : kSupportedHeadDims) {
    dims.push_back({dim, dim == 176 ? 48 : 176});
    dims.push_back({dim == 80 ? 240 : 80, dim});
  }
  std::vector<AttendCase> cases;
  int i = 0;
  for (auto [d, dv] : dims) {
    for (int k = 0; k < 3; ++k, ++i) {
      const auto [m, n] = size_list[i % size_list.size()];
      AttendCase c{d, m, n, 2, kDTypes[i % 3], static_cast<Spans>(i % 3), i % 2 == 1, i % 4 == 3 ? 4.0 : 1.0};
      c.dv = dv;
      cases.push_back(c);
    }
  }
  expect_attend_matches(cases, "dv != d");
}

// The score variants inside attend: softcaps that bite (1.5, saturating at amplitude 4), a mild
// one (30, Gemma 2's 50 order), ALiBi with a slope per row and stripe-like key positions, both
// together; every span kind, dv = d and dv != d, several head dims.
TEST_P(KernelsTest, AttendScoreModsMatchOracleAndScalar) {
  const std::vector<std::pair<int, int>> size_list = sizes();
  const Mods kinds[] = {Mods::kSoftcap, Mods::kAlibi, Mods::kBoth};
  const double caps[] = {1.5, 30.0, 5.0};
  const std::pair<int, int> dims[] = {{32, 32}, {48, 48}, {80, 80}, {128, 128}, {192, 128}, {256, 256}, {112, 240}};
  std::vector<AttendCase> cases;
  int i = 0;
  for (auto [d, dv] : dims) {
    for (Mods mods : kinds) {
      for (int k = 0; k < 3; ++k, ++i) {
        const auto [m, n] = size_list[i % size_list.size()];
        AttendCase c{d, m, n, 3, kDTypes[i % 3], static_cast<Spans>(k), i % 2 == 1, i % 4 == 3 ? 4.0 : 1.0};
        c.dv = dv;
        c.mods = mods;
        c.softcap = caps[i % 3];
        cases.push_back(c);
      }
    }
  }
  expect_attend_matches(cases, "score mods");
}

// Score blocks for modify_scores: normal scores of several sizes, large ones that saturate any
// cap, tiny ones and zeros.
std::vector<float> mod_test_scores(int m, int64_t lds, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 6.0f);
  std::vector<float> s(static_cast<size_t>(m) * lds);
  for (size_t i = 0; i < s.size(); ++i) {
    const float x = dist(rng);
    switch (i % 7) {
      case 0: s[i] = x * 100.0f; break;
      case 1: s[i] = x * 1e-4f; break;
      case 2: s[i] = i % 3 ? 0.0f : -0.0f; break;
      default: s[i] = x;
    }
  }
  return s;
}

// modify_scores against its definition in double (core/score_mod.h): each table's result is the
// capped score minus the bias within a few ulp of their magnitudes, and columns past n are left
// alone; the scalar table is the definition itself (tanhf), the vector ones use a rational tanh.
TEST_P(KernelsTest, ModifyScoresMatchesDefinition) {
  if (bf16()) GTEST_SKIP() << "modify_scores is shared by both paths";
  std::mt19937 rng(11);
  for (auto [m, n] : sizes()) {
    for (Mods mods : {Mods::kSoftcap, Mods::kAlibi, Mods::kBoth}) {
      for (double cap : {0.7, 4.0, 50.0}) {
        if (!has_softcap(mods) && cap != 4.0) continue;
        const int64_t lds = n + 5;
        const std::vector<float> s = mod_test_scores(m, lds, rng);
        std::vector<float> slopes(m);
        std::vector<int32_t> row_pos(m), key_pos(n);
        std::uniform_int_distribution<int32_t> pos(0, 1 << 20);
        for (int r = 0; r < m; ++r) {
          slopes[r] = static_cast<float>(std::exp2(-0.5 * (r % 16)) * kLog2e);
          row_pos[r] = pos(rng);
        }
        for (int j = 0; j < n; ++j) key_pos[j] = j % 3 == 0 ? pos(rng) : j * 5;
        ScoreModArgs mod;
        if (has_softcap(mods)) mod.softcap = static_cast<float>(cap * kLog2e);
        if (has_alibi(mods)) {
          mod.alibi = slopes.data();
          mod.row_pos = row_pos.data();
          mod.key_pos = key_pos.data();
        }
        std::vector<float> got = s;
        table_->modify_scores(got.data(), lds, m, n, mod);
        for (int r = 0; r < m; ++r) {
          for (int j = 0; j < lds; ++j) {
            const size_t i = static_cast<size_t>(r) * lds + j;
            if (j >= n) {
              ASSERT_EQ(0, std::memcmp(&got[i], &s[i], 4)) << "wrote past n: r=" << r << " j=" << j;
              continue;
            }
            double capped = s[i], bias = 0;
            if (has_softcap(mods)) capped = mod.softcap * std::tanh(static_cast<double>(s[i]) / mod.softcap);
            if (has_alibi(mods)) bias = static_cast<double>(slopes[r]) * std::abs(static_cast<double>(row_pos[r]) - key_pos[j]);
            // 1e-6: the rational's 3e-7 plus the roundings of s / cap, the product and the sums.
            const double tol = 1e-6 * std::abs(capped) + 2e-7 * bias + 1e-37;
            ASSERT_NEAR(got[i], capped - bias, tol) << "m=" << m << " n=" << n << " r=" << r << " j=" << j
                                                    << " s=" << s[i] << " mods=" << static_cast<int>(mods)
                                                    << " cap=" << cap;
          }
        }
      }
    }
  }
}

// modify_scores gives exactly the scores attend's softmax uses. (1) A row whose span is one key
// ends with row_max = that key's modified score, so attend with one-key spans reads back every
// score attend computed: they must equal scores() + modify_scores() bit for bit. (2) Over several
// tiles with arbitrary spans, scores() + modify_scores() + row_stats() reproduce attend's
// row_max exactly and its row_sum to rounding.
TEST_P(KernelsTest, ModifyScoresIsWhatAttendUses) {
  std::mt19937 rng(12);
  int index = 0;
  for (int d : {32, 80, 128}) {
    for (auto [m, n] : {std::pair{1, 1}, {7, 16}, {16, 17}, {17, 100}, {14, 32}, {15, 33}, {29, 7}, {33, 70}}) {
      for (Mods mods : {Mods::kSoftcap, Mods::kAlibi, Mods::kBoth}) {
        SCOPED_TRACE(testing::Message() << "d=" << d << " m=" << m << " n=" << n << " mods=" << static_cast<int>(mods));
        const DType dt = kDTypes[index++ % 3];
        const int tiles = 2, keys = n * tiles;
        const Source q = make_source(dt, m, d, rng, 3.0), k = make_source(dt, keys, d, rng, 1.0),
                     v = make_source(dt, keys, d, rng, 1.0);
        std::vector<float> slopes(m);
        std::vector<int32_t> row_pos(m), key_pos(keys);
        for (int r = 0; r < m; ++r) {
          slopes[r] = static_cast<float>(std::exp2(-1.0 - r % 8) * kLog2e);
          row_pos[r] = 3 * r + 5;
        }
        for (int j = 0; j < keys; ++j) key_pos[j] = 2 * j + (j / 16) * 7;
        ScoreModArgs mod;
        if (has_softcap(mods)) mod.softcap = static_cast<float>(2.0 * kLog2e);
        if (has_alibi(mods)) {
          mod.alibi = slopes.data();
          mod.row_pos = row_pos.data();
        }
        const float scale = static_cast<float>(kLog2e / std::sqrt(d));
        Buffer qp(path_->packed_bytes(m, d));
        path_->pack_q(RowSource{q.base(), dt, q.stride, nullptr}, m, d, pack_q_scale(*path_, scale), qp.get());
        const float qk = qk_scale(*path_, scale);
        std::vector<float> row_max(m, kNegInf), row_sum(m, 0.0f), stats_max(m, kNegInf), stats_sum(m, 0.0f);
        std::vector<float> acc(static_cast<size_t>(m) * d, 0.0f);
        for (int t0 = 0; t0 < keys; t0 += n) {
          Buffer kp(path_->packed_bytes(n, d)), vp(path_->packed_bytes(n, d)), scratch(path_->scratch_bytes(m, n));
          path_->pack_k(RowSource{k.row_ptr(t0), dt, k.stride, nullptr}, n, d, kp.get());
          path_->pack_v(RowSource{v.row_ptr(t0), dt, v.stride, nullptr}, n, d, vp.get());
          if (has_alibi(mods)) mod.key_pos = key_pos.data() + t0;
          const int64_t lds = n + 3;
          std::vector<float> s(static_cast<size_t>(m) * lds);
          path_->scores(qp.get(), m, kp.get(), n, d, s.data(), lds, qk);
          table_->modify_scores(s.data(), lds, m, n, mod);

          // (1) One key per row; row r reads column (r + c) % n in round c.
          std::vector<int32_t> lo(m), hi(m);
          for (int c = 0; c < n; ++c) {
            for (int r = 0; r < m; ++r) {
              lo[r] = (r + c) % n;
              hi[r] = lo[r] + 1;
            }
            std::vector<float> one_max(m, kNegInf), one_sum(m, 0.0f), one_acc(static_cast<size_t>(m) * d, 0.0f);
            path_->attend({qp.get(), m, kp.get(), vp.get(), n, d, d, lo.data(), hi.data(), one_max.data(),
                           one_sum.data(), one_acc.data(), scratch.get(), mod, qk});
            for (int r = 0; r < m; ++r) {
              const float want = s[static_cast<size_t>(r) * lds + lo[r]];
              ASSERT_EQ(0, std::memcmp(&one_max[r], &want, 4))
                  << "r=" << r << " j=" << lo[r] << " attend " << one_max[r] << " modify_scores " << want;
            }
          }

          // (2) Arbitrary spans, running state over the tiles.
          std::uniform_int_distribution<int> key(-2, n + 2);
          for (int r = 0; r < m; ++r) {
            lo[r] = key(rng);
            hi[r] = r % 4 == 1 ? n : key(rng);
          }
          path_->attend({qp.get(), m, kp.get(), vp.get(), n, d, d, lo.data(), hi.data(), row_max.data(),
                         row_sum.data(), acc.data(), scratch.get(), mod, qk});
          table_->row_stats(s.data(), lds, m, n, lo.data(), hi.data(), stats_max.data(), stats_sum.data());
          for (int r = 0; r < m; ++r) {
            ASSERT_EQ(0, std::memcmp(&row_max[r], &stats_max[r], 4)) << "r=" << r << " tile " << t0;
            // The bf16 path's row sum adds the probabilities rounded to bf16 (8 bits).
            EXPECT_NEAR(row_sum[r], stats_sum[r], (bf16() ? 4e-3 : 2e-6) * stats_sum[r]) << "r=" << r << " tile " << t0;
          }
        }
      }
    }
  }
}

// Spans for the row operations: null, full, partial, empty and out-of-range ones.
void make_spans(int m, int n, int kind, std::mt19937& rng, std::vector<int32_t>* lo, std::vector<int32_t>* hi) {
  lo->assign(m, 0);
  hi->assign(m, n);
  std::uniform_int_distribution<int> key(-3, n + 3);
  for (int r = 0; r < m; ++r) {
    if (kind == 0) continue;
    (*lo)[r] = key(rng);
    (*hi)[r] = key(rng);
    if (r % 4 == 0) (*hi)[r] = (*lo)[r];
  }
}

TEST_P(KernelsTest, RowStatsMatchesOracle) {
  if (bf16()) GTEST_SKIP() << "row operations are shared by both paths";
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (auto [m, n] : sizes()) {
    for (int kind = 0; kind < 2; ++kind) {
      const int64_t lds = n + 5;
      std::vector<float> s(static_cast<size_t>(m) * lds);
      for (float& x : s) x = dist(rng);
      // Masked scores and scores that underflow, in rows whose running max is finite (a row
      // whose every score is -inf has no defined softmax).
      for (int r = 0; r < m; ++r) {
        if (r % 3 == 0) continue;
        for (int j = r % 4; j < n; j += 3) s[r * lds + j] = j % 2 ? kNegInf : -1e4f;
      }
      std::vector<int32_t> lo, hi;
      make_spans(m, n, kind, rng, &lo, &hi);
      std::vector<float> row_max(m), row_sum(m);
      for (int r = 0; r < m; ++r) {
        row_max[r] = r % 3 == 0 ? kNegInf : dist(rng);
        row_sum[r] = r % 3 == 0 ? 0.0f : 2.5f;
      }
      std::vector<float> got_max = row_max, got_sum = row_sum;
      table_->row_stats(s.data(), lds, m, n, kind ? lo.data() : nullptr, kind ? hi.data() : nullptr, got_max.data(),
                        got_sum.data());
      for (int r = 0; r < m; ++r) {
        const int l = std::max(lo[r], 0), h = std::min(hi[r], n);
        if (l >= h) {
          EXPECT_EQ(got_max[r], row_max[r]);
          EXPECT_EQ(got_sum[r], row_sum[r]);
          continue;
        }
        double mx = row_max[r];
        for (int j = l; j < h; ++j) mx = std::max(mx, static_cast<double>(s[r * lds + j]));
        double sum = row_sum[r] * std::exp2(row_max[r] - mx);
        for (int j = l; j < h; ++j) sum += std::exp2(s[r * lds + j] - mx);
        EXPECT_EQ(got_max[r], static_cast<float>(mx)) << "m=" << m << " n=" << n << " r=" << r;
        EXPECT_NEAR(got_sum[r], sum, 2e-6 * sum) << "m=" << m << " n=" << n << " r=" << r;
      }
    }
  }
}

TEST_P(KernelsTest, AccumulateColumnsMatchesOracle) {
  if (bf16()) GTEST_SKIP() << "row operations are shared by both paths";
  std::mt19937 rng(8);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (auto [m, n] : sizes()) {
    for (int kind = 0; kind < 2; ++kind) {
      const int64_t lds = n + 5;
      std::vector<float> s(static_cast<size_t>(m) * lds);
      for (float& x : s) x = dist(rng);
      for (size_t i = 0; i < s.size(); i += 11) s[i] = kNegInf;
      std::vector<int32_t> lo, hi;
      make_spans(m, n, kind, rng, &lo, &hi);
      std::vector<float> row_max(m), row_scale(m);
      for (int r = 0; r < m; ++r) {
        row_max[r] = 4.0f + dist(rng);
        row_scale[r] = 0.5f + static_cast<float>(r % 7) * 0.25f;
      }
      std::vector<float> col(n + 1, 0.0f);
      for (int j = 0; j < n; ++j) col[j] = static_cast<float>(j % 5);
      col[n] = 777.0f;  // guard
      std::vector<float> got = col;
      table_->accumulate_columns(s.data(), lds, m, n, kind ? lo.data() : nullptr, kind ? hi.data() : nullptr,
                                 row_max.data(), row_scale.data(), got.data());
      EXPECT_EQ(got[n], 777.0f);
      for (int j = 0; j < n; ++j) {
        double ref = col[j], mag = col[j];
        for (int r = 0; r < m; ++r) {
          const int l = std::max(lo[r], 0), h = std::min(hi[r], n);
          if (j < l || j >= h) continue;
          const double t = std::exp2(static_cast<double>(s[r * lds + j]) - row_max[r]) * row_scale[r];
          ref += t;
          mag += std::abs(t);
        }
        EXPECT_NEAR(got[j], ref, 2e-6 * mag + 1e-30) << "m=" << m << " n=" << n << " j=" << j;
      }
    }
  }
}

// Validation's per-bucket masses (bucket_masses) against fp64: the band [split, hi) to masses[0],
// each stripe candidate in [lo, split) to its bucket unless unused, added to what the masses held;
// in fixed point, so each probability's rounding (half a unit) and its f32 arithmetic (s - max,
// exp2, the scale: a relative 4e-6 with the scores' magnitudes here) bound the difference; scores of -inf add nothing; every table within that of the scalar.
TEST_P(KernelsTest, BucketMassesMatchOracle) {
  if (bf16()) GTEST_SKIP() << "row operations are shared by both paths";
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  constexpr int kStride = kValidationGrid + 2;
  for (int n : {1, 7, 16, 17, 64, 250, 512}) {
    for (int trial = 0; trial < 6; ++trial) {
      std::vector<float> s(static_cast<size_t>(n));
      for (float& x : s) x = dist(rng);
      if (n > 3) s[static_cast<size_t>(n / 3)] = kNegInf;
      const float row_max = *std::max_element(s.begin(), s.end());
      double sum = 0;  // the row's mass is at most 1, as with the row's own statistics
      for (float x : s) sum += std::exp2(static_cast<double>(x) - row_max);
      const float scale = static_cast<float>(1.0 / (sum * (1.0 + 0.25 * trial)));
      std::vector<uint8_t> bucket(static_cast<size_t>(n));
      const int nb = 1 + trial * 25;
      for (uint8_t& b : bucket) b = rng() % 5 == 0 ? kBucketUnused : static_cast<uint8_t>(rng() % (nb + 1));
      const int lo = trial == 0 ? 0 : static_cast<int>(rng() % n);
      const int hi = trial == 1 ? n : lo + static_cast<int>(rng() % (n - lo + 1));
      const int split = trial == 2 ? hi : trial == 3 ? lo : lo + static_cast<int>(rng() % (hi - lo + 1));
      std::vector<uint32_t> start(kStride + 1);
      for (int b = 0; b < kStride; ++b) start[b] = static_cast<uint32_t>(rng() % 1000);
      start[kStride] = 777u;  // guard
      std::vector<double> want(kStride, 0.0);
      std::vector<int> terms(kStride, 0);
      for (int j = lo; j < hi; ++j) {
        const int b = j >= split ? 0 : bucket[j];
        if (b == kBucketUnused) continue;
        want[b] += std::exp2(static_cast<double>(s[j]) - row_max) * scale * kValidationMassOne;
        ++terms[b];
      }
      std::vector<uint32_t> got = start, ref = start;
      table_->bucket_masses(s.data(), lo, split, hi, row_max, scale, bucket.data(), got.data());
      scalar_->bucket_masses(s.data(), lo, split, hi, row_max, scale, bucket.data(), ref.data());
      EXPECT_EQ(got[kStride], 777u);
      for (int b = 0; b < kStride; ++b) {
        const double tol = 0.5 * terms[b] + 4e-6 * want[b] + 1e-9;
        EXPECT_NEAR(static_cast<double>(got[b]) - start[b], want[b], tol) << "n=" << n << " b=" << b;
        EXPECT_NEAR(static_cast<double>(got[b]), static_cast<double>(ref[b]), 2 * tol) << "n=" << n << " b=" << b;
        if (terms[b] == 0) {
          EXPECT_EQ(got[b], start[b]);
        }
      }
    }
  }
}

// The decode kernel (attend_rows) against the online step in fp64, for the rows of several kv
// heads read in one call: K/V rows a token apart with every head's row side by side (a cache's
// [token, kv head, dim]), tokens out of order (pages), per-head scales of quantized K/V, rows per head around the kernel's register blocks
// (1, 2, 3, 4, 5, 8), keys around its groups, row spans (one row empty), a running state; and
// the largest |value| of f32 and bf16 K and V (the input policy's bounds), over every key read.
// Tables that can multiply int8 K/V in integers (attend_rows_int8_products) run int8 both ways
// (AttendRowsArgs::int8_products), and with integer products are held to the rounding of Q and
// of the weights to int16 on top (simd/decode/decode.h): a score within
// dS = max|q| / 65534 * max_j sum|k_j|, so each weight within a factor 2^(+-2 dS), and a value sum
// within max_j |w_j| / 65534 * sum_j |v8_j[x]| more.
TEST_P(KernelsTest, AttendRowsOfSeveralHeadsMatchOracle) {
  if (bf16()) GTEST_SKIP() << "attend_rows is one kernel per table";
  std::mt19937 rng(31);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<std::pair<DType, bool>> kinds = {
      {DType::kF32, false}, {DType::kF16, false}, {DType::kBF16, false}, {DType::kI8, false}, {DType::kFP8, false}};
  if (table_->attend_rows_int8_products) kinds.emplace_back(DType::kI8, true);
  for (const auto& kind : kinds) {
    // Not a structured binding: the lambdas below use dt, which Clang before 16 cannot capture.
    const DType dt = kind.first;
    const bool integer = kind.second;
    // Integer products also at head dims that end in half a 32-value step (48, 112).
    for (int d : integer ? std::vector<int>{48, 64, 112, 128} : std::vector<int>{64, 128}) {
      // 4 and 8 heads (GQA caches) with the rows that make every score call's pairs heads of one
      // key on AVX-512 (16 / min(m, 4) pairs a call).
      for (int heads : {1, 3, 4, 8}) {
        for (int m : {1, 2, 3, 4, 5, 8}) {
          if ((heads == 4 && m != 4 && m != 8) || (heads == 8 && m != 2 && m != 4)) continue;
          for (int n : {1, 15, 16, 17, 64}) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + (integer ? " (integer products)" : "") + " d=" +
                         std::to_string(d) + " heads=" + std::to_string(heads) + " m=" + std::to_string(m) +
                         " n=" + std::to_string(n));
            const int keys = n, rows = heads * m;
            const int64_t head_step = d + 16, token_stride = heads * head_step;
            const int esize = dtype_size(dt);
            std::vector<unsigned char> k(static_cast<size_t>(keys) * token_stride * esize);
            std::vector<unsigned char> v(k.size());
            const bool quantized = dt == DType::kI8 || dt == DType::kFP8;
            // Scales of head h at h * keys (one array a head), or (3 and 8 heads) where a cache keeps
            // them, beside their tokens' rows: key j's at scale_offsets[j] + h
            // (RowSource::scale_offsets).
            const bool in_place = heads == 3 || heads == 8;
            const int64_t scale_step = in_place ? 1 : keys;
            std::vector<float> k_scales(static_cast<size_t>(heads) * keys, 1.f), v_scales(k_scales);
            const auto store = [&](std::vector<unsigned char>& dst, int64_t index, float x) {
              if (dt == DType::kI8) {
                dst[index] = static_cast<unsigned char>(static_cast<int8_t>(std::clamp(std::lround(x * 40.f), -127L, 127L)));
              } else if (dt == DType::kFP8) {
                dst[index] = f32_to_fp8_e4m3(x);
              } else {
                store_scalar(dst.data(), dt, index, x);
              }
            };
            for (size_t i = 0; i < k.size() / esize; ++i) {
              store(k, static_cast<int64_t>(i), dist(rng));
              store(v, static_cast<int64_t>(i), dist(rng));
            }
            if (quantized) {
              for (size_t i = 0; i < k_scales.size(); ++i) {
                k_scales[i] = 0.02f + 0.001f * static_cast<float>(i % 7);
                v_scales[i] = 0.03f - 0.001f * static_cast<float>(i % 5);
              }
            }
            // Key j's rows: token order reversed in pairs, so offsets are not a stride.
            std::vector<int64_t> offsets(static_cast<size_t>(keys)), scale_offsets(static_cast<size_t>(keys));
            for (int j = 0; j < keys; ++j) {
              const int64_t token = (j ^ 1) < keys ? (j ^ 1) : j;
              offsets[j] = token * token_stride;
              scale_offsets[j] = token * heads;
            }
            const auto exact = [&](const std::vector<unsigned char>& src, const std::vector<float>& scales, int j, int h,
                                   int c) {
              const double x = load_scalar(src.data(), dt, offsets[j] + h * head_step + c);
              const int64_t at = h * scale_step + (in_place ? scale_offsets[j] : j);
              return quantized ? static_cast<double>(static_cast<float>(x) * scales[at]) : x;
            };
            std::vector<float> q(static_cast<size_t>(rows) * d);
            for (float& x : q) x = 0.3f * dist(rng);
            std::vector<int32_t> lo(rows, 0), hi(rows, n);
            for (int r = 0; r < rows; ++r) {
              if (r % 3 == 1) lo[r] = n / 3;
              if (r % 4 == 2) hi[r] = n - n / 4;
            }
            lo[rows - 1] = hi[rows - 1] = n / 2;  // sees nothing: left untouched
            std::vector<float> row_max(rows), row_sum(rows), acc(static_cast<size_t>(rows) * d);
            for (int r = 0; r < rows; ++r) {
              row_max[r] = r % 2 ? kNegInf : 0.5f;
              row_sum[r] = r % 2 ? 0.f : 3.f;
            }
            for (int r = 0; r < rows; ++r) {
              for (int x = 0; x < d; ++x) acc[static_cast<size_t>(r) * d + x] = r % 2 ? 0.f : dist(rng);
            }
            const std::vector<float> max0 = row_max, sum0 = row_sum, acc0 = acc;
            Buffer scratch(table_->attend_rows_scratch_bytes(rows, n));
            AttendRowsArgs a{.q = q.data(), .m = m, .k = {k.data(), dt, 0, offsets.data(), quantized ? k_scales.data() : nullptr},
                             .v = {v.data(), dt, 0, offsets.data(), quantized ? v_scales.data() : nullptr}, .n = n, .d = d,
                             .dv = d, .lo = lo.data(), .hi = hi.data(), .row_max = row_max.data(), .row_sum = row_sum.data(),
                             .acc = acc.data(), .scratch = static_cast<float*>(scratch.get()), .mod = {}};
            a.heads = heads;
            a.k_head_step = a.v_head_step = head_step;
            a.scale_head_step = scale_step;
            if (in_place && quantized) a.k.scale_offsets = a.v.scale_offsets = scale_offsets.data();
            a.int8_products = integer;
            float k_max = 0.f, v_max = 0.f;
            a.k_max_abs = &k_max;
            a.v_max_abs = &v_max;
            ASSERT_TRUE(table_->attend_rows(a));
            // The call `b` from the same starting state must leave the bits `a` left.
            const auto same_bits = [&](const AttendRowsArgs& b) {
              const std::vector<float> max1 = row_max, sum1 = row_sum, acc1 = acc;
              row_max = max0, row_sum = sum0, acc = acc0;
              ASSERT_TRUE(table_->attend_rows(b));
              EXPECT_EQ(0, std::memcmp(max1.data(), row_max.data(), rows * sizeof(float)));
              EXPECT_EQ(0, std::memcmp(sum1.data(), row_sum.data(), rows * sizeof(float)));
              EXPECT_EQ(0, std::memcmp(acc1.data(), acc.data(), acc.size() * sizeof(float)));
            };
            {  // with the next call's K rows requested on the way (AttendRowsArgs::next_k)
              AttendRowsArgs ahead = a;
              ahead.next_k = a.k;
              ahead.next_n = n - n / 3;  // not the call's n: the requests are spread over its keys
              ASSERT_NO_FATAL_FAILURE(same_bits(ahead));
            }
            if (integer) {  // the next call on the same rows may reuse Q's int16 rows
              a.same_q = true;
              ASSERT_NO_FATAL_FAILURE(same_bits(a));
            }
            // The largest |value| of the n keys' K and V rows of every head (f32 and bf16 only).
            double want_k = 0, want_v = 0;
            if (dt == DType::kF32 || dt == DType::kBF16) {
              for (int j = 0; j < n; ++j) {
                for (int h = 0; h < heads; ++h) {
                  for (int c = 0; c < d; ++c) {
                    want_k = std::max(want_k, std::abs(exact(k, k_scales, j, h, c)));
                    want_v = std::max(want_v, std::abs(exact(v, v_scales, j, h, c)));
                  }
                }
              }
            }
            EXPECT_EQ(k_max, static_cast<float>(want_k));
            EXPECT_EQ(v_max, static_cast<float>(want_v));
            for (int r = 0; r < rows; ++r) {
              const int h = r / m;
              if (lo[r] >= hi[r]) {
                EXPECT_EQ(row_max[r], max0[r]) << "row " << r;
                EXPECT_EQ(row_sum[r], sum0[r]) << "row " << r;
                for (int x = 0; x < d; ++x) EXPECT_EQ(acc[r * d + x], acc0[r * d + x]) << "row " << r;
                continue;
              }
              std::vector<double> sc(n);
              double mx = max0[r];
              double q_max = 0, k_sum_max = 0;  // for the integer products' bound
              for (int c = 0; c < d; ++c) q_max = std::max(q_max, std::abs(static_cast<double>(q[r * d + c])));
              for (int j = lo[r]; j < hi[r]; ++j) {
                double dot = 0, k_sum = 0;
                for (int c = 0; c < d; ++c) {
                  dot += static_cast<double>(q[r * d + c]) * exact(k, k_scales, j, h, c);
                  k_sum += std::abs(exact(k, k_scales, j, h, c));
                }
                sc[j] = dot;
                mx = std::max(mx, dot);
                k_sum_max = std::max(k_sum_max, k_sum);
              }
              const double ds = integer ? q_max / 65534 * k_sum_max * 1.001 : 0;
              const double spread = std::exp2(2 * ds) - 1;  // a weight's relative error from the scores
              const double corr = std::exp2(static_cast<double>(max0[r]) - mx);
              double sum = sum0[r] * corr;
              std::vector<double> out(d), out_abs(d), v8_sum(d);
              for (int x = 0; x < d; ++x) out[x] = acc0[r * d + x] * corr, out_abs[x] = std::abs(out[x]);
              double mag = 0, w_max = 0;
              for (int j = lo[r]; j < hi[r]; ++j) {
                const double p = std::exp2(sc[j] - mx);
                sum += p;
                for (int x = 0; x < d; ++x) {
                  const double vx = exact(v, v_scales, j, h, x);
                  out[x] += p * vx;
                  out_abs[x] += p * std::abs(vx);
                  if (integer) v8_sum[x] += std::abs(load_scalar(v.data(), dt, offsets[j] + h * head_step + x));
                }
                mag += p;
                if (integer) w_max = std::max(w_max, p * v_scales[h * scale_step + j]);
              }
              EXPECT_NEAR(row_max[r], mx, 1e-5 * (1 + std::abs(mx)) + ds) << "row " << r;
              EXPECT_NEAR(row_sum[r], sum, (1e-5 + spread) * sum) << "row " << r;
              for (int x = 0; x < d; ++x) {
                const double rounding = spread * out_abs[x] + w_max * (1 + spread) / 65534 * v8_sum[x];
                EXPECT_NEAR(acc[r * d + x], out[x], 2e-5 * (mag + std::abs(acc0[r * d + x]) + 1) + rounding)
                    << "row " << r << " x " << x;
              }
            }
          }
        }
      }
    }
  }
}

// The input policy's row scan (KernelTable::scan_row) returns the portable definition's bits
// (core/row_scan.h) on every table, so the call's verdict never depends on the ISA: f32, bf16 and
// f16 rows of every head dim and a few odd lengths (vector tails), magnitudes from 1e-30 to 1e30
// (bf16 and f32), and NaN or Inf at random places (the first one named).
TEST_P(KernelsTest, ScanRowMatchesPortable) {
  if (bf16()) GTEST_SKIP() << "scan_row is one kernel per table";
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  std::uniform_int_distribution<int> exponent(-100, 100);
  std::vector<int> dims(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims));
  for (int odd : {1, 7, 9, 23, 33}) dims.push_back(odd);
  for (DType dt : kDTypes) {
    for (int dim : dims) {
      for (int trial = 0; trial < 24; ++trial) {
        std::vector<unsigned char> row(static_cast<size_t>(dim) * dtype_size(dt) + 64);
        const float scale = dt == DType::kF16 ? 100.f : std::ldexp(1.f, exponent(rng));
        for (int c = 0; c < dim; ++c) store_scalar(row.data(), dt, c, unit(rng) * scale);
        if (trial % 3 == 1) {
          const int at = static_cast<int>(rng() % static_cast<unsigned>(dim));
          store_scalar(row.data(), dt, at, trial % 2 ? std::numeric_limits<float>::quiet_NaN() : -INFINITY);
          if (trial % 4 == 1 && at + 1 < dim) store_scalar(row.data(), dt, at + 1, INFINITY);  // a second one, later
        }
        const RowScan want = scan_row_portable(row.data(), dt, dim);
        const RowScan got = table_->scan_row(row.data(), dt, dim);
        SCOPED_TRACE(std::string(dtype_name(dt)) + " dim=" + std::to_string(dim) + " trial=" + std::to_string(trial));
        ASSERT_EQ(got.finite, want.finite);
        if (!want.finite) {
          EXPECT_EQ(got.bad_dim, want.bad_dim);
          continue;
        }
        EXPECT_EQ(0, std::memcmp(&got.sumsq, &want.sumsq, sizeof(float))) << got.sumsq << " vs " << want.sumsq;
        EXPECT_EQ(got.max_abs, want.max_abs);
      }
    }
  }
}

TEST_P(KernelsTest, StoreRowsRoundsLikeScalar) {
  if (bf16()) GTEST_SKIP() << "row operations are shared by both paths";
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 100.0f);
  for (int d : kSupportedHeadDims) {
    for (int m : {1, 3, 17}) {
      std::vector<float> acc(static_cast<size_t>(m) * d), scale(m);
      for (float& x : acc) x = dist(rng);
      acc[0] = std::numeric_limits<float>::quiet_NaN();
      acc[1] = 1e6f;  // f16 overflow
      acc[2] = 1e-7f;  // f16 subnormal
      for (int r = 0; r < m; ++r) scale[r] = 1.0f / (1.0f + r);
      for (DType dt : kDTypes) {
        const int64_t stride = d + 3;
        std::vector<unsigned char> got(static_cast<size_t>(m) * stride * 4, 0xab), want = got;
        table_->store_rows(acc.data(), m, d, scale.data(), got.data(), dt, stride);
        scalar_->store_rows(acc.data(), m, d, scale.data(), want.data(), dt, stride);
        EXPECT_EQ(got, want) << "d=" << d << " m=" << m << " " << dtype_name(dt);
      }
    }
  }
}

// The look's quantization as simd/kernels.h states it (LookPath), restated: integers in
// [-127, 127] of x * (127 / absmax), rounded to nearest even, and the scale absmax / 127.
float look_quantized(const std::vector<float>& x, std::vector<int>* q) {
  float amax = 0.f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  q->assign(x.size(), 0);
  if (amax == 0.f) return 0.f;
  const float inv = 127.f / amax;
  for (size_t i = 0; i < x.size(); ++i) (*q)[i] = static_cast<int>(std::clamp(std::nearbyint(x[i] * inv), -127.f, 127.f));
  return amax / 127.f;
}

// One table's look entries (the table's own, or the avx512 table's other variant).
void expect_look_is_the_integer_products(const LookPath& look, const char* label) {
  std::mt19937 rng(77);
  int index = 0;
  for (int d : {32, 80, 128, 256}) {
    for (auto [m, n] : std::vector<std::pair<int, int>>{{1, 1}, {7, 16}, {8, 31}, {9, 33}, {64, 300}, {17, 257}}) {
      const DType dt = kDTypes[index++ % 3];
      SCOPED_TRACE(std::string(label) + " d=" + std::to_string(d) + " m=" + std::to_string(m) + " n=" +
                   std::to_string(n) + " " + dtype_name(dt));
      const Source q = make_source(dt, m, d, rng, 1.0);
      const Source k = make_source(dt, n, d, rng, 3.0);
      const float scale = 0.3f;
      Buffer qp(look.q_bytes(m, d)), kp(look.k_bytes(n, d));
      std::vector<float> q_scales(m), k_scales(static_cast<size_t>(n) + 64, -1.f);
      look.pack_q(RowSource{q.base(), dt, q.stride, nullptr}, m, d, scale, qp.get(), q_scales.data());
      // K in two runs, the second from key 256 (LookBytesFn: a run packed from a multiple of 256
      // sits at k_bytes of it).
      const int first = std::min(n, 256);
      look.pack_k(RowSource{k.base(), dt, k.stride, nullptr}, first, d, 1.0f, kp.get(), k_scales.data());
      if (n > 256) {
        look.pack_k(RowSource{k.row_ptr(256), dt, k.stride, nullptr}, n - 256, d, 1.0f,
                    static_cast<char*>(kp.get()) + look.k_bytes(256, d), k_scales.data() + 256);
      }
      std::vector<std::vector<int>> qi(m), ki(n);
      std::vector<float> qs(m), ks(n);
      for (int r = 0; r < m; ++r) {
        std::vector<float> row(d);
        for (int c = 0; c < d; ++c) row[c] = static_cast<float>(q.at(r, c));
        qs[r] = look_quantized(row, &qi[r]) * scale;
        ASSERT_EQ(q_scales[r], qs[r]) << "r=" << r;
      }
      for (int j = 0; j < n; ++j) {
        std::vector<float> row(d);
        for (int c = 0; c < d; ++c) row[c] = static_cast<float>(k.at(j, c));
        ks[j] = look_quantized(row, &ki[j]);
        ASSERT_EQ(k_scales[j], ks[j]) << "j=" << j;
      }
      // Scores of each 256-key tile, as the driver asks for them.
      const int64_t lds = 256 + 3;
      for (int t0 = 0; t0 < n; t0 += 256) {
        const int nt = std::min(256, n - t0);
        std::vector<float> s(static_cast<size_t>(m) * lds, 12345.0f);
        look.scores(qp.get(), q_scales.data(), m, static_cast<const char*>(kp.get()) + look.k_bytes(t0, d),
                    k_scales.data() + t0, nt, d, s.data(), lds);
        for (int r = 0; r < m; ++r) {
          for (int j = 0; j < lds; ++j) {
            const float got = s[r * lds + j];
            if (j >= nt) {
              ASSERT_EQ(got, 12345.0f) << "wrote past n: r=" << r << " j=" << j;
              continue;
            }
            int64_t dot = 0;
            for (int c = 0; c < d; ++c) dot += qi[r][c] * ki[t0 + j][c];
            const float want = (static_cast<float>(dot) * ks[t0 + j]) * qs[r];
            ASSERT_EQ(got, want) << "r=" << r << " j=" << t0 + j;
            // And near the exact score: the rounding of each factor, at most half a step.
            double exact = 0, bound = 0;
            for (int c = 0; c < d; ++c) {
              exact += q.at(r, c) * scale * k.at(t0 + j, c);
              bound += 0.5 * (std::abs(q.at(r, c)) * ks[t0 + j] + std::abs(k.at(t0 + j, c)) * qs[r] / scale) * scale +
                       0.25 * qs[r] * ks[t0 + j];
            }
            ASSERT_LE(std::abs(got - exact), bound * 1.001 + 1e-6) << "r=" << r << " j=" << t0 + j;
          }
        }
      }
    }
  }
}

TEST_P(KernelsTest, LookScoresAreTheIntegerProducts) {
  if (bf16()) GTEST_SKIP() << "the look is one set of kernels per table";
  expect_look_is_the_integer_products(table_->look, table_->name);
  // The avx512 table's other look (f32 products when the CPU lacks VNNI; vpdpbusd when it has it).
  if (table_->isa == Isa::kAvx512) {
    if (cpu_features().avx512_vnni) {
      const LookPath f32_products = {avx512::look_q_bytes, avx512::look_k_bytes, avx512::look_pack_q,
                                     avx512::look_pack_k,  avx512::look_scores,  avx512::look_row_max};
      expect_look_is_the_integer_products(f32_products, "avx512 without vnni");
    }
  }
}

TEST_P(KernelsTest, LookQuantizesInt8KvLikeScalar) {
  if (bf16()) GTEST_SKIP() << "the look is one set of kernels per table";
  // Quantized K (int8 with a scale per row) dequantized as the attention reads it, then the
  // look's own quantization: the same integers and scales on every table.
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> byte(-127, 127);
  std::uniform_real_distribution<float> unit(0.001f, 0.05f);
  for (int d : {64, 128}) {
    const int n = 40;
    std::vector<int8_t> k(static_cast<size_t>(n) * d);
    std::vector<float> scales(n);
    for (auto& x : k) x = static_cast<int8_t>(byte(rng));
    for (auto& x : scales) x = unit(rng);
    const RowSource src{k.data(), DType::kI8, d, nullptr, scales.data()};
    Buffer got(table_->look.k_bytes(n, d)), want(scalar_->look.k_bytes(n, d));
    std::vector<float> got_s(n + 64), want_s(n + 64);
    table_->look.pack_k(src, n, d, 1.0f, got.get(), got_s.data());
    scalar_->look.pack_k(src, n, d, 1.0f, want.get(), want_s.data());
    for (int j = 0; j < n; ++j) EXPECT_EQ(got_s[j], want_s[j]) << "d=" << d << " j=" << j;
    // The same scores against one query row.
    std::vector<float> qrow(d);
    for (auto& x : qrow) x = unit(rng) - 0.025f;
    const RowSource qsrc{qrow.data(), DType::kF32, d, nullptr};
    Buffer qg(table_->look.q_bytes(1, d)), qw(scalar_->look.q_bytes(1, d));
    float qsg = 0, qsw = 0;
    table_->look.pack_q(qsrc, 1, d, 1.0f, qg.get(), &qsg);
    scalar_->look.pack_q(qsrc, 1, d, 1.0f, qw.get(), &qsw);
    std::vector<float> sg(n), sw(n);
    table_->look.scores(qg.get(), &qsg, 1, got.get(), got_s.data(), n, d, sg.data(), n);
    scalar_->look.scores(qw.get(), &qsw, 1, want.get(), want_s.data(), n, d, sw.data(), n);
    EXPECT_EQ(sg, sw) << "d=" << d;
  }
}

// A row quantized by the look, read back as an int8 row with its scale (dequantized, then
// quantized again: a sharded call's gathered keys, cpu/look.cpp), scores as the row it came from,
// on every look of the table: 127 s / 127 rounds back to s for every scale look_quantize makes
// from a largest magnitude between 1.5e-36 and FLT_MAX, and v s times 127 / (127 s) to v. (The
// f32 layouts may hold +0 where the row held a -0: the same products.)
void expect_look_requantizes_to_itself(const LookPath& look, const char* label) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::uniform_real_distribution<float> decade(-35.f, 37.f);
  for (int d : {64, 128}) {
    const int n = 700;
    std::vector<float> rows(static_cast<size_t>(n) * d);
    std::vector<int8_t> ints(rows.size());
    std::vector<float> scales(n);
    for (int j = 0; j < n; ++j) {
      const float magnitude = j == 0 ? 0.f : j % 2 ? 0.37f : std::pow(10.f, decade(rng));
      std::vector<float> row(d);
      for (int c = 0; c < d; ++c) row[c] = std::clamp(dist(rng), -3.f, 3.f) * magnitude;
      std::copy(row.begin(), row.end(), rows.begin() + static_cast<int64_t>(j) * d);
      std::vector<int> q;
      scales[j] = look_quantized(row, &q);
      for (int c = 0; c < d; ++c) ints[static_cast<size_t>(j) * d + c] = static_cast<int8_t>(q[c]);
    }
    const RowSource from_values{rows.data(), DType::kF32, d, nullptr};
    const RowSource from_ints{ints.data(), DType::kI8, d, nullptr, scales.data()};
    // K both ways, and Q both ways (the first 32 rows), scored against each other.
    Buffer k_want(look.k_bytes(n, d)), k_got(look.k_bytes(n, d));
    std::vector<float> ks_want(n + 64, -1.f), ks_got(n + 64, -1.f);
    look.pack_k(from_values, n, d, 1.0f, k_want.get(), ks_want.data());
    look.pack_k(from_ints, n, d, 1.0f, k_got.get(), ks_got.data());
    EXPECT_EQ(ks_want, ks_got) << label << " d=" << d;
    const int m = 32;
    Buffer q_want(look.q_bytes(m, d)), q_got(look.q_bytes(m, d));
    std::vector<float> qs_want(m), qs_got(m);
    look.pack_q(from_values, m, d, 1.0f, q_want.get(), qs_want.data());
    look.pack_q(from_ints, m, d, 1.0f, q_got.get(), qs_got.data());
    EXPECT_EQ(qs_want, qs_got) << label << " d=" << d;
    std::vector<float> want(static_cast<size_t>(m) * n), got_k(want.size()), got_q(want.size());
    look.scores(q_want.get(), qs_want.data(), m, k_want.get(), ks_want.data(), n, d, want.data(), n);
    look.scores(q_want.get(), qs_want.data(), m, k_got.get(), ks_got.data(), n, d, got_k.data(), n);
    look.scores(q_got.get(), qs_got.data(), m, k_want.get(), ks_want.data(), n, d, got_q.data(), n);
    EXPECT_EQ(want, got_k) << label << " d=" << d << ": K read back";
    EXPECT_EQ(want, got_q) << label << " d=" << d << ": Q read back";
  }
}

TEST_P(KernelsTest, LookRequantizesItsOwnIntegersToThemselves) {
  if (bf16()) GTEST_SKIP() << "the look is one set of kernels per table";
  expect_look_requantizes_to_itself(table_->look, table_->name);
  if (table_->isa == Isa::kAvx512 && cpu_features().avx512_vnni) {
    const LookPath f32_products = {avx512::look_q_bytes, avx512::look_k_bytes, avx512::look_pack_q,
                                   avx512::look_pack_k,  avx512::look_scores,  avx512::look_row_max};
    expect_look_requantizes_to_itself(f32_products, "avx512 without vnni");
  }
}

TEST_P(KernelsTest, LookRowMaxMatchesDefinition) {
  if (bf16()) GTEST_SKIP() << "the look is one set of kernels per table";
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 10.f);
  for (int n : {1, 5, 16, 33, 256}) {
    const int m = 23;
    const int64_t lds = n + 7;
    std::vector<float> s(static_cast<size_t>(m) * lds);
    for (float& x : s) x = dist(rng);
    std::vector<int32_t> lo(m), mid(m), hi(m);
    std::vector<float> outer(m), inner(m);
    for (int r = 0; r < m; ++r) {
      lo[r] = static_cast<int32_t>(rng() % (n + 3)) - 1;  // may start before the tile
      hi[r] = static_cast<int32_t>(rng() % (n + 3));       // may end past it
      mid[r] = static_cast<int32_t>(rng() % (n + 5)) - 2;
      outer[r] = r % 4 == 0 ? kNegInf : dist(rng);
      inner[r] = r % 5 == 0 ? kNegInf : dist(rng);
    }
    std::vector<float> want_outer = outer, want_inner = inner;
    for (int r = 0; r < m; ++r) {
      const int a = std::max(lo[r], 0), c = std::min(hi[r], n), b = std::min(std::max(mid[r], a), c);
      for (int j = a; j < c; ++j) {
        float& best = j < b ? want_outer[r] : want_inner[r];
        best = std::max(best, s[r * lds + j]);
      }
    }
    table_->look.row_max(s.data(), lds, m, n, lo.data(), mid.data(), hi.data(), outer.data(), inner.data());
    EXPECT_EQ(outer, want_outer) << "n=" << n;
    EXPECT_EQ(inner, want_inner) << "n=" << n;
  }
}

// Every ISA of the list with every precision; SetUp skips what this CPU or table lacks.
std::vector<Param> all_tables() {
  std::vector<Param> params;
  for (Precision precision : kAllPrecisions) {
    for (Isa isa : kAllIsas) params.push_back({isa, precision});
  }
  return params;
}

INSTANTIATE_TEST_SUITE_P(AllTables, KernelsTest, testing::ValuesIn(all_tables()), param_name);

}  // namespace
}  // namespace sampleattn
