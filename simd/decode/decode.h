// The decode kernel (attend_rows, simd/kernels.h): a few query rows against keys and values read
// straight from their source rows (any K/V dtype, dequantized on the fly), with no packing. For a
// short query chunk (a decode step) each key is used by a handful of rows, so the f32 path's panel
// packing of K and V would cost more than the products; here every K and V row is read once per
// block of rows, converted in registers and used at once.
//
// Order: the score pass walks the block's (key, kv head) pairs in the cache's memory order: a
// cache keeps a token's kv heads side by side ([token, kv head, dim]), so key j's K row of head 0,
// then of head 1, ..., then key j + 1's; each K row read from its first line to its last, and
// each pair's V row requested into L2 as its K row is read. The hardware prefetchers follow such
// a stream as they follow a read loop, ahead of the products. The value pass then takes head by
// head, its V rows in L2. Measured on the Zen 5 of docs/PERF.md (kernels_bench attend_rows, f16,
// 32K keys from memory, one core): 26.7 ns a key and kv head with the previous order (a head's
// keys, then the next head's, each head's rows 2 KB apart and requested 32 keys ahead by
// software, which a core's few dozen misses in flight capped near 20 GB/s) against 21.9 now;
// without the V requests 40-45 (the value pass then reads its rows from memory, head by head).
// The value pass, whose rows are in L2, requests the next call's K rows (AttendRowsArgs::next_k,
// Ahead), so that the memory is not idle while the core multiplies: without it the two passes'
// times added up (2 Zen 5 cores: f16 at 0.65-0.74 of a read loop's rate by run, 0.70-0.76 with it;
// docs/PERF.md, session 43).
//
// Scores: R query rows x J pairs at a time (R * J = 16 accumulator vectors on AVX-512: 4 x 4 for
// a GQA group of 4, over 4 heads of one key), pair by pair, two chains a row (the even and odd
// steps); the 16 dot products are then reduced together (a tree of shuffles and adds, four levels,
// 45 instructions for 16 sums instead of 16 horizontal sums) into a pair-major buffer, which is
// transposed (16 x 16 in registers) to rows before the softmax. Softmax: the online step of
// simd/flash/softmax.h on the block's scores. Values: each value row, converted, is added into
// register blocks of kPvRows x kPvVecs accumulator vectors.
//
// Integer products (Decode<Arch, true>, AVX512_VNNI; the table takes it when the CPU has VNNI, and
// it runs them when AttendRowsArgs::int8_products allows, else the f32 products below): int8 K
// and V are used as they are stored, never converted to f32. Each query row becomes int16
// (q16 = round(q / sq), sq = max|q| / 32767, per row and call) and a score is
// sq * k_scale * (q16 . k8), the dot product exact in int32 (vpdpwssd on K sign-extended to int16).
// The values: each row's weights w = p * v_scale become int16 the same way (per row and call) and
// sum_j w16_j * v8_j accumulates exactly in int32 (pairs of keys interleaved, vpdpwssd), added to
// the f32 accumulators with the row's weight scale every kIntFlushKeys keys (no int32 overflow:
// 256 x 32767 x 128 < 2^31, and d <= 256 for the scores). Per 32 values, one sign extension and
// one vpdpwssd a row, where the f32 products take 2 x (two conversions, a scale, a FMA a row).
// The price is rounding: a score moves by at most max|q| / 65534 * sum |k| (K dequantized), a
// value sum by at most max_j |w_j| / 65534 * sum_j |v8_j[x]|; on the Llama captures that is about
// 1/150 of what int8's own rounding costs (docs/ACCURACY.md), but it is not the bits of the f32
// call on the dequantized values (KernelTable::attend_rows_int8_products says which tables can).
// Q's int16 rows depend on the rows only, so the next key block of the same rows reuses them
// (AttendRowsArgs::same_q).
//
// Every value read is also checked: f32/f16/bf16 NaN or Inf, and fp8 e4m3's NaN codes (read as
// +-1.875 by Pack::load_src before the 2^8 unbias; the largest finite code reads 1.75), so the
// driver can skip the separate scan of such K/V (docs/SECURITY.md).
//
// Every function is a static member of a class template over the xsimd architecture (see
// simd/flash/vec.h). Include only from a per-ISA translation unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "simd/flash/pack.h"
#include "simd/flash/score_mods.h"
#include "simd/flash/softmax.h"
#include "simd/flash/vec.h"
#include "simd/flash/vnni.h"
#include "simd/kernels.h"

namespace sampleattn::flash {

// What both Decode classes share: the scratch's areas and the value checks, so that the integer
// class hands every pass without integers (its K or V not int8) to Decode<Arch, false>'s one copy.
template <class Arch>
struct DecodeParts : Vec<Arch> {
  using V = Vec<Arch>;
  using typename V::B;

  // The scratch: (integer products) Q as int16 with its row scales first, whose place depends on
  // the rows only (AttendRowsArgs::same_q reuses them), then the scores, then (integer products)
  // the weights as int16 with their row scales, then (AVX-512) the scores pair-major as the score
  // pass leaves them; each area 64-byte aligned.
  struct Scratch {
    int16_t* q16 = nullptr;     // rows x kIntMaxDim (d rounded up to kIntStep, zero past d)
    float* q_scale = nullptr;   // rows
    float* s = nullptr;         // rows x lds
    int16_t* w16 = nullptr;     // rows x ldw (zero past n)
    float* w_scale = nullptr;   // rows
    float* st = nullptr;        // n x rows: st[p * m + i] is row h * m + i of pair p (key p / heads, kv head h = p % heads)
    float* v_factors = nullptr;  // n: (integer products) a head's V scales in key order, where the rows' are elsewhere
    int64_t lds = 0, ldw = 0;
  };
  // Tracks what the values read so far say: for fp8, whether one held a NaN code (they load as
  // +-1.875, past the largest finite 1.75); for f32 and bf16, their largest magnitude (the input
  // policy's bounds, AttendRowsArgs::k_max_abs). f16 and int8 need no look at the values (their
  // dtypes bound them; int8 is always finite), and a non-finite f32/f16/bf16 key makes its scores
  // non-finite, a non-finite value the accumulators it is added to (times 0 included), which run()
  // checks instead, once per block.
  // A pass folds its values into a register of its own (fold) and hands it to see() once: the
  // accumulator, reached through the pass's pointer, stayed in memory, a load and a store on every
  // vector of values (store forwarding in each step's path: bf16 decode 40 ns a key and kv head in
  // L2 against f16's 15, kernels_bench on the Zen 5).
  template <DType T>
  struct Check {
    B acc = B(0.0f);
    static B fold(B seen, B x) { return xsimd::max(seen, xsimd::abs(x)); }
    void see(B x) {
      if constexpr (T == DType::kFP8 || T == DType::kF32 || T == DType::kBF16) acc = fold(acc, x);
    }
    bool ok() const {
      if constexpr (T == DType::kFP8) return V::hmax(acc) <= 1.75f;
      return true;
    }
    void raise(float* max_abs) const {
      if constexpr (T == DType::kF32 || T == DType::kBF16) {
        if (max_abs != nullptr) {
          const float m = V::hmax(acc);
          if (!(m <= *max_abs)) *max_abs = m;
        }
      }
    }
  };
};

template <class Arch, bool kIntProducts = false>
struct Decode : DecodeParts<Arch> {
  using V = Vec<Arch>;
  using Parts = DecodeParts<Arch>;
  using typename Parts::Scratch;
  template <DType T>
  using Check = typename Parts::template Check<T>;
  using typename V::B;
  using typename V::BlockSpans;
  using V::W;
  using V::kMaxRows;
  using V::imin;
  using V::round_up;
  using V::with_dtype;
  using PackT = Pack<Arch>;

  static constexpr int kRows = 4;                 // query rows per score block
  static constexpr int kPvRows = W == 16 ? 4 : 2;  // accumulator rows per value block
  static constexpr int kPvVecs = 4;               // accumulator vectors per row of a value block
  // Integer products (see the top of this file): int16 values per vector, the largest d, and the
  // keys whose value sums may share an int32 accumulator.
  static constexpr int kIntStep = 32;
  static constexpr int kIntMaxDim = 256;
  static constexpr int kIntFlushKeys = 256;
  static_assert(!kIntProducts || W == 16, "integer products are AVX-512 (VNNI) only");
  static constexpr bool int_products(DType t) { return kIntProducts && t == DType::kI8; }

  // Byte offsets of Scratch's areas for m rows and n keys, in its order; [7] is the total.
  static void scratch_offsets(int m, int n, size_t* off) {
    const size_t rows = static_cast<size_t>(m);
    const bool ints = kIntProducts;
    off[0] = 0;
    off[1] = off[0] + (ints ? round_up(rows * kIntMaxDim * sizeof(int16_t), 64) : 0);
    off[2] = off[1] + (ints ? round_up(rows * sizeof(float), 64) : 0);
    off[3] = off[2] + round_up(rows * round_up(static_cast<size_t>(n), W) * sizeof(float), 64);
    off[4] = off[3] + (ints ? round_up(rows * round_up(static_cast<size_t>(n), kIntStep) * sizeof(int16_t), 64) : 0);
    off[5] = off[4] + (ints ? round_up(rows * sizeof(float), 64) : 0);
    off[6] = off[5] + (W == 16 ? round_up(rows * static_cast<size_t>(n) * sizeof(float), 64) : 0);
    off[7] = off[6] + (ints ? round_up(static_cast<size_t>(n) * sizeof(float), 64) : 0);
  }
  static Scratch scratch_of(float* base, int m, int n) {
    size_t off[8];
    scratch_offsets(m, n, off);
    char* p = reinterpret_cast<char*>(base);
    Scratch r;
    r.s = reinterpret_cast<float*>(p + off[2]);
    r.lds = static_cast<int64_t>(round_up(static_cast<size_t>(n), W));
    if constexpr (W == 16) r.st = reinterpret_cast<float*>(p + off[5]);
    if constexpr (kIntProducts) {
      r.q16 = reinterpret_cast<int16_t*>(p + off[0]);
      r.q_scale = reinterpret_cast<float*>(p + off[1]);
      r.w16 = reinterpret_cast<int16_t*>(p + off[3]);
      r.w_scale = reinterpret_cast<float*>(p + off[4]);
      r.v_factors = reinterpret_cast<float*>(p + off[6]);
      r.ldw = static_cast<int64_t>(round_up(static_cast<size_t>(n), kIntStep));
    }
    return r;
  }
  static size_t scratch_bytes(int m, int n) {
    size_t off[8];
    scratch_offsets(m, n, off);
    return off[7];
  }

  static constexpr bool reads_bits(DType t) { return t == DType::kFP8; }  // checked by Check, not by results
  static constexpr bool sees(DType t) { return t == DType::kFP8 || t == DType::kF32 || t == DType::kBF16; }

  // Whether rows [0, m) x columns [0, n) of s (leading dimension lds) are all finite: x * 0 is 0
  // for finite x and NaN otherwise, and NaN sticks under addition.
  static bool all_finite(const float* s, int64_t lds, int m, int n) {
    B acc(0.0f);
    for (int r = 0; r < m; ++r) {
      const float* sr = s + static_cast<int64_t>(r) * lds;
      int j = 0;
      for (; j + W <= n; j += W) acc = xsimd::fma(B::load_unaligned(sr + j), B(0.0f), acc);
      for (; j < n; ++j) {
        if (!(sr[j] * 0.0f == 0.0f)) return false;
      }
    }
    return !xsimd::any(xsimd::isnan(acc));
  }

  static int64_t row_base(const RowSource& src, int j) { return src.offsets ? src.offsets[j] : j * src.row_stride; }

  // Sums of 16 vectors: lane L of the result = sum of the lanes of in[L] (AVX-512 only). `add` adds
  // two vectors of the lanes' type (f32, or int32 seen as f32 bits: the tree only moves lanes).
  // Inlined: called, the 16 accumulators went through the stack (kernels_bench f16 42.6 -> 28.7-29.1
  // ns a key).
  template <class Add>
  [[gnu::always_inline]] static inline __m512 reduce16(const __m512* in, Add add) {
    // Lane (4 * quarter + position) of the tree's result sums v[q0[quarter] + q1[position]].
    constexpr int q0[4] = {0, 8, 4, 12};
    constexpr int q1[4] = {0, 2, 1, 3};
    __m512 v[16];
    for (int L = 0; L < 16; ++L) v[q0[L / 4] + q1[L % 4]] = in[L];
    __m512 w[8];
    for (int i = 0; i < 8; ++i) {
      w[i] = add(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44), _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
    }
    __m512 x[4];
    for (int i = 0; i < 4; ++i) {
      x[i] = add(_mm512_shuffle_f32x4(w[i], w[i + 4], 0x88), _mm512_shuffle_f32x4(w[i], w[i + 4], 0xDD));
    }
    __m512 y[2];
    for (int i = 0; i < 2; ++i) y[i] = add(_mm512_unpacklo_ps(x[i], x[i + 2]), _mm512_unpackhi_ps(x[i], x[i + 2]));
    const __m512d y0 = _mm512_castps_pd(y[0]), y1 = _mm512_castps_pd(y[1]);
    return add(_mm512_castpd_ps(_mm512_unpacklo_pd(y0, y1)), _mm512_castpd_ps(_mm512_unpackhi_pd(y0, y1)));
  }
  [[gnu::always_inline]] static inline B reduce16(const B* in) {
    __m512 v[16];
    for (int L = 0; L < 16; ++L) v[L] = in[L];
    return B(reduce16(v, [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); }));
  }
  [[gnu::always_inline]] static inline __m512i reduce16(const __m512i* in) {
    __m512 v[16];
    for (int L = 0; L < 16; ++L) v[L] = _mm512_castsi512_ps(in[L]);
    return _mm512_castps_si512(reduce16(v, [](__m512 a, __m512 b) {
      return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
    }));
  }

  // The pairs a score call takes for blocks of R query rows: R x J accumulators, 16 on AVX-512 (15
  // for R = 3), reduced together; 2 pairs elsewhere, each accumulator summed on its own.
  static constexpr int pairs_per_call(int R) { return W == 16 ? 16 / R : 2; }

  // Pairs walked in the cache's memory order: pair p is key j = p / heads of kv head h = p % heads,
  // its K and V rows at k and v (the next head's row a head step further, the next key's found
  // through its offset). A call walks its own copy of the position (Pos, scalars: a copy of the
  // whole walk went through a vector store and scalar loads, which stalled each call).
  struct Pos {
    int j, h;
    const char* k;
    const char* v;
    int64_t s;  // the pair's index into k.scales and v.scales (int8 and fp8 rows)
  };
  struct Pairs {
    const AttendRowsArgs* a;
    int64_t k_step, v_step;  // bytes
    int esize_k, esize_v, v_bytes;
    explicit Pairs(const AttendRowsArgs& args)
        : a(&args), k_step(args.k_head_step * dtype_size(args.k.dtype)), v_step(args.v_head_step * dtype_size(args.v.dtype)),
          esize_k(dtype_size(args.k.dtype)), esize_v(dtype_size(args.v.dtype)), v_bytes(args.dv * esize_v) {}
    Pos at(int p) const {
      Pos r{p / a->heads, p % a->heads, nullptr, nullptr, 0};
      rows(r);
      return r;
    }
    [[gnu::always_inline]] void rows(Pos& r) const {
      if (r.j >= a->n) return;
      r.k = static_cast<const char*>(a->k.base) + row_base(a->k, r.j) * esize_k + r.h * k_step;
      r.v = static_cast<const char*>(a->v.base) + row_base(a->v, r.j) * esize_v + r.h * v_step;
      r.s = (a->k.scale_offsets != nullptr ? a->k.scale_offsets[r.j] : r.j) + r.h * a->scale_head_step;
    }
    // kOneKey: the caller knows the next pair is the same key's next head (a call within one key).
    template <bool kOneKey = false>
    [[gnu::always_inline]] void next(Pos& r) const {
      if constexpr (kOneKey) {
        ++r.h, r.k += k_step, r.v += v_step, r.s += a->scale_head_step;
      } else if (++r.h == a->heads) {
        r.h = 0, ++r.j;
        rows(r);
      } else {
        r.k += k_step, r.v += v_step, r.s += a->scale_head_step;
      }
    }
    // Requests the pair's V row into L2, line by line: the score pass walks the cache in its
    // order, K rows read and V rows requested, and the hardware prefetchers follow both streams.
    [[gnu::always_inline]] void request_v(const Pos& r) const {
      for (int l = 0; l < v_bytes; l += 64) V::to_l2(r.v + l);
    }
  };

  // The next call's K rows (AttendRowsArgs::next_k), requested into L2 by the value pass: each
  // head's pass takes an equal share of the next call's (key, kv head) pairs, in the cache's memory
  // order, a few with each value row it adds (tick), so that the memory keeps streaming while the
  // core works on rows it holds.
  struct Ahead {
    const AttendRowsArgs* a = nullptr;
    int64_t head_step = 0;  // bytes
    int esize = 1, bytes = 0;
    int key = 0, h = 0, left = 0;  // the next pair to request, and how many remain
    const char* row = nullptr;
    int quot = 0, rem = 0, ticks = 1, frac = 0;  // pairs a tick: quot, and one more rem times in `ticks`

    // Head h's share of the next call's pairs, over `ticks` ticks (none when there is no next call).
    Ahead(const AttendRowsArgs& args, int head, int ticks_) {
      if (args.next_n <= 0 || ticks_ <= 0) return;
      a = &args;
      esize = dtype_size(args.next_k.dtype);
      head_step = args.k_head_step * esize;
      bytes = args.d * esize;
      const int p0 = head * args.next_n;  // next_n * heads pairs, next_n a head
      key = p0 / args.heads, h = p0 % args.heads, left = args.next_n;
      row = place();
      ticks = ticks_, quot = left / ticks, rem = left % ticks;
    }
    const char* place() const {
      return static_cast<const char*>(a->next_k.base) + row_base(a->next_k, key) * esize + h * head_step;
    }
    [[gnu::always_inline]] void tick() {
      if (left <= 0) return;
      int c = quot;
      if ((frac += rem) >= ticks) frac -= ticks, ++c;
      for (; c > 0 && left > 0; --c, --left) {
        for (int l = 0; l < bytes; l += 64) V::to_l2(row + l);
        if (++h == a->heads) {
          h = 0, ++key;
          if (left > 1) row = place();
        } else {
          row += head_step;
        }
      }
    }
  };

  // Scores of query rows r0 .. r0 + R - 1 of each of the np (<= J) pairs from `at` on: R x J dot
  // products, pair by pair, each K row read from its first line to its last (two chains a row, the
  // even and odd steps, so that a pair's products need not wait on each other). AVX-512: to
  // st[p * m + r0 + i] (the scores pair-major, run() transposes them); else to s[(h * m + r0 + i)
  // * lds + j]. The first row block (`first`) checks the K values and requests the V rows.
  template <DType T, int R, int J, int D, bool kOneKey = false>
  [[gnu::always_inline]] static void score_pairs(const AttendRowsArgs& a, const Pairs& walk, Pos at, int p0, int np,
                                                 int r0, const Scratch& t, Check<T>* check, bool first) {
    const int d = D > 0 ? D : a.d, m = a.m;
    constexpr int A = W == 16 ? 16 : R * J;
    B acc[A];
    for (int i = 0; i < A; ++i) acc[i] = B(0.0f);
    B seen(0.0f);  // the K values' magnitudes (Check::fold), when check is set
#if !defined(__clang__)  // GCC: the accumulators' indices known, so in registers (clang's -O1 ASan
#pragma GCC unroll 16    // build of this unit ran past 10 minutes with it, about 2 without)
#endif
    for (int u = 0; u < J && u < np; ++u) {
      if (first) walk.request_v(at);
      float f = 1.0f;  // the pair's row factor (quantized K: its scale; no scales otherwise)
      if constexpr (T == DType::kI8 || T == DType::kFP8) {
        f = PackT::template row_factor<T>({.base = at.k, .dtype = T, .row_stride = 0, .scales = a.k.scales + at.s}, 0);
      }
      const B factor(f);
      const float* q = a.q + static_cast<int64_t>(at.h * m + r0) * d;
      B even[R], odd[R];
      for (int i = 0; i < R; ++i) even[i] = odd[i] = B(0.0f);
      const auto step = [&](int c, B* chain) {
        const B raw = PackT::template load_src<T>(at.k, c);
        if constexpr (sees(T)) {
          if (check != nullptr) seen = Check<T>::fold(seen, raw);
        }
        const B x = raw * factor;
        for (int i = 0; i < R; ++i) chain[i] = xsimd::fma(B::load_unaligned(q + static_cast<int64_t>(i) * d + c), x, chain[i]);
      };
      int c = 0;
      for (; c + 2 * W <= d; c += 2 * W) {
        step(c, even);
        step(c + W, odd);
      }
      if (c < d) step(c, even);
      for (int i = 0; i < R; ++i) acc[u * R + i] = even[i] + odd[i];
      if constexpr (W != 16) {
        for (int i = 0; i < R; ++i) t.s[static_cast<int64_t>(at.h * m + r0 + i) * t.lds + at.j] = xsimd::hadd(acc[u * R + i]);
      }
      walk.template next<kOneKey>(at);
    }
    if constexpr (sees(T)) {
      if (check != nullptr) check->see(seen);
    }
    if constexpr (W == 16) store_pairs<R>(reduce16(acc), a.m, p0, np, r0, t.st);
  }

  // Lanes u * R .. u * R + R - 1 of `sums` (pair p0 + u, rows r0..) to st[(p0 + u) * m + r0 ..]:
  // one store when the call holds every row of its pairs (R = m).
  template <int R>
  [[gnu::always_inline]] static void store_pairs(__m512 sums, int m, int p0, int np, int r0, float* st) {
    if (R == m) {
      _mm512_mask_storeu_ps(st + static_cast<int64_t>(p0) * m, static_cast<__mmask16>((1u << (np * R)) - 1), sums);
      return;
    }
    for (int u = 0; u < np; ++u) {
      const __mmask16 lanes = static_cast<__mmask16>(((1u << R) - 1) << (u * R));
      _mm512_mask_storeu_ps(st + static_cast<int64_t>(p0 + u) * m + r0 - u * R, lanes, sums);
    }
  }

  // The score pass: every pair of the block, J at a time, each in row blocks of R (the last one
  // shorter), in the cache's memory order. With d known (D > 0) the rows must be a multiple of R:
  // no shorter blocks are compiled for it.
  template <DType T, int R, int D>
  static void score_pass(const AttendRowsArgs& a, const Scratch& t, Check<T>* check) {
    constexpr int J = pairs_per_call(R);
    const int pairs = a.n * a.heads;
    const Pairs walk(a);
    if constexpr (D > 0) {
      if (a.heads % J == 0) {
        // Every call's pairs are heads of one key (a GQA cache's usual shape: e.g. 8 kv heads, 4
        // rows each): its rows are a head step apart, with no key boundary to test on the way.
        for (int j = 0; j < a.n; ++j) {
          Pos at{j, 0, nullptr, nullptr, 0};
          walk.rows(at);
          // The key's V scales too, for the value pass (a cache keeps a token's kv heads' scales
          // side by side: one line; K's index, AttendRowsArgs).
          if (a.v.scales != nullptr) V::to_l2(a.v.scales + at.s);
          for (int h0 = 0; h0 < a.heads; h0 += J) {
            const int p0 = j * a.heads + h0;
            for (int r0 = 0; r0 < a.m; r0 += R) {
              const bool first = r0 == 0;
              if constexpr (int_products(T)) {
                score_pairs_int<R, J, D, true>(a, walk, at, p0, J, r0, t, first);
              } else {
                score_pairs<T, R, J, D, true>(a, walk, at, p0, J, r0, t, first ? check : nullptr, first);
              }
            }
            for (int u = 0; u < J; ++u) walk.template next<true>(at);
          }
        }
        return;
      }
    }
    Pos at = walk.at(0);
    for (int p0 = 0; p0 < pairs; p0 += J) {
      const int np = imin(J, pairs - p0);
      for (int r0 = 0; r0 < a.m; r0 += R) {
        const bool first = r0 == 0;
        Check<T>* c = first ? check : nullptr;
        if constexpr (D > 0) {
          if constexpr (int_products(T)) {
            score_pairs_int<R, J, D>(a, walk, at, p0, np, r0, t, first);
          } else {
            score_pairs<T, R, J, D>(a, walk, at, p0, np, r0, t, c, first);
          }
        } else if constexpr (int_products(T)) {
          switch (imin(R, a.m - r0)) {
            case 1: score_pairs_int<1, J, D>(a, walk, at, p0, np, r0, t, first); break;
            case 2: score_pairs_int<R < 2 ? R : 2, J, D>(a, walk, at, p0, np, r0, t, first); break;
            case 3: score_pairs_int<R < 3 ? R : 3, J, D>(a, walk, at, p0, np, r0, t, first); break;
            default: score_pairs_int<R, J, D>(a, walk, at, p0, np, r0, t, first); break;
          }
        } else {
          switch (imin(R, a.m - r0)) {
            case 1: score_pairs<T, 1, J, D>(a, walk, at, p0, np, r0, t, c, first); break;
            case 2: score_pairs<T, R < 2 ? R : 2, J, D>(a, walk, at, p0, np, r0, t, c, first); break;
            case 3: score_pairs<T, R < 3 ? R : 3, J, D>(a, walk, at, p0, np, r0, t, c, first); break;
            default: score_pairs<T, R, J, D>(a, walk, at, p0, np, r0, t, c, first); break;
          }
        }
      }
      for (int u = 0; u < np; ++u) walk.next(at);
    }
  }

  // x[i] lane k -> x[k] lane i (a 16 x 16 transpose in registers; AVX-512).
  [[gnu::always_inline]] static inline void transpose16(__m512* x) {
    __m512 a[16], b[16];
    for (int i = 0; i < 16; i += 2) {
      a[i] = _mm512_unpacklo_ps(x[i], x[i + 1]);
      a[i + 1] = _mm512_unpackhi_ps(x[i], x[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
      for (int k = 0; k < 2; ++k) {
        const __m512d lo = _mm512_castps_pd(a[i + k]), hi = _mm512_castps_pd(a[i + k + 2]);
        b[i + 2 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
        b[i + 2 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
      }
    }
    for (int i = 0; i < 16; i += 8) {
      for (int k = 0; k < 4; ++k) {
        a[i + k] = _mm512_shuffle_f32x4(b[i + k], b[i + k + 4], 0x88);
        a[i + k + 4] = _mm512_shuffle_f32x4(b[i + k], b[i + k + 4], 0xDD);
      }
    }
    for (int k = 0; k < 8; ++k) {
      b[k] = _mm512_shuffle_f32x4(a[k], a[k + 8], 0x88);
      b[k + 8] = _mm512_shuffle_f32x4(a[k], a[k + 8], 0xDD);
    }
    for (int k = 0; k < 16; ++k) x[k] = b[k];
  }

  // s[r * lds + j] = st[j * rows + r] for r < rows, j < n (AVX-512; s's columns n .. lds - 1 get 0).
  static void transpose_scores(const float* st, int rows, int n, float* s, int64_t lds) {
    for (int r0 = 0; r0 < rows; r0 += 16) {
      const int nr = imin(16, rows - r0);
      const __mmask16 lanes = static_cast<__mmask16>((1u << nr) - 1);
      for (int j0 = 0; j0 < n; j0 += 16) {
        __m512 x[16];
        for (int i = 0; i < 16; ++i) {
          x[i] = j0 + i < n ? _mm512_maskz_loadu_ps(lanes, st + static_cast<int64_t>(j0 + i) * rows + r0) : _mm512_setzero_ps();
        }
        transpose16(x);
        for (int y = 0; y < nr; ++y) _mm512_storeu_ps(s + static_cast<int64_t>(r0 + y) * lds + j0, x[y]);
      }
    }
  }

  // acc rows r0.. (R of them), columns [x0, x0 + C * W) += p rows . V rows.
  template <DType T, int R, int C>
  static void value_block(const float* p, int64_t lds, int r0, const RowSource& v, int n, int dv, int x0, float* acc,
                          Check<T>* check, Ahead* ahead) {
    B a[R][C];
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < C; ++c) a[i][c] = B::load_unaligned(acc + static_cast<int64_t>(r0 + i) * dv + x0 + c * W);
    }
    B seen(0.0f);  // the V values' magnitudes (Check::fold), when check is set
    for (int j = 0; j < n; ++j) {
      if (ahead != nullptr) ahead->tick();
      const int64_t base = row_base(v, j) + x0;
      const B factor(PackT::template row_factor<T>(v, j));
      B x[C];
      for (int c = 0; c < C; ++c) {
        const B raw = PackT::template load_src<T>(v.base, base + c * W);
        if constexpr (sees(T)) {
          if (check != nullptr) seen = Check<T>::fold(seen, raw);
        }
        x[c] = raw * factor;
      }
      for (int i = 0; i < R; ++i) {
        const B pj(p[static_cast<int64_t>(r0 + i) * lds + j]);
        for (int c = 0; c < C; ++c) a[i][c] = xsimd::fma(pj, x[c], a[i][c]);
      }
    }
    if constexpr (sees(T)) {
      if (check != nullptr) check->see(seen);
    }
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < C; ++c) a[i][c].store_unaligned(acc + static_cast<int64_t>(r0 + i) * dv + x0 + c * W);
    }
  }

  // Columns a value block takes (value_rows).
  static constexpr int kIntGroups = 2;  // R x 4 int32 accumulators: 16 zmm for R = 4
  static constexpr int value_columns(DType t) { return int_products(t) ? kIntGroups * kIntStep : kPvVecs * W; }

  // Each column block ticks `ahead` once a key (null: nothing to request).
  template <DType T, int R>
  static void value_rows(const float* p, const Scratch& t, int64_t lds, int r0, const RowSource& v, int n, int dv,
                         float* acc, Check<T>* check, Ahead* ahead) {
    if constexpr (int_products(T)) {  // the rows' int16 weights in t
      for (int x0 = 0; x0 < dv; x0 += kIntGroups * kIntStep) {
        if (dv - x0 > kIntStep) {
          value_block_int<R, kIntGroups>(t, r0, v, n, dv, x0, acc, ahead);
        } else {
          value_block_int<R, 1>(t, r0, v, n, dv, x0, acc, ahead);
        }
      }
      return;
    }
    for (int x0 = 0; x0 < dv; x0 += kPvVecs * W) {
      switch (imin(kPvVecs, (dv - x0) / W)) {
        case 1: value_block<T, R, 1>(p, lds, r0, v, n, dv, x0, acc, check, ahead); break;
        case 2: value_block<T, R, 2>(p, lds, r0, v, n, dv, x0, acc, check, ahead); break;
        case 3: value_block<T, R, 3>(p, lds, r0, v, n, dv, x0, acc, check, ahead); break;
        default: value_block<T, R, kPvVecs>(p, lds, r0, v, n, dv, x0, acc, check, ahead); break;
      }
    }
  }

  // ---- Integer products (kIntProducts; see the top of this file) ----

  // Rows [0, rows) of x (leading dimension ld, n values each) as int16:
  // out[r] = round(x[r] * factor / scale[r]), scale[r] = max_j |x[r][j] * factor_j| / 32767, zero
  // from n to ldo; factor_j is 1 when `factors` is null. A row whose maximum is not a normal
  // float (all its values below 1.2e-38) is taken as 0: zeros, scale 0.
  static void to_int16(const float* x, int64_t ld, int rows, int n, const float* factors, int16_t* out, int64_t ldo,
                       float* scale) {
    const auto load = [&](const float* row, int j) {
      const __mmask16 lanes = n - j >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
      __m512 v = _mm512_maskz_loadu_ps(lanes, row + j);
      if (factors != nullptr) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(lanes, factors + j));
      return v;
    };
    for (int r = 0; r < rows; ++r) {
      const float* row = x + static_cast<int64_t>(r) * ld;
      int16_t* o = out + static_cast<int64_t>(r) * ldo;
      __m512 mx = _mm512_setzero_ps();
      for (int j = 0; j < n; j += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(load(row, j)));
      const float m = _mm512_reduce_max_ps(mx);
      if (!(m >= std::numeric_limits<float>::min())) {  // also NaN, which the caller's checks report
        for (int64_t j = 0; j < ldo; ++j) o[j] = 0;
        scale[r] = 0.0f;
        continue;
      }
      // x / m first (1 / m is finite for a normal m; 32767 / m need not be), then to +-32767.
      const __m512 inv = _mm512_set1_ps(1.0f / m), top = _mm512_set1_ps(32767.0f);
      int j = 0;
      for (; j < n; j += 16) {
        const __m512 y = _mm512_mul_ps(_mm512_mul_ps(load(row, j), inv), top);
        const __m256i v = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(y));
        const __mmask16 lanes = n - j >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
        _mm256_mask_storeu_epi16(o + j, lanes, v);
      }
      for (j = n; j < ldo; ++j) o[j] = 0;
      scale[r] = m / 32767.0f;
    }
  }

  // The kIntStep int8 values at p as int16, the first `count` of them (the rest 0, not read).
  static __m512i load_i8(const int8_t* p, int count) {
    if (count >= kIntStep) return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(static_cast<__mmask32>((1u << count) - 1), p));
  }

  // score_pairs for int8 K: R x J int32 dot products of Q's int16 rows with the pairs' int8 K rows,
  // then score = float(dot) * q_scale * k_scale.
  template <int R, int J, int D, bool kOneKey = false>
  [[gnu::always_inline]] static void score_pairs_int(const AttendRowsArgs& a, const Pairs& walk, Pos at, int p0, int np,
                                                     int r0, const Scratch& t, bool first) {
    static_assert(W == 16 && R * J <= 16);
    const int d = D > 0 ? D : a.d, m = a.m;
    __m512i acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_si512();
    // Lane u * R + i: row r0 + i's Q scale and pair u's K scale, gathered in registers (through a
    // buffer, 16 scalar stores read back as one vector waited on store forwarding every call).
    __m512 q_scale = _mm512_setzero_ps(), k_scale = _mm512_setzero_ps();
#if !defined(__clang__)  // GCC: the accumulators' indices known, so in registers (clang's -O1 ASan
#pragma GCC unroll 16    // build of this unit ran past 10 minutes with it, about 2 without)
#endif
    for (int u = 0; u < J && u < np; ++u) {
      if (first) walk.request_v(at);
      const int8_t* kr = reinterpret_cast<const int8_t*>(at.k);
      const int16_t* q = t.q16 + static_cast<int64_t>(at.h * m + r0) * kIntMaxDim;
      for (int c = 0; c < d; c += kIntStep) {
        const __m512i x = load_i8(kr + c, d - c);
        for (int i = 0; i < R; ++i) {
          acc[u * R + i] = vnni::dpwssd(acc[u * R + i], _mm512_loadu_si512(q + static_cast<int64_t>(i) * kIntMaxDim + c), x);
        }
      }
      const __mmask16 lanes = static_cast<__mmask16>(((1u << R) - 1) << (u * R));
      q_scale = _mm512_mask_expandloadu_ps(q_scale, lanes, t.q_scale + at.h * m + r0);
      k_scale = _mm512_mask_mov_ps(k_scale, lanes, _mm512_set1_ps(a.k.scales[at.s]));
      walk.template next<kOneKey>(at);
    }
    const __m512 factor = _mm512_mul_ps(q_scale, k_scale);
    store_pairs<R>(_mm512_mul_ps(_mm512_cvtepi32_ps(reduce16(acc)), factor), m, p0, np, r0, t.st);
  }

  // value_block for int8 V: acc rows r0.. (R of them), columns [x0, x0 + G * kIntStep) (clipped
  // to dv) += the rows' int16 weights . V's int8 rows, two keys per step: their rows sign-extended
  // and interleaved (unpack lo/hi: dimension pairs of keys j and j + 1 in each 32-bit lane), so
  // one vpdpwssd adds w_j * v_j[x] + w_(j+1) * v_(j+1)[x]. The unpacks leave dimensions in the
  // order 0-3 | 8-11 ... (lo) and 4-7 | 12-15 ... (hi); the flush puts them back in order.
  template <int R, int G>
  static void value_block_int(const Scratch& t, int r0, const RowSource& v, int n, int dv, int x0, float* acc,
                              Ahead* ahead) {
    const int8_t* vb = static_cast<const int8_t*>(v.base);
    __m512i a[R][2 * G];
    for (int i = 0; i < R; ++i) {
      for (int g = 0; g < 2 * G; ++g) a[i][g] = _mm512_setzero_si512();
    }
    const __m512i order_lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i order_hi = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int j0 = 0; j0 < n; j0 += kIntFlushKeys) {
      const int j1 = imin(n, j0 + kIntFlushKeys);
      for (int j = j0; j < j1; j += 2) {
        if (ahead != nullptr) ahead->tick(), ahead->tick();
        const int8_t* p0 = vb + row_base(v, j) + x0;
        const int8_t* p1 = j + 1 < j1 ? vb + row_base(v, j + 1) + x0 : nullptr;
        const int16_t* w = t.w16 + static_cast<int64_t>(r0) * t.ldw + j;  // w16[j], w16[j + 1] (0 past n)
        for (int g = 0; g < G; ++g) {
          const int count = dv - x0 - g * kIntStep;
          const __m512i v0 = load_i8(p0 + g * kIntStep, count);
          const __m512i v1 = p1 != nullptr ? load_i8(p1 + g * kIntStep, count) : _mm512_setzero_si512();
          const __m512i lo = _mm512_unpacklo_epi16(v0, v1), hi = _mm512_unpackhi_epi16(v0, v1);
          for (int i = 0; i < R; ++i) {
            a[i][2 * g] = vnni::dpwssd(a[i][2 * g], lo, w + i * t.ldw);
            a[i][2 * g + 1] = vnni::dpwssd(a[i][2 * g + 1], hi, w + i * t.ldw);
          }
        }
      }
      for (int i = 0; i < R; ++i) {
        const __m512 scale = _mm512_set1_ps(t.w_scale[r0 + i]);
        float* out = acc + static_cast<int64_t>(r0 + i) * dv + x0;
        for (int g = 0; g < G; ++g) {
          const int count = dv - x0 - g * kIntStep;
          const __m512i halves[2] = {_mm512_permutex2var_epi32(a[i][2 * g], order_lo, a[i][2 * g + 1]),
                                     _mm512_permutex2var_epi32(a[i][2 * g], order_hi, a[i][2 * g + 1])};
          for (int half = 0; half < 2 && count > 16 * half; ++half) {
            float* o = out + g * kIntStep + 16 * half;
            _mm512_storeu_ps(o, _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(halves[half]), _mm512_loadu_ps(o)));
          }
          a[i][2 * g] = a[i][2 * g + 1] = _mm512_setzero_si512();
        }
      }
    }
  }

  template <DType TK, DType TV>
  static bool run(const AttendRowsArgs& a) {
    const int m = a.m, n = a.n, d = a.d, dv = a.dv, heads = a.heads, rows = heads * m;
    const Scratch t = scratch_of(a.scratch, rows, n);
    const int64_t lds = t.lds;
    float* s = t.s;
    if constexpr (int_products(TK)) {
      if (!a.same_q) to_int16(a.q, d, rows, d, nullptr, t.q16, kIntMaxDim, t.q_scale);
    }
    Check<TK> kcheck;
    Check<TV> vcheck;
    // A pass without integer products is Decode<Arch, false>'s (one copy of it in the unit).
    using KPass = Decode<Arch, int_products(TK)>;
    using VPass = Decode<Arch, int_products(TV)>;
    // Scores, in the cache's memory order (score_pass), row blocks of kRows; on AVX-512 pair-major
    // first, then transposed to s's rows.
    const auto scores = [&](auto dim) {
      constexpr int D = decltype(dim)::value;
      switch (imin(kRows, m)) {
        case 1: KPass::template score_pass<TK, 1, D>(a, t, &kcheck); break;
        case 2: KPass::template score_pass<TK, 2, D>(a, t, &kcheck); break;
        case 3: KPass::template score_pass<TK, 3, D>(a, t, &kcheck); break;
        default: KPass::template score_pass<TK, kRows, D>(a, t, &kcheck); break;
      }
    };
    if (d == 128 && m % imin(kRows, m) == 0) {  // the common case compiled for its d
      scores(std::integral_constant<int, 128>{});
    } else {
      scores(std::integral_constant<int, 0>{});
    }
    if constexpr (W == 16) transpose_scores(t.st, rows, n, s, lds);
    // Non-finite keys show in their scores (before a softcap could make them finite again).
    bool finite = reads_bits(TK) || TK == DType::kI8 || all_finite(s, lds, rows, n);
    if (ScoreMods<Arch>::any(a.mod)) {
      ScoreMods<Arch>::modify_rows(s, lds, a.mod, 0, rows, a.lo, a.hi, n);
    }
    // The online softmax in register blocks of rows: probabilities replace the scores (0 outside
    // each row's span), and each row's accumulator is rescaled to its new max.
    for (int r0 = 0; r0 < rows; r0 += kMaxRows) {
      const int R = imin(kMaxRows, rows - r0);
      const BlockSpans b = V::block_spans(a.lo, a.hi, r0, R, n);
      const int ja = 0, jb = static_cast<int>(lds);
      float corr[kMaxRows];
      float* sb = s + static_cast<int64_t>(r0) * lds;
      Softmax<Arch>::softmax_rows(sb, lds, R, b, ja, jb, a.row_max + r0, a.row_sum + r0, corr,
                                  [&](int r, int j, B p) {
                                    p.store_unaligned(sb + static_cast<int64_t>(r) * lds + j);
                                    return p;
                                  });
      for (int r = 0; r < R; ++r) {
        if (corr[r] == 1.0f) continue;
        float* acc = a.acc + static_cast<int64_t>(r0 + r) * dv;
        const B c(corr[r]);
        for (int x = 0; x < dv; x += W) (B::load_unaligned(acc + x) * c).store_unaligned(acc + x);
      }
    }
    // Values, head by head, kPvRows rows at a time (the rows are in L2 by now); the first block of
    // each head checks its values. Integer products: the head's weights p * v_scale as int16 first.
    for (int h = 0; h < heads; ++h) {
      const RowSource v = head_rows(a.v, h, a.v_head_step, a.scale_head_step);
      if constexpr (int_products(TV)) {
        const float* factors = v.scales;  // the head's V scales in key order
        if (v.scale_offsets != nullptr) {
          for (int j = 0; j < n; ++j) t.v_factors[j] = scale_at(v, j);
          factors = t.v_factors;
        }
        to_int16(s + static_cast<int64_t>(h) * m * lds, lds, m, n, factors, t.w16 + static_cast<int64_t>(h) * m * t.ldw,
                 t.ldw, t.w_scale + h * m);
      }
      // The head's share of the next call's K rows, requested by its first block of rows, a tick
      // a key in each of its column blocks.
      typename VPass::Ahead ahead(a, h, n * ((dv + VPass::value_columns(TV) - 1) / VPass::value_columns(TV)));
      for (int r0 = 0; r0 < m; r0 += kPvRows) {
        const int row = h * m + r0;
        Check<TV>* check = r0 == 0 ? &vcheck : nullptr;
        auto* ah = r0 == 0 ? &ahead : nullptr;
        switch (imin(kPvRows, m - r0)) {
          case 1: VPass::template value_rows<TV, 1>(s, t, lds, row, v, n, dv, a.acc, check, ah); break;
          case 2: VPass::template value_rows<TV, 2>(s, t, lds, row, v, n, dv, a.acc, check, ah); break;
          case 3: VPass::template value_rows<TV, 3 < kPvRows ? 3 : kPvRows>(s, t, lds, row, v, n, dv, a.acc, check, ah); break;
          default: VPass::template value_rows<TV, kPvRows>(s, t, lds, row, v, n, dv, a.acc, check, ah); break;
        }
      }
    }
    // Non-finite values show in the accumulators they were added to (every row, p = 0 included).
    if (!reads_bits(TV) && TV != DType::kI8) finite = finite && all_finite(a.acc, dv, rows, dv);
    kcheck.raise(a.k_max_abs);
    vcheck.raise(a.v_max_abs);
    return finite && kcheck.ok() && vcheck.ok();
  }

  static bool attend_rows(const AttendRowsArgs& a) {
    if constexpr (kIntProducts) {
      // f32 products asked for, or d past the int32 bound (not a head dim the library takes).
      if (!a.int8_products || a.d > kIntMaxDim) return Decode<Arch, false>::attend_rows(a);
    }
    bool finite = true;
    with_dtype(a.k.dtype, [&](auto tk) {
      with_dtype(a.v.dtype, [&](auto tv) {
        constexpr DType TK = decltype(tk)::value, TV = decltype(tv)::value;
        // No int8 K or V: Decode<Arch, false>'s run (one copy of it in the unit).
        using Runner = Decode<Arch, int_products(TK) || int_products(TV)>;
        finite = Runner::template run<TK, TV>(a);
      });
    });
    return finite;
  }
};

}  // namespace sampleattn::flash
