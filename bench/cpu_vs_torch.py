#!/usr/bin/env python3
"""CPU prefill attention: sampleattn's CPU backend against PyTorch's CPU SDPA, same inputs, one run.

For each length: structured Q/K/V from `sampleattn generate` (bf16, H query heads = H kv heads,
d=128, causal, one sequence), then the median time of `--repeat` calls (after one warm-up) of
  torch_bf16   torch.nn.functional.scaled_dot_product_attention on bf16 CPU tensors (PyTorch's
               CPU flash kernel; oneDNN brgemm, AMX on CPUs that have it)
  torch_f32    the same on f32 copies
  sa_f32       sampleattn dense, precision f32 (bf16 inputs widened)
  sa_auto      sampleattn dense, precision auto (the default: bf16 products on AMX tiles, or on
               vdpbf16ps where that is the CPU's fastest, else f32; `auto_ran` says which ran)
  sa_sample    sampleattn method=sample, defaults (precision auto)
GFLOP/s count the causal pairs (4 * d * pairs * heads). Errors are relative L2 against torch_f32's
output. The library is called through its Python package (python/) on torch tensors (DLPack, read
in place), with a CPU context of --threads workers; torch runs with torch.set_num_threads(--threads).

Usage (on a machine with torch; LD_LIBRARY_PATH must let the program and library load):
  python3 bench/cpu_vs_torch.py --lib build/src/libsampleattn.so --cli build/src/cli/sampleattn \
      --seqs 8192,16384 --heads 32 --threads 16 [--json out.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_bf16(path):
    a = np.load(path)
    if a.dtype != np.uint16:
        sys.exit(f"{path}: expected bf16 stored as <u2, got {a.dtype}")
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)


def median_seconds(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rel_l2(x, ref):
    x, ref = x.float(), ref.float()
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="libsampleattn.so")
    ap.add_argument("--cli", required=True, help="the sampleattn program (generates the inputs)")
    ap.add_argument("--seqs", default="8192,16384")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    os.environ["SAMPLEATTN_LIBRARY"] = args.lib
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import sampleattn

    torch.set_num_threads(args.threads)
    ctx = sampleattn.Context(backend="cpu", num_threads=args.threads)
    info = ctx.info()
    print(f"cpu: {info['cpu_model']}; tables: {info['cpu_tables']}; table in use: {info['isa']}; "
          f"threads: {args.threads}; torch {torch.__version__}", flush=True)
    H, d = args.heads, args.head_dim
    rows = []
    for n in [int(x) for x in args.seqs.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([args.cli, "generate", "--seq", str(n), "--heads", str(H), "--kv-heads", str(H),
                            "--head-dim", str(d), "--dtype", "bf16", "--out", tmp, "--quiet"], check=True)
            q, k, v = (load_bf16(os.path.join(tmp, f"{x}.npy")) for x in ("q", "k", "v"))  # [n, H, d]
        # torch wants [B, H, L, D]: views of the same memory.
        qt, kt, vt = (t.permute(1, 0, 2).unsqueeze(0) for t in (q, k, v))
        q32, k32, v32 = (t.float() for t in (qt, kt, vt))
        flops = 4.0 * d * H * (n * (n + 1) / 2)
        r = {"seq": n, "heads": H, "head_dim": d, "threads": args.threads}
        ref = F.scaled_dot_product_attention(q32, k32, v32, is_causal=True)[0].permute(1, 0, 2)
        r["torch_f32_s"] = median_seconds(lambda: F.scaled_dot_product_attention(q32, k32, v32, is_causal=True),
                                          args.repeat)
        out_bf16 = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)[0].permute(1, 0, 2)
        r["torch_bf16_s"] = median_seconds(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True),
                                           args.repeat)
        r["torch_bf16_err"] = rel_l2(out_bf16, ref)
        o = torch.empty(n, H, d, dtype=torch.float32)
        for name, kwargs in (("sa_f32", dict(method="dense", precision="f32")),
                             ("sa_auto", dict(method="dense")),
                             ("sa_sample", dict(method="sample"))):
            call = lambda: sampleattn.attention(q, k, v, out=o, context=ctx, **kwargs)  # noqa: E731
            r[name + "_s"] = median_seconds(call, args.repeat)
            call()
            r[name + "_err"] = rel_l2(o, ref)
        _, st = sampleattn.attention(q, k, v, out=o, context=ctx, method="dense", return_stats=True)
        r["auto_ran"] = st["isa"] + "/" + st["precision"]
        _, st = sampleattn.attention(q, k, v, out=o, context=ctx, method="sample", return_stats=True)
        r["sample_density"] = st["density"]
        r["sample_cra_min"] = st["cra_min"]
        r["sample_dense_heads"] = st["num_dense_heads"]
        for key in ("torch_f32", "torch_bf16", "sa_f32", "sa_auto"):
            r[key + "_gflops"] = flops / r[key + "_s"] / 1e9
        rows.append(r)
        print(json.dumps(r), flush=True)

    print()
    print(f"{'seq':>7} {'torch bf16':>11} {'torch f32':>10} {'sa f32':>8} {'sa auto':>8} {'auto ran':>12} "
          f"{'sa sample':>10} {'auto/tbf16':>11} {'smp/tbf16':>10} {'density':>8} {'err auto':>9} {'err smp':>8}")
    for r in rows:
        print(f"{r['seq']:>7} {r['torch_bf16_s']:>11.3f} {r['torch_f32_s']:>10.3f} {r['sa_f32_s']:>8.3f} "
              f"{r['sa_auto_s']:>8.3f} {r['auto_ran']:>12} {r['sa_sample_s']:>10.3f} "
              f"{r['torch_bf16_s'] / r['sa_auto_s']:>11.2f} {r['torch_bf16_s'] / r['sa_sample_s']:>10.2f} "
              f"{r['sample_density']:>8.3f} {r['sa_auto_err']:>9.4f} {r['sa_sample_err']:>8.4f}")
    print("seconds (median); auto/tbf16 and smp/tbf16: speed of our dense (precision auto) and sample over "
          "torch's bf16 SDPA (>1: ours faster); err: relative L2 against torch f32 (torch bf16's own: torch_bf16_err)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": info["cpu_model"], "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
