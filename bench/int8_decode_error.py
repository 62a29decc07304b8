#!/usr/bin/env python3
"""What int8 K/V cost a decode step on real activations: the int8 format's own rounding against
what the kernel's products add (docs/ACCURACY.md, "Quantized and paged KV caches").

For each capture in ../shared/fixtures (Llama-3-8B and Llama-2-7B, layer 10): the last query against
all keys, K and V quantized to int8 per (token, kv head) (scale = max|x| / 127), three outputs per
query head compared by relative L2:
  - int8 rounding: fp64 attention on the dequantized K/V against fp64 on the original f16 K/V;
  - kernel: the library's decode step on the int8 K/V (precision AUTO: integer products on a CPU
    with AVX512_VNNI; SAMPLEATTN_ISA=avx2 gives the f32 products) against fp64 on the dequantized.

    export SAMPLEATTN_LIBRARY=build/src/libsampleattn.so.1
    /usr/bin/python3 bench/int8_decode_error.py [--fixtures ../shared/fixtures] [--precision auto|f32]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import sampleattn as sa  # noqa: E402


def oracle(q, k, v, group):
    """fp64 attention of q [1, Hq, d] (the last position) over all n keys of k, v [n, Hkv, d]."""
    out = np.zeros((q.shape[1], v.shape[2]))
    for h in range(q.shape[1]):
        kh = k[:, h // group, :].astype(np.float64)
        vh = v[:, h // group, :].astype(np.float64)
        s = kh @ q[0, h].astype(np.float64) / np.sqrt(q.shape[2])
        p = np.exp(s - s.max())
        out[h] = (p / p.sum()) @ vh
    return out


def quantize(x):
    """int8 codes, scales [n, heads] and the dequantized values (scale * code in f32)."""
    x = x.astype(np.float32)
    scale = np.abs(x).max(axis=2, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(x / scale), -127, 127).astype(np.int8)
    return codes, scale[:, :, 0].astype(np.float32), codes.astype(np.float32) * scale


def rel(a, b):
    return np.sqrt(((a - b) ** 2).sum(axis=-1) / (b ** 2).sum(axis=-1))


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--fixtures", default=os.path.join(here, "..", "..", "shared", "fixtures"))
    ap.add_argument("--precision", default="auto", choices=["auto", "f32"])
    args = ap.parse_args()
    isa = os.environ.get("SAMPLEATTN_ISA", "auto")
    for name in ("llama3-8b-layer10", "llama2-7b-layer10"):
        path = os.path.join(args.fixtures, name)
        if not os.path.exists(path + "-q.npy"):
            print(f"{name}: not found under {args.fixtures}, skipped")
            continue
        q, k, v = (np.load(f"{path}-{t}.npy") for t in "qkv")
        group = q.shape[1] // k.shape[1]
        q1 = np.ascontiguousarray(q[-1:]).astype(np.float32)
        kc, ks, kd = quantize(k)
        vc, vs, vd = quantize(v)
        exact = oracle(q1, k, v, group)
        dequantized = oracle(q1, kd, vd, group)
        cache = sa.kv_cache(k_scale=ks, v_scale=vs, scale_token_stride=k.shape[1], scale_head_stride=1)
        o = sa.attention(q1, kc, vc, causal=True, kv_cache=cache, precision=args.precision, out_dtype=np.float32)
        o = np.asarray(o, dtype=np.float64)[0]
        fmt, ker = rel(dequantized, exact), rel(o, dequantized)
        print(f"{name} ({k.shape[0]} keys, isa {isa}, precision {args.precision}): "
              f"int8 rounding median {np.median(fmt):.2e} max {fmt.max():.2e}; "
              f"kernel vs fp64 on the dequantized median {np.median(ker):.2e} max {ker.max():.2e}")


if __name__ == "__main__":
    main()
