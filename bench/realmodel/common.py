"""Shared by train.py and eval.py: the byte-level Llama-style model, the corpus (the Python
sources installed on the machine), and the weight files.

Model: vocab 256 (bytes), pre-norm decoder, RMSNorm, RoPE (rotate-half convention), grouped-query
attention (n_heads query heads share n_kv_heads key/value heads), SwiGLU MLP, no biases, untied
input embedding and output head.

Corpus: every *.py file under the installed Python's stdlib and site-packages directories
(sysconfig + site), walked in sorted order; a file is held out when the first 8 hex digits of
sha1(its path relative to its root) mod 100 are below HELDOUT_PERCENT, so held-out windows are
text of files never trained on. Files are concatenated in sorted order, each followed by one
NUL byte.
"""
import glob
import hashlib
import json
import math
import os
import site
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HELDOUT_PERCENT = 3
MAX_FILE_BYTES = 1 << 20  # skip generated giants (tables, vendored bundles) above 1 MiB
SEPARATOR = b"\x00"


# ---------------------------------------------------------------------------------------------
# Config and model
# ---------------------------------------------------------------------------------------------
DEFAULT_CONFIG = dict(vocab=256, d_model=512, n_layers=8, n_heads=4, n_kv_heads=1, head_dim=128,
                      ffn_hidden=1408, rope_theta=500000.0, norm_eps=1e-5)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def rope_tables(seq, head_dim, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim))
    t = torch.arange(seq, device=device, dtype=torch.float64)
    freqs = torch.outer(t, inv)  # [seq, head_dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().float(), emb.sin().float()


def apply_rope(x, cos, sin):
    # x: [B, H, T, D]; rotate-half (the Hugging Face Llama convention)
    d2 = x.shape[-1] // 2
    x1, x2 = x[..., :d2], x[..., d2:]
    rot = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rot.float() * sin).to(x.dtype)


def sdpa_attention(layer, q, k, v):
    """The reference: PyTorch SDPA, causal, the kv head(s) repeated over the query heads."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["d_model"], c["head_dim"]
        self.c = c
        self.attn_norm = RMSNorm(d, c["norm_eps"])
        self.wq = nn.Linear(d, c["n_heads"] * hd, bias=False)
        self.wk = nn.Linear(d, c["n_kv_heads"] * hd, bias=False)
        self.wv = nn.Linear(d, c["n_kv_heads"] * hd, bias=False)
        self.wo = nn.Linear(c["n_heads"] * hd, d, bias=False)
        self.ffn_norm = RMSNorm(d, c["norm_eps"])
        self.w1 = nn.Linear(d, c["ffn_hidden"], bias=False)
        self.w3 = nn.Linear(d, c["ffn_hidden"], bias=False)
        self.w2 = nn.Linear(c["ffn_hidden"], d, bias=False)

    def forward(self, x, cos, sin, attn, layer):
        B, T, _ = x.shape
        c = self.c
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, c["n_heads"], c["head_dim"]).transpose(1, 2)
        k = self.wk(h).view(B, T, c["n_kv_heads"], c["head_dim"]).transpose(1, 2)
        v = self.wv(h).view(B, T, c["n_kv_heads"], c["head_dim"]).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = attn(layer, q, k, v)  # [B, H, T, D]
        x = x + self.wo(o.transpose(1, 2).reshape(B, T, -1).to(x.dtype))
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Model(nn.Module):
    def __init__(self, config=None):
        super().__init__()
        c = dict(DEFAULT_CONFIG, **(config or {}))
        self.c = c
        self.tok_emb = nn.Embedding(c["vocab"], c["d_model"])
        self.layers = nn.ModuleList([Block(c) for _ in range(c["n_layers"])])
        self.norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.out = nn.Linear(c["d_model"], c["vocab"], bias=False)
        self._rope = {}
        self.reset_parameters()

    def reset_parameters(self):
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # scaled init for the residual-branch outputs (GPT-2 style)
                s = std / math.sqrt(2 * self.c["n_layers"]) if name.endswith(("wo.weight", "w2.weight")) else std
                nn.init.normal_(p, mean=0.0, std=s)

    def rope(self, T, device):
        key = (T, str(device))
        if key not in self._rope:
            self._rope[key] = rope_tables(T, self.c["head_dim"], self.c["rope_theta"], device)
        return self._rope[key]

    def forward(self, idx, attn=sdpa_attention):
        cos, sin = self.rope(idx.shape[1], idx.device)
        x = self.tok_emb(idx)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, attn, i)
        return self.out(self.norm(x))


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Weights: float16 .npz files, two layers per file (the first also holds embedding, norm, head)
# ---------------------------------------------------------------------------------------------
LAYERS_PER_FILE = 2


def save_weights(model, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().float().cpu().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    n_files = math.ceil(model.c["n_layers"] / LAYERS_PER_FILE)
    groups = [dict() for _ in range(n_files)]
    for name, arr in state.items():
        g = int(name.split(".")[1]) // LAYERS_PER_FILE if name.startswith("layers.") else 0
        groups[g][name] = arr
    paths = []
    for g, arrays in enumerate(groups):
        path = os.path.join(out_dir, f"model-{g:02d}.npz")
        np.savez(path, **arrays)
        paths.append(path)
    return paths


def load_model(weights_dir, device):
    with open(os.path.join(weights_dir, "model.json")) as f:
        meta = json.load(f)
    model = Model(meta["config"])
    state = {}
    for path in sorted(glob.glob(os.path.join(weights_dir, "model-*.npz"))):
        with np.load(path) as z:
            for name in z.files:
                state[name] = torch.from_numpy(z[name].astype(np.float32))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------
def source_roots():
    """(label, directory) of the installed Python's stdlib and site-packages, deduplicated."""
    paths = sysconfig.get_paths()
    found = [("stdlib", paths.get("stdlib")), ("stdlib", paths.get("platstdlib")),
             ("site", paths.get("purelib")), ("site", paths.get("platlib"))]
    try:
        found += [("site", p) for p in site.getsitepackages()]
    except AttributeError:
        pass
    out, seen = [], set()
    for label, p in found:
        if not p or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if real in seen:
            continue
        seen.add(real)
        out.append((label, real))
    return out


def list_files():
    """Sorted [(key, path, size)]: key = label/relative path. A file reached from two roots (the
    stdlib holding site-packages, say) is listed once, under the first root that reaches it."""
    files, seen = [], set()
    roots = source_roots()
    for label, root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            # another root nested inside this one is walked as its own root
            dirnames[:] = [d for d in dirnames
                           if not any(os.path.join(dirpath, d) == r for _, r in roots if r != root)]
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                real = os.path.realpath(path)
                if real in seen:
                    continue
                try:
                    size = os.path.getsize(real)
                except OSError:
                    continue
                if size == 0 or size > MAX_FILE_BYTES:
                    continue
                seen.add(real)
                files.append((f"{label}/{os.path.relpath(path, root)}", real, size))
    files.sort()
    return files, roots


def file_hash(key):
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)


def is_heldout(key):
    return file_hash(key) % 100 < HELDOUT_PERCENT


def _cap(files, max_bytes):
    """At most max_bytes of files, chosen by hash rank (deterministic, spread over packages),
    returned in sorted order."""
    if max_bytes is None or sum(f[2] for f in files) <= max_bytes:
        return list(files)
    chosen, total = [], 0
    for f in sorted(files, key=lambda f: (file_hash("cap:" + f[0]), f[0])):
        if total + f[2] > max_bytes:
            continue
        chosen.append(f)
        total += f[2]
    return sorted(chosen)


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def concat(files, threads=16):
    with ThreadPoolExecutor(threads) as pool:
        blobs = list(pool.map(lambda f: _read(f[1]), files))
    return np.frombuffer(SEPARATOR.join(blobs) + SEPARATOR, dtype=np.uint8)


def build_corpus(split, max_mb=None):
    """split 'train' or 'heldout': (uint8 array, description dict)."""
    files, roots = list_files()
    part = [f for f in files if is_heldout(f[0]) == (split == "heldout")]
    part = _cap(part, None if max_mb is None else int(max_mb * (1 << 20)))
    data = concat(part)
    desc = dict(split=split, roots=[f"{label}:{r}" for label, r in roots], files_total=len(files),
                bytes_total=int(sum(f[2] for f in files)),
                files=len(part), bytes=int(data.size), heldout_rule=f"sha1(key)[:8] % 100 < {HELDOUT_PERCENT}",
                max_mb=max_mb, python=sys.version.split()[0], first_file=part[0][0] if part else None,
                last_file=part[-1][0] if part else None)
    return data, desc


def heldout_windows(data, n, length):
    """n windows of `length` bytes, evenly spaced over the held-out stream (deterministic)."""
    span = data.size - length - 1
    if span < 0:
        raise ValueError(f"held-out stream ({data.size} bytes) shorter than one window ({length})")
    starts = [int(round(i * span / max(n - 1, 1))) for i in range(n)] if n > 1 else [span // 2]
    return starts
