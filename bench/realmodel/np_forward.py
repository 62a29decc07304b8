#!/usr/bin/env python3
"""The model of common.py in numpy (no PyTorch, no GPU), up to one layer, whose post-RoPE Q/K/V it
dumps: to study a layer's heads on any machine (worst_rows.py). Attention of the earlier layers is
the library's dense path. Text: Python files matched by --glob, in a --seed permutation,
concatenated with NUL separators (the eval's held-out corpus lives on the GPU machine; any Python
source shows the same kinds of heads).

  /usr/bin/python3 np_forward.py --weights ../../.model/weights --length 16384 --layer 1 --out l1.npz
"""
import argparse
import glob
import json
import os
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--glob", default="/usr/lib/python3*/**/*.py")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import sampleattn

    cfg = json.load(open(os.path.join(args.weights, "model.json")))["config"]
    sd = {}
    for f in sorted(glob.glob(os.path.join(args.weights, "model-*.npz"))):
        z = np.load(f)
        sd.update({k: z[k].astype(np.float32) for k in z.files})
    files = sorted(glob.glob(args.glob, recursive=True))
    buf = bytearray()
    for i in np.random.default_rng(args.seed).permutation(len(files)):
        with open(files[i], "rb") as fh:
            buf += fh.read() + b"\0"
        if len(buf) >= args.length:
            break
    T = args.length
    x = np.frombuffer(bytes(buf[:T]), dtype=np.uint8).astype(np.int64)
    hd, H, Hk = cfg["head_dim"], cfg["n_heads"], cfg["n_kv_heads"]
    inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd))
    emb = np.concatenate([np.outer(np.arange(T), inv)] * 2, -1)
    cos, sin = np.cos(emb).astype(np.float32)[:, None], np.sin(emb).astype(np.float32)[:, None]

    def rms(a, w):
        return a / np.sqrt((a * a).mean(-1, keepdims=True) + cfg["norm_eps"]) * w

    def rope(a):  # [T, heads, hd], rotate-half
        rot = np.concatenate([-a[..., hd // 2:], a[..., :hd // 2]], -1)
        return np.ascontiguousarray(a * cos + rot * sin)

    ctx = sampleattn.Context(backend="cpu", num_threads=args.threads)
    h = sd["tok_emb.weight"][x]
    for layer in range(args.layer + 1):
        p = f"layers.{layer}."
        a = rms(h, sd[p + "attn_norm.weight"])
        q = rope((a @ sd[p + "wq.weight"].T).reshape(T, H, hd))
        k = rope((a @ sd[p + "wk.weight"].T).reshape(T, Hk, hd))
        v = np.ascontiguousarray((a @ sd[p + "wv.weight"].T).reshape(T, Hk, hd))
        if layer == args.layer:
            np.savez(args.out, q=q, k=k, v=v, tokens=x.astype(np.uint8))
            print(f"wrote {args.out}: layer {layer} Q/K/V of {T} tokens")
            return
        o = sampleattn.attention(q, k, v, causal=True, method="dense", context=ctx)
        h = h + o.reshape(T, -1) @ sd[p + "wo.weight"].T
        a = rms(h, sd[p + "ffn_norm.weight"])
        g = a @ sd[p + "w1.weight"].T
        h = h + ((g / (1 + np.exp(-g))) * (a @ sd[p + "w3.weight"].T)) @ sd[p + "w2.weight"].T


if __name__ == "__main__":
    main()
