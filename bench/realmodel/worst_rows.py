#!/usr/bin/env python3
"""Where a head's error against dense comes from, on a Q/K/V dump (np_forward.py, or eval.py
--dump-layer): per head, sample vs dense relative L2 error, the share of the squared error carried
by the worst 1% of rows, and the worst rows: their most attended key, its distance, its
probability, and the mass the library's mask keeps of the row (exact, in double).

  /usr/bin/python3 worst_rows.py l1.npz [--rows 8] [--threads 2]
"""
import argparse
import os
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import sampleattn

    z = np.load(args.dump)
    q, k, v = (np.ascontiguousarray(z[n].astype(np.float32)) for n in ("q", "k", "v"))
    T, H, d = q.shape
    group = H // k.shape[1]
    ctx = sampleattn.Context(backend="cpu", num_threads=args.threads)
    o, st = sampleattn.attention(q, k, v, causal=True, method="sample", return_stats=True, context=ctx)
    od = sampleattn.attention(q, k, v, causal=True, method="dense", context=ctx)
    offs, stripes = st["stripe_offsets"], st["stripes"]
    for h in range(H):
        hs = st["heads"][h]
        err = np.linalg.norm(o[:, h] - od[:, h], axis=1)
        rel = float(np.linalg.norm(err) / np.linalg.norm(od[:, h]))
        top = np.sort(err ** 2)[::-1]
        share = float(top[:max(1, T // 100)].sum() / max(top.sum(), 1e-30))
        print(f"head {h}: rel L2 {rel:.4f}, {hs['decision']}, density {hs['density']:.3f}, window {hs['window']}, "
              f"{hs['num_stripes']} stripes, validated p5 {hs['val_cra_p5']:.4f}, rms lost {hs['val_lost_rms']:.4f}; "
              f"worst 1% of rows carry {share:.0%} of the squared error")
        if hs["dense"]:
            continue
        keep_cols = np.zeros(T, dtype=bool)
        keep_cols[stripes[offs[h]:offs[h + 1]]] = True
        kh, qh = k[:, h // group].astype(np.float64), q[:, h].astype(np.float64)
        for i in sorted(np.argsort(err)[-args.rows:]):
            s = kh[:i + 1] @ qh[i] / np.sqrt(d)
            p = np.exp(s - s.max())
            p /= p.sum()
            j = int(p.argmax())
            kept = keep_cols[:i + 1].copy()
            kept[max(0, i - hs["window"] + 1):] = True
            print(f"  row {i:6d}: error {err[i]:7.3f} (|o| {np.linalg.norm(od[i, h]):6.3f}), most attended key {j} "
                  f"at distance {i - j} with p {p[j]:.3f}; kept mass {p[kept].sum():.3f}")


if __name__ == "__main__":
    main()
