"""A float64 attention oracle in numpy, written from the header's contract, independently of the
library: [token, head, dim] layout, grouped-query heads, varlen batches, causal masks whose
queries are the last ones of their sequence when q_len < k_len (bottom-right aligned), and the
model variants of ABI 1.3 (sliding window, softcap, ALiBi, learned sinks, a value head size of
its own)."""
import numpy as np


def attention(q, k, v, *, causal=True, scale=None, cu_seqlens_q=None, cu_seqlens_k=None, window_left=None,
              softcap=None, alibi_slopes=None, sinks=None, dtype=np.float64):
    """(out, lse) computed in `dtype`: float64 is the oracle, float32 the plain same-precision
    implementation that the tolerance is measured against. Rows that see no key: out 0, lse -inf.

    The variants, in natural-log units, for the query at position p = k_len - q_len + i and key j:
    s = scale * q.k; s = softcap * tanh(s / softcap); s -= slope[h] * |p - j|; keys older than
    p - window_left are hidden; exp(sink[h]) joins each row's denominator (and its lse) with no
    value, unless the row sees no key. v may have its own head size: out has v's."""
    q, k, v = (np.asarray(x, dtype=np.float32).astype(dtype) for x in (q, k, v))
    tq, hq, d = q.shape
    tk, hkv, _ = k.shape
    dv = v.shape[2]
    group = hq // hkv
    scale = dtype(1.0 / np.sqrt(d) if scale is None else scale)
    cu_q = [0, tq] if cu_seqlens_q is None else list(cu_seqlens_q)
    cu_k = [0, tk] if cu_seqlens_k is None else list(cu_seqlens_k)
    slopes = None if alibi_slopes is None else np.asarray(alibi_slopes, dtype=np.float32).astype(dtype)
    sink = None if sinks is None else np.asarray(sinks, dtype=np.float32).astype(dtype)
    out = np.zeros((tq, hq, dv), dtype)
    lse = np.full((tq, hq), -np.inf, dtype)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        kk = np.repeat(k[k0:k1], group, axis=1)  # [lk, hq, d]
        vv = np.repeat(v[k0:k1], group, axis=1)
        s = np.einsum("qhd,khd->hqk", q[q0:q1], kk) * scale
        if softcap:
            s = dtype(softcap) * np.tanh(s / dtype(softcap))
        positions = (lk - lq + np.arange(lq))[:, None]  # p of each query row
        keys = np.arange(lk)[None, :]
        if slopes is not None:
            s = s - slopes[:, None, None] * np.abs(positions - keys)[None].astype(dtype)
        visible = np.ones((lq, lk), bool)
        if causal:
            visible &= keys <= positions
        if window_left is not None and window_left >= 0:
            visible &= keys >= positions - window_left
        s = np.where(visible[None], s, -np.inf)
        m = s.max(axis=2, keepdims=True)
        seen = np.isfinite(m)
        if sink is not None:  # the sink joins rows that see a key, at its own logit
            m = np.where(seen, np.maximum(m, sink[:, None, None]), m)
        m = np.where(seen, m, dtype(0))
        p = np.exp(s - m)
        l = p.sum(axis=2, keepdims=True)
        if sink is not None:
            l = l + np.where(seen, np.exp(sink[:, None, None] - m), dtype(0))
        o = np.einsum("hqk,khd->qhd", p / np.where(l > 0, l, dtype(1)), vv)
        out[q0:q1] = np.where(seen.transpose(1, 0, 2), o, dtype(0))
        with np.errstate(divide="ignore"):
            lse[q0:q1] = np.where(seen[..., 0], m[..., 0] + np.log(l[..., 0]), -np.inf).T
    return out, lse


def check_f32_accuracy(out, q, k, v, **mask):
    """The project's rule (STYLE.md, after flash-attention's tests): the library's error against
    the float64 oracle is at most twice that of a plain float32 implementation (plus 1e-7 for
    cases where the plain one happens to be almost exact). Returns the two errors."""
    ref, _ = attention(q, k, v, **mask)
    plain, _ = attention(q, k, v, dtype=np.float32, **mask)
    error, plain_error = relative_error(out, ref), relative_error(plain, ref)
    assert error <= 2 * plain_error + 1e-7, f"error {error:.3g} vs plain float32 {plain_error:.3g}"
    return error, plain_error


def relative_error(x, ref):
    """Relative L2 error of x against ref (both cast to float64)."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-300))


def round_to_bfloat16(x):
    """float32 values rounded to the nearest bfloat16 (ties to even), still as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def bfloat16_bits(x):
    """The uint16 bit patterns of x rounded to bfloat16."""
    return (round_to_bfloat16(x).view(np.uint32) >> 16).astype(np.uint16)


def from_bfloat16_bits(bits):
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def structured_inputs(rng, tokens, q_heads, kv_heads, head_dim, heavy_columns, sink=4, strength=8.0):
    """Q, K, V (float32) whose attention is sparse the way long-context attention is: every query
    leans on a few heavy key columns (and the first `sink` keys) over a low-variance background,
    so SampleAttention keeps a small fraction of the pairs. Returns (q, k, v, heavy) with heavy the
    sorted planted columns per kv head."""
    direction = rng.standard_normal((kv_heads, head_dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    group = q_heads // kv_heads
    q = 0.3 * rng.standard_normal((tokens, q_heads, head_dim))
    q += strength * np.repeat(direction, group, axis=0)[None]
    k = 0.3 * rng.standard_normal((tokens, kv_heads, head_dim))
    heavy = []
    for h in range(kv_heads):
        cols = np.sort(rng.choice(np.arange(sink, tokens), size=heavy_columns, replace=False))
        k[cols, h] += strength * direction[h]
        k[:sink, h] += strength * direction[h]
        heavy.append(cols)
    v = rng.standard_normal((tokens, kv_heads, head_dim))
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), heavy
