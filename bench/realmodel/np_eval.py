#!/usr/bin/env python3
"""eval.py without PyTorch: the small model (np_model.py, numpy float32) end to end on held-out
windows, once per attention method of the library, on a CPU-only machine.

  SAMPLEATTN_LIBRARY=build/src/libsampleattn.so.1 /usr/bin/python3 bench/realmodel/np_eval.py \\
      --weights /work/main/.model/weights --windows 2 --window 16384 --methods dense,sample,look4 \\
      --threads 2 --out /tmp/np_eval.json

The held-out corpus is built here, by corpus.py, from the Python files of the interpreter that
runs this script: the held-out rule is the one train.py used (a file's split depends on its path
key only, so no file trained on is held out here), but this machine's Python files are not the
GPU machine's (another Python version, other packages), so the held-out stream, its length and
the window offsets differ from eval.py's there: compare figures of this script with each other,
and eval.py's with eval.py's.

Methods (--methods, a comma list; each name maps to sampleattn.attention arguments):
  dense    method "dense".
  sample   method "sample", the library's defaults.
  look4    method "sample", look=4.0 (the look at every row, nats).
  look:X   method "sample", look=X.
Every layer of a method takes its input from that method's own previous layer (end to end). At
each layer a sample-based method also runs the library's dense attention on the same Q/K/V,
giving each query head's relative L2 error ||O_method - O_dense|| / ||O_dense|| (float64, over
the head's [T, head_dim] output), as eval.py does.

Per window and method: bits per byte over the window's T-1 next-byte predictions (positions
1..T-1), the perplexity change against dense, 100 (2^(bpb - bpb_dense) - 1) %, and per layer the
call's density and statistics and per head rel_l2, decision, density, dense_rows (rows the look
sent dense) and every other scalar per-head statistic the library returns.
"""
import argparse
import collections
import json
import math
import os
import sys
import time

import numpy as np

import corpus
from np_model import NpModel, bits_per_byte

MEDIAN_BAR = 0.01  # issue 11's bar for a layer's median head


def parse_methods(text):
    """'dense,sample,look4,look:2' -> [(name, sampleattn.attention keyword arguments)]."""
    out = []
    for name in (m.strip() for m in text.split(",")):
        if not name:
            continue
        if name == "dense":
            kw = dict(method="dense")
        elif name == "sample":
            kw = dict(method="sample")
        elif name == "look4":
            kw = dict(method="sample", look=4.0)
        elif name.startswith("look:"):
            try:
                kw = dict(method="sample", look=float(name[5:]))
            except ValueError:
                raise SystemExit(f"bad method {name!r}: look:X takes a number of nats")
        else:
            raise SystemExit(f"unknown method {name!r} (dense, sample, look4, look:X)")
        out.append((name, kw))
    if len({n for n, _ in out}) != len(out):
        raise SystemExit("a method is listed twice")
    return out


def json_scalars(d, skip=()):
    """The JSON-able scalar entries of a stats dict (arrays dropped; NaN/inf as None)."""
    out = {}
    for key, value in d.items():
        if key in skip:
            continue
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = float(value) if math.isfinite(float(value)) else None
        elif isinstance(value, str) or value is None:
            out[key] = value
    return out


def rel_l2(o, od, h):
    diff = o[:, h].astype(np.float64) - od[:, h].astype(np.float64)
    ref = np.linalg.norm(od[:, h].astype(np.float64))
    return float(np.linalg.norm(diff) / max(ref, 1e-30))


def run_method(model, tokens, kw, attention, ctx, precision):
    """One end-to-end forward: (bpb, per-layer records, seconds by part)."""
    sparse = kw["method"] != "dense"
    layers = []
    secs = collections.Counter()

    def attn(layer, q, k, v):
        t = time.time()
        if not sparse:
            o = attention(q, k, v, causal=True, precision=precision, context=ctx, **kw)
            secs["attention"] += time.time() - t
            layers.append(dict(layer=layer))
            return o
        o, st = attention(q, k, v, causal=True, precision=precision, context=ctx, return_stats=True, **kw)
        t1 = time.time()
        od = attention(q, k, v, causal=True, method="dense", precision=precision, context=ctx)
        t2 = time.time()
        secs["attention"] += t1 - t
        secs["dense_check"] += t2 - t1
        heads = []
        for hs in st["heads"]:
            h = hs["head"]
            heads.append(dict(head=h, rel_l2=rel_l2(o, od, h), decision=hs.get("decision"),
                              density=hs.get("density"), dense_rows=hs.get("dense_rows"),
                              stats=json_scalars(hs, skip=("stripes", "sequence", "head", "decision", "density",
                                                           "dense_rows"))))
        layers.append(dict(layer=layer, density=float(st["density"]), num_dense_rows=st.get("num_dense_rows"),
                           seconds=round(t1 - t, 3),
                           stats=json_scalars(st, skip=("heads", "stripes", "stripe_offsets")), heads=heads))
        return o

    t = time.time()
    logits = model.forward(tokens, attn)
    total = time.time() - t
    secs = {k: round(v, 2) for k, v in secs.items()}
    secs["total"] = round(total, 2)
    secs["model"] = round(total - sum(v for k, v in secs.items() if k != "total"), 2)
    return bits_per_byte(logits, tokens), layers, secs


def ppl_change(bpb, bpb_dense):
    return 100.0 * (2.0 ** (bpb - bpb_dense) - 1.0)


def summarize(results, names):
    """Per sample-based method: layer-windows over the bar, worst head, the perplexity change of
    largest size (worst_ppl_change_pct, either sign)."""
    out = {}
    for name in names:
        lw, worst, decisions, dense_rows, dens = [], None, collections.Counter(), 0, []
        for r in results:
            for L in r["methods"][name]["layers"]:
                errs = [hd["rel_l2"] for hd in L.get("heads", [])]
                if not errs:
                    continue
                lw.append(dict(window=r["index"], layer=L["layer"], median=float(np.median(errs)),
                               worst=float(np.max(errs)), density=L["density"]))
                dens.append(L["density"])
                for hd in L["heads"]:
                    decisions[str(hd["decision"])] += 1
                    dense_rows += int(hd["dense_rows"] or 0)
                    if worst is None or hd["rel_l2"] > worst["rel_l2"]:
                        worst = dict(rel_l2=hd["rel_l2"], window=r["index"], layer=L["layer"], head=hd["head"])
        if not lw:
            continue
        s = dict(layer_windows=len(lw), median_over_bar=sum(x["median"] > MEDIAN_BAR for x in lw),
                 over_bar=[x for x in lw if x["median"] > MEDIAN_BAR], worst_head=worst,
                 mean_density=float(np.mean(dens)), decisions=dict(decisions), dense_rows=dense_rows)
        changes = [(r["ppl_change_pct"][name], r["index"]) for r in results if name in r.get("ppl_change_pct", {})]
        if changes:
            c, wi = max(changes, key=lambda x: abs(x[0]))
            s["worst_ppl_change_pct"] = dict(value=c, window=wi)
            s["mean_ppl_change_pct"] = float(np.mean([x[0] for x in changes]))
        out[name] = s
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="folder with model.json and model-*.npz")
    ap.add_argument("--out", default="np_eval.json", help="the JSON written")
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--window", type=int, default=8192, help="window length in bytes")
    ap.add_argument("--methods", default="dense,sample,look4", help="comma list: dense, sample, look4, look:X")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="library CPU threads")
    ap.add_argument("--precision", default="f32", choices=("f32", "bf16", "auto"), help="library precision")
    ap.add_argument("--lib", default=None, help="path of libsampleattn.so.1 (else SAMPLEATTN_LIBRARY / loader)")
    args = ap.parse_args()
    methods = parse_methods(args.methods)
    names = [n for n, _ in methods]

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import sampleattn
    if args.lib:
        sampleattn.load_library(args.lib)
    ctx = sampleattn.Context(backend="cpu", num_threads=args.threads)
    info = ctx.info()
    defaults = sampleattn.sample_defaults()
    print(f"library {info.get('version')} at {info.get('library')}, isa {info.get('isa')}, "
          f"{info.get('num_threads')} threads; sample defaults {defaults}")
    print("methods: " + "; ".join(f"{n} = {kw}" for n, kw in methods))

    model = NpModel(args.weights)
    meta = model.meta
    t = time.time()
    held, held_desc = corpus.build_corpus("heldout", None)
    T = args.window
    starts = corpus.heldout_windows(held, args.windows, T)
    final = meta.get("final", {})
    print(f"model {meta['params'] / 1e6:.2f}M params; trained held-out bpb (GPU machine's corpus) "
          f"{ {k: round(v, 4) for k, v in final.items() if k.startswith('heldout')} }")
    print(f"held-out stream here: {held_desc['files']} files, {held.size} bytes (Python {held_desc['python']}, "
          f"built in {time.time() - t:.1f} s); {args.windows} windows of {T} at {starts}", flush=True)

    results = []
    for wi, start in enumerate(starts):
        tokens = held[start:start + T].copy()
        rec = dict(index=wi, start=int(start), length=T, bpb={}, ppl_change_pct={}, seconds={}, methods={})
        for name, kw in methods:
            bpb, layers, secs = run_method(model, tokens, kw, sampleattn.attention, ctx, args.precision)
            rec["bpb"][name], rec["seconds"][name] = bpb, secs
            rec["methods"][name] = dict(args=kw, layers=layers)
            line = f"window {wi} @ {start}: {name} bpb {bpb:.4f}"
            if "dense" in rec["bpb"] and name != "dense":
                rec["ppl_change_pct"][name] = ppl_change(bpb, rec["bpb"]["dense"])
                line += f" ({rec['ppl_change_pct'][name]:+.3f}% ppl)"
            print(f"{line}  seconds {secs}", flush=True)
        if "dense" in rec["bpb"]:  # dense ran after a sparse method listed before it
            for name in names:
                if name != "dense" and name not in rec["ppl_change_pct"]:
                    rec["ppl_change_pct"][name] = ppl_change(rec["bpb"][name], rec["bpb"]["dense"])
        results.append(rec)

    sparse = [n for n, kw in methods if kw["method"] != "dense"]
    summary = summarize(results, sparse)
    out = dict(
        meta=dict(weights=os.path.abspath(args.weights), model=dict(config=model.c, params=meta["params"],
                  final=final), args=vars(args), methods={n: kw for n, kw in methods}, library=info,
                  sample_defaults=defaults, heldout=held_desc, window_starts=starts,
                  note="numpy float32 model (np_model.py); held-out corpus built on this machine by corpus.py, "
                       "not the GPU machine's stream",
                  rel_l2="per query head: ||O_method - O_dense|| / ||O_dense||, dense run on the method's own "
                         "Q/K/V at that layer",
                  ppl="perplexity per byte = 2^bpb; ppl_change_pct = 100 (2^(bpb_method - bpb_dense) - 1)"),
        windows=results, summary=summary)
    if results:
        out["mean_bpb"] = {n: float(np.mean([r["bpb"][n] for r in results])) for n in names}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)

    # --- tables
    has_dense = "dense" in names
    print("\nper window: bits per byte" + ("; dppl% = 100 (2^(bpb - bpb_dense) - 1)" if has_dense else ""))
    hdr = f"{'win':>3} {'start':>9} " + " ".join(f"{n:>8}" for n in names)
    if has_dense:
        hdr += " " + " ".join(f"{'dppl% ' + n:>14}" for n in sparse)
    print(hdr + "  seconds (" + ", ".join(names) + ")")
    for r in results:
        row = f"{r['index']:>3} {r['start']:>9} " + " ".join(f"{r['bpb'][n]:8.4f}" for n in names)
        if has_dense:
            row += " " + " ".join(f"{r['ppl_change_pct'][n]:+14.3f}" for n in sparse)
        print(row + "  " + ", ".join(f"{r['seconds'][n]['total']:.0f}" for n in names))
    if results:
        print(f"{'mean':>13} " + " ".join(f"{out['mean_bpb'][n]:8.4f}" for n in names))

    if sparse:
        print("\nper (window, layer): relative L2 error of the layer's heads against dense on the same input, "
              "median head / worst head (its index), and the layer's density")
        print(f"{'win':>3} {'L':>2} " + " ".join(f"{n + ' med':>12} {'worst(h)':>11} {'dens':>5}" for n in sparse))
        for r in results:
            for layer in range(model.c["n_layers"]):
                row = f"{r['index']:>3} {layer:>2} "
                for n in sparse:
                    L = r["methods"][n]["layers"][layer]
                    errs = [hd["rel_l2"] for hd in L["heads"]]
                    h = int(np.argmax(errs))
                    flag = "*" if np.median(errs) > MEDIAN_BAR else " "
                    row += f"{np.median(errs):11.5f}{flag} {errs[h]:8.5f}({h}) {L['density']:5.3f} "
                print(row.rstrip())
        print(f"(* median head above {MEDIAN_BAR:.0%})")
        print()
        for n, s in summary.items():
            w = s["worst_head"]
            line = (f"summary {n}: {s['median_over_bar']}/{s['layer_windows']} layer-windows with median head > "
                    f"{MEDIAN_BAR:.0%}; worst head {w['rel_l2']:.5f} (window {w['window']}, layer {w['layer']}, "
                    f"head {w['head']})")
            if "worst_ppl_change_pct" in s:
                c = s["worst_ppl_change_pct"]
                line += f"; largest ppl change {c['value']:+.3f}% (window {c['window']})"
            line += (f"; mean density {s['mean_density']:.3f}; decisions {s['decisions']}; "
                     f"dense rows {s['dense_rows']}")
            print(line)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
