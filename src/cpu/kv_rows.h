// K and V rows of one (sequence, kv head) as pack sources: n keys at given positions, wherever
// the cache keeps them (packed or paged, through Problem::kv_row, core/kv_cache.h), with their
// scales when quantized. Every CPU driver that packs K or V reads its rows through here.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/problem.h"
#include "cpu/scratch_carver.h"
#include "simd/kernels.h"

namespace sampleattn::cpu {

class KvRows {
 public:
  // Carves the arrays for up to `n` rows, and the scales of up to `heads` kv heads of them for
  // fill_run (sizes them with a null carver base).
  static KvRows carve(ScratchCarver& c, int n, int heads = 1) {
    KvRows r;
    r.capacity_ = n;
    r.k_offsets_ = c.take<int64_t>(n);
    r.v_offsets_ = c.take<int64_t>(n);
    r.k_scales_ = c.take<float>(static_cast<size_t>(n) * heads);
    r.v_scales_ = c.take<float>(static_cast<size_t>(n) * heads);
    return r;
  }

  // Rows 0..n-1 are the keys at positions key(0..n-1) of sequence `seq`, kv head `head`.
  template <typename Key>
  void fill(const Problem& p, int seq, int head, int n, Key key) const {
    const KvLayout& kv = p.kv;
    for (int r = 0; r < n; ++r) {
      const KvRow row = p.kv_row(seq, key(r), head);
      k_offsets_[r] = row.k;
      v_offsets_[r] = row.v;
      if (kv.k_scale != nullptr) k_scales_[r] = kv.k_scale[row.scale];
      if (kv.v_scale != nullptr) v_scales_[r] = kv.v_scale[row.scale];
    }
  }
  // The keys [j0, j0 + n) of the sequence: one row() per page (KvLayout::run_from). With
  // heads > 1, also the scales of kv heads head + 1 .. head + heads - 1, head h's at scales index
  // h * scale_head_step() + r; the rows of those heads are the offsets moved by the layout's head
  // strides.
  void fill_run(const Problem& p, int seq, int head, int64_t j0, int n, int heads = 1) const {
    const KvLayout& kv = p.kv;
    for (int r = 0; r < n;) {
      const KvRow first = p.kv_row(seq, j0 + r, head);
      const int run = static_cast<int>(std::min<int64_t>(kv.run_from(j0 + r), n - r));
      for (int i = 0; i < run; ++i, ++r) {
        k_offsets_[r] = first.k + i * kv.k_token_stride;
        v_offsets_[r] = first.v + i * kv.v_token_stride;
        const int64_t scale = first.scale + i * kv.scale_token_stride;
        for (int h = 0; h < heads; ++h) {
          const int64_t at = scale + h * kv.scale_head_stride;
          const int64_t to = static_cast<int64_t>(h) * capacity_ + r;
          if (kv.k_scale != nullptr) k_scales_[to] = kv.k_scale[at];
          if (kv.v_scale != nullptr) v_scales_[to] = kv.v_scale[at];
        }
      }
    }
  }
  // Index steps between kv heads in the scales fill_run wrote.
  int64_t scale_head_step() const { return capacity_; }

  RowSource k(const Problem& p) const { return {p.k.data, p.k.dtype, 0, k_offsets_, k_scales_}; }
  RowSource v(const Problem& p) const { return {p.v.data, p.v.dtype, 0, v_offsets_, v_scales_}; }

 private:
  int capacity_ = 0;
  int64_t* k_offsets_ = nullptr;
  int64_t* v_offsets_ = nullptr;
  float* k_scales_ = nullptr;
  float* v_scales_ = nullptr;
};

}  // namespace sampleattn::cpu
