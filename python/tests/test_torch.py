"""The torch binding (sampleattn.torch) and torch tensors through sampleattn.attention (DLPack), on
CPU tensors and, where torch sees a GPU and the library has its CUDA backend, CUDA tensors.
Skipped where torch is not importable."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sampleattn  # noqa: E402
import sampleattn.torch as sat  # noqa: E402
from sampleattn import _core  # noqa: E402

import reference as R  # noqa: E402

F = torch.nn.functional


def _cuda_skip_reason():
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        sampleattn.default_context(("cuda", 0))
    except sampleattn.Error as e:
        return f"the library has no CUDA backend here: {e}"
    return None


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda":
        reason = _cuda_skip_reason()
        if reason:
            pytest.skip(reason)
    return torch.device(request.param)


@pytest.fixture
def cuda():
    reason = _cuda_skip_reason()
    if reason:
        pytest.skip(reason)
    return torch.device("cuda")


def _dtypes(device):
    # The CUDA backend reads f16 and bf16 (tensor cores); the CPU backend f32 too.
    return [torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.float32, torch.float16,
                                                                        torch.bfloat16]


# Relative L2 error against torch's SDPA on float32 copies of the same inputs: f32 products in
# both; f16 / bf16 outputs are rounded (2^-11, 2^-8), plus bf16 P on the GPU.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _rel(x, ref):
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm())


def _inputs(device, dtype, b=2, hq=4, hkv=4, length=256, keys=None, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, length, d, generator=g)
    k = torch.randn(b, hkv, keys or length, d, generator=g)
    v = torch.randn(b, hkv, keys or length, d, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)]


def _torch_reference(q, k, v, **kwargs):
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)


@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("gqa", [False, True])
def test_sdpa_matches_torch(device, is_causal, gqa):
    for dtype in _dtypes(device):
        q, k, v = _inputs(device, dtype, hq=8 if gqa else 4)
        out = sat.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=gqa)
        assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
        ref = _torch_reference(q, k, v, is_causal=is_causal, enable_gqa=gqa)
        assert _rel(out, ref) < TOLERANCE[dtype], dtype


def test_sdpa_scale_and_shapes(device):
    dtype = _dtypes(device)[0]
    q, k, v = _inputs(device, dtype, b=3, length=100)
    ref = _torch_reference(q, k, v, is_causal=True, scale=0.2)
    assert _rel(sat.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.2), ref) < TOLERANCE[dtype]
    # 3-D (one batch item) and 5-D (two batch dims) inputs.
    out3 = sat.scaled_dot_product_attention(q[1], k[1], v[1], is_causal=True, scale=0.2)
    assert out3.shape == q[1].shape and _rel(out3, ref[1]) < TOLERANCE[dtype]
    q5, k5, v5 = (t.reshape(1, 3, *t.shape[1:]) for t in (q, k, v))
    out5 = sat.scaled_dot_product_attention(q5, k5, v5, is_causal=True, scale=0.2)
    assert out5.shape == q5.shape and _rel(out5.reshape(q.shape), ref) < TOLERANCE[dtype]


def test_strided_torch_layouts(device):
    dtype = _dtypes(device)[0]
    # [B, L, H, D] storage seen as [B, H, L, D] (what a QKV projection's transpose gives).
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(2, 200, 3, 4, 64, generator=g).to(device=device, dtype=dtype)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    assert not q.is_contiguous()
    out = sat.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _rel(out, _torch_reference(q, k, v, is_causal=True)) < TOLERANCE[dtype]
    # GQA through expand() (head stride 0) works too (copied first).
    k1, v1 = k[:, :1], v[:, :1]
    out = sat.scaled_dot_product_attention(q, k1.expand_as(k), v1.expand_as(v), is_causal=True)
    ref = sat.scaled_dot_product_attention(q, k1, v1, is_causal=True, enable_gqa=True)
    assert _rel(out, ref) < 1e-6


def test_causal_alignment_when_lengths_differ(device):
    from torch.nn.attention.bias import causal_lower_right, causal_upper_left
    dtype = _dtypes(device)[0]
    q, k, v = _inputs(device, dtype, length=96, keys=300)
    # is_causal is torch's top-left mask.
    out = sat.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _rel(out, _torch_reference(q, k, v, is_causal=True)) < TOLERANCE[dtype]
    out = sat.scaled_dot_product_attention(q, k, v, attn_mask=causal_upper_left(96, 300))
    assert _rel(out, _torch_reference(q, k, v, is_causal=True)) < TOLERANCE[dtype]
    # The library's own mask (chunked prefill): the queries are the last 96 of 300.
    out = sat.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(96, 300))
    ref = _torch_reference(q, k, v, attn_mask=causal_lower_right(96, 300))
    assert _rel(out, ref) < TOLERANCE[dtype]
    # ... which is what the custom op's is_causal means.
    op = torch.ops.sampleattn.attention(q, k, v, is_causal=True) if sat.HAS_CUSTOM_OP else sat.attention(q, k, v)
    assert _rel(op, ref) < TOLERANCE[dtype]


def test_unsupported_arguments_say_so():
    q, k, v = _inputs("cpu", torch.float32, length=16)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        sat.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(16, 16, dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="dropout"):
        sat.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
    q_long, _, _ = _inputs("cpu", torch.float32, length=32)
    with pytest.raises(NotImplementedError, match="top-left"):
        sat.scaled_dot_product_attention(q_long, k, v, is_causal=True)
    with pytest.raises(ValueError, match="enable_gqa"):
        sat.scaled_dot_product_attention(torch.cat([q, q], 1), k, v)
    with pytest.raises(TypeError, match="unexpected keyword"):
        sat.scaled_dot_product_attention(q, k, v, alpah=0.9)
    with pytest.raises(TypeError, match="float64"):
        sat.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with pytest.raises(sampleattn.Error) as info:
        sat.scaled_dot_product_attention(q[..., :32], k[..., :32], v[..., :32])
    assert info.value.status == "SAMPLEATTN_UNSUPPORTED_HEAD_DIM"


def test_sample_method_through_sdpa(device):
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v, _ = R.structured_inputs(np.random.default_rng(5), 4096, 4, 2, 64, 40)
    q, k, v = (torch.from_numpy(x).permute(1, 0, 2).unsqueeze(0).to(device=device, dtype=dtype) for x in (q, k, v))
    dense = sat.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    sparse = sat.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, method="sample")
    assert _rel(sparse, dense) < 0.1
    assert _rel(sparse, dense) > 0, "the sample method ran (a sparse mask changes the output)"
    limited = sat.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, method="sample",
                                               max_stripes=4)
    assert _rel(limited, dense) > _rel(sparse, dense)


@pytest.mark.skipif(not sat.HAS_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
def test_custom_op_passes_opcheck(device):
    dtype = _dtypes(device)[0]
    q, k, v = _inputs(device, dtype, length=64)
    torch.library.opcheck(torch.ops.sampleattn.attention.default, (q, k, v), {"is_causal": True})
    torch.library.opcheck(torch.ops.sampleattn.attention.default, (q, k, v),
                          {"is_causal": True, "method": "sample", "alpha": 0.9, "dense_below": 0})


@pytest.mark.skipif(not sat.HAS_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_compile_traces_the_op(device):
    dtype = _dtypes(device)[0]
    q, k, v = _inputs(device, dtype, length=64)

    def block(q, k, v):
        return sat.scaled_dot_product_attention(q * 2, k, v, is_causal=True) + 1

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    assert _rel(compiled(q, k, v), block(q, k, v)) < 1e-6


def test_inputs_that_require_grad(device):
    dtype = _dtypes(device)[0]
    q, k, v = (t.requires_grad_() for t in _inputs(device, dtype, length=32))
    out = sat.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _rel(out.detach(), _torch_reference(q.detach(), k.detach(), v.detach(), is_causal=True)) < TOLERANCE[dtype]
    with pytest.raises(RuntimeError):
        out.sum().backward()  # forward only


def test_cuda_stream_is_respected(cuda):
    q, k, v = _inputs(cuda, torch.bfloat16, length=512)
    ref = sat.scaled_dot_product_attention(q, k, v, is_causal=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = sat.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(out, ref)


def test_torch_tensors_through_sampleattn_attention(device):
    """The generic numpy-style API on torch tensors: read through DLPack in place, answered in torch."""
    dtype = _dtypes(device)[-1]
    g = torch.Generator().manual_seed(11)
    wide = torch.randn(300, 8, 64, generator=g).to(device=device, dtype=dtype)
    q = wide[:, ::2]  # every other head: head stride 128, zero-copy
    k, v = (torch.randn(300, 2, 64, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    before = _core.copies_made
    out, lse, stats = sampleattn.attention(q, k, v, return_lse=True, return_stats=True)
    assert _core.copies_made == before
    assert isinstance(out, torch.Tensor) and out.device == q.device and out.dtype == dtype
    assert isinstance(lse, torch.Tensor) and lse.shape == (300, 4) and lse.dtype == torch.float32
    assert stats["num_heads_total"] == 4 and stats["isa"]
    as_bhld = [t.permute(1, 0, 2).unsqueeze(0) for t in (q, k, v)]
    ref = _torch_reference(*as_bhld, is_causal=True, enable_gqa=True)[0].permute(1, 0, 2)
    assert _rel(out, ref) < TOLERANCE[dtype]
    # out= a strided torch tensor: written in place (also one that requires grad: returned as given).
    target = torch.zeros(4, 300, 64, device=device, dtype=dtype).permute(1, 0, 2)
    result = sampleattn.attention(q, k, v, out=target)
    assert result is target and torch.equal(target, out)
    leaf = torch.zeros(300, 4, 64, device=device, dtype=dtype, requires_grad=True)
    assert sampleattn.attention(q, k, v, out=leaf) is leaf and torch.equal(leaf.detach(), out)
    # Float32 output of bf16 inputs, varlen from a torch tensor of offsets.
    cu = torch.tensor([0, 100, 300], dtype=torch.int32)
    out32 = sampleattn.attention(q, k, v, out_dtype=torch.float32, cu_seqlens_q=cu)
    assert out32.dtype == torch.float32 and _rel(out32[100:], _varlen_tail(q, k, v)) < TOLERANCE[dtype]


def _varlen_tail(q, k, v):
    sub = [t[100:].permute(1, 0, 2).unsqueeze(0) for t in (q, k, v)]
    return _torch_reference(*sub, is_causal=True, enable_gqa=True)[0].permute(1, 0, 2)
