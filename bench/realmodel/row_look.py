#!/usr/bin/env python3
"""What a cheap look at every row would recover, on a Q/K/V dump (np_forward.py, or eval.py
--dump-layer). For each sparse head of the library's sample run (defaults), Q and K are quantized
to int8 (per-row scales) and every row's estimated scores are compared with a bar `margin` nats
below a reference; two ways to use what the look finds are measured exactly (double precision):

- rows: after the sparse pass, a row whose largest estimated score outside the mask comes within
  `margin` of its in-mask log-sum-exp (exact, as the sparse pass returns it) runs dense;
- rows, decided before the attention: the same with the row's largest estimated score in its
  window band as the reference (what a mask decided before the attention can use);
- columns: before the sparse pass, every key outside the mask whose estimated score for some row
  comes within `margin` of that row's largest estimated score in its window band joins the
  stripes (the mask stays window + stripes).

It also reports how often a per-channel min/max bound over blocks of `--block` keys (Quest's
page bound) clears the columns' bar (the share of (row, block) pairs that such a pre-filter could
not skip), and how few rows a look restricted to the rows whose in-mask mass is least held by
their window band (a figure the sparse pass could give) would need to cover 90% / all of the
rows that lose more than 5%.

  /usr/bin/python3 row_look.py l7.npz [--margins 3,4,5] [--threads 2]
"""
import argparse
import os
import sys

import numpy as np


def quantize(x):
    """Symmetric int8 per row: int8 values and the scale of each row."""
    amax = np.abs(x).max(axis=1, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(x / scale), -127, 127).astype(np.int8), scale[:, 0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump")
    ap.add_argument("--margins", default="3,4,5")
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--chunk", type=int, default=512)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import sampleattn

    margins = [float(m) for m in args.margins.split(",")]
    z = np.load(args.dump)
    q, k, v = (np.ascontiguousarray(z[n].astype(np.float32)) for n in ("q", "k", "v"))
    T, H, d = q.shape
    group = H // k.shape[1]
    scale = 1.0 / np.sqrt(d)
    B = args.block
    ctx = sampleattn.Context(backend="cpu", num_threads=args.threads)
    o, st = sampleattn.attention(q, k, v, causal=True, method="sample", return_stats=True, context=ctx)
    od = sampleattn.attention(q, k, v, causal=True, method="dense", context=ctx)
    offs, stripes = st["stripe_offsets"], st["stripes"]
    causal_pairs = T * (T + 1) / 2

    def chunks():
        for r0 in range(0, T, args.chunk):
            r1 = min(T, r0 + args.chunk)
            pos = np.arange(r0, r1)[:, None]
            j = np.arange(r1)[None, :]
            yield r0, r1, pos, j, j <= pos

    for h in range(H):
        hs = st["heads"][h]
        if hs["dense"]:
            print(f"head {h}: {hs['decision']}")
            continue
        w = hs["window"]
        cols = np.zeros(T, dtype=bool)
        cols[stripes[offs[h]:offs[h + 1]]] = True
        kh, qh, vh = (x.astype(np.float64) for x in (k[:, h // group], q[:, h], v[:, h // group]))
        kq, ks = quantize(k[:, h // group])
        qq, qs = quantize(q[:, h])
        nblk = (T + B - 1) // B
        kmin = np.stack([kh[b * B:(b + 1) * B].min(0) for b in range(nblk)])
        kmax = np.stack([kh[b * B:(b + 1) * B].max(0) for b in range(nblk)])
        lost = np.zeros(T)
        row_gap = np.full(T, -np.inf)  # estimated largest outside score minus the in-mask lse
        row_gap_exact = np.full(T, -np.inf)
        band_share = np.zeros(T)  # the window band's share of the row's in-mask mass
        col_gap = np.full(T, -np.inf)  # per key: its best estimated score minus that row's band max
        pre_gap = np.full(T, -np.inf)  # per row: its largest estimated outside score minus its band max
        bound_pass = {m: 0 for m in margins}
        bound_total = 0
        for r0, r1, pos, j, causal in chunks():
            s = (qh[r0:r1] @ kh[:r1].T) * scale
            e = (qq[r0:r1].astype(np.int32) @ kq[:r1].astype(np.int32).T).astype(np.float64)
            e *= qs[r0:r1, None].astype(np.float64) * ks[None, :r1] * scale
            band = causal & (j > pos - w)
            inmask = band | (causal & cols[None, :r1])
            out = causal & ~inmask
            m = np.where(causal, s, -np.inf).max(axis=1, keepdims=True)
            p = np.where(causal, np.exp(s - m), 0.0)
            pin = np.where(inmask, p, 0.0).sum(axis=1)
            lost[r0:r1] = 1.0 - pin / p.sum(axis=1)
            lse_in = np.log(pin) + m[:, 0]
            band_share[r0:r1] = np.where(band, p, 0.0).sum(axis=1) / pin
            row_gap[r0:r1] = np.where(out, e, -np.inf).max(axis=1) - lse_in
            row_gap_exact[r0:r1] = np.where(out, s, -np.inf).max(axis=1) - lse_in
            band_max = np.where(band, e, -np.inf).max(axis=1, keepdims=True)
            col_gap[:r1] = np.maximum(col_gap[:r1], np.where(out, e - band_max, -np.inf).max(axis=0))
            pre_gap[r0:r1] = np.where(out, e, -np.inf).max(axis=1) - band_max[:, 0]
            nb = (r1 + B - 1) // B
            qc = qh[r0:r1, None, :]
            bound = np.maximum(qc * kmin[None, :nb], qc * kmax[None, :nb]).sum(-1) * scale
            out_blk = np.add.reduceat(out, np.arange(0, r1, B), axis=1) > 0
            bound_total += out_blk.sum()
            for mg in margins:
                bound_pass[mg] += (out_blk & (bound >= band_max - mg)).sum()
        err2 = np.linalg.norm(od[:, h] - o[:, h], axis=1) ** 2
        ref2 = np.linalg.norm(od[:, h]) ** 2
        bad = lost > 0.05
        seen = np.isfinite(row_gap_exact)
        # Rows ranked by band share, lowest first (rows with keys outside the band only).
        rank = np.empty(T, dtype=np.int64)
        rank[np.argsort(np.where(seen, band_share, np.inf), kind="stable")] = np.arange(T)
        bad_ranks = np.sort(rank[bad & seen])
        cover = (f"; lowest band share: {bad_ranks[max(0, int(np.ceil(0.9 * len(bad_ranks))) - 1)] / seen.sum():.1%} "
                 f"of the rows hold 90% of those, {bad_ranks[-1] / seen.sum():.1%} all") if len(bad_ranks) else ""
        print(f"head {h}: {hs['decision']}, density {hs['density']:.3f}, {cols.sum()} stripes, rel L2 "
              f"{np.sqrt(err2.sum() / ref2):.4f}; rows losing > 5% of their mass: {bad.sum()} ({bad.mean():.2%}); "
              f"int8 error of the rows' gap: max {np.abs(row_gap[seen] - row_gap_exact[seen]).max():.3f} nats{cover}")
        for mg in margins:
            flag = row_gap >= -mg
            rows_err = np.sqrt(np.where(flag, 0.0, err2).sum() / ref2)
            added = (col_gap >= -mg) & ~cols
            c2 = cols | added
            e2, pairs = 0.0, 0
            for r0, r1, pos, j, causal in chunks():
                mask = causal & ((j > pos - w) | c2[None, :r1])
                pairs += mask.sum()
                s = np.where(mask, (qh[r0:r1] @ kh[:r1].T) * scale, -np.inf)
                pr = np.exp(s - s.max(axis=1, keepdims=True))
                pr /= pr.sum(axis=1, keepdims=True)
                e2 += ((pr @ vh[:r1] - od[r0:r1, h]) ** 2).sum()
            extra_rows = float(np.where(flag, np.arange(T) + 1, 0).sum()) / causal_pairs
            pre = pre_gap >= -mg
            pre_err = np.sqrt(np.where(pre, 0.0, err2).sum() / ref2)
            pre_density = hs["density"] + float(np.where(pre, np.arange(T) + 1, 0).sum()) / causal_pairs
            print(f"  margin {mg:3.1f}: rows: {flag.sum():5d} dense ({flag.mean():.2%}; {(flag & bad).sum()} of the "
                  f"{bad.sum()} losing > 5%), rel L2 {rows_err:.4f}, density <= {hs['density'] + extra_rows:.3f} | "
                  f"rows before: {pre.sum():5d} ({pre.mean():.2%}), rel L2 {pre_err:.4f}, density <= {pre_density:.3f} | "
                  f"columns: +{added.sum():5d}, rel L2 {np.sqrt(e2 / ref2):.4f}, density {pairs / causal_pairs:.3f} | "
                  f"block bound clears {bound_pass[mg] / max(1, bound_total):.3f}")


if __name__ == "__main__":
    main()
