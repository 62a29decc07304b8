"""The model of common.py in numpy, float32 (no PyTorch, no GPU): shared by np_forward.py and
np_eval.py. The attention itself is the caller's (a function of the layer and its post-RoPE
Q/K/V), as in common.Model.forward.

Arrays are [tokens, ...] (one sequence, no batch): Q [T, n_heads, head_dim], K and V
[T, n_kv_heads, head_dim], the layout sampleattn.attention takes.
"""
import glob
import json
import os

import numpy as np


class NpModel:
    def __init__(self, weights_dir):
        with open(os.path.join(weights_dir, "model.json")) as f:
            self.meta = json.load(f)
        self.c = self.meta["config"]
        self.w = {}
        for path in sorted(glob.glob(os.path.join(weights_dir, "model-*.npz"))):
            with np.load(path) as z:
                # float16 on disk; the transposed linear weights once, contiguous, for x @ W
                for name in z.files:
                    a = z[name].astype(np.float32)
                    self.w[name] = np.ascontiguousarray(a.T) if a.ndim == 2 and name != "tok_emb.weight" else a
        if not self.w:
            raise FileNotFoundError(f"no model-*.npz in {weights_dir}")
        self._rope = {}

    def rope_tables(self, T):
        """cos, sin [T, 1, head_dim] float32 (computed in float64, like common.rope_tables)."""
        if T not in self._rope:
            hd = self.c["head_dim"]
            inv = 1.0 / (self.c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
            emb = np.concatenate([np.outer(np.arange(T, dtype=np.float64), inv)] * 2, -1)
            self._rope[T] = (np.cos(emb).astype(np.float32)[:, None], np.sin(emb).astype(np.float32)[:, None])
        return self._rope[T]

    def _rms(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(self.c["norm_eps"])) * self.w[name]

    def _rope_apply(self, a, T):
        """a [T, heads, hd], rotate-half (the Hugging Face Llama convention)."""
        cos, sin = self.rope_tables(T)
        d2 = a.shape[-1] // 2
        rot = np.concatenate([-a[..., d2:], a[..., :d2]], -1)
        return np.ascontiguousarray(a * cos + rot * sin)

    def embed(self, tokens):
        """tokens (uint8 or int) [T] -> the residual stream [T, d_model]."""
        return self.w["tok_emb.weight"][np.asarray(tokens, dtype=np.int64)]

    def qkv(self, layer, x):
        """The layer's post-RoPE Q [T, H, hd], K, V [T, Hkv, hd] (contiguous float32) from the residual x."""
        c, p, T = self.c, f"layers.{layer}.", x.shape[0]
        hd = c["head_dim"]
        a = self._rms(x, p + "attn_norm.weight")
        q = self._rope_apply((a @ self.w[p + "wq.weight"]).reshape(T, c["n_heads"], hd), T)
        k = self._rope_apply((a @ self.w[p + "wk.weight"]).reshape(T, c["n_kv_heads"], hd), T)
        v = np.ascontiguousarray((a @ self.w[p + "wv.weight"]).reshape(T, c["n_kv_heads"], hd))
        return q, k, v

    def finish_layer(self, layer, x, o):
        """The rest of the layer after attention: x + Wo o, then the SwiGLU MLP's residual branch."""
        p, T = f"layers.{layer}.", x.shape[0]
        x = x + np.asarray(o, dtype=np.float32).reshape(T, -1) @ self.w[p + "wo.weight"]
        a = self._rms(x, p + "ffn_norm.weight")
        g = a @ self.w[p + "w1.weight"]
        silu = g * (0.5 + 0.5 * np.tanh(0.5 * g))  # g * sigmoid(g), without exp's overflow
        return x + (silu * (a @ self.w[p + "w3.weight"])) @ self.w[p + "w2.weight"]

    def logits(self, x):
        """[T, d_model] -> [T, vocab] float32."""
        return self._rms(x, "norm.weight") @ self.w["out.weight"]

    def forward(self, tokens, attn):
        """Logits [T, vocab]; attn(layer, q, k, v) -> O [T, n_heads, head_dim]."""
        x = self.embed(tokens)
        for layer in range(self.c["n_layers"]):
            q, k, v = self.qkv(layer, x)
            x = self.finish_layer(layer, x, attn(layer, q, k, v))
        return self.logits(x)


def bits_per_byte(logits, tokens):
    """Mean cross entropy (bits) of predicting tokens[1:] from logits[:-1] (float64 log-softmax)."""
    z = logits[:-1].astype(np.float64)
    z -= z.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1))
    y = np.asarray(tokens[1:], dtype=np.int64)
    return float((lse - z[np.arange(y.size), y]).mean() / np.log(2.0))
