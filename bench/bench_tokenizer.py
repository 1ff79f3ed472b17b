"""Benchmark (not a test): tokenizer training-step throughput and attention kernels on this machine.

    .venv/bin/python bench/bench_tokenizer.py [--threads 2]

Prints img/s of one training step (forward + backward + AdamW) for the tiny config
(MAETok-XS, stand-in-free: HOG target, no perceptual/GAN) and for MAETok-B/16 at batch 2,
the time of SDPA + RoPE vs explicit softmax attention at MAETok-B/16's shapes, and the step
time of `maetok`'s three aux decoders run as one group vs one by one (`AuxDecoders.grouped`;
alternating in one process, so both sides see the same machine load; `--compile` as in training).
"""

from __future__ import annotations

import argparse
import time

import torch

from maetok.models.blocks import apply_rope, explicit_attention
from maetok.models.tokenizer import MAETok_models


def step_speed(model, batch, image_size, repeats=3):
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.rand(batch, 3, image_size, image_size) * 2 - 1
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        out = model(x)
        loss = (out["x_rec"] - x).pow(2).mean() + sum(out["aux_loss"].values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return batch / min(times[1:])


def attention_speed(batch=2, heads=12, tokens=16 * 16 + 128 + 1, dim=64, repeats=5):
    q, k, v = (torch.randn(batch, heads, tokens, dim) for _ in range(3))
    angle = torch.rand(tokens, dim // 2)
    cos, sin = angle.cos(), angle.sin()
    results = {}
    for name, attn in (("sdpa+rope", torch.nn.functional.scaled_dot_product_attention),
                       ("explicit softmax+rope", explicit_attention)):
        times = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            attn(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)
            times.append(time.perf_counter() - t)
        results[name] = min(times[1:]) * 1e3
    return results


def xs_train_step(model, batch=32, in_chans=3):
    """A bf16 training step (forward, backward, AdamW) of a 32-px tokenizer on random images, with
    random 128-wide features for its DINO-/CLIP-type targets: a callable."""
    opt = torch.optim.AdamW(model.parameters(), 1e-4, fused=True)
    x = torch.rand(batch, in_chans, 32, 32) * 2 - 1
    targets = {name: torch.randn(batch, 16, 128) for name in ("dino", "clip") if name in model.aux_decoders}

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            out = model(x, targets=targets)
            loss = (out["x_rec"].float() - x).pow(2).mean() + sum(out["aux_loss"].values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def aux_grouping_speed(depth, compile_=False, batch=32, rounds=4, steps=10):
    """ms per bf16 training step of MAETok-XS with hog + DINO- + CLIP-type aux decoders (random
    teacher features), grouped vs one by one: median over alternating rounds."""
    model = MAETok_models["MAETok-XS"](in_chans=1, aux_targets=("hog", "dino", "clip"), aux_depth=depth,
                                       aux_dims={"dino": 128, "clip": 128})
    if compile_:
        model.compile_blocks()  # as in training
    step = xs_train_step(model, batch, in_chans=1)
    times = {True: [], False: []}
    for r in range(rounds + 1):
        for grouped in (True, False):
            model.aux_decoders.grouped = grouped
            t = time.perf_counter()
            for _ in range(steps):
                step()
            if r:  # round 0 warms up (and compiles) both paths
                times[grouped].append((time.perf_counter() - t) / steps * 1e3)
    return {g: sorted(v)[len(v) // 2] for g, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="torch.compile the aux-decoder comparison's networks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads: {args.threads}")
    tiny = MAETok_models["MAETok-XS"](aux_targets=("hog",))
    print(f"MAETok-XS (tiny) train step, batch 64: {step_speed(tiny, 64, 32):.0f} img/s")
    for bf16 in (False, True):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            print(f"  bf16={bf16}: {step_speed(tiny, 64, 32):.0f} img/s")
    big = MAETok_models["MAETok-B/16"](aux_targets=("hog",))
    print(f"MAETok-B/16 train step, batch 2: {step_speed(big, 2, 256, repeats=2):.2f} img/s")
    for name, ms in attention_speed().items():
        print(f"attention at MAETok-B/16 shapes (B=2, 12 heads, 385 tokens): {name}: {ms:.2f} ms")
    for depth in (3, 12):
        ms = aux_grouping_speed(depth, args.compile)
        print(f"MAETok-XS + 3 aux decoders of depth {depth}, batch 32, bf16{', compiled' if args.compile else ''}: "
              f"grouped {ms[True]:.1f} ms/step, one by one {ms[False]:.1f} ms/step")


if __name__ == "__main__":
    main()
