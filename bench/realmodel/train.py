#!/usr/bin/env python3
"""Trains the small byte-level Llama-style model (common.py) on the Python sources installed on
this machine, on one GPU, within a wall-clock budget, and saves float16 weights.

  PYTHONUNBUFFERED=1 python3 train.py --out weights --minutes 6

Writes OUT/model-00.npz .. model-03.npz (float16, two layers each; the first also holds the
embedding, final norm and output head) and OUT/model.json (config, corpus, tokens seen,
bits per byte). The budget covers the training loop (compilation included), not the corpus
load before it nor the final evaluation after it.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="weights", help="output folder")
    ap.add_argument("--minutes", type=float, default=6.0, help="wall-clock budget of the training loop")
    ap.add_argument("--ctx", type=int, default=8192, help="training context (bytes)")
    ap.add_argument("--long-ctx", type=int, default=16384, help="context of the final phase")
    ap.add_argument("--long-frac", type=float, default=0.1,
                    help="share of the budget, at the end, trained at --long-ctx (0 = none)")
    ap.add_argument("--batch-tokens", type=int, default=65536, help="tokens per optimizer step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05, help="final lr as a share of --lr")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up steps (linear)")
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-mb", type=float, default=300.0, help="cap on the training text (MiB)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--eval-every-s", type=float, default=60.0)
    ap.add_argument("--eval-windows", type=int, default=16, help="windows for the final bits per byte")
    args = ap.parse_args()

    t_start = time.time()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    train_np, train_desc = common.build_corpus("train", args.max_mb)
    held_np, held_desc = common.build_corpus("heldout", None)
    print(f"corpus: train {train_desc['files']} files {train_desc['bytes'] / 2**20:.1f} MiB, held-out "
          f"{held_desc['files']} files {held_desc['bytes'] / 2**20:.1f} MiB (of {train_desc['files_total']} "
          f"files under {train_desc['roots']}); read in {time.time() - t_start:.1f}s")
    train = torch.from_numpy(train_np.copy()).to(dev)
    held = torch.from_numpy(held_np.copy()).to(dev)

    model = common.Model().to(dev)
    print(f"model: {common.count_params(model) / 1e6:.2f}M parameters, config {model.c}")
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    fwd = torch.compile(model) if args.compile else model
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)

    def batch_at(data, starts, T):
        idx = starts[:, None] + torch.arange(T + 1, device=dev)[None, :]
        chunk = data[idx].long()
        return chunk[:, :-1], chunk[:, 1:]

    def loss_of(f, x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = f(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def bits_per_byte(data, n, T, seed):
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        starts = torch.randint(0, data.numel() - T - 1, (n,), device=dev, generator=g)
        total = 0.0
        model.eval()
        for i in range(n):
            x, y = batch_at(data, starts[i:i + 1], T)
            total += loss_of(model, x, y).item()
        model.train()
        return total / n / math.log(2)

    budget = args.minutes * 60.0
    t0 = time.time()
    step, tokens, last_log, last_eval = 0, 0, t0, t0
    ema, recent = None, []
    log_tokens, ctx_now = 0, args.ctx
    history = []
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        T = args.long_ctx if args.long_frac > 0 and frac >= 1 - args.long_frac else args.ctx
        if T != ctx_now:
            print(f"phase: context {ctx_now} -> {T} at step {step}, {tokens / 1e6:.1f}M tokens")
            ctx_now = T
        B = max(1, args.batch_tokens // T)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        lr *= args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, train.numel() - T - 1, (B,), device=dev, generator=gen)
        x, y = batch_at(train, starts, T)
        model.rope(T, dev)  # the RoPE tables made eagerly, outside the compiled graph
        loss = loss_of(fwd, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = loss.item() / math.log(2)
        step += 1
        tokens += B * T
        ema = value if ema is None else 0.98 * ema + 0.02 * value
        recent = (recent + [value])[-20:]
        now = time.time()
        if now - last_log >= 10 or step <= 2:
            rate = (tokens - log_tokens) / (now - last_log) if step > 2 else 0.0
            print(f"step {step:5d}  t {now - t0:6.1f}s  tokens {tokens / 1e6:7.1f}M  {rate / 1e3:7.1f}K tok/s  "
                  f"ctx {T}  lr {lr:.2e}  train {value:.3f} bpb (ema {ema:.3f})")
            last_log, log_tokens = now, tokens
        if now - last_eval >= args.eval_every_s:
            h = bits_per_byte(held, 4, args.ctx, 7)
            print(f"  held-out {h:.3f} bpb (4 windows of {args.ctx})")
            history.append(dict(step=step, tokens=tokens, seconds=round(now - t0, 1), train_bpb=ema, heldout_bpb=h))
            last_eval = time.time()
    train_s = time.time() - t0
    print(f"trained {step} steps, {tokens / 1e6:.1f}M tokens in {train_s:.1f}s ({tokens / train_s / 1e3:.1f}K tok/s)")

    final = dict(train_bpb_last20_steps=float(np.mean(recent)) if recent else None)
    for T in sorted({args.ctx} | ({args.long_ctx} if args.long_frac > 0 else set())):
        final[f"heldout_bpb_ctx{T}"] = bits_per_byte(held, args.eval_windows, T, 11)
        final[f"train_bpb_ctx{T}"] = bits_per_byte(train, args.eval_windows, T, 11)
    print("final: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))

    paths = common.save_weights(model, args.out)
    meta = dict(config=model.c, params=common.count_params(model), format="float16 npz, state_dict names",
                rope="rotate-half (HF Llama), positions 0..T-1", attention="causal, 1/sqrt(head_dim) scale",
                corpus=dict(train=train_desc, heldout=held_desc, separator="one NUL byte after each file"),
                training=dict(vars(args), steps=step, tokens_seen=tokens, train_seconds=round(train_s, 1),
                              total_seconds=round(time.time() - t_start, 1), torch=torch.__version__,
                              device=torch.cuda.get_device_name(0), precision="bf16 autocast, fp32 master",
                              optimizer="AdamW(0.9, 0.95), cosine decay over the wall-clock budget"),
                final=final, history=history,
                files={os.path.basename(p): os.path.getsize(p) for p in paths})
    with open(os.path.join(args.out, "model.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"saved {', '.join(f'{os.path.basename(p)} ({os.path.getsize(p) / 2**20:.1f} MiB)' for p in paths)} "
          f"and model.json to {args.out}")


if __name__ == "__main__":
    main()
