#!/usr/bin/env python3
"""The accuracy tables of docs/ACCURACY.md from eval.py outputs (one column per file):

  python3 summarize.py e_default.json e_max_lost_007.json [--labels default,0.007]

Per window: the perplexity change of sample against dense (%) and the mean density over its 32
layer-heads. Per (window, layer) over its heads: the median and the worst relative L2 error of
the layer's attention output against dense on the same inputs; how many (window, layer) pairs have
a median head above 1% and a worst head above 5% (issue 11's bars); the decisions; the least
validated 5th percentile of a head that ran sparse. Needs only the standard library and numpy.
"""
import argparse
import collections
import json

import numpy as np


def load(path):
    with open(path) as f:
        return json.load(f)


def head_rows(e):
    """(window, layer, head, rel_l2, stats) for every head of every layer of every window."""
    for w in e["windows"]:
        for layer in w["layers"]:
            for hd in layer["heads"]:
                if "rel_l2" in hd:
                    yield w["index"], layer["layer"], hd["head"], hd["rel_l2"], hd.get("stats", {})


def summary(e):
    per_lw = collections.defaultdict(list)
    decisions = collections.Counter()
    least_p5, density = None, collections.defaultdict(list)
    for wi, l, h, err, st in head_rows(e):
        per_lw[(wi, l)].append(err)
        decisions[str(st.get("decision"))] += 1
        if "density" in st:
            density[wi].append(st["density"])
        if not st.get("dense") and st.get("val_cra_p5") is not None and st["val_cra_p5"] >= 0:
            least_p5 = st["val_cra_p5"] if least_p5 is None else min(least_p5, st["val_cra_p5"])
    med = {k: float(np.median(v)) for k, v in per_lw.items()}
    worst = {k: float(np.max(v)) for k, v in per_lw.items()}
    ppl = {w["index"]: w.get("ppl_change_sample_vs_dense_pct") for w in e["windows"]}
    return dict(ppl=ppl, density={k: float(np.mean(v)) for k, v in density.items()}, med=med, worst=worst,
                decisions=decisions, least_p5=least_p5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--labels", default=None, help="comma-separated column names (default: the file names)")
    args = ap.parse_args()
    labels = args.labels.split(",") if args.labels else args.files
    sums = [summary(load(f)) for f in args.files]

    print("| window | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for wi in sorted(sums[0]["ppl"]):
        cells = []
        for s in sums:
            v, d = s["ppl"].get(wi), s["density"].get(wi)
            cells.append(("-" if v is None else f"{v:+.3f}%") + ("" if d is None else f" (density {d:.3f})"))
        print(f"| {wi} | " + " | ".join(cells) + " |")
    worst_ppl = [max(abs(v) for v in s["ppl"].values() if v is not None) for s in sums]
    print("| max abs change | " + " | ".join(f"{v:.3f}%" for v in worst_ppl) + " |")
    mean_d = [float(np.mean(list(s["density"].values()))) if s["density"] else float("nan") for s in sums]
    print("| mean density | " + " | ".join(f"{v:.3f}" for v in mean_d) + " |")
    print()
    print("| per (window, layer) | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))

    def row(name, fn):
        print(f"| {name} | " + " | ".join(fn(s) for s in sums) + " |")

    row("median head: median / max", lambda s: f"{np.median(list(s['med'].values())):.4f} / {max(s['med'].values()):.4f}")
    row("worst head: median / max", lambda s: f"{np.median(list(s['worst'].values())):.4f} / {max(s['worst'].values()):.4f}")
    row("median head above 1%", lambda s: f"{sum(v > 0.01 for v in s['med'].values())} of {len(s['med'])}" + (
        " (" + ", ".join(f"w{w}L{l} {v * 100:.2f}%" for (w, l), v in sorted(s['med'].items()) if v > 0.01) + ")"
        if any(v > 0.01 for v in s['med'].values()) else ""))
    row("worst head above 5%", lambda s: f"{sum(v > 0.05 for v in s['worst'].values())} of {len(s['worst'])}")
    row("decisions", lambda s: ", ".join(f"{k} {v}" for k, v in sorted(s["decisions"].items())))
    row("least validated p5 of a sparse head", lambda s: "-" if s["least_p5"] is None else f"{s['least_p5']:.3f}")
    # Per layer over windows: the largest median head (the layers that fail show here).
    print()
    layers = sorted({l for (_, l) in sums[0]["med"]})
    print("| layer: max over windows of the median head | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for l in layers:
        print(f"| {l} | " + " | ".join(f"{max(v for (w, ll), v in s['med'].items() if ll == l):.4f}" for s in sums) + " |")


if __name__ == "__main__":
    main()
