#!/usr/bin/env python3
"""Runs the trained byte-level model (train.py) on held-out windows with every layer's attention
computed three ways, and measures what SampleAttention does to it, per window and per head.

  PYTHONUNBUFFERED=1 python3 eval.py --weights weights --out eval.json
  python3 eval.py --weights weights --out eval16k.json --window 16384 --alpha 0.9
  python3 eval.py --weights weights --out e.json --windows 2 --dump-layer auto --dump-dir dump

Paths (--methods, default all three):
  sdpa    PyTorch scaled_dot_product_attention (the reference), on the model's device.
  dense   sampleattn, method "dense", every layer (end to end).
  sample  sampleattn, method "sample" with the library's defaults plus any sample parameters
          given here, every layer end to end (each layer's input is the sample path's own
          previous output). At each layer the library's dense attention is also run on the sample
          path's Q/K/V, giving the per-head relative L2 error of sample vs dense on the same inputs.
The non-attention parts run in float32 on --device; Q/K/V go to the library as float32 numpy
[tokens, heads, head_dim] on the CPU.

Copy (induction) score, per (layer, head), from the sdpa path's attention probabilities: a query
row i is a copy row when its most attended key j is the byte right after an earlier occurrence
of the K bytes ending at i (x[j-K..j-1] == x[i-K+1..i], j <= i; K = --copy-k, default 4). The
model would then predict x[j], the byte that followed that context before. Reported: copy_frac
(share of all rows), copy_far_frac (copy rows whose key lies outside the library's local window,
distance i - j >= w, w = max(ceil(r_w * T), min_window)), copy_possible_frac (rows whose context
occurred before at all: the ceiling of copy_frac), copy_median_dist, argmax_in_window_frac,
window_mass (mean softmax mass inside the local window), sink_mass (mass on the first 4 keys).
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import common

FLOAT_PARAMS = ("alpha", "r_row", "r_w", "max_density")
INT_PARAMS = ("min_window", "sample_block", "min_stripes", "max_stripes", "sink_tokens", "dense_below",
              "window_mass_counts")


def parse_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def scalar(value):
    """A JSON-able scalar from a stats value, or None for arrays/lists."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    return None


def scalars(d, skip=()):
    out = {}
    for key, value in d.items():
        if key in skip:
            continue
        s = scalar(value)
        if s is not None or value is None:
            out[key] = s
    return out


# ---------------------------------------------------------------------------------------------
# Copy (induction) measure
# ---------------------------------------------------------------------------------------------
def gram_keys(tokens, k):
    """g[t] = the k bytes ending at t as one int (t >= k-1), unique negatives before that."""
    x = tokens.astype(np.int64)
    T = x.size
    g = -np.arange(1, T + 1, dtype=np.int64)
    if T >= k:
        acc = np.zeros(T - k + 1, dtype=np.int64)
        for o in range(k):
            acc = acc * 256 + x[o:T - k + 1 + o]
        g[k - 1:] = acc
    return g


def copy_possible(g, w):
    """Per row i: whether the k-gram ending at i ended somewhere before (any distance), and whether
    it did early enough that the key after it lies outside the local window (j = end+1 <= i-w)."""
    first = {}
    T = g.size
    any_before = np.zeros(T, dtype=bool)
    far_before = np.zeros(T, dtype=bool)
    for i in range(T):
        key = int(g[i])
        if key < 0:
            continue
        e = first.get(key)
        if e is None:
            first[key] = i
        else:
            any_before[i] = True
            far_before[i] = e + 1 <= i - w
    return any_before, far_before


@torch.no_grad()
def copy_metrics(q, k, tokens, g, possible, w, rows_per_chunk=1024):
    """q [1, H, T, D], k [1, Hkv, T, D] (post-RoPE) -> one dict per query head."""
    H, T, D = q.shape[1], q.shape[2], q.shape[3]
    rep = H // k.shape[1]
    scale = 1.0 / math.sqrt(D)
    dev = q.device
    g_t = torch.from_numpy(g).to(dev)
    # the k-gram preceding key j: g[j-1]; key 0 has none
    g_prev = torch.cat([torch.full((1,), -(1 << 40), dtype=torch.int64, device=dev), g_t[:-1]])
    cols = torch.arange(T, device=dev)
    any_before, far_before = possible
    out = []
    for h in range(H):
        qh = q[0, h].float()
        kh = k[0, h // rep].float()
        amax = torch.empty(T, dtype=torch.int64, device=dev)
        wmass = torch.empty(T, dtype=torch.float64, device=dev)
        smass = torch.empty(T, dtype=torch.float64, device=dev)
        for r0 in range(0, T, rows_per_chunk):
            r1 = min(T, r0 + rows_per_chunk)
            rows = torch.arange(r0, r1, device=dev)[:, None]
            s = (qh[r0:r1] @ kh[:r1].T) * scale
            s = s.masked_fill(cols[None, :r1] > rows, float("-inf"))
            p = torch.softmax(s, dim=-1)
            amax[r0:r1] = p.argmax(dim=-1)
            band = cols[None, :r1] >= rows - w + 1
            wmass[r0:r1] = (p * band).sum(-1).double()
            smass[r0:r1] = p[:, :4].sum(-1).double()
        dist = torch.arange(T, device=dev) - amax
        is_copy = (g_prev[amax] == g_t) & (g_t >= 0) & (amax >= 1)
        far = is_copy & (dist >= w)
        cd = dist[is_copy].double()
        n_copy = int(is_copy.sum())
        out.append(dict(
            head=h,
            copy_frac=n_copy / T,
            copy_far_frac=int(far.sum()) / T,
            copy_possible_frac=float(any_before.mean()),
            copy_far_possible_frac=float(far_before.mean()),
            copy_of_possible=n_copy / max(1, int(any_before.sum())),
            copy_median_dist=float(cd.median()) if n_copy else None,
            argmax_in_window_frac=float((dist < w).double().mean()),
            window_mass=float(wmass.mean()),
            sink_mass=float(smass.mean()),
        ))
    return out


# ---------------------------------------------------------------------------------------------
def to_np(t):
    """[1, H, T, D] torch -> [T, H, D] float32 numpy (contiguous)."""
    return t[0].transpose(0, 1).float().contiguous().cpu().numpy()


def to_torch(a, like):
    """[T, H, D] numpy -> [1, H, T, D] on like's device and dtype."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(like.device).transpose(0, 1)[None].to(like.dtype)


def lib_attention(ctx, backend, precision, q, k, v, method, return_stats=False, **kw):
    """The library's causal attention of [1, H, T, D] torch Q/K/V -> [T, H, D] float32 numpy (and the
    statistics). CPU backend: float32 host copies at `precision`; CUDA backend: bf16 copies on the
    device (its tensor-core operands), a float32 output there."""
    import sampleattn
    if backend == "cuda":
        qb, kb, vb = (t[0].transpose(0, 1).to(torch.bfloat16).contiguous() for t in (q, k, v))
        out = torch.empty(qb.shape, dtype=torch.float32, device=qb.device)
        res = sampleattn.attention(qb, kb, vb, causal=True, method=method, out=out, context=ctx,
                                   return_stats=return_stats, **kw)
        torch.cuda.synchronize()
        o = out.cpu().numpy()
        return (o, res[1]) if return_stats else o
    return sampleattn.attention(to_np(q), to_np(k), to_np(v), causal=True, method=method, precision=precision,
                                return_stats=return_stats, context=ctx, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights", help="folder with model.json and model-*.npz")
    ap.add_argument("--out", default="eval.json", help="the JSON written")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--window", type=int, default=8192, help="window length in bytes")
    ap.add_argument("--methods", default="sdpa,dense,sample")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="library CPU threads")
    ap.add_argument("--precision", default="f32", choices=("f32", "bf16"), help="library precision (CPU backend)")
    ap.add_argument("--backend", default="cpu", choices=("cpu", "cuda"),
                    help="the library's backend: cpu (float32 host copies) or cuda (bf16 on the device)")
    ap.add_argument("--lib", default=None, help="path of libsampleattn.so.1 (else SAMPLEATTN_LIBRARY / loader)")
    for name in FLOAT_PARAMS:
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=None)
    for name in INT_PARAMS:
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=None)
    ap.add_argument("--scope", default=None, choices=(None, "per_head", "per_kv_group"))
    ap.add_argument("--sample-param", action="append", default=[], metavar="NAME=VALUE",
                    help="any other keyword argument of sampleattn.attention for the sample path")
    ap.add_argument("--copy-k", type=int, default=4, help="context length (bytes) of the copy measure")
    ap.add_argument("--no-copy", action="store_true", help="skip the copy-head measure")
    ap.add_argument("--dump-layer", default=None, help="layer index, or 'auto' = the layer with the highest "
                    "copy_far_frac head in the first window")
    ap.add_argument("--dump-dir", default="dump")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in ("sdpa", "dense", "sample"):
            raise SystemExit(f"unknown method {m}")

    import sampleattn
    if args.lib:
        sampleattn.load_library(args.lib)
    lib_methods = [m for m in methods if m != "sdpa"]
    if not lib_methods:
        ctx = None
    elif args.backend == "cuda":
        ctx = sampleattn.Context(backend="cuda")
    else:
        ctx = sampleattn.Context(backend="cpu", num_threads=args.threads)
    info = ctx.info() if ctx else {}
    defaults = sampleattn.sample_defaults()
    sample_kw = {n: getattr(args, n) for n in FLOAT_PARAMS + INT_PARAMS + ("scope",) if getattr(args, n) is not None}
    if "window_mass_counts" in sample_kw:
        sample_kw["window_mass_counts"] = bool(sample_kw["window_mass_counts"])
    for item in args.sample_param:
        name, _, value = item.partition("=")
        sample_kw[name.strip()] = parse_value(value.strip())
    effective = dict(defaults, **sample_kw)
    print(f"library {info.get('version')} at {info.get('library')}, isa {info.get('isa')}, "
          f"{info.get('num_threads')} threads" if ctx else "library not used")
    print(f"sample defaults {defaults}; given {sample_kw}")

    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, meta = common.load_model(args.weights, dev)
    c = model.c
    held, held_desc = common.build_corpus("heldout", None)
    starts = common.heldout_windows(held, args.windows, args.window)
    T = args.window
    w = max(int(math.ceil(float(effective["r_w"]) * T)), int(effective["min_window"]))
    print(f"model {meta['params'] / 1e6:.2f}M params, trained on {meta['training']['tokens_seen'] / 1e6:.1f}M tokens; "
          f"held-out stream {held.size} bytes; {args.windows} windows of {T} at {starts}; local window w={w}")

    keys_printed = [False]
    results, dump_info = [], None
    for wi, start in enumerate(starts):
        tokens = held[start:start + T].copy()
        x = torch.from_numpy(tokens.astype(np.int64)).to(dev)[None]
        y = x[0, 1:]
        rec = dict(index=wi, start=int(start), length=T, bpb={}, seconds={}, layers=[
            dict(layer=l, heads=[dict(head=h) for h in range(c["n_heads"])]) for l in range(c["n_layers"])])
        g = gram_keys(tokens, args.copy_k)
        possible = copy_possible(g, w)
        want_dump = args.dump_layer is not None and wi == 0
        kept = {}

        def bpb(logits):
            return F.cross_entropy(logits[0, :-1].float(), y).item() / math.log(2)

        # --- sdpa (reference) + copy measure + dump capture
        if "sdpa" in methods or not args.no_copy or want_dump:
            def attn_ref(layer, q, k, v):
                if not args.no_copy:
                    for h, m in enumerate(copy_metrics(q, k, tokens, g, possible, w)):
                        rec["layers"][layer]["heads"][h]["copy"] = m
                if want_dump:
                    kept[layer] = tuple(a[0].transpose(0, 1).to(torch.float16).cpu().numpy() for a in (q, k, v))
                return common.sdpa_attention(layer, q, k, v)
            t = time.time()
            with torch.no_grad():
                logits = model(x, attn=attn_ref)
            if "sdpa" in methods:
                rec["bpb"]["sdpa"] = bpb(logits)
            rec["seconds"]["sdpa_and_copy"] = round(time.time() - t, 2)

        # --- library dense, end to end
        if "dense" in methods:
            def attn_dense(layer, q, k, v):
                return to_torch(lib_attention(ctx, args.backend, args.precision, q, k, v, "dense"), q)
            t = time.time()
            with torch.no_grad():
                rec["bpb"]["dense"] = bpb(model(x, attn=attn_dense))
            rec["seconds"]["dense"] = round(time.time() - t, 2)

        # --- library sample, end to end; dense on the same inputs for the per-head error
        if "sample" in methods:
            def attn_sample(layer, q, k, v):
                o, stats = lib_attention(ctx, args.backend, args.precision, q, k, v, "sample", return_stats=True,
                                         **sample_kw)
                od = lib_attention(ctx, args.backend, args.precision, q, k, v, "dense")
                if not keys_printed[0]:
                    print(f"stats keys: {sorted(stats.keys())}")
                    print(f"per-head stats keys: {sorted(stats['heads'][0].keys())}")
                    keys_printed[0] = True
                L = rec["layers"][layer]
                L["stats"] = scalars(stats, skip=("heads", "stripes", "stripe_offsets"))
                for hs in stats["heads"]:
                    h = hs["head"]
                    diff = o[:, h].astype(np.float64) - od[:, h].astype(np.float64)
                    ref = np.linalg.norm(od[:, h].astype(np.float64))
                    head = L["heads"][h]
                    head["rel_l2"] = float(np.linalg.norm(diff) / max(ref, 1e-30))
                    head["stats"] = scalars(hs, skip=("stripes", "sequence", "head"))
                return to_torch(o, q)
            t = time.time()
            with torch.no_grad():
                rec["bpb"]["sample"] = bpb(model(x, attn=attn_sample))
            rec["seconds"]["sample_and_dense_check"] = round(time.time() - t, 2)
        if "sample" in rec["bpb"] and "dense" in rec["bpb"]:
            rec["ppl_change_sample_vs_dense_pct"] = 100.0 * (2 ** (rec["bpb"]["sample"] - rec["bpb"]["dense"]) - 1)
        results.append(rec)
        line = "  ".join(f"{k} {v:.4f}" for k, v in rec["bpb"].items())
        extra = (f"  sample vs dense ppl {rec['ppl_change_sample_vs_dense_pct']:+.3f}%"
                 if "ppl_change_sample_vs_dense_pct" in rec else "")
        print(f"window {wi} @ {start}: bpb {line}{extra}  ({rec['seconds']})")

        if want_dump:
            layer = args.dump_layer
            if layer == "auto":
                if args.no_copy:
                    raise SystemExit("--dump-layer auto needs the copy measure")
                layer = max(range(c["n_layers"]), key=lambda l: max(
                    hd["copy"]["copy_far_frac"] for hd in rec["layers"][l]["heads"]))
            layer = int(layer)
            os.makedirs(args.dump_dir, exist_ok=True)
            qd, kd, vd = kept[layer]
            for name, arr in (("q", qd), ("k", kd), ("v", vd)):
                np.save(os.path.join(args.dump_dir, f"{name}.npy"), arr)
            np.save(os.path.join(args.dump_dir, "tokens.npy"), tokens)
            dump_info = dict(layer=layer, window_index=0, window_start=int(start), length=T, dir=args.dump_dir,
                             files={"q.npy": list(qd.shape), "k.npy": list(kd.shape), "v.npy": list(vd.shape),
                                    "tokens.npy": [T]},
                             note="post-RoPE Q/K/V of the sdpa path, float16 [seq, heads, head_dim]; "
                                  "scale 1/sqrt(head_dim), causal; tokens.npy: the window's bytes (uint8)",
                             copy=[hd.get("copy") for hd in rec["layers"][layer]["heads"]])
            with open(os.path.join(args.dump_dir, "dump.json"), "w") as f:
                json.dump(dump_info, f, indent=1)
            print(f"dumped layer {layer} Q/K/V of window 0 to {args.dump_dir}")
            kept.clear()

    # --- per-head summary over windows
    summary = []
    for l in range(c["n_layers"]):
        for h in range(c["n_heads"]):
            heads = [r["layers"][l]["heads"][h] for r in results]
            s = dict(layer=l, head=h)
            copies = [hd["copy"] for hd in heads if "copy" in hd]
            for key in ("copy_frac", "copy_far_frac", "copy_of_possible", "copy_median_dist", "argmax_in_window_frac",
                        "window_mass", "sink_mass"):
                vals = [cp[key] for cp in copies if cp.get(key) is not None]
                s[key] = float(np.mean(vals)) if vals else None
            errs = [hd["rel_l2"] for hd in heads if "rel_l2" in hd]
            if errs:
                s["rel_l2_mean"], s["rel_l2_max"] = float(np.mean(errs)), float(np.max(errs))
                st = [hd["stats"] for hd in heads]
                for key in sorted({k for d in st for k in d}):
                    vals = [d[key] for d in st if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool)]
                    flags = [d[key] for d in st if isinstance(d.get(key), bool)]
                    if flags:
                        s[f"{key}_count"] = int(sum(flags))
                    elif vals:
                        s[f"{key}_mean"] = float(np.mean(vals))
                        if key.startswith(("cra", "val_cra")):
                            s[f"{key}_min"] = float(np.min(vals))
            summary.append(s)

    out = dict(
        meta=dict(weights=os.path.abspath(args.weights), model=dict(config=c, params=meta["params"],
                  tokens_seen=meta["training"]["tokens_seen"], final=meta.get("final")),
                  args=vars(args), methods=methods, library=info, sample_defaults=defaults, sample_params_given=sample_kw,
                  local_window=w, heldout=held_desc, window_starts=starts,
                  copy_measure=f"argmax key j of row i is the byte after an earlier occurrence of the {args.copy_k} "
                               f"bytes ending at i (x[j-{args.copy_k}..j-1] == x[i-{args.copy_k - 1}..i]); far: i-j >= w",
                  ppl="perplexity per byte = 2^bpb; ppl_change = 2^(bpb_sample - bpb_dense) - 1"),
        windows=results, heads=summary, dump=dump_info)
    if results:
        bp = {m: float(np.mean([r["bpb"][m] for r in results])) for m in results[0]["bpb"]}
        out["mean_bpb"] = bp
        if "sample" in bp and "dense" in bp:
            out["mean_ppl_change_sample_vs_dense_pct"] = float(np.mean(
                [r["ppl_change_sample_vs_dense_pct"] for r in results]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)

    # --- tables
    print("\nper window (bits per byte)")
    print(f"{'win':>3} {'start':>9} " + " ".join(f"{m:>8}" for m in methods) + ("  dppl% (sample vs dense)"
                                                                               if "ppl_change_sample_vs_dense_pct" in
                                                                               (results[0] if results else {}) else ""))
    for r in results:
        row = f"{r['index']:>3} {r['start']:>9} " + " ".join(f"{r['bpb'].get(m, float('nan')):8.4f}" for m in methods)
        if "ppl_change_sample_vs_dense_pct" in r:
            row += f"  {r['ppl_change_sample_vs_dense_pct']:+8.3f}"
        print(row)
    if "mean_bpb" in out:
        print("mean          " + " ".join(f"{out['mean_bpb'].get(m, float('nan')):8.4f}" for m in methods)
              + (f"  {out['mean_ppl_change_sample_vs_dense_pct']:+8.3f}" if "mean_ppl_change_sample_vs_dense_pct" in out
                 else ""))
    print(f"\nper head (means over windows; w={w}; copy = induction argmax, far = outside the local window)")
    extra = [k for k in (summary[0] if summary else {}) if k not in (
        "layer", "head", "copy_frac", "copy_far_frac", "copy_of_possible", "copy_median_dist", "argmax_in_window_frac",
        "window_mass", "sink_mass")]
    hdr = f"{'L':>2} {'h':>2} {'copy':>6} {'far':>6} {'/poss':>6} {'med_d':>7} {'in_w':>6} {'wmass':>6} {'sink':>6}"
    print(hdr + "".join(f" {k[:14]:>14}" for k in extra))

    def fmt(v, width, prec=3):
        if v is None:
            return f"{'-':>{width}}"
        return f"{v:{width}.{prec}f}" if isinstance(v, float) else f"{v:>{width}}"

    for s in summary:
        row = (f"{s['layer']:>2} {s['head']:>2} {fmt(s['copy_frac'], 6)} {fmt(s['copy_far_frac'], 6)} "
               f"{fmt(s['copy_of_possible'], 6)} {fmt(s['copy_median_dist'], 7, 0)} {fmt(s['argmax_in_window_frac'], 6)} "
               f"{fmt(s['window_mass'], 6)} {fmt(s['sink_mass'], 6)}")
        print(row + "".join(f" {fmt(s.get(k), 14, 4)}" for k in extra))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
