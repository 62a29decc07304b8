"""attention() on numpy arrays against the float64 oracle (reference.py)."""
import numpy as np
import pytest

import sampleattn
from sampleattn import _core

import reference as R

# f32 inputs, products and online softmax: at most 2x a plain float32 implementation's error
# (R.check_f32_accuracy), and below this everywhere (measured 2-3e-7 relative).
F32_TOLERANCE = 1e-5


def _random(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [True, False])
def test_dense_matches_float64_reference(rng, head_dim, causal):
    q, k, v = (_random(rng, 300, 4, head_dim) for _ in range(3))
    out, lse = sampleattn.attention(q, k, v, causal=causal, return_lse=True)
    _, ref_lse = R.attention(q, k, v, causal=causal)
    assert out.shape == q.shape and out.dtype == np.float32
    error, _ = R.check_f32_accuracy(out, q, k, v, causal=causal)
    assert error < F32_TOLERANCE
    assert lse.shape == (300, 4) and lse.dtype == np.float32
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_scale(rng):
    q, k, v = (_random(rng, 200, 2, 64) for _ in range(3))
    out = sampleattn.attention(q, k, v, scale=0.3)
    R.check_f32_accuracy(out, q, k, v, scale=0.3)


def test_grouped_query_heads(rng):
    q = _random(rng, 257, 8, 64)
    k, v = _random(rng, 257, 2, 64), _random(rng, 257, 2, 64)
    out = sampleattn.attention(q, k, v)
    R.check_f32_accuracy(out, q, k, v)


def test_varlen_batch(rng):
    # Sequences of several lengths, an empty one, a one-token one, and chunked ones (q_len < k_len).
    q_lens, k_lens = [100, 0, 1, 37, 64], [100, 5, 1, 90, 200]
    cu_q, cu_k = np.cumsum([0] + q_lens), np.cumsum([0] + k_lens)
    q = _random(rng, cu_q[-1], 4, 64)
    k, v = _random(rng, cu_k[-1], 2, 64), _random(rng, cu_k[-1], 2, 64)
    out, lse = sampleattn.attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_lse=True)
    _, ref_lse = R.attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    R.check_f32_accuracy(out, q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_one_cu_seqlens_serves_both(rng):
    cu = np.array([0, 50, 130], dtype=np.int64)
    q, k, v = (_random(rng, 130, 2, 64) for _ in range(3))
    out = sampleattn.attention(q, k, v, cu_seqlens_q=cu)
    ref, _ = R.attention(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu)
    assert R.relative_error(out, ref) < F32_TOLERANCE


def test_chunked_prefill_queries_are_the_last_ones(rng):
    q_full, k, v = (_random(rng, 400, 4, 64) for _ in range(3))
    chunk = q_full[-96:]
    out = sampleattn.attention(chunk, k, v)
    R.check_f32_accuracy(out, chunk, k, v)
    # The same rows as the whole sequence's last 96 (bottom-right aligned causal mask).
    whole = sampleattn.attention(q_full, k, v)
    assert R.relative_error(out, whole[-96:]) < F32_TOLERANCE


def test_float16_inputs_and_output(rng):
    q, k, v = (_random(rng, 256, 4, 64, dtype=np.float16) for _ in range(3))
    out = sampleattn.attention(q, k, v)
    assert out.dtype == np.float16
    ref, _ = R.attention(q, k, v)  # f16 values are exact in float64
    # Products in f32; the output rounded to f16 (2^-11 relative).
    assert R.relative_error(out, ref) < 1e-3
    out32 = sampleattn.attention(q, k, v, out_dtype="float32")
    assert out32.dtype == np.float32
    assert R.relative_error(out32, ref) < F32_TOLERANCE


def test_mixed_dtypes(rng):
    q = _random(rng, 128, 2, 64, dtype=np.float16)
    k, v = _random(rng, 128, 2, 64), _random(rng, 128, 2, 64)
    out = sampleattn.attention(q, k, v)
    assert out.dtype == np.float16
    ref, _ = R.attention(q, k, v)
    assert R.relative_error(out, ref) < 1e-3


def test_float64_inputs_are_converted_to_float32(rng):
    q, k, v = (rng.standard_normal((100, 2, 64)) for _ in range(3))
    before = _core.copies_made
    out = sampleattn.attention(q, k, v)
    assert _core.copies_made == before + 3
    assert out.dtype == np.float32
    ref, _ = R.attention(q, k, v)
    assert R.relative_error(out, ref) < F32_TOLERANCE


def test_strided_inputs_and_output_are_not_copied(rng):
    tokens, heads, d = 200, 4, 64
    # q: every other head of a wider tensor (head stride 2 * d).
    q_wide = _random(rng, tokens, 2 * heads, d)
    q = q_wide[:, ::2, :]
    # k: the first half of each row of a [tokens, heads, 2d] buffer (token stride heads * 2d).
    k = _random(rng, tokens, heads, 2 * d)[:, :, :d]
    # v: a head-major buffer seen as [token, head, dim] (token stride d, head stride tokens * d).
    v = np.ascontiguousarray(_random(rng, heads, tokens, d)).transpose(1, 0, 2)
    # out: a strided window of a larger buffer, which must stay untouched around it.
    out_buffer = np.full((tokens, heads, 3 * d), np.nan, dtype=np.float32)
    out = out_buffer[:, :, d:2 * d]
    before = _core.copies_made
    result = sampleattn.attention(q, k, v, out=out)
    assert _core.copies_made == before
    assert result is out
    ref, _ = R.attention(q, k, v)
    assert R.relative_error(out, ref) < F32_TOLERANCE
    assert np.isnan(out_buffer[:, :, :d]).all() and np.isnan(out_buffer[:, :, 2 * d:]).all()


def test_non_contiguous_last_dim_is_copied(rng):
    q, k, v = (_random(rng, 64, 2, 64) for _ in range(3))
    q_f = np.asfortranarray(q)
    before = _core.copies_made
    out = sampleattn.attention(q_f, k, v)
    assert _core.copies_made == before + 1
    np.testing.assert_array_equal(out, sampleattn.attention(q, k, v))


def test_broadcast_kv_heads_are_copied(rng):
    # A stride-0 head dimension (np.broadcast_to) is legal numpy; the library wants rows apart.
    q = _random(rng, 64, 4, 64)
    k1, v1 = _random(rng, 64, 1, 64), _random(rng, 64, 1, 64)
    k, v = np.broadcast_to(k1, (64, 4, 64)), np.broadcast_to(v1, (64, 4, 64))
    out = sampleattn.attention(q, k, v)
    np.testing.assert_allclose(out, sampleattn.attention(q, k1, v1), rtol=1e-6, atol=1e-6)


def test_single_token_and_empty(rng):
    q, k, v = (_random(rng, 1, 3, 64) for _ in range(3))
    out = sampleattn.attention(q, k, v)
    np.testing.assert_allclose(out, v, rtol=1e-6)  # one key: the output is its value
    empty = np.zeros((0, 3, 64), np.float32)
    assert sampleattn.attention(empty, empty, empty).shape == (0, 3, 64)


def test_bf16_precision_is_close(rng):
    q, k, v = (_random(rng, 256, 2, 64) for _ in range(3))
    out = sampleattn.attention(q, k, v, precision="bf16")
    ref, _ = R.attention(q, k, v)
    # bf16 products (8-bit mantissa) where the CPU has avx512_bf16, f32 otherwise.
    assert R.relative_error(out, ref) < 2e-2


def test_bfloat16_numpy_through_ml_dtypes(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    q, k, v = (_random(rng, 128, 2, 64).astype(ml_dtypes.bfloat16) for _ in range(3))
    out = sampleattn.attention(q, k, v)
    assert out.dtype == np.dtype(ml_dtypes.bfloat16)
    ref, _ = R.attention(*(x.astype(np.float32) for x in (q, k, v)))
    assert R.relative_error(out.astype(np.float32), ref) < 1e-2


def test_explicit_context_and_lists(rng, cpu_context):
    q = _random(rng, 16, 1, 64)
    out = sampleattn.attention(q.tolist(), q.tolist(), q.tolist(), context=cpu_context)
    np.testing.assert_array_equal(out, sampleattn.attention(q, q, q))
