#!/usr/bin/env python3
"""Communication and time model of context-parallel prefill attention per rank and layer
(docs/SCALING.md): the dense ring that libsampleattn_mpi runs, and SampleAttention distributed as
docs/SCALING.md designs it (not built yet).

  python3 bench/mpi/cp_model.py                      # the 1M-token tables of docs/SCALING.md
  python3 bench/mpi/cp_model.py --seq 65536 --ranks 1,2,4 --kv-heads 8 --dtype-bytes 2 \
      --check-bytes 50331648                         # against a measured bytes_sent

Everything is per layer and per rank; bytes are payload (what sampleattn_mpi_stats.bytes_sent
counts). Compute rates are inputs, not claims: pass the dense rate your ranks reach
(sampleattn_cp_bench's gflops over the ranks) with --rank-tflops.
"""
import argparse
import math


def dense_ring(seq, ranks, hq, hkv, d, dv, eb):
    """Bytes one rank sends (= receives) in the ring, and the causal FLOPs it computes (zigzag:
    every rank the same share)."""
    kv_token = hkv * (d + dv) * eb
    block = seq / ranks * kv_token
    sent = (ranks - 1) * block
    flops = 2 * (d + dv) * hq * seq * (seq + 1) / 2 / ranks
    return sent, block, flops


def sample_volume(seq, ranks, hq, hkv, d, dv, eb, r_row, r_w, stripe_keys, val_rows, runs):
    """Bytes one rank receives in distributed SampleAttention (docs/SCALING.md, "SampleAttention"):
    the sampled and validation query rows of the other ranks (all-gather), the row statistics
    (all-reduce of max and sum: twice the data in a ring all-reduce), the window band's K/V that
    other ranks hold (w keys before each of this rank's `runs` runs), the stripe K/V (a fraction
    `stripe_keys` of the keys, the union of a kv head's selections, held elsewhere and before the
    band). The threshold search and the validation masses are a few KiB."""
    q_token = hq * d * eb
    kv_token = hkv * (d + dv) * eb
    sampled = r_row * seq
    rows = (sampled + val_rows) * (ranks - 1) / ranks * q_token
    stats = 2 * 2 * 4 * (sampled + val_rows) * hq * (ranks - 1) / ranks
    window = math.ceil(r_w * seq)
    band = runs * min(window, seq) * kv_token if ranks > 1 else 0
    stripes = stripe_keys * seq * (ranks - 1) / ranks * kv_token
    return {"sampled_q": rows, "row_stats": stats, "window_band": band, "stripes": stripes,
            "total": rows + stats + band + stripes}


def gib(x):
    return x / 2**30


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=1 << 20)
    ap.add_argument("--ranks", default="8,16,32,64")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dtype-bytes", type=int, default=2)
    ap.add_argument("--link-gbs", type=float, default=25.0, help="per-rank link, GB/s (200 Gb/s InfiniBand: 25)")
    ap.add_argument("--rank-tflops", type=float, default=7.5,
                    help="dense attention rate of one rank (16-core AMX Xeon bf16, docs/PERF.md: ~7.5)")
    ap.add_argument("--r-row", type=float, default=0.05)
    ap.add_argument("--r-w", type=float, default=0.08)
    ap.add_argument("--stripe-keys", default="0.02,0.05,0.10")
    ap.add_argument("--val-rows", type=int, default=384)
    ap.add_argument("--check-bytes", type=float, default=None, help="a measured bytes_sent of one rank to compare")
    a = ap.parse_args()
    d = dv = a.dim
    eb = a.dtype_bytes
    print(f"seq {a.seq}, {a.heads} q heads / {a.kv_heads} kv heads, d {d}, {eb}-byte K/V; "
          f"link {a.link_gbs} GB/s, dense {a.rank_tflops} TFLOP/s per rank")
    print("\nDense ring (built): per rank and layer")
    print("| ranks | block (MiB) | sent (GiB) | compute (s) | one block's transfer (s) | compute per step (s) | transfer hidden |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for p in [int(x) for x in a.ranks.split(",")]:
        sent, block, flops = dense_ring(a.seq, p, a.heads, a.kv_heads, d, dv, eb)
        t_compute = flops / (a.rank_tflops * 1e12)
        t_block = block / (a.link_gbs * 1e9)
        step = t_compute / p
        print(f"| {p} | {block / 2**20:.1f} | {gib(sent):.2f} | {t_compute:.2f} | {t_block:.4f} | {step:.3f} | "
              f"{'yes' if t_block < step else 'no'} ({step / t_block:.0f}x) |")
        if a.check_bytes is not None:
            print(f"  model {sent:.0f} bytes vs measured {a.check_bytes:.0f}: ratio {a.check_bytes / sent:.4f}")
    print("\nSampleAttention distributed (designed, not built): bytes received per rank and layer, "
          f"r_row {a.r_row}, r_w {a.r_w}, zigzag (2 runs a rank)")
    print("| ranks | stripe keys | sampled Q (GiB) | row stats (GiB) | window band (GiB) | stripes (GiB) | total (GiB) | / dense ring |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in [int(x) for x in a.ranks.split(",")]:
        sent, _, _ = dense_ring(a.seq, p, a.heads, a.kv_heads, d, dv, eb)
        for f in [float(x) for x in a.stripe_keys.split(",")]:
            v = sample_volume(a.seq, p, a.heads, a.kv_heads, d, dv, eb, a.r_row, a.r_w, f, a.val_rows, 2)
            print(f"| {p} | {f:.2f} | {gib(v['sampled_q']):.3f} | {gib(v['row_stats']):.3f} | {gib(v['window_band']):.3f} | "
                  f"{gib(v['stripes']):.3f} | {gib(v['total']):.3f} | {v['total'] / sent:.2f} |")


if __name__ == "__main__":
    main()
