#!/usr/bin/env python3
"""Communication and time model of context-parallel prefill attention per rank and layer
(docs/SCALING.md): the dense ring and SampleAttention across ranks, as libsampleattn_mpi runs them.

  python3 bench/mpi/cp_model.py                      # the 1M-token tables of docs/SCALING.md
  python3 bench/mpi/cp_model.py --seq 65536 --ranks 1,2,4 --kv-heads 8 --dtype-bytes 2 \
      --check-bytes 50331648                         # against a measured bytes_sent
  python3 bench/mpi/cp_model.py --seq 65536 --ranks 4 --splits zigzag --dense-groups 3 \
      --stripe-union 0.057 --check-received A,B,C,D  # against sampleattn_cp_bench --method sample

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


def balanced_cut(seq, ranks, r, a, b=0.0):
    """sampleattn_cp_bench --split balanced: where rank r's run begins (the token at i costs
    a * seq + i for its row and b * (seq - i) for its key)."""
    if r <= 0:
        return 0
    if r >= ranks:
        return seq
    c, lin = 0.5 * (1 - b), a + b
    share = r / ranks * (lin + c)
    x = share / lin if abs(c) < 1e-12 else (-lin + math.sqrt(lin * lin + 4 * c * share)) / (2 * c)
    return min(seq, max(0, round(x * seq)))


def split_runs(seq, ranks, split, balance=0.0, balance_keys=0.0):
    """Every rank's runs [a, b) of one sequence (sampleattn_mpi_shard: CONTIGUOUS even, ZIGZAG, or
    the explicit runs of sampleattn_cp_bench --split balanced)."""
    if split == "balanced":
        c = [balanced_cut(seq, ranks, r, balance, balance_keys) for r in range(ranks + 1)]
        return [[(c[r], c[r + 1])] for r in range(ranks)]
    if split == "zigzag":
        c = [i * seq // (2 * ranks) for i in range(2 * ranks + 1)]
        return [[(c[r], c[r + 1]), (c[2 * ranks - 1 - r], c[2 * ranks - r])] for r in range(ranks)]
    c = [i * seq // ranks for i in range(ranks + 1)]
    return [[(c[r], c[r + 1])] for r in range(ranks)]


def stage1_keys(seq, runs):
    """Each rank's stage-1 keys (core/shard_map.h stage1_keys): the sequence in 2P chunks, chunks
    c and 2P - 1 - c paired, pair k to the k-th rank in the order of where its runs begin."""
    p = len(runs)
    pairs = split_runs(seq, p, "zigzag")  # pair k: the zigzag split's runs of rank k
    order = sorted(range(p), key=lambda r: (min((a for a, b in runs[r] if b > a), default=seq), r))
    keys = [None] * p
    for k, r in enumerate(order):
        keys[r] = pairs[k]
    return keys


def sampled_positions(seq, r_row, block, r_val, val_rows):
    """The sampled rows (strided blocks, the last always in: core/mask.h) and the validation rows
    (evenly spread over the others: min(ceil(r_val * seq), val_rows) of them)."""
    nb = -(-seq // block)
    ns = min(nb, max(1, math.ceil(r_row * nb)))
    rows = []
    for t in range(ns):
        b = nb - 1 - t * nb // ns
        rows.extend(range(b * block, min(seq, (b + 1) * block)))
    rows.sort()
    n_val = min(math.ceil(r_val * seq), val_rows, seq - len(rows))
    unsampled = seq - len(rows)
    val = [(2 * k + 1) * unsampled // (2 * n_val) for k in range(n_val)] if n_val > 0 else []
    # Unsampled rank -> row (the sampled rows are whole blocks, few: a walk is enough).
    out, below = [], 0
    for rank in val:
        row = rank + below
        while below < len(rows) and rows[below] <= row:
            below += 1
            row += 1
        out.append(row)
    return rows, out


def sample_volume(seq, ranks, hq, hkv, d, dv, eb, r_row, r_w, stripe_union, dense_groups, split,
                  block=64, r_val=0.02, val_rows=384, grid=128, balance=0.0, balance_keys=0.0):
    """Bytes each rank receives in SampleAttention across ranks as built (src/cpu/sampling.cpp
    build_sharded_plan, src/cpu/sharded_attention.cpp), counted as sampleattn_mpi_stats counts them:
    - sampled_q: the sampled and validation query rows (all heads) each rank gets from their
      holders: a row goes to every rank whose stage-1 keys (stage1_keys) begin at or before it;
    - stage1_k: the K rows (not V) of its stage-1 keys that other ranks hold;
    - reductions: the row max (f32) and sum (f64) of those rows, the validation masses per bucket
      (grid + 2 a row and head) and the in-sample kept mass (f64), each vector once, and stage 2's
      searches (at most grid + 4 searches a head, 16 rounds of 15 int64 and one more; an upper
      bound: only the grid points below a head's cost cap are searched);
    - kv: the K/V rows of other ranks its masks read, per kv group: a group with a dense head reads
      every earlier key; the others the window band before each run and the stripes (the union of
      the group's heads' stripes, a share `stripe_union` of the keys, spread evenly) before it;
    - stripe_lists: the other ranks' decided stripes (int32) gathered.
    Returns one dict per rank."""
    runs = split_runs(seq, ranks, split, balance, balance_keys)
    scored = stage1_keys(seq, runs)
    sampled, val = sampled_positions(seq, r_row, block, r_val, val_rows)
    q_row = hq * d * eb
    kv_key = (d + dv) * eb
    w = max(1, math.ceil(r_w * seq))
    sparse_groups = hkv - dense_groups
    out = []
    for r in range(ranks):
        mine = runs[r]
        first = min((a for a, b in scored[r] if b > a), default=seq)
        def held(p):
            return any(a <= p < b for a, b in mine)
        q = sum(1 for p in sampled + val if p >= first and not held(p)) * q_row if ranks > 1 else 0
        k1 = sum(b - a for a, b in scored[r]) - sum(max(0, min(b, hi) - max(a, lo)) for lo, hi in scored[r] for a, b in mine)
        k1 = k1 * hkv * d * eb if ranks > 1 else 0
        red = ((len(sampled) + len(val)) * hq * (4 + 8) + len(val) * hq * (grid + 2) * 8 + len(sampled) * hq * 8
               + hq * (grid + 4) * (16 * 15 + 1) * 8 if ranks > 1 else 0)
        # Keys this rank reads and does not hold: dense groups every key before its last run's end;
        # sparse groups the band [a - w + 1, a) of each run, then the stripes below the highest band
        # (a share stripe_union of the keys there that are neither its own nor in a band).
        live = [(a, b) for a, b in mine if b > a]
        end = max((b for a, b in live), default=0)
        def count(intervals, lo, hi):  # positions of [lo, hi) inside the union of intervals
            pts = sorted((max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo))
            total, at = 0, lo
            for a, b in pts:
                a = max(a, at)
                if b > a:
                    total += b - a
                    at = b
            return total
        dense_keys = end - count(live, 0, end)
        bands = [(max(0, a - w + 1), a) for a, b in live]
        inside = [(max(lo, a), min(hi, b)) for lo, hi in bands for a, b in live if min(hi, b) > max(lo, a)]
        band = count(bands, 0, seq) - count(inside, 0, seq)
        top = max((lo for lo, hi in bands), default=0)
        stripe_keys = stripe_union * (top - count(live + bands, 0, top))
        kv = (dense_groups * dense_keys + sparse_groups * (band + stripe_keys)) * kv_key if ranks > 1 else 0
        lists = stripe_union * seq * hq * 4 * (ranks - 1) / ranks if ranks > 1 else 0
        out.append({"sampled_q": q, "reductions": red, "kv": kv, "stage1_k": k1, "stripe_lists": lists,
                    "total": q + red + kv + k1 + lists})
    return out


def check_json(a):
    """Each run of a sampleattn_cp_bench --json output against the model, rank by rank and part by part."""
    import json
    import sys
    lines = (sys.stdin if a.check_json == "-" else open(a.check_json)).read().splitlines()
    for line in lines:
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if j.get("method") != "sample" or j["ranks"] < 2:
            continue
        v = sample_volume(j["seq"], j["ranks"], j["heads"], j["kv_heads"], j["dim"], j["dim"],
                          4 if j["dtype"] == "f32" else 2, a.r_row, a.r_w, j["stripe_union"], j["dense_kv_groups"],
                          j["split"], balance=j.get("balance", 0.0), balance_keys=j.get("balance_keys", 0.0))
        print(f"{j['ranks']} ranks, {j['split']}, seq {j['seq']}, dense kv groups {j['dense_kv_groups']}, "
              f"stripe union {j['stripe_union']:.4f}: bytes received, model / measured (MB)")
        print("| rank | query rows | K/V rows | other | total |")
        print("| --- | --- | --- | --- | --- |")
        for m, p in zip(v, j["per_rank"]):
            other = p["bytes_received"] - p["received_query_rows"] - p["received_kv_rows"]
            cells = [(m["sampled_q"], p["received_query_rows"]), (m["kv"] + m["stage1_k"], p["received_kv_rows"]),
                     (m["reductions"] + m["stripe_lists"], other), (m["total"], p["bytes_received"])]
            print(f"| {p['rank']} | " + " | ".join(f"{x / 1e6:.1f} / {y / 1e6:.1f}" for x, y in cells) + " |")


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
    ap.add_argument("--stripe-union", default="0.02,0.05,0.10",
                    help="share of the keys that are a stripe of some head of a kv group (sampleattn_cp_bench's stripe_union)")
    ap.add_argument("--dense-groups", default="0,1,3", help="kv groups with a dense head (sampleattn_cp_bench's dense_kv_groups)")
    ap.add_argument("--splits", default="contiguous,zigzag")
    ap.add_argument("--balance", type=float, default=0.0,
                    help="split balanced: a row's cost beside its causal keys, in units of seq (sampleattn_cp_bench --balance)")
    ap.add_argument("--balance-keys", type=float, default=0.0,
                    help="split balanced: a key's cost per later token (sampleattn_cp_bench --balance-keys)")
    ap.add_argument("--check-bytes", type=float, default=None, help="a measured bytes_sent of one rank (dense ring)")
    ap.add_argument("--check-received", default=None,
                    help="measured bytes_received of every rank (sample), comma-separated, to set beside the model's")
    ap.add_argument("--check-json", default=None,
                    help="a sampleattn_cp_bench --method sample --json output (file, one line per run; '-' stdin): "
                         "each rank's received bytes by part beside the model's for the run's shape and mask")
    a = ap.parse_args()
    if a.check_json is not None:
        check_json(a)
        return
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
    print(f"\nSampleAttention across ranks (built): bytes received per rank and layer, r_row {a.r_row}, "
          f"r_w {a.r_w}; the largest over the ranks, and its share of the dense ring's (received = sent there)")
    print("| ranks | split | dense kv groups | stripe union | sampled Q (GiB) | K/V (GiB) | stage-1 K (GiB) | "
          "other (GiB) | largest total (GiB) | / dense ring |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in [int(x) for x in a.ranks.split(",")]:
        ring, _, _ = dense_ring(a.seq, p, a.heads, a.kv_heads, d, dv, eb)
        for split in a.splits.split(","):
            for g in [int(x) for x in a.dense_groups.split(",")]:
                for f in [float(x) for x in a.stripe_union.split(",")]:
                    v = sample_volume(a.seq, p, a.heads, a.kv_heads, d, dv, eb, a.r_row, a.r_w, f, g, split,
                                      balance=a.balance, balance_keys=a.balance_keys)
                    top = max(v, key=lambda x: x["total"])
                    print(f"| {p} | {split} | {g} of {a.kv_heads} | {f:.2f} | {gib(top['sampled_q']):.3f} | "
                          f"{gib(top['kv']):.3f} | {gib(top['stage1_k']):.3f} | "
                          f"{gib(top['reductions'] + top['stripe_lists']):.3f} | "
                          f"{gib(top['total']):.3f} | {top['total'] / ring:.2f} |")
                    if a.check_received is not None and len(a.check_received.split(",")) == p:
                        got = [float(x) for x in a.check_received.split(",")]
                        print("  per rank, model vs measured bytes received: " + ", ".join(
                            f"{m['total'] / 1e6:.1f} MB vs {x / 1e6:.1f} MB ({x / m['total']:.3f})" for m, x in zip(v, got)))

if __name__ == "__main__":
    main()
