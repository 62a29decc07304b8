// K and V rows of one (sequence, kv head) as pack sources: n keys at given positions, wherever
// the cache keeps them (packed or paged, through Problem::kv_row, core/kv_cache.h), with the
// places of their scales when quantized (read there, RowSource::scale_offsets). Every CPU driver
// that packs K or V reads its rows through here.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/problem.h"
#include "cpu/scratch_carver.h"
#include "simd/kernels.h"

namespace sampleattn::cpu {

class KvRows {
 public:
  // Carves the arrays for up to `n` rows (sizes them with a null carver base).
  static KvRows carve(ScratchCarver& c, int n) {
    KvRows r;
    r.k_offsets_ = c.take<int64_t>(n);
    r.v_offsets_ = c.take<int64_t>(n);
    r.scale_offsets_ = c.take<int64_t>(n);
    return r;
  }

  // Rows 0..n-1 are the keys at positions key(0..n-1) of sequence `seq`, kv head `head`.
  template <typename Key>
  void fill(const Problem& p, int seq, int head, int n, Key key) const {
    for (int r = 0; r < n; ++r) {
      const KvRow row = p.kv_row(seq, key(r), head);
      k_offsets_[r] = row.k;
      v_offsets_[r] = row.v;
      scale_offsets_[r] = row.scale;
    }
  }
  // The keys [j0, j0 + n) of the sequence: one row() per page (KvLayout::run_from). The rows
  // (and scales) of the kv heads after `head` are these moved by the layout's head strides
  // (AttendRowsArgs' head steps: KvLayout::k_head_stride, scale_head_stride).
  void fill_run(const Problem& p, int seq, int head, int64_t j0, int n) const {
    const KvLayout& kv = p.kv;
    for (int r = 0; r < n;) {
      const KvRow first = p.kv_row(seq, j0 + r, head);
      const int run = static_cast<int>(std::min<int64_t>(kv.run_from(j0 + r), n - r));
      for (int i = 0; i < run; ++i, ++r) {
        k_offsets_[r] = first.k + i * kv.k_token_stride;
        v_offsets_[r] = first.v + i * kv.v_token_stride;
        scale_offsets_[r] = first.scale + i * kv.scale_token_stride;
      }
    }
  }

  RowSource k(const Problem& p) const { return {p.k.data, p.k.dtype, 0, k_offsets_, p.kv.k_scale, scale_offsets_}; }
  RowSource v(const Problem& p) const { return {p.v.data, p.v.dtype, 0, v_offsets_, p.kv.v_scale, scale_offsets_}; }

 private:
  int64_t* k_offsets_ = nullptr;
  int64_t* v_offsets_ = nullptr;
  int64_t* scale_offsets_ = nullptr;
};

}  // namespace sampleattn::cpu
