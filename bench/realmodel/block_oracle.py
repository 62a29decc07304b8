#!/usr/bin/env python3
# Oracle query-aware block masks on real Q/K (a dump: DIR/q.npy, k.npy, [seq, heads, dim], as
# eval.py --dump-layer or `sampleattn generate` write them): per query block of B rows, the fewest
# key blocks (B keys each, ranked by the block's own exact mass) that keep the block's rows at a
# root-mean-square lost mass <= max_lost. The best any query-aware block method (FlexPrefill,
# XAttention) could do, before its own estimation error (docs/ACCURACY.md).
#   python3 block_oracle.py DIR [B=64] [max_lost=0.01]      (numpy only)
import sys, numpy as np
d = sys.argv[1]; B = int(sys.argv[2]) if len(sys.argv) > 2 else 64; max_lost = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
q = np.load(d + "/q.npy").astype(np.float32); k = np.load(d + "/k.npy").astype(np.float32)
N, H, D = q.shape; scale = 1 / np.sqrt(D)
nb = (N + B - 1) // B
for h in range(H):
    kk = k[:, h * k.shape[1] // H, :]
    pairs = 0; causal = N * (N + 1) // 2; lost_all = []
    for qb in range(nb):
        r0, r1 = qb * B, min(N, (qb + 1) * B)
        s = (q[r0:r1, h, :] @ kk[:r1].T) * scale
        rows = np.arange(r0, r1)[:, None]; cols = np.arange(r1)[None, :]
        s = np.where(cols <= rows, s, -np.inf)
        p = np.exp(s - s.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
        kb = (r1 + B - 1) // B
        pb = np.add.reduceat(p, np.arange(0, r1, B), axis=1)  # [rows, kb]
        order = np.argsort(-pb.sum(0), kind="stable")
        cum = np.cumsum(pb[:, order], axis=1)  # kept per row after taking the first t blocks
        lost = np.sqrt(((1 - cum) ** 2).mean(0))
        t = int(np.argmax(lost <= max_lost)) + 1 if (lost <= max_lost).any() else kb
        chosen = order[:t]
        # pairs: causal pairs inside the chosen blocks
        for b in chosen:
            c0, c1 = b * B, min(r1, (b + 1) * B)
            pairs += int(np.clip(np.arange(r0, r1)[:, None] - np.arange(c0, c1)[None, :] + 1, 0, 1).sum())
        lost_all.append(1 - cum[:, t - 1])
    l = np.concatenate(lost_all)
    print(f"head {h}: oracle query-aware {B}x{B} blocks at rms lost <= {max_lost}: density {pairs / causal:.3f}, row lost p95 {np.quantile(l, .95):.4f}")
