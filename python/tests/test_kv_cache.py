"""The KV cache of ABI 1.4 through attention(kv_cache=...): paged K/V give the packed result, int8
K/V with their scales the result of the dequantized inputs, and a malformed cache the library's
error."""
import ctypes as C

import numpy as np
import pytest

import sampleattn
from sampleattn import _abi

PAGE = 16


def _inputs(rng, seqs, hq=4, hkv=2, d=64):
    cu_q = np.cumsum([0] + [q for q, _ in seqs]).astype(np.int32)
    cu_k = np.cumsum([0] + [k for _, k in seqs]).astype(np.int32)
    q = rng.standard_normal((cu_q[-1], hq, d)).astype(np.float32)
    k = rng.standard_normal((cu_k[-1], hkv, d)).astype(np.float32)
    v = rng.standard_normal((cu_k[-1], hkv, d)).astype(np.float32)
    return q, k, v, cu_q, cu_k


def _paged(rng, k, v, cu_k, spare=2):
    """K and V copied into shuffled pages of 16 (unused slots NaN), flattened to [pages * 16, ...]."""
    lengths = np.diff(cu_k)
    pages_of = (lengths + PAGE - 1) // PAGE
    num_pages = int(pages_of.sum()) + spare
    stride = int(pages_of.max()) + 1
    order = rng.permutation(num_pages).astype(np.int32)
    table = np.full((len(lengths), stride), -1, dtype=np.int32)
    k_pool = np.full((num_pages * PAGE,) + k.shape[1:], np.nan, dtype=k.dtype)
    v_pool = np.full((num_pages * PAGE,) + v.shape[1:], np.nan, dtype=v.dtype)
    used = 0
    for b, n in enumerate(lengths):
        table[b, :pages_of[b]] = order[used:used + pages_of[b]]
        used += pages_of[b]
        for j in range(n):
            slot = table[b, j // PAGE] * PAGE + j % PAGE
            k_pool[slot] = k[cu_k[b] + j]
            v_pool[slot] = v[cu_k[b] + j]
    page_stride = PAGE * k.shape[1] * k.shape[2]
    cache = sampleattn.kv_cache(block_table=table, block_table_stride=stride, page_size=PAGE,
                                num_pages=num_pages, k_page_stride=page_stride, v_page_stride=page_stride)
    return k_pool, v_pool, cache


def test_kv_cache_defaults_are_packed():
    cache = sampleattn.kv_cache()
    assert cache.struct_size == C.sizeof(_abi.KvCache) == 96
    assert not cache.block_table and not cache.seqused_k and not cache.k_scale and not cache.v_scale
    assert cache.page_size == cache.num_pages == cache.block_table_stride == 0
    with pytest.raises(TypeError, match="no field 'pages'"):
        sampleattn.kv_cache(pages=3)


@pytest.mark.parametrize("method", ["dense", "sample"])
def test_paged_equals_packed(rng, cpu_context, method):
    seqs = [(40, 70), (130, 150), (25, 48)]
    q, k, v, cu_q, cu_k = _inputs(rng, seqs)
    sample = dict(dense_below=0, min_window=8, sample_block=16, r_row=0.2, max_density=1.0, r_val=0.0)
    extra = sample if method == "sample" else {}
    packed, packed_lse = sampleattn.attention(
        q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, method=method, return_lse=True, context=cpu_context,
        **extra)
    k_pool, v_pool, cache = _paged(rng, k, v, cu_k)
    paged, paged_lse = sampleattn.attention(
        q, k_pool, v_pool, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, kv_cache=cache, method=method, return_lse=True,
        context=cpu_context, **extra)
    assert np.array_equal(paged, packed)
    assert np.array_equal(paged_lse, packed_lse)


def test_seqused_k_equals_the_truncated_call(rng, cpu_context):
    q, k, v, cu_q, cu_k = _inputs(rng, [(30, 80)])
    expected = sampleattn.attention(q, k[:61], v[:61], context=cpu_context)
    k[61:] = np.nan  # never read
    cache = sampleattn.kv_cache(seqused_k=[61])
    got = sampleattn.attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, kv_cache=cache, context=cpu_context)
    assert np.array_equal(got, expected)


def test_int8_kv_with_scales(rng, cpu_context):
    q, k, v, _, _ = _inputs(rng, [(50, 50)])
    hkv = k.shape[1]
    k8 = np.clip(np.round(k * 40), -127, 127).astype(np.int8)
    v8 = np.clip(np.round(v * 40), -127, 127).astype(np.int8)
    # One scale per (token, kv head): scale_token_stride = kv heads, scale_head_stride = 1.
    k_scale = rng.uniform(0.01, 0.03, size=(k.shape[0], hkv)).astype(np.float32)
    v_scale = rng.uniform(0.01, 0.03, size=(k.shape[0], hkv)).astype(np.float32)
    cache = sampleattn.kv_cache(k_scale=k_scale, v_scale=v_scale, scale_token_stride=hkv, scale_head_stride=1)
    got = sampleattn.attention(q, k8, v8, kv_cache=cache, context=cpu_context)
    k_deq = k8.astype(np.float32) * k_scale[:, :, None]
    v_deq = v8.astype(np.float32) * v_scale[:, :, None]
    expected = sampleattn.attention(q, k_deq, v_deq, context=cpu_context)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # Without the scales the int8 codes mean nothing: the library says which scale is missing.
    with pytest.raises(sampleattn.Error) as e:
        sampleattn.attention(q, k8, v8, kv_cache=sampleattn.kv_cache(v_scale=v_scale, scale_token_stride=hkv,
                                                                      scale_head_stride=1), context=cpu_context)
    assert e.value.status == "SAMPLEATTN_NULL_POINTER" and "kv_cache.k_scale" in e.value.message


def test_malformed_cache_is_the_librarys_error(rng, cpu_context):
    q, k, v, cu_q, cu_k = _inputs(rng, [(20, 40)])
    k_pool, v_pool, cache = _paged(rng, k, v, cu_k)
    cache.page_size = 24
    with pytest.raises(sampleattn.Error) as e:
        sampleattn.attention(q, k_pool, v_pool, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, kv_cache=cache,
                             context=cpu_context)
    assert e.value.status == "SAMPLEATTN_INVALID_SHAPE" and "page_size" in e.value.message
    cache.page_size = PAGE
    cache.struct_size = C.sizeof(_abi.KvCache) + 8
    with pytest.raises(sampleattn.Error) as e:
        sampleattn.attention(q, k_pool, v_pool, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, kv_cache=cache,
                             context=cpu_context)
    assert e.value.status == "SAMPLEATTN_UNSUPPORTED_VERSION"
    with pytest.raises(TypeError, match="KvCache"):
        sampleattn.attention(q, k, v, kv_cache={"page_size": 16}, context=cpu_context)
