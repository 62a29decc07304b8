"""PyTorch integration: the custom op `torch.ops.sampleattn.attention` and a drop-in
`scaled_dot_product_attention`, on CPU tensors and CUDA tensors (with a library built with CUDA).

    import sampleattn.torch as sat
    out = sat.scaled_dot_product_attention(q, k, v, is_causal=True, method="sample")

Tensors are read in place (torch's [batch, heads, length, dim] layout is a strided
[token, head, dim] view per batch item, which the library takes as it is) and the output is
written in place; CUDA calls run on torch's current stream. Forward only: no autograd formula is
registered, so a backward through these ops fails.

Causal masks when the query and key lengths differ: `is_causal=True` means what it means to
torch, the top-left aligned mask (query i sees keys 0..i). The library's own causal mask is
bottom-right aligned (a chunk's queries are the last ones: query i sees keys 0..S-L+i), which
torch spells attn_mask=torch.nn.attention.bias.causal_lower_right(L, S); both are accepted here.
The custom op's `is_causal` is the library's (bottom-right); they agree when L == S.
"""
from typing import Optional

import torch

from . import _core

__all__ = ["attention", "scaled_dot_product_attention", "HAS_CUSTOM_OP"]

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _device_key(device):
    if device.type == "cpu":
        return ("cpu", 0)
    if device.type == "cuda":
        return ("cuda", device.index if device.index is not None else torch.cuda.current_device())
    raise NotImplementedError(f"sampleattn: tensors on {device} are not supported (CPU and CUDA only)")


def _token_major(t):
    """A view of t[b] as [token, head, dim] for each b: t is [B, H, L, D]; the last dim must be
    contiguous and the others positive (an expand()ed head dim has stride 0), else a copy."""
    if t.stride(-1) != 1 or any(s < 1 for n, s in zip(t.shape[:-1], t.stride()[:-1]) if n > 1):
        t = t.contiguous()
    return t


def _run(query, key, value, out, *, is_causal, scale, method, precision, sample):
    """out[b] = attention(query[b], key[b], value[b]) for [B, H, L, D] tensors, in place."""
    device = _device_key(query.device)
    context = _core.default_context(device)
    call = _core.Call(context, causal=is_causal, scale=scale, method=method, precision=precision, sample=sample)
    q, k, v = _token_major(query), _token_major(key), _token_major(value)
    views = []
    for name, t in (("query", q), ("key", k), ("value", v), ("out", out)):
        dtype = _DTYPES.get(t.dtype)
        if dtype is None:
            raise TypeError(f"sampleattn: {name} has dtype {t.dtype}; expected float32, float16 or bfloat16")
        views.append((t, dtype, t.element_size()))
    stream = torch.cuda.current_stream(query.device).cuda_stream if device[0] == "cuda" else None
    guard = torch.cuda.device(query.device) if device[0] == "cuda" else _NullContext()
    with guard:
        for b in range(q.shape[0]):
            per_item = []
            for t, dtype, size in views:
                _, h, length, d = t.shape
                sb, sh, sl, _ = t.stride()
                per_item.append(_core._View(t.data_ptr() + b * sb * size, dtype, (length, h, d), (sl, sh, 1),
                                            device, t, "torch"))
            call.run(*per_item, stream=stream)


class _NullContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _attention_impl(query, key, value, is_causal=True, scale=None, method="dense", precision="auto",
                    alpha=None, r_row=None, r_w=None, min_window=None, sample_block=None, min_stripes=None,
                    max_stripes=None, sink_tokens=None, dense_below=None, scope=None, window_mass_counts=None,
                    max_density=None):
    _check_4d(query, key, value)
    sample = {name: value_ for name, value_ in (
        ("alpha", alpha), ("r_row", r_row), ("r_w", r_w), ("min_window", min_window),
        ("sample_block", sample_block), ("min_stripes", min_stripes), ("max_stripes", max_stripes),
        ("sink_tokens", sink_tokens), ("dense_below", dense_below), ("scope", scope),
        ("window_mass_counts", window_mass_counts), ("max_density", max_density)) if value_ is not None}
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    with torch.no_grad():
        _run(query.detach(), key.detach(), value.detach(), out, is_causal=is_causal, scale=scale, method=method,
             precision=precision, sample=sample)
    return out


def _check_4d(query, key, value):
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(f"sampleattn: query, key and value must be [batch, heads, length, dim]; got shapes "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if key.shape != value.shape:
        raise ValueError(f"sampleattn: key {tuple(key.shape)} and value {tuple(value.shape)} must have the same shape")
    if query.shape[0] != key.shape[0] or query.shape[3] != key.shape[3]:
        raise ValueError(f"sampleattn: query {tuple(query.shape)} and key {tuple(key.shape)} differ in batch or "
                         "head dim")
    if query.device != key.device or query.device != value.device:
        raise ValueError(f"sampleattn: query, key and value are on {query.device}, {key.device}, {value.device}")


HAS_CUSTOM_OP = hasattr(torch, "library") and hasattr(torch.library, "custom_op")

if HAS_CUSTOM_OP:
    @torch.library.custom_op("sampleattn::attention", mutates_args=())
    def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_causal: bool = True,
                  scale: Optional[float] = None, method: str = "dense", precision: str = "auto",
                  alpha: Optional[float] = None, r_row: Optional[float] = None, r_w: Optional[float] = None,
                  min_window: Optional[int] = None, sample_block: Optional[int] = None,
                  min_stripes: Optional[int] = None, max_stripes: Optional[int] = None,
                  sink_tokens: Optional[int] = None, dense_below: Optional[int] = None,
                  scope: Optional[str] = None, window_mass_counts: Optional[bool] = None,
                  max_density: Optional[float] = None) -> torch.Tensor:
        """Attention of [B, Hq, L, D] queries over [B, Hkv, S, D] keys and values (Hq a multiple
        of Hkv) -> [B, Hq, L, D] in query's dtype. is_causal is the library's bottom-right aligned
        mask; the other arguments are sampleattn.attention()'s (None = the library's default)."""
        return _attention_impl(query, key, value, is_causal, scale, method, precision, alpha, r_row, r_w,
                               min_window, sample_block, min_stripes, max_stripes, sink_tokens, dense_below, scope,
                               window_mass_counts, max_density)

    @attention.register_fake
    def _attention_fake(query, key, value, is_causal=True, scale=None, method="dense", precision="auto",
                        alpha=None, r_row=None, r_w=None, min_window=None, sample_block=None, min_stripes=None,
                        max_stripes=None, sink_tokens=None, dense_below=None, scope=None, window_mass_counts=None,
                        max_density=None):
        _check_4d(query, key, value)
        return torch.empty(query.shape, dtype=query.dtype, device=query.device)
else:  # torch before 2.4: the same function, not registered as an op
    attention = _attention_impl


def _causal_bias_variant(attn_mask):
    """"lower_right" or "upper_left" for torch's CausalBias masks; None for anything else."""
    try:
        from torch.nn.attention.bias import CausalBias, CausalVariant
    except ImportError:
        return None
    if not isinstance(attn_mask, CausalBias):
        return None
    return "lower_right" if attn_mask.variant == CausalVariant.LOWER_RIGHT else "upper_left"


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, method="dense", precision="auto", **sample_kwargs):
    """torch.nn.functional.scaled_dot_product_attention computed by sampleattn.

    query [..., Hq, L, E], key and value [..., Hkv, S, E] (3-D inputs are one batch item).
    Supported: is_causal (torch's top-left mask), attn_mask=None or a causal_lower_right /
    causal_upper_left CausalBias, scale, enable_gqa. Not supported (NotImplementedError):
    other attn_masks, dropout_p > 0, a value head dim unlike the query's, and a top-left causal
    mask with L > S. method="sample" runs SampleAttention (causal only); sample_kwargs are its
    parameters (alpha=..., r_row=..., see sampleattn.attention).
    """
    unknown = set(sample_kwargs) - set(_core.SAMPLE_PARAMETERS)
    if unknown:
        raise TypeError(f"scaled_dot_product_attention() got unexpected keyword arguments {sorted(unknown)}")
    if dropout_p != 0.0:
        raise NotImplementedError("sampleattn: dropout_p must be 0 (prefill inference has no dropout)")
    bottom_right = False
    if attn_mask is not None:
        variant = _causal_bias_variant(attn_mask)
        if variant is None:
            raise NotImplementedError(
                "sampleattn: attn_mask must be None or a torch.nn.attention.bias causal_lower_right / "
                "causal_upper_left mask; arbitrary masks are not supported (use is_causal)")
        if is_causal:
            raise ValueError("sampleattn: is_causal and a causal attn_mask were both given")
        if (attn_mask.seq_len_q, attn_mask.seq_len_kv) != (query.shape[-2], key.shape[-2]):
            raise ValueError(f"sampleattn: attn_mask is for {attn_mask.seq_len_q} x {attn_mask.seq_len_kv}, the "
                             f"inputs are {query.shape[-2]} x {key.shape[-2]}")
        is_causal = True
        bottom_right = variant == "lower_right"
    if query.dim() < 3 or key.dim() != query.dim() or value.dim() != query.dim():
        raise ValueError(f"sampleattn: query, key and value must have the same number (>= 3) of dims; got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if value.shape[-1] != query.shape[-1] or key.shape[-1] != query.shape[-1]:
        raise NotImplementedError("sampleattn: query, key and value must have the same head dim")
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(f"sampleattn: query, key and value must have the same dtype; got {query.dtype}, "
                         f"{key.dtype}, {value.dtype}")
    if query.dtype not in _DTYPES:
        raise TypeError(f"sampleattn: dtype {query.dtype} is not supported (float32, float16, bfloat16)")
    lead = query.shape[:-3]
    if key.shape[:-3] != lead or value.shape[:-3] != lead:
        raise ValueError(f"sampleattn: batch dims differ: {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}")
    hq, hkv = query.shape[-3], key.shape[-3]
    if hq != hkv and not enable_gqa:
        raise ValueError(f"sampleattn: {hq} query heads and {hkv} key/value heads need enable_gqa=True")
    if hq % hkv != 0:
        raise ValueError(f"sampleattn: query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    length, keys = query.shape[-2], key.shape[-2]
    if is_causal and not bottom_right and length != keys:
        if length > keys:
            raise NotImplementedError(
                f"sampleattn: a top-left causal mask with more queries ({length}) than keys ({keys}) is not "
                "supported (rows past the keys would attend to all of them); use causal_lower_right for "
                "chunked prefill")
        # Top-left: query i sees keys 0..i, so the keys after the last query are seen by none.
        key, value = key[..., :length, :], value[..., :length, :]

    def as_4d(t):
        if t.dim() == 4:
            return t
        if t.dim() == 3:
            return t.unsqueeze(0)
        return t.reshape((-1,) + tuple(t.shape[-3:]))

    out = attention(as_4d(query), as_4d(key), as_4d(value), is_causal=bool(is_causal), scale=scale, method=method,
                    precision=precision, **sample_kwargs)
    return out.reshape(query.shape)
