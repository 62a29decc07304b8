#include "cli/bench_kv.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

#include "workload/generator.h"
#include "workload/kv_quant.h"

namespace sampleattn::cli {
namespace {

// Copies rows of row_bytes, one per key, from packed [seq, row] into pages: key j goes to page
// table[j / page_size], slot j % page_size.
std::vector<uint8_t> into_pages(const uint8_t* packed, int64_t seq, int64_t row_bytes, int64_t page_size,
                                const std::vector<int32_t>& table, int32_t num_pages) {
  std::vector<uint8_t> pages(static_cast<size_t>(num_pages * page_size * row_bytes), 0);
  for (int64_t j = 0; j < seq; ++j) {
    const int64_t slot = table[static_cast<size_t>(j / page_size)] * page_size + j % page_size;
    std::memcpy(pages.data() + slot * row_bytes, packed + j * row_bytes, static_cast<size_t>(row_bytes));
  }
  return pages;
}

// Page `to` of a pool of pages of page_elements elements of elem bytes: a copy of page `from`,
// with the sign bit (the top bit of each little-endian element) flipped when asked.
void fill_decoy(std::vector<uint8_t>* pool, int64_t page_elements, int64_t elem, int32_t from, int32_t to,
                bool flip_sign) {
  const int64_t page_bytes = page_elements * elem;
  uint8_t* dst = pool->data() + to * page_bytes;
  std::memcpy(dst, pool->data() + from * page_bytes, static_cast<size_t>(page_bytes));
  if (flip_sign) {
    for (int64_t i = elem - 1; i < page_bytes; i += elem) dst[i] ^= 0x80;
  }
}

// The same for int8's per-(key, head) scales; the empty slots get 1, a finite scale.
std::vector<float> scales_into_pages(const std::vector<float>& scales, int64_t seq, int64_t heads, int64_t page_size,
                                     const std::vector<int32_t>& table, int32_t num_pages) {
  std::vector<float> paged(static_cast<size_t>(num_pages * page_size * heads), 1.f);
  for (int64_t j = 0; j < seq; ++j) {
    const int64_t slot = table[static_cast<size_t>(j / page_size)] * page_size + j % page_size;
    std::memcpy(paged.data() + slot * heads, scales.data() + j * heads, static_cast<size_t>(heads) * sizeof(float));
  }
  return paged;
}

}  // namespace

const char* kv_dtype_name(KvDtype d) {
  switch (d) {
    case KvDtype::kSame: return "same";
    case KvDtype::kInt8: return "int8";
    case KvDtype::kFp8: return "fp8";
  }
  return "?";
}

int64_t KvStorage::element_size() const {
  return kv_dtype == KvDtype::kSame ? dtype_size(static_cast<DType>(dtype)) : 1;
}

sampleattn_kv_cache KvStorage::cache(const float* k_scale_data, const float* v_scale_data) const {
  // Filled here rather than with sampleattn_kv_cache_init: zero is every field's default, and the
  // CLI then also runs against a library that does not export the initializer yet.
  sampleattn_kv_cache c;
  std::memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  if (page_size > 0) {
    c.block_table = block_table.data();
    c.block_table_stride = static_cast<int64_t>(block_table.size());
    c.page_size = static_cast<int32_t>(page_size);
    c.num_pages = num_pages;
    c.k_page_stride = page_size * heads * k_dim;
    c.v_page_stride = page_size * heads * v_dim;
  }
  if (kv_dtype != KvDtype::kSame) {
    c.k_scale = k_scale_data;
    c.v_scale = v_scale_data;
    c.scale_token_stride = scale_token_stride;
    c.scale_head_stride = scale_head_stride;
    c.scale_page_stride = scale_page_stride;
  }
  return c;
}

Status build_kv_storage(int64_t page_size, KvDtype kv_dtype, uint64_t seed, workload::Tensor3* k,
                        workload::Tensor3* v, KvStorage* out) {
  KvStorage& s = *out;
  s = KvStorage();
  s.page_size = page_size;
  s.kv_dtype = kv_dtype;
  s.seq = k->seq;
  s.heads = k->heads;
  s.k_dim = k->dim;
  s.v_dim = v->dim;
  if (!s.uses_cache()) {
    s.dtype = static_cast<sampleattn_dtype>(k->dtype);
    s.bytes = k->bytes.size() + v->bytes.size();
    return Status::ok();  // the inputs' own K and V are passed as they are
  }
  workload::QuantizedTensor qk, qv;
  workload::Tensor3 dequantized_k, dequantized_v;
  const workload::KvQuant kind = kv_dtype == KvDtype::kInt8 ? workload::KvQuant::kInt8 : workload::KvQuant::kFp8E4M3;
  if (kv_dtype == KvDtype::kSame) {
    s.dtype = static_cast<sampleattn_dtype>(k->dtype);
  } else {
    s.dtype = kv_dtype == KvDtype::kInt8 ? SAMPLEATTN_DTYPE_I8 : SAMPLEATTN_DTYPE_FP8_E4M3;
    if (kv_dtype == KvDtype::kInt8) {
      SAMPLEATTN_RETURN_IF_ERROR(workload::quantize_int8(*k, &qk));
      SAMPLEATTN_RETURN_IF_ERROR(workload::quantize_int8(*v, &qv));
    } else {
      SAMPLEATTN_RETURN_IF_ERROR(workload::quantize_fp8_e4m3(*k, &qk));
      SAMPLEATTN_RETURN_IF_ERROR(workload::quantize_fp8_e4m3(*v, &qv));
    }
    // Every later metric reads the values the cache stands for: the oracle's error is the kernel's.
    SAMPLEATTN_RETURN_IF_ERROR(workload::dequantize(qk, kind, k->seq, k->heads, k->dim, &dequantized_k));
    SAMPLEATTN_RETURN_IF_ERROR(workload::dequantize(qv, kind, v->seq, v->heads, v->dim, &dequantized_v));
    s.scale_token_stride = qk.scale_token_stride;  // int8: heads; fp8: 0
    s.scale_head_stride = 1;
    s.bytes = (qk.scales.size() + qv.scales.size()) * sizeof(float);
  }
  const uint8_t* k_packed = kv_dtype == KvDtype::kSame ? k->bytes.data() : qk.codes.data();
  const uint8_t* v_packed = kv_dtype == KvDtype::kSame ? v->bytes.data() : qv.codes.data();
  const int64_t elem = s.element_size();
  s.bytes += static_cast<uint64_t>(s.seq * s.heads * (s.k_dim + s.v_dim) * elem);
  if (page_size == 0) {
    s.k = std::move(qk.codes);
    s.v = std::move(qv.codes);
    s.k_scale = std::move(qk.scales);
    s.v_scale = std::move(qv.scales);
  } else {
    // Pages handed out out of order, as an engine's allocator does after a while (a seeded
    // shuffle), in a pool that also holds other pages: decoys, page 0 always one of them, with
    // the keys of the sequence's first page (its attention sinks) and their values negated. A
    // reader that took the pool for packed K/V would read a decoy first and get another answer (a
    // permutation of whole pages alone would hardly show: the last query sees every key).
    const int64_t used = (s.seq + page_size - 1) / page_size;
    const int64_t decoys = std::max<int64_t>(1, used / 8);
    if (used + decoys > INT32_MAX) return invalid_shape("too many pages for an int32 block table");
    s.num_pages = static_cast<int32_t>(used + decoys);
    std::vector<int32_t> order(static_cast<size_t>(s.num_pages - 1));
    std::iota(order.begin(), order.end(), 1);
    workload::Rng rng(seed * 0x9e3779b97f4a7c15ull + 14);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    s.block_table.assign(order.begin(), order.begin() + used);
    s.k = into_pages(k_packed, s.seq, s.heads * s.k_dim * elem, page_size, s.block_table, s.num_pages);
    s.v = into_pages(v_packed, s.seq, s.heads * s.v_dim * elem, page_size, s.block_table, s.num_pages);
    std::vector<int32_t> decoy_pages(order.begin() + used, order.end());
    decoy_pages.push_back(0);
    for (const int32_t decoy : decoy_pages) {
      fill_decoy(&s.k, page_size * s.heads * s.k_dim, elem, s.block_table[0], decoy, false);
      fill_decoy(&s.v, page_size * s.heads * s.v_dim, elem, s.block_table[0], decoy, true);
    }
    if (kv_dtype == KvDtype::kInt8) {
      s.k_scale = scales_into_pages(qk.scales, s.seq, s.heads, page_size, s.block_table, s.num_pages);
      s.v_scale = scales_into_pages(qv.scales, s.seq, s.heads, page_size, s.block_table, s.num_pages);
      s.scale_page_stride = page_size * s.heads;
    } else if (kv_dtype == KvDtype::kFp8) {
      s.k_scale = std::move(qk.scales);  // per kv head: no token or page stride
      s.v_scale = std::move(qv.scales);
    }
  }
  if (kv_dtype != KvDtype::kSame) {
    *k = std::move(dequantized_k);
    *v = std::move(dequantized_v);
  }
  return Status::ok();
}

}  // namespace sampleattn::cli
