// `sampleattn bench --kv-layout / --kv-dtype`: K and V stored as an engine's KV cache holds them
// (sampleattn_kv_cache, ABI 1.4): packed or in pages handed out in a shuffled order, and in the
// run's dtype or quantized (int8 per token and kv head, fp8 e4m3fn per kv head).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "sampleattn/sampleattn.h"
#include "workload/npy.h"

namespace sampleattn::cli {

enum class KvDtype { kSame, kInt8, kFp8 };
const char* kv_dtype_name(KvDtype d);  // "same", "int8", "fp8"

// What the library reads for K and V. Packed "same" is the plain path: no kv_cache, the inputs'
// own K and V.
struct KvStorage {
  int64_t page_size = 0;  // tokens per page; 0: packed
  KvDtype kv_dtype = KvDtype::kSame;
  sampleattn_dtype dtype = SAMPLEATTN_DTYPE_F32;  // of the stored k and v
  int64_t seq = 0, heads = 0, k_dim = 0, v_dim = 0;
  // Packed: [seq, heads, dim]; paged: [num_pages, page_size, heads, dim] (flash-attention's and
  // vLLM's layout), the slots past the last key zero. The pool holds ceil(seq / page_size) pages
  // of the sequence plus max(1, that / 8) decoy pages (page 0 among them) that it must not read:
  // the first page's keys with their values negated (a misread shows).
  std::vector<uint8_t> k, v;
  std::vector<float> k_scale, v_scale;  // quantized only, addressed as the strides say
  int64_t scale_token_stride = 0, scale_head_stride = 0, scale_page_stride = 0;
  std::vector<int32_t> block_table;  // paged: the page of each page_size keys, in a shuffled order
  int32_t num_pages = 0;
  // The keys' K/V bytes as stored (elements of the seq keys at their stored size, plus their
  // scales; not the empty slots of the last page): what an attention over them reads at least.
  uint64_t bytes = 0;

  bool uses_cache() const { return page_size > 0 || kv_dtype != KvDtype::kSame; }
  std::string layout_name() const { return page_size > 0 ? "paged:" + std::to_string(page_size) : "packed"; }
  int64_t element_size() const;
  // The kv_cache struct over k_scale/v_scale/block_table and the given page strides, or NULL
  // fields as the layout needs (scales at the given addresses: device memory for CUDA).
  sampleattn_kv_cache cache(const float* k_scale_data, const float* v_scale_data) const;
};

// Builds the storage from K and V as loaded (any dtype; "same" keeps their bytes exactly), and,
// when quantized, replaces *k and *v with the f32 values the stored ones stand for, so that every
// later metric (the oracle, kept mass) sees what the kernel sees. page_size 0: packed.
Status build_kv_storage(int64_t page_size, KvDtype kv_dtype, uint64_t seed, workload::Tensor3* k,
                        workload::Tensor3* v, KvStorage* out);

}  // namespace sampleattn::cli
