"""The model variants of ABI 1.3 through attention(): window_left, softcap, alibi_slopes, sinks and a
value head size of its own: what reaches the params struct, the binding's and the library's
checks, and the output against the float64 oracle (reference.py) implementing each variant."""
import ctypes as C
import math

import numpy as np
import pytest

import sampleattn
from sampleattn import _abi, _core

import reference as R

F32_TOLERANCE = 1e-5


def _qkv(rng, tokens=96, heads=4, kv_heads=2, d=64, dv=None):
    q = rng.standard_normal((tokens, heads, d)).astype(np.float32)
    k = rng.standard_normal((tokens, kv_heads, d)).astype(np.float32)
    v = rng.standard_normal((tokens, kv_heads, dv or d)).astype(np.float32)
    return q, k, v


def _bloom_slopes(n):
    # BLOOM's build_alibi_tensor, restated: the closest power of two's geometric sequence, then
    # every other slope of twice as many heads.
    closest = 2 ** math.floor(math.log2(n))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base ** p for p in range(1, closest + 1)]
    if closest != n:
        extra = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra ** p for p in range(1, 1 + 2 * min(closest, n - closest), 2)]
    return slopes


# ---- The parameters: what the binding passes, and what it refuses itself.

@pytest.mark.parametrize("heads", [1, 2, 4, 8, 12, 16, 24, 32, 40, 64, 96])
def test_alibi_slopes_are_the_standard_ones(heads):
    slopes = sampleattn.alibi_slopes(heads)
    assert slopes.dtype == np.float32 and slopes.shape == (heads,)
    np.testing.assert_allclose(slopes, _bloom_slopes(heads), rtol=1e-6)
    if heads == 8:
        np.testing.assert_array_equal(slopes, [2.0 ** -e for e in range(1, 9)])


def test_alibi_slopes_needs_a_positive_head_count():
    with pytest.raises(ValueError):
        sampleattn.alibi_slopes(0)
    with pytest.raises(TypeError):
        sampleattn.alibi_slopes(2.5)


def test_params_default_to_no_variant(cpu_context):
    p = _core.Call(cpu_context).params
    assert p.struct_size == C.sizeof(_abi.Params)
    assert (p.head_dim_v, p.window_left, p.softcap) == (0, -1, 0.0)
    assert not p.alibi_slopes and not p.sinks


def test_variants_reach_the_params(cpu_context):
    slopes = [0.5, 0.25, 0.125, 0.0625]
    sinks = [0.0, -np.inf, 2.5, -1.0]
    call = _core.Call(cpu_context, window_left=17, softcap=30, alibi_slopes=slopes, sinks=sinks)
    p = call.params
    assert p.window_left == 17 and p.softcap == 30.0
    assert [p.alibi_slopes[i] for i in range(4)] == slopes
    assert [p.sinks[i] for i in range(4)] == [np.float32(x) for x in sinks]


def test_head_dim_v_comes_from_v(rng, cpu_context):
    q, k, v = _qkv(rng, d=64, dv=128)
    call = _core.Call(cpu_context)
    views = [_core._view(name, x, 3) for name, x in (("q", q), ("k", k), ("v", v))]
    out = np.empty((96, 4, 128), np.float32)
    call.run(*views, _core._view("out", out, 3, writable=True))
    assert call.params.head_dim == 64 and call.params.head_dim_v == 128
    same = _core.Call(cpu_context)
    v64 = np.ascontiguousarray(v[:, :, :64])
    out64 = np.empty((96, 4, 64), np.float32)
    same.run(views[0], views[1], _core._view("v", v64, 3), _core._view("out", out64, 3, writable=True))
    assert same.params.head_dim_v == 0  # the same size as head_dim: the default


@pytest.mark.parametrize("name", ["alibi_slopes", "sinks"])
def test_per_head_arrays_need_one_value_per_query_head(rng, name):
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=f"{name} must have one value per query head \\(4\\), got 3"):
        sampleattn.attention(q, k, v, **{name: [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="1-D"):
        sampleattn.attention(q, k, v, **{name: np.zeros((2, 2))})
    with pytest.raises(TypeError, match="numbers"):
        sampleattn.attention(q, k, v, **{name: ["a", "b", "c", "d"]})


def test_window_left_must_be_an_int(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(TypeError, match="window_left"):
        sampleattn.attention(q, k, v, window_left=4.0)
    with pytest.raises(TypeError, match="softcap"):
        sampleattn.attention(q, k, v, softcap="50")


@pytest.mark.parametrize("kwargs, status, field", [
    (dict(window_left=-5), "SAMPLEATTN_INVALID_ARGUMENT", "window_left"),
    (dict(window_left=2**31), "SAMPLEATTN_INVALID_ARGUMENT", "window_left"),
    (dict(window_left=8, causal=False), "SAMPLEATTN_INVALID_ARGUMENT", "window_left"),
    (dict(softcap=math.nan), "SAMPLEATTN_INVALID_ARGUMENT", "softcap"),
    (dict(softcap=-1.0), "SAMPLEATTN_INVALID_ARGUMENT", "softcap"),
    (dict(softcap=math.inf), "SAMPLEATTN_INVALID_ARGUMENT", "softcap"),
    (dict(alibi_slopes=[0.5, math.inf, 0.1, 0.1]), "SAMPLEATTN_INVALID_ARGUMENT", "alibi_slopes[1]"),
    (dict(alibi_slopes=[0.5, 0.1, math.nan, 0.1]), "SAMPLEATTN_INVALID_ARGUMENT", "alibi_slopes[2]"),
    (dict(sinks=[0.0, 0.0, 0.0, math.inf]), "SAMPLEATTN_INVALID_ARGUMENT", "sinks[3]"),
    (dict(sinks=[math.nan, 0.0, 0.0, 0.0]), "SAMPLEATTN_INVALID_ARGUMENT", "sinks[0]"),
])
def test_the_library_checks_the_values(rng, kwargs, status, field):
    q, k, v = _qkv(rng)
    out = np.full((96, 4, 64), 7.0, np.float32)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v, out=out, **kwargs)
    assert info.value.status == status
    assert field in info.value.message
    assert (out == 7.0).all(), "a failed call writes nothing"


def test_value_head_size_not_in_the_list(rng):
    q, k, v = _qkv(rng, d=64, dv=72)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v)
    assert info.value.status == "SAMPLEATTN_UNSUPPORTED_HEAD_DIM"
    assert "head_dim_v 72" in info.value.message


def test_value_shapes(rng):
    q, k, v = _qkv(rng, d=64, dv=128)
    with pytest.raises(ValueError, match="same tokens and heads"):
        sampleattn.attention(q, k, v[:50])
    with pytest.raises(ValueError, match="head_dim 64 but k has 128"):
        sampleattn.attention(q, v, v)
    with pytest.raises(ValueError, match=r"out must have shape \(96, 4, 128\)"):
        sampleattn.attention(q, k, v, out=np.empty((96, 4, 64), np.float32))


def test_no_key_rows_ignore_the_sink(rng):
    # A full (non-causal) sequence without keys: its rows see no key, so they are 0 with lse -inf
    # whatever the sink (the header's rule).
    q, k, v = _qkv(rng, tokens=8, heads=4, kv_heads=2)
    cu_q, cu_k = np.array([0, 8]), np.array([0, 0])
    out, lse = sampleattn.attention(q, k[:0], v[:0], causal=False, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                    sinks=[1.0, 2.0, 3.0, 4.0], return_lse=True)
    assert (out == 0).all()
    assert np.isneginf(lse).all()


def test_a_window_covering_every_key_changes_nothing(rng):
    q, k, v = _qkv(rng, tokens=80)
    np.testing.assert_array_equal(sampleattn.attention(q, k, v, window_left=79), sampleattn.attention(q, k, v))


def test_sample_with_a_window_no_wider_than_its_local_window_runs_dense_window():
    # 4096 keys, window_left 50: the local window (at least min_window = 64 keys of the 51 the
    # model shows) covers all the model sees, so each head runs its band dense: "dense:window".
    q, k, v, _ = R.structured_inputs(np.random.default_rng(3), 4096, 4, 2, 64, 20)
    out, stats = sampleattn.attention(q, k, v, method="sample", window_left=50, return_stats=True)
    assert [h["decision"] for h in stats["heads"]] == ["dense:window"] * 4
    assert stats["num_dense_heads"] == 4
    dense = sampleattn.attention(q, k, v, window_left=50)
    np.testing.assert_array_equal(out, dense)


# ---- Accuracy against the float64 oracle (the backends implement each variant).

def _slopes_for(heads, scale=1.0):
    return sampleattn.alibi_slopes(heads) * np.float32(scale)


VARIANTS = {
    "window": dict(window_left=37),
    "softcap": dict(softcap=2.0),  # unit-variance scores of about +-3: the cap bends them
    "alibi": dict(alibi_slopes=_slopes_for(4, 0.1)),
    "sinks": dict(sinks=np.array([0.5, -np.inf, 2.0, -1.0], np.float32)),
    "all": dict(window_left=60, softcap=3.0, alibi_slopes=_slopes_for(4, 0.05),
                sinks=np.array([1.0, 0.0, -np.inf, 3.0], np.float32)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dense_variant_matches_float64_reference(rng, variant):
    q, k, v = _qkv(rng, tokens=150)
    kwargs = VARIANTS[variant]
    out, lse = sampleattn.attention(q, k, v, return_lse=True, **kwargs)
    ref, ref_lse = R.attention(q, k, v, **kwargs)
    plain, _ = R.attention(q, k, v, dtype=np.float32, **kwargs)
    error, plain_error = R.relative_error(out, ref), R.relative_error(plain, ref)
    assert error <= 2 * plain_error + 1e-7, f"error {error:.3g} vs plain float32 {plain_error:.3g}"
    assert error < F32_TOLERANCE
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_the_variants_change_the_result(rng):
    # So that the accuracy tests above could not pass on a backend that ignores a variant.
    q, k, v = _qkv(rng, tokens=150)
    plain, plain_lse = R.attention(q, k, v)
    for name, kwargs in VARIANTS.items():
        ref, ref_lse = R.attention(q, k, v, **kwargs)
        changed = max(R.relative_error(ref, plain), float(np.max(np.abs(ref_lse - plain_lse))))
        assert changed > 1e-2, name


@pytest.mark.parametrize("d, dv", [(64, 128), (128, 64), (96, 256)])
def test_value_head_size_of_its_own(rng, d, dv):
    q, k, _ = _qkv(rng, tokens=120, d=d)
    # v and out as views of wider buffers (wider by head_dim: a backend that took v's rows for
    # head_dim long still stays inside them): each row holds dv values of its own, and the values
    # past them (never part of the call) stay as they were.
    v_buffer = rng.standard_normal((120, 2, dv + d)).astype(np.float32)
    v = v_buffer[:, :, :dv]
    out_buffer = np.full((120, 4, dv + d), np.nan, np.float32)
    out = out_buffer[:, :, :dv]
    result, lse = sampleattn.attention(q, k, v, out=out, window_left=50, return_lse=True)
    assert result is out
    ref, ref_lse = R.attention(q, k, v, window_left=50)
    assert R.relative_error(out, ref) < F32_TOLERANCE
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)
    assert np.isnan(out_buffer[:, :, dv:]).all()
    assert sampleattn.attention(q, k, v).shape == (120, 4, dv)


def test_sample_with_variants_keeps_the_dense_result_where_the_mask_holds_the_mass():
    # Structured inputs (a few heavy columns and the first keys carry the mass) with every
    # variant: SampleAttention samples and selects on the scores the model uses, so its output
    # stays close to dense attention with the same variants.
    tokens = 4096
    q, k, v, _ = R.structured_inputs(np.random.default_rng(9), tokens, 4, 2, 64, 30)
    kwargs = dict(window_left=3000, softcap=30.0, alibi_slopes=_slopes_for(4, 1e-4),
                  sinks=np.array([2.0, -np.inf, 0.0, 4.0], np.float32))
    dense = sampleattn.attention(q, k, v, **kwargs)
    ref, _ = R.attention(q[-256:], k, v, **kwargs)
    assert R.relative_error(dense[-256:], ref) < F32_TOLERANCE
    out, stats = sampleattn.attention(q, k, v, method="sample", return_stats=True, **kwargs)
    assert stats["num_heads_total"] == 4
    assert all(h["decision"] in _abi.DECISIONS.values() for h in stats["heads"])
    assert R.relative_error(out, dense) < 5e-2
