#!/usr/bin/env python3
"""One table of CPU against GPU prefill (attention part) from the JSON that `sampleattn bench`
(--backend cpu and --backend cuda) and bench/gpu_compare.py wrote.

usage: prefill_table.py CPU.jsonl CUDA.jsonl GPU_COMPARE.json
"""
import json
import sys


def lines(path):
    with open(path) as fh:
        return [json.loads(l) for l in fh if l.startswith("{")]


def main():
    cpu, cuda, torch_rows = lines(sys.argv[1]), lines(sys.argv[2]), json.load(open(sys.argv[3]))["rows"]
    seqs = sorted({r["seq"] for r in cpu + cuda} | {r["seq"] for r in torch_rows})
    def pick(rows, seq, method):
        for r in rows:
            if r["seq"] == seq and r.get("method") == method:
                return r
        return None
    print(f"{'N':>7} | {'CPU dense':>10} {'CPU sample':>11} | {'GPU dense':>10} {'GPU sample':>11} "
          f"{'torch flash':>12} {'cuDNN':>8} | {'density':>7} {'rel err':>8} {'min CRA':>7} {'needles':>7}")
    for n in seqs:
        cd, cs = pick(cpu, n, "dense"), pick(cpu, n, "sample")
        gd, gs = pick(cuda, n, "dense"), pick(cuda, n, "sample")
        t = next((r for r in torch_rows if r["seq"] == n), {})
        f = lambda r, k="time_s", scale=1e3, digits=1: f"{r[k] * scale:.{digits}f}" if r and k in r else "-"
        acc = gs or cs
        print(f"{n:>7} | {f(cd):>10} {f(cs):>11} | {f(gd):>10} {f(gs):>11} "
              f"{t.get('torch_flash_ms', float('nan')):>12.1f} {t.get('torch_cudnn_ms', float('nan')):>8.1f} | "
              f"{f(acc, 'density', 1, 3):>7} {f(acc, 'rel_l2_err_median', 1, 4):>8} {f(acc, 'min_cra', 1, 3):>7} "
              f"{f(acc, 'needle_recall', 1, 2):>7}")
    print("times in ms (median of the runs; CPU: one run); rel err: median over heads of the sample output "
          "against dense; density, min CRA, needles from the GPU run when present")


if __name__ == "__main__":
    main()
