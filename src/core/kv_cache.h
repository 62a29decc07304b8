// Where the keys and values live (sampleattn_kv_cache, ABI 1.4): packed per batch or in pages
// through a block table, stored as f32/f16/bf16 or quantized (int8, fp8 e4m3) with f32 scales.
// kv_row() is the one addressing rule: the CPU drivers fill their row offsets with it and the CUDA
// kernels call the same function on a device copy of the block table, so no kernel driver
// computes a K/V offset by hand.
#pragma once

#include <cstdint>

#include "core/mask.h"  // SAMPLEATTN_HOST_DEVICE

namespace sampleattn {

// Element offsets of one (sequence, key, kv head): into k.data, v.data and the scale arrays.
struct KvRow {
  int64_t k;
  int64_t v;
  int64_t scale;
};

struct KvLayout {
  // Tensor strides (elements) of K and V rows: token (or slot within a page) and head.
  int64_t k_token_stride = 0, k_head_stride = 0;
  int64_t v_token_stride = 0, v_head_stride = 0;
  // Paging: block_table == nullptr means packed (a sequence's keys from its k_begin on).
  const int32_t* block_table = nullptr;  // [sequence][table_stride] page indices
  int64_t table_stride = 0;
  // Per-head tables: kv head h's pages start table_head_stride entries after head h - 1's. 0 (the
  // public API's tables) shares one table among the heads; a sharded call gathers each kv head's
  // own keys (cpu/sharded_attention.h), so its table, with a page size of 1, maps a position to
  // that head's row.
  int64_t table_head_stride = 0;
  int32_t page_size = 0;  // tokens per page (a multiple of 16; 1 in a sharded call's gathered rows)
  int32_t num_pages = 0;
  int64_t k_page_stride = 0, v_page_stride = 0;
  // Scales of quantized K/V (nullptr when that tensor is not quantized), addressed like its rows.
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  int64_t scale_token_stride = 0, scale_head_stride = 0, scale_page_stride = 0;

  SAMPLEATTN_HOST_DEVICE bool paged() const { return block_table != nullptr; }

  // How many keys from j on share j's page (the rest of the sequence when packed): their rows
  // follow j's at the token strides, so a run needs one row() and no more table lookups.
  SAMPLEATTN_HOST_DEVICE int64_t run_from(int64_t j) const {
    return block_table == nullptr ? INT64_MAX : page_size - j % page_size;
  }

  // Key j (0-based position in its sequence) of sequence `seq` (whose keys start at token
  // k_begin when packed), kv head `head`.
  SAMPLEATTN_HOST_DEVICE KvRow row(int seq, int64_t k_begin, int64_t j, int head) const {
    if (block_table == nullptr) {
      const int64_t t = k_begin + j;
      return {t * k_token_stride + head * k_head_stride, t * v_token_stride + head * v_head_stride,
              t * scale_token_stride + head * scale_head_stride};
    }
    const int64_t page = block_table[seq * table_stride + head * table_head_stride + j / page_size];
    const int64_t slot = j % page_size;
    return {page * k_page_stride + slot * k_token_stride + head * k_head_stride,
            page * v_page_stride + slot * v_token_stride + head * v_head_stride,
            page * scale_page_stride + slot * scale_token_stride + head * scale_head_stride};
  }
};

}  // namespace sampleattn
