"""Benchmark (not a test): generator training and sampling speed on this machine, and the
paper's efficiency claim (§4.5: 128 latent tokens sample faster than 256).

    .venv/bin/python bench/bench_generator.py [--threads 1]

Prints, for the tiny generator (SiT-T/1) on the tiny latents (8 or 16 tokens x 32) and for
SiT-B/1 on the paper's latent shape (128 or 256 tokens x 32), the time of one training step
and the sampling throughput in images/s for a `--steps`-step sampler (tiny: 50; the paper's
250 divides every rate by 5), computed from the measured time of one sampler step, fp32 and
bf16 autocast, with and without CFG (a doubled batch on the guided 75% of the steps), and
the ratio between the two token counts.
"""

from __future__ import annotations

import argparse
import time

import torch

from maetok.models.sit import SiT_models
from maetok.transport import Transport


def best_of(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(size, tokens, dim, batch, steps, repeats):
    """Train-step time, and sampling img/s from the time of one sampler step (one forward at
    `batch`; with CFG, a doubled batch on the guided 75% of the steps, as cfg_interval [0, 0.75])."""
    torch.manual_seed(0)
    model = SiT_models[size](num_tokens=tokens, in_channels=dim, num_classes=10)
    transport = Transport("linear", "logit_normal")
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(batch, tokens, dim)
    y = torch.randint(0, 10, (batch,))
    t = torch.rand(batch)

    def train_step():
        loss = transport.training_losses(model, x, {"y": y})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    train_s = best_of(train_step, repeats)
    model.eval()
    out = {"train_step_ms": train_s * 1e3}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            single = best_of(lambda: model(x, t, y), repeats)
            double = best_of(lambda: model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y])), repeats)
        out[name] = batch / (steps * single)
        out[name + "_cfg"] = batch / (steps * (0.25 * single + 0.75 * double))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50, help="sampler steps")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}, sampler: Euler-Maruyama, {args.steps} steps")
    for size, dim, batch, pair in (("SiT-T/1", 32, 500, (8, 16)), ("SiT-B/1", 32, 4, (128, 256))):
        rows = {n: measure(size, n, dim, batch, args.steps, args.repeats) for n in pair}
        for n, r in rows.items():
            print(f"{size} on {n} tokens x {dim}, batch {batch}: train step {r['train_step_ms']:.0f} ms; "
                  f"sampling img/s fp32 {r['fp32']:.2f} ({r['fp32_cfg']:.2f} CFG), "
                  f"bf16 {r['bf16']:.2f} ({r['bf16_cfg']:.2f} CFG)")
        a, b = (rows[n]["bf16"] for n in pair)
        print(f"  sampling speed-up of {pair[0]} over {pair[1]} tokens (bf16, no CFG): {a / b:.2f}x")


if __name__ == "__main__":
    main()
