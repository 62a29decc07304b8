"""Failures: the library's statuses as sampleattn.Error, and the binding's own argument checks."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import sampleattn


def _qkv(rng, tokens=64, heads=2, d=64, kv_heads=None, k_tokens=None):
    q = rng.standard_normal((tokens, heads, d)).astype(np.float32)
    shape = (k_tokens or tokens, kv_heads or heads, d)
    return q, rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


def test_unsupported_head_dim(rng):
    q, k, v = _qkv(rng, d=72)  # not a multiple of 16: in no head-dim list
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v)
    e = info.value
    assert e.status == "SAMPLEATTN_UNSUPPORTED_HEAD_DIM"
    assert e.code == 4
    assert "72" in e.message and "128" in e.message  # the message lists the supported ones
    assert str(e).startswith("SAMPLEATTN_UNSUPPORTED_HEAD_DIM: ")


def test_nan_alpha_is_invalid_argument(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v, method="sample", alpha=math.nan)
    assert info.value.status == "SAMPLEATTN_INVALID_ARGUMENT"
    assert "alpha" in info.value.message


@pytest.mark.parametrize("kwargs, field", [
    (dict(r_row=0.0), "r_row"), (dict(r_w=1.5), "r_w"), (dict(max_density=0.0), "max_density"),
    (dict(sample_block=0), "sample_block"), (dict(min_stripes=10, max_stripes=5), "max_stripes"),
])
def test_sample_parameter_ranges(rng, kwargs, field):
    q, k, v = _qkv(rng)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v, method="sample", **kwargs)
    assert info.value.status == "SAMPLEATTN_INVALID_ARGUMENT"
    assert field in info.value.message


def test_heads_not_a_multiple(rng):
    q, k, v = _qkv(rng, heads=3, kv_heads=2)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v)
    assert info.value.status == "SAMPLEATTN_INVALID_SHAPE"


def test_causal_needs_no_more_queries_than_keys(rng):
    q, k, v = _qkv(rng, tokens=64, k_tokens=32)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v)
    assert info.value.status == "SAMPLEATTN_INVALID_SHAPE"
    sampleattn.attention(q, k, v, causal=False)  # full attention has no such limit


def test_sample_needs_causal(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v, method="sample", causal=False)
    assert info.value.status == "SAMPLEATTN_INVALID_ARGUMENT"


def test_nan_input_is_rejected(rng):
    q, k, v = _qkv(rng)
    k[5, 1, 7] = np.nan
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v)
    assert info.value.status == "SAMPLEATTN_INVALID_ARGUMENT"


def test_output_may_not_alias_an_input(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(sampleattn.Error) as info:
        sampleattn.attention(q, k, v, out=q)
    assert info.value.status == "SAMPLEATTN_INVALID_ARGUMENT"
    assert "overlaps" in info.value.message


def test_workspace_limit_is_out_of_memory(rng):
    q, k, v = _qkv(rng, tokens=4096, heads=4)
    with sampleattn.Context(backend="cpu", max_workspace_bytes=4096) as context:
        with pytest.raises(sampleattn.Error) as info:
            sampleattn.attention(q, k, v, context=context)
    assert info.value.status == "SAMPLEATTN_OUT_OF_MEMORY"


def test_binding_checks(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match="3 dims"):
        sampleattn.attention(q[0], k, v)
    with pytest.raises(ValueError, match="same tokens and heads"):
        sampleattn.attention(q, k, v[:10])
    with pytest.raises(ValueError, match="head_dim"):
        sampleattn.attention(q, k[:, :, :32].copy(), v[:, :, :32].copy())
    with pytest.raises(ValueError, match="method"):
        sampleattn.attention(q, k, v, method="sparse")
    with pytest.raises(ValueError, match="precision"):
        sampleattn.attention(q, k, v, precision="f16")
    with pytest.raises(ValueError, match="scope"):
        sampleattn.attention(q, k, v, method="sample", scope="global")
    with pytest.raises(ValueError, match="scale"):
        sampleattn.attention(q, k, v, scale=0.0)
    with pytest.raises(ValueError, match="2\\^31"):
        sampleattn.attention(q, k, v, method="sample", min_window=2**40)
    with pytest.raises(TypeError, match="int"):
        sampleattn.attention(q, k, v, method="sample", min_window=1.5)
    with pytest.raises(ValueError, match="last offsets"):
        sampleattn.attention(q, k, v, cu_seqlens_q=[0, 10, 60])
    with pytest.raises(ValueError, match="out must have shape"):
        sampleattn.attention(q, k, v, out=np.empty((64, 2, 32), np.float32))
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        sampleattn.attention(q, k, v, out=np.empty(q.shape, np.float64))
    read_only = np.empty(q.shape, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        sampleattn.attention(q, k, v, out=read_only)
    with pytest.raises(TypeError, match="dtype"):
        sampleattn.attention(q.astype(np.complex64), k, v)
    with pytest.raises(TypeError, match="out must be"):
        sampleattn.attention(q, k, v, out=q.tolist())
    with pytest.raises(ValueError, match="out_dtype"):
        sampleattn.attention(q, k, v, out_dtype="int8")


def test_closed_context(rng):
    q, k, v = _qkv(rng)
    context = sampleattn.Context(backend="cpu")
    context.close()
    context.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        sampleattn.attention(q, k, v, context=context)


def test_library_not_found_says_how_to_point_at_it():
    env = dict(os.environ, SAMPLEATTN_LIBRARY="/nonexistent/libsampleattn.so")
    code = ("import sampleattn\n"
            "try:\n"
            "    sampleattn.attention([[[0.0] * 64]], [[[0.0] * 64]], [[[0.0] * 64]])\n"
            "except ImportError as e:\n"
            "    print(type(e).__name__, e)\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.startswith("LibraryNotFoundError")
    assert "SAMPLEATTN_LIBRARY" in result.stdout and "/nonexistent/libsampleattn.so" in result.stdout
