// The amx table's bf16 path: QK^T and PV as AMX tile products (tdpbf16ps: bf16 pairs, f32
// accumulation), the online softmax between them in AVX-512 (the avx512 table's Softmax), on the
// avx512 bf16 path's packed layouts, which are already the tiles' layouts:
//   K panel [d/2][32 keys][2]: for 32 dimensions (16 pairs), keys 0-15 and 16-31 of a panel are
//     two B tiles of 16 rows x 64 bytes at a stride of 128 bytes.
//   V block [n_pad/2][width][2]: for 32 keys (16 pairs), columns 0-15 and 16-31 of a block are two
//     B tiles at a stride of width * 4 bytes.
//   Q [m][d] and P [rows][lds] bf16: A tiles of up to 16 rows x 32 values (64 bytes).
// A row block is up to 32 query rows (two row tiles), so a 32-key step is 4 tile products on
// 2 A + 2 B tiles into 4 C tiles: all 8 tiles. The tiles are configured with the block's exact
// row counts, so a short block reads and writes no row past its end.
//
// Head dims that are not a multiple of 32 (48, 80, ...) take the avx512 bf16 path's entries: a
// tile step is 32 dimensions. Every other entry of the amx table is the avx512 table's.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include <xsimd/xsimd.hpp>

#include "simd/flash/amx_tiles.h"
#include "simd/flash/entry_points.h"
#include "simd/flash/look_layout.h"
#include "simd/flash/score_mods.h"
#include "simd/flash/softmax.h"
#include "simd/flash/vec.h"

namespace sampleattn::amx {
namespace {

using Arch = xsimd::avx512bw;
using V = flash::Vec<Arch>;
using Softmax = flash::Softmax<Arch>;
using ScoreMods = flash::ScoreMods<Arch>;
using B = V::B;
using amx_tiles::TileConfig;

constexpr int kPanel = 32;     // keys per K panel and per tile step; columns per V block
constexpr int kTileRows = 16;  // rows of an A or C tile
constexpr int kBlockRows = 2 * kTileRows;

bool tiles_fit(int d, int dv) { return d % kPanel == 0 && dv % 16 == 0; }

// Tiles 0/1: A (rows 0-15 / 16-31 of the block, 64 bytes); 2/3: B (16 pairs x 64 bytes);
// 4/5: C of rows 0-15 (columns 0-15 / 16-31 of the step); 6/7: C of rows 16-31.
class Tiles {
 public:
  // Loads the configuration for a block of `rows` rows (1..32) unless it is loaded already.
  void configure(int rows) {
    if (rows == rows_) return;
    rows_ = rows;
    TileConfig cfg;
    const int r0 = rows < kTileRows ? rows : kTileRows;
    const int r1 = rows - r0;
    const auto set = [&](int t, int r) {
      cfg.rows[t] = static_cast<uint8_t>(r);
      cfg.colsb[t] = r > 0 ? 64 : 0;
    };
    set(0, r0);
    set(1, r1);
    set(2, kTileRows);
    set(3, kTileRows);
    set(4, r0);
    set(5, r0);
    set(6, r1);
    set(7, r1);
    SAMPLEATTN_TILE_CONFIG(&cfg);
  }

 private:
  int rows_ = 0;  // 0: nothing loaded by this call (another caller may have changed the tiles)
};

__m256i to_bf16(__m512 v) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)); }

// 2^x for the probabilities that are rounded to bf16 next (8 bits): 2^floor(x) (vscalefps uses
// the floor of its second operand) times a degree-3 polynomial of the fraction f = x - floor(x) in
// [0, 1) (vreduceps, one instruction where roundscale + sub are three uops), fitted for the least
// relative error with p(0) = 1 exactly (a row's maximum gets probability 1, as with exp2): at
// most 8.6e-5, 23x under bf16's half step 2^-9. 7 operations where the f32 path's exp2 takes 14.
// x >= -127 (smaller gives 2^-127 times at most 2).
__m512 exp2_for_bf16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
  const __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 p = _mm512_set1_ps(0.077067069709301f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.22764496505260468f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6951168179512024f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, x);
}

// The QK products of a block of rows as a sequence of steps, each one 32-dimension chunk of one
// 32-key panel (2 or 4 tile products), so that a block's products can be issued between the rows
// of the previous block's softmax: the tile unit then works while the vector units do. Writes
// s[r][p0, p0 + 32) = q_r . k_j (unscaled) for the panels from p_begin to p_end (multiples of 32);
// s has leading dimension lds (floats). The tiles must be configured for the block's rows.
class QkSteps {
 public:
  QkSteps() = default;
  QkSteps(const uint16_t* q, int d, bool two, const uint32_t* k, int p_begin, int p_end, float* s, int64_t lds)
      : q_(q), k_(k), s_(s), lds_(lds), d_(d), chunks_(d / kPanel), p0_(p_begin), p_end_(p_begin < p_end ? p_end : p_begin),
        two_(two) {}

  int remaining() const { return (p_end_ - p0_) / kPanel * chunks_ - c_; }

  void step() {
    const long qs = static_cast<long>(d_) * 2;
    if (c_ == 0) {
      SAMPLEATTN_TILE_ZERO(4);
      SAMPLEATTN_TILE_ZERO(5);
      if (two_) {
        SAMPLEATTN_TILE_ZERO(6);
        SAMPLEATTN_TILE_ZERO(7);
      }
    }
    const uint32_t* kb = k_ + static_cast<int64_t>(p0_) * (d_ / 2) + c_ * kTileRows * kPanel;
    SAMPLEATTN_TILE_LOAD(2, kb, 128);
    SAMPLEATTN_TILE_LOAD(3, kb + 16, 128);
    SAMPLEATTN_TILE_LOAD(0, q_ + c_ * kPanel, qs);
    SAMPLEATTN_TILE_DP(4, 0, 2);
    SAMPLEATTN_TILE_DP(5, 0, 3);
    if (two_) {
      SAMPLEATTN_TILE_LOAD(1, q_ + static_cast<int64_t>(kTileRows) * d_ + c_ * kPanel, qs);
      SAMPLEATTN_TILE_DP(6, 1, 2);
      SAMPLEATTN_TILE_DP(7, 1, 3);
    }
    if (++c_ < chunks_) return;
    const long ss = static_cast<long>(lds_) * 4;
    float* s1 = s_ + kTileRows * lds_;
    SAMPLEATTN_TILE_STORE(4, s_ + p0_, ss);
    SAMPLEATTN_TILE_STORE(5, s_ + p0_ + 16, ss);
    if (two_) {
      SAMPLEATTN_TILE_STORE(6, s1 + p0_, ss);
      SAMPLEATTN_TILE_STORE(7, s1 + p0_ + 16, ss);
    }
    c_ = 0;
    p0_ += kPanel;
  }

  void run_all() {
    while (remaining() > 0) step();
  }

 private:
  const uint16_t* q_ = nullptr;
  const uint32_t* k_ = nullptr;
  float* s_ = nullptr;
  int64_t lds_ = 0;
  int d_ = 0, chunks_ = 1, p0_ = 0, p_end_ = 0, c_ = 0;
  bool two_ = false;
};

// The PV products of a block as a sequence of steps, each one 32-key chunk of one 32-column block
// of V (2 or 4 tile products; C loaded from acc before a column block's first chunk and stored
// after its last), so that they too can be issued between the rows of a later block's softmax:
// acc[r][0, dv) += p_r . V over the key pairs [u0, u1) (multiples of 16); p rows are bf16 at
// pb + r * lds, acc rows at acc + r * dv. The tiles must be configured for the block's rows.
class PvSteps {
 public:
  PvSteps() = default;
  PvSteps(const uint16_t* pb, int64_t lds, bool two, int u0, int u1, const uint16_t* v, int64_t n_pad, int dv,
          float* acc)
      : pb_(pb), v_(v), acc_(acc), lds_(lds), n_pad_(n_pad), dv_(dv), u0_(u0), u_(u0),
        chunks_(u0 < u1 ? (u1 - u0) / kTileRows : 0), two_(two) {}

  int remaining() const { return chunks_ == 0 ? 0 : ((dv_ - x0_ + kPanel - 1) / kPanel) * chunks_ - (u_ - u0_) / kTileRows; }

  void step() {
    const int width = V::imin(kPanel, dv_ - x0_);
    const bool wide = width == kPanel;
    const long as = static_cast<long>(dv_) * 4;
    float* o0 = acc_ + x0_;
    float* o1 = acc_ + static_cast<int64_t>(kTileRows) * dv_ + x0_;
    if (u_ == u0_) {
      SAMPLEATTN_TILE_LOAD(4, o0, as);
      if (wide) SAMPLEATTN_TILE_LOAD(5, o0 + 16, as);
      if (two_) {
        SAMPLEATTN_TILE_LOAD(6, o1, as);
        if (wide) SAMPLEATTN_TILE_LOAD(7, o1 + 16, as);
      }
    }
    const long ps = static_cast<long>(lds_) * 2;
    const long vs = static_cast<long>(width) * 4;
    const uint16_t* vu = v_ + x0_ * n_pad_ + static_cast<int64_t>(u_) * width * 2;
    SAMPLEATTN_TILE_LOAD(2, vu, vs);
    if (wide) SAMPLEATTN_TILE_LOAD(3, vu + 32, vs);
    SAMPLEATTN_TILE_LOAD(0, pb_ + 2 * u_, ps);
    SAMPLEATTN_TILE_DP(4, 0, 2);
    if (wide) SAMPLEATTN_TILE_DP(5, 0, 3);
    if (two_) {
      SAMPLEATTN_TILE_LOAD(1, pb_ + kTileRows * lds_ + 2 * u_, ps);
      SAMPLEATTN_TILE_DP(6, 1, 2);
      if (wide) SAMPLEATTN_TILE_DP(7, 1, 3);
    }
    u_ += kTileRows;
    if ((u_ - u0_) / kTileRows < chunks_) return;
    SAMPLEATTN_TILE_STORE(4, o0, as);
    if (wide) SAMPLEATTN_TILE_STORE(5, o0 + 16, as);
    if (two_) {
      SAMPLEATTN_TILE_STORE(6, o1, as);
      if (wide) SAMPLEATTN_TILE_STORE(7, o1 + 16, as);
    }
    u_ = u0_;
    x0_ += kPanel;
  }

  void run_all() {
    while (remaining() > 0) step();
  }

 private:
  const uint16_t* pb_ = nullptr;
  const uint16_t* v_ = nullptr;
  float* acc_ = nullptr;
  int64_t lds_ = 0, n_pad_ = 0;
  int dv_ = 0, x0_ = 0, u0_ = 0, u_ = 0, chunks_ = 0;
  bool two_ = false;
};

// A block of R <= 32 query rows: its row spans in the tile, the key range its products cover
// ([ja, jb), whole panels), where its scores and probabilities go.
struct Block {
  int r0 = 0, R = 0, ja = 0, jb = 0;
  bool active = false;  // some row sees some key of the tile
  int lo[kBlockRows], hi[kBlockRows];
  float* s = nullptr;
  uint16_t* p = nullptr;

  void describe(const AttendTileArgs& a, int first, int rows) {
    r0 = first;
    R = rows;
    int jlo = a.n, jhi = 0;
    for (int r = 0; r < R; ++r) {
      lo[r] = V::span_lo(a.lo, r0 + r);
      hi[r] = V::span_hi(a.hi, r0 + r, a.n);
      if (lo[r] < hi[r]) {
        jlo = V::imin(jlo, lo[r]);
        jhi = V::imax(jhi, hi[r]);
      }
    }
    active = jlo < jhi;
    ja = active ? jlo / kPanel * kPanel : 0;
    jb = active ? static_cast<int>(V::round_up(static_cast<size_t>(jhi), kPanel)) : 0;
  }
  bool two() const { return R > kTileRows; }
  QkSteps products(const AttendTileArgs& a, int64_t lds) const {
    return QkSteps(static_cast<const uint16_t*>(a.q) + static_cast<int64_t>(r0) * a.d, a.d, two(),
                   static_cast<const uint32_t*>(a.k), ja, jb, s, lds);
  }
  PvSteps values(const AttendTileArgs& a, int64_t lds) const {
    return PvSteps(p, lds, two(), ja / 2, jb / 2, static_cast<const uint16_t*>(a.v), lds, a.dv,
                   a.acc + static_cast<int64_t>(r0) * a.dv);
  }
};

// The vector part of a block whose scores are in b.s: the score variants, the online softmax one
// row at a time into b.p (issuing the tile steps of `qk`, then of `pv`, between the rows: another
// block's products, which the tile unit runs while the vector units run this), then acc rescaled
// by the softmax's correction. Its own PV comes later.
void softmax_block(const AttendTileArgs& a, const Block& b, QkSteps& qk, PvSteps& pv, int64_t lds) {
  float* s = b.s;
  const int R = b.R;
  // The deferred scale (kernels.h): folded into the softmax, or applied first when the score
  // variants need the scaled scores.
  float softmax_scale = a.qk_scale;
  if (ScoreMods::any(a.mod)) {
    if (a.qk_scale != 1.0f) Softmax::scale_rows(s, lds, R, b.lo, b.hi, a.qk_scale);
    softmax_scale = 1.0f;
    ScoreMods::modify_rows(s, lds, a.mod, b.r0, R, b.lo, b.hi, a.n);
  }

  float corr[kBlockRows];
  const auto step = [&] {
    if (qk.remaining() > 0) {
      qk.step();
    } else if (pv.remaining() > 0) {
      pv.step();
    }
  };
  // Each row issues its share of the steps spread over its probability vectors (one step, 2-4
  // tile products, every `every` vectors), so that the tile unit and the vector units take turns
  // in small pieces: a row's worth of steps at once would hold the reorder buffer behind them.
  const int per_row = (qk.remaining() + pv.remaining() + R - 1) / R;
  const int vectors = (b.jb - b.ja) / V::W;
  const int every = per_row > 0 ? V::imax(1, vectors / per_row) : vectors + 1;
  for (int r = 0; r < R; ++r) {
    const V::BlockSpans spans = V::block_spans(a.lo, a.hi, b.r0 + r, 1, a.n);
    uint16_t* p = b.p + r * lds;
    int issued = 0, tick = 0;
    Softmax::softmax_rows(
        s + r * lds, lds, 1, spans, b.ja, b.jb, a.row_max + b.r0 + r, a.row_sum + b.r0 + r, corr + r,
        [&](int, int j, B x) {
          // The row sum adds the probabilities before rounding (as PyTorch's and
          // flash-attention's kernels do); the products use the rounded ones.
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j), to_bf16(x));
          if (++tick == every && issued < per_row) {
            tick = 0;
            ++issued;
            step();
          }
          return x;
        },
        softmax_scale, [](B x) { return B(exp2_for_bf16(x)); });
    for (; issued < per_row; ++issued) step();
  }
  qk.run_all();
  pv.run_all();

  const int dv = a.dv;
  float* acc = a.acc + static_cast<int64_t>(b.r0) * dv;
  for (int r = 0; r < R; ++r) {
    if (b.lo[r] >= b.hi[r] || corr[r] == 1.0f) continue;
    const __m512 c = _mm512_set1_ps(corr[r]);
    float* o = acc + static_cast<int64_t>(r) * dv;
    for (int x = 0; x < dv; x += 16) _mm512_storeu_ps(o + x, _mm512_mul_ps(_mm512_loadu_ps(o + x), c));
  }
}

// Bytes of one block's f32 scores and of its bf16 probabilities.
size_t score_bytes(int m, int n) {
  const size_t rows = static_cast<size_t>(V::imin(V::imax(m, 1), kBlockRows));
  return V::round_up(rows * V::round_up(static_cast<size_t>(n), kPanel) * sizeof(float), 64);
}
size_t probability_bytes(int m, int n) {
  const size_t rows = static_cast<size_t>(V::imin(V::imax(m, 1), kBlockRows));
  return V::round_up(rows * V::round_up(static_cast<size_t>(n), kPanel) * sizeof(uint16_t), 64);
}

}  // namespace

// Scores and probabilities of two row blocks (one when m <= 32).
size_t bf16_scratch_bytes(int m, int n) {
  return (m > kBlockRows ? 2 : 1) * (score_bytes(m, n) + probability_bytes(m, n));
}

// Blocks of 32 rows in order, software-pipelined across the tile unit and the vector units: while
// block i runs its softmax, block i + 1's QK products and then block i - 1's PV products are issued
// between its rows. Steps of blocks with another row count (the last, short block) run on their own,
// with the tiles configured for them. S and P are double-buffered.
void bf16_attend(const AttendTileArgs& a) {
  if (a.m <= 0 || a.n <= 0) return;
  if (!tiles_fit(a.d, a.dv)) {
    avx512::bf16_attend(a);
    return;
  }
  const int64_t lds = static_cast<int64_t>(V::round_up(static_cast<size_t>(a.n), kPanel));
  const int buffers = a.m > kBlockRows ? 2 : 1;
  const size_t sb = score_bytes(a.m, a.n), pbytes = probability_bytes(a.m, a.n);
  char* scratch = static_cast<char*>(a.scratch);
  const auto s_buffer = [&](int i) { return reinterpret_cast<float*>(scratch + (i % buffers) * sb); };
  const auto p_buffer = [&](int i) { return reinterpret_cast<uint16_t*>(scratch + buffers * sb + (i % buffers) * pbytes); };
  const int count = (a.m + kBlockRows - 1) / kBlockRows;
  Block ring[3];  // blocks i - 1 (its PV pending), i, i + 1
  const auto describe = [&](int i) -> Block& {
    Block& b = ring[i % 3];
    b.describe(a, i * kBlockRows, V::imin(kBlockRows, a.m - i * kBlockRows));
    b.s = s_buffer(i);
    b.p = p_buffer(i);
    return b;
  };
  Tiles tiles;
  const auto products_alone = [&](const Block& b) {
    tiles.configure(b.R);
    b.products(a, lds).run_all();
  };
  const auto values_alone = [&](const Block& b) {
    tiles.configure(b.R);
    b.values(a, lds).run_all();
  };

  if (describe(0).active) products_alone(ring[0]);
  const Block* pending = nullptr;  // a block whose softmax ran and whose PV has not
  for (int i = 0; i < count; ++i) {
    const Block& cur = ring[i % 3];
    const Block* next = i + 1 < count ? &describe(i + 1) : nullptr;
    const bool qk_overlap = next != nullptr && next->active && cur.active && next->R == cur.R;
    const bool pv_overlap = pending != nullptr && cur.active && pending->R == cur.R;
    if (pending != nullptr && !pv_overlap) values_alone(*pending);
    if (cur.active) {
      tiles.configure(cur.R);
      QkSteps qk = qk_overlap ? next->products(a, lds) : QkSteps();
      PvSteps pv = pv_overlap ? pending->values(a, lds) : PvSteps();
      softmax_block(a, cur, qk, pv, lds);
    }
    pending = cur.active ? &cur : nullptr;
    if (next != nullptr && next->active && !qk_overlap) products_alone(*next);
  }
  if (pending != nullptr) values_alone(*pending);
}

void bf16_scores(const void* qv, int m, const void* kv, int n, int d, float* s, int64_t lds, float qk_scale) {
  if (m <= 0 || n <= 0) return;
  if (!tiles_fit(d, 16)) {
    avx512::bf16_scores(qv, m, kv, n, d, s, lds, qk_scale);
    return;
  }
  const uint16_t* q = static_cast<const uint16_t*>(qv);
  const uint32_t* k = static_cast<const uint32_t*>(kv);
  // Whole panels inside both n and lds go straight to s; the last one through a staging block.
  const int full = n / kPanel * kPanel;
  alignas(64) float edge[kBlockRows * kPanel];
  Tiles tiles;
  for (int r0 = 0; r0 < m; r0 += kBlockRows) {
    const int R = V::imin(kBlockRows, m - r0);
    tiles.configure(R);
    const uint16_t* qr = q + static_cast<int64_t>(r0) * d;
    float* sr = s + r0 * lds;
    QkSteps(qr, d, R > kTileRows, k, 0, full, sr, lds).run_all();
    if (full < n) {
      QkSteps(qr, d, R > kTileRows, k + static_cast<int64_t>(full) * (d / 2), 0, kPanel, edge, kPanel).run_all();
      for (int r = 0; r < R; ++r) std::memcpy(sr + r * lds + full, edge + r * kPanel, sizeof(float) * (n - full));
    }
    if (qk_scale != 1.0f) {
      for (int r = 0; r < R; ++r) {
        for (int j = 0; j < n; j += 16) {
          const __mmask16 k16 = static_cast<__mmask16>(n - j >= 16 ? 0xffff : (1u << (n - j)) - 1);
          float* p = sr + r * lds + j;
          _mm512_mask_storeu_ps(p, k16, _mm512_mul_ps(_mm512_maskz_loadu_ps(k16, p), _mm512_set1_ps(qk_scale)));
        }
      }
    }
  }
}

// The look's products on int8 tiles (tdpbsud: s8 Q x u8 K, int32 sums: the VNNI kernel's exactly),
// on look_layout.h's layouts: for each 64 dimensions, Q rows are an A tile of up to 16 rows x 64
// bytes at a stride of d bytes, and a group of 16 keys is a B tile of 16 rows (4-dimension quads)
// x 64 bytes at a stride of 64. A 32-row, 32-key step is 2 A + 2 B tiles into 4 C tiles, as the
// bf16 kernel's; the sums go through a 32 x 32 int32 buffer to the scaled f32 scores. Head dims
// that are not a multiple of 64 take the VNNI kernel.
void look_scores(const void* qv, const float* q_scales, int m, const void* kv, const float* k_scales, int n, int d,
                 float* s, int64_t lds) {
  namespace layout = flash::look_layout;
  constexpr int kChunk = 64;  // dimensions a tile product
  if (d % kChunk != 0) {
    avx512::look_scores_vnni(qv, q_scales, m, kv, k_scales, n, d, s, lds);
    return;
  }
  const int8_t* q = static_cast<const int8_t*>(qv);
  const int32_t* fix = reinterpret_cast<const int32_t*>(static_cast<const char*>(qv) + layout::fix_offset(m, d));
  const uint8_t* k = static_cast<const uint8_t*>(kv);
  alignas(64) int32_t sums[kBlockRows][kPanel];
  Tiles tiles;
  for (int r0 = 0; r0 < m; r0 += kBlockRows) {
    const int rows = V::imin(kBlockRows, m - r0);
    const bool two = rows > kTileRows;
    tiles.configure(rows);
    const int8_t* qb = q + static_cast<int64_t>(r0) * d;
    for (int j0 = 0; j0 < n; j0 += layout::kStep) {
      SAMPLEATTN_TILE_ZERO(4);
      SAMPLEATTN_TILE_ZERO(5);
      if (two) {
        SAMPLEATTN_TILE_ZERO(6);
        SAMPLEATTN_TILE_ZERO(7);
      }
      const uint8_t* g0 = k + static_cast<size_t>(j0) * d;
      const uint8_t* g1 = g0 + static_cast<size_t>(layout::kGroup) * d;
      for (int c = 0; c < d; c += kChunk) {
        SAMPLEATTN_TILE_LOAD(2, g0 + c * layout::kGroup, 64);  // quads c/4 .. c/4 + 15 of the group
        SAMPLEATTN_TILE_LOAD(3, g1 + c * layout::kGroup, 64);
        SAMPLEATTN_TILE_LOAD(0, qb + c, d);
        SAMPLEATTN_TILE_DP_S8U8(4, 0, 2);
        SAMPLEATTN_TILE_DP_S8U8(5, 0, 3);
        if (two) {
          SAMPLEATTN_TILE_LOAD(1, qb + static_cast<int64_t>(kTileRows) * d + c, d);
          SAMPLEATTN_TILE_DP_S8U8(6, 1, 2);
          SAMPLEATTN_TILE_DP_S8U8(7, 1, 3);
        }
      }
      SAMPLEATTN_TILE_STORE(4, &sums[0][0], kPanel * 4);
      SAMPLEATTN_TILE_STORE(5, &sums[0][16], kPanel * 4);
      if (two) {
        SAMPLEATTN_TILE_STORE(6, &sums[kTileRows][0], kPanel * 4);
        SAMPLEATTN_TILE_STORE(7, &sums[kTileRows][16], kPanel * 4);
      }
      const int left = n - j0;
      const __mmask16 m0 = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
      const __mmask16 m1 =
          left >= 32 ? __mmask16(0xffff) : (left <= 16 ? __mmask16(0) : static_cast<__mmask16>((1u << (left - 16)) - 1));
      const __m512 s0 = _mm512_loadu_ps(k_scales + j0), s1 = _mm512_loadu_ps(k_scales + j0 + 16);
      for (int r = 0; r < rows; ++r) {
        const __m512i f = _mm512_set1_epi32(fix[r0 + r]);
        const __m512 scale = _mm512_set1_ps(q_scales[r0 + r]);
        const __m512i a0 = _mm512_load_si512(&sums[r][0]), a1 = _mm512_load_si512(&sums[r][16]);
        const __m512 e0 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a0, f)), s0), scale);
        const __m512 e1 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a1, f)), s1), scale);
        float* out = s + static_cast<int64_t>(r0 + r) * lds + j0;
        _mm512_mask_storeu_ps(out, m0, e0);
        _mm512_mask_storeu_ps(out + 16, m1, e1);
      }
    }
  }
}

int64_t tile_product_loop(int64_t steps, float* sink) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kTileRows;
    cfg.colsb[t] = 64;
  }
  SAMPLEATTN_TILE_CONFIG(&cfg);
  alignas(64) uint16_t operand[kTileRows * kPanel];
  for (int i = 0; i < kTileRows * kPanel; ++i) operand[i] = 0x3c00 + static_cast<uint16_t>(i % 8);  // ~2^-7
  SAMPLEATTN_TILE_LOAD(0, operand, 64);
  SAMPLEATTN_TILE_LOAD(1, operand, 64);
  SAMPLEATTN_TILE_LOAD(2, operand, 64);
  SAMPLEATTN_TILE_LOAD(3, operand, 64);
  SAMPLEATTN_TILE_ZERO(4);
  SAMPLEATTN_TILE_ZERO(5);
  SAMPLEATTN_TILE_ZERO(6);
  SAMPLEATTN_TILE_ZERO(7);
  for (int64_t i = 0; i < steps; ++i) {  // four independent accumulators
    SAMPLEATTN_TILE_DP(4, 0, 2);
    SAMPLEATTN_TILE_DP(5, 0, 3);
    SAMPLEATTN_TILE_DP(6, 1, 2);
    SAMPLEATTN_TILE_DP(7, 1, 3);
  }
  alignas(64) float out[kTileRows * 16];
  SAMPLEATTN_TILE_STORE(4, out, 64);
  *sink += out[0];
  return steps * 4 * (2 * kTileRows * 16 * kPanel);
}

bool tiles_emulated() {
#if defined(SAMPLEATTN_AMX_EMULATE)
  return true;
#else
  return false;
#endif
}

}  // namespace sampleattn::amx
