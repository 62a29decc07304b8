#!/usr/bin/env python3
"""The model of common.py in numpy (np_model.py; no PyTorch, no GPU), up to one layer, whose
post-RoPE Q/K/V it dumps: to study a layer's heads on any machine (worst_rows.py). Attention of the
earlier layers is the library's dense path. Text: Python files matched by --glob, in a --seed
permutation, concatenated with NUL separators (any Python source shows the same kinds of heads;
np_eval.py runs whole held-out windows of corpus.py end to end).

  /usr/bin/python3 np_forward.py --weights ../../.model/weights --length 16384 --layer 1 --out l1.npz
"""
import argparse
import glob
import os
import sys

import numpy as np

from np_model import NpModel


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

    model = NpModel(args.weights)
    files = sorted(glob.glob(args.glob, recursive=True))
    buf = bytearray()
    for i in np.random.default_rng(args.seed).permutation(len(files)):
        with open(files[i], "rb") as fh:
            buf += fh.read() + b"\0"
        if len(buf) >= args.length:
            break
    T = args.length
    tokens = np.frombuffer(bytes(buf[:T]), dtype=np.uint8)

    ctx = sampleattn.Context(backend="cpu", num_threads=args.threads)
    h = model.embed(tokens)
    for layer in range(args.layer + 1):
        q, k, v = model.qkv(layer, h)
        if layer == args.layer:
            np.savez(args.out, q=q, k=k, v=v, tokens=tokens)
            print(f"wrote {args.out}: layer {layer} Q/K/V of {T} tokens")
            return
        h = model.finish_layer(layer, h, sampleattn.attention(q, k, v, causal=True, method="dense", context=ctx))


if __name__ == "__main__":
    main()
