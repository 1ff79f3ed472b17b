"""Benchmark (not a test): torch.compile of the tokenizer per block vs whole modules vs eager.

    .venv/bin/python bench/bench_compile.py [--threads 1]

A stage-1 training step of the tiny `maetok` (MAETok-XS, HOG + DINO- + CLIP-type aux decoders of
depth 3 with random teacher features, batch 32, bf16 autocast, AdamW) in three modes:
`eager`; `whole` (the encoder, decoder and aux decoders each one graph); `blocks`
(`MAETok.compile_blocks`, what training uses: one graph per transformer-block type).

1. Cold compile: the first 3 steps of each compiled mode in its own process, on an empty
   Inductor cache (a temporary TORCHINDUCTOR_CACHE_DIR).
2. The same for a second architecture on the cache the first one left (a HOG-only tokenizer,
   as Table 1b's `target_hog`): per-block graphs are shared between variants, whole ones are not.
3. Step time: all three modes in one process on the warm cache, in alternating rounds (each
   mode sees the same machine load); the median ms per step.

The `--threads` default, 1, is what a job gets with two jobs side by side (profiles/laptop).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

MODES = ("eager", "whole", "blocks")
VARIANTS = {"maetok": ("hog", "dino", "clip"), "target_hog": ("hog",)}


def build(mode: str, targets: tuple[str, ...]):
    from bench_tokenizer import xs_train_step

    from maetok.models.tokenizer import MAETok_models

    torch.manual_seed(0)
    model = MAETok_models["MAETok-XS"](num_latent_tokens=8, aux_targets=targets, aux_depth=3,
                                       aux_dims={"dino": 128, "clip": 128})
    if mode == "whole":
        for module in (model.encoder, model.decoder, model.aux_decoders):
            module.compile()
    elif mode == "blocks":
        model.compile_blocks()
    return xs_train_step(model)


def first_steps(mode: str, variant: str) -> float:
    step = build(mode, VARIANTS[variant])
    t = time.perf_counter()
    for _ in range(3):
        step()
    return time.perf_counter() - t


def step_times(rounds: int = 5, steps: int = 10) -> dict[str, float]:
    runs = {mode: build(mode, VARIANTS["maetok"]) for mode in MODES}
    for step in runs.values():  # warm-up (and cache loads)
        for _ in range(3):
            step()
    times = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode, step in runs.items():
            t = time.perf_counter()
            for _ in range(steps):
                step()
            times[mode].append((time.perf_counter() - t) / steps * 1e3)
    return {mode: sorted(v)[len(v) // 2] for mode, v in times.items()}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    if args.child == "steps":
        result = step_times()
    else:
        mode, variant = args.child.split(":")
        result = first_steps(mode, variant)
    print(json.dumps(result))


def run_child(what: str, threads: int, cache: str):
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--child", what],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{what} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"threads: {args.threads}")
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        caches = {mode: os.path.join(tmp, mode) for mode in ("whole", "blocks")}
        for variant in VARIANTS:
            for mode, cache in caches.items():
                s = run_child(f"{mode}:{variant}", args.threads, cache)
                state = "empty" if variant == "maetok" else "maetok's"
                print(f"{variant:10s} {mode:6s} first 3 steps on {state} cache: {s:6.1f} s", flush=True)
        # one cache holding both modes' graphs for the step-time comparison
        subprocess.run(["cp", "-r", f"{caches['blocks']}/.", caches["whole"]], check=True)
        ms = run_child("steps", args.threads, caches["whole"])
    for mode in MODES:
        print(f"maetok step, {mode:6s}: {ms[mode]:.1f} ms (median of 5 alternating rounds of 10 steps)")


if __name__ == "__main__":
    main()
