"""Shared by train.py and eval.py: the byte-level Llama-style model, the corpus (the Python
sources installed on the machine; defined in corpus.py, numpy only, re-exported here), and the
weight files.

Model: vocab 256 (bytes), pre-norm decoder, RMSNorm, RoPE (rotate-half convention), grouped-query
attention (n_heads query heads share n_kv_heads key/value heads), SwiGLU MLP, no biases, untied
input embedding and output head.

Corpus: see corpus.py (every *.py file of the stdlib and site-packages, sorted, NUL-separated; a
file is held out by a hash of its path, HELDOUT_PERCENT of them).
"""
import glob
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The corpus (train.py and eval.py use it as common.build_corpus etc.); defined once, in corpus.py.
from corpus import (HELDOUT_PERCENT, MAX_FILE_BYTES, SEPARATOR, build_corpus, concat,  # noqa: F401
                    file_hash, heldout_windows, is_heldout, list_files, source_roots)


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
