"""GPU check (a benchmark, not a test): run it first whenever a GPU is lent, and put its numbers in
bench/README.md. At most a few minutes on one GPU.

    .venv/bin/python bench/gpu_check.py                   # CUDA: MAETok-B/16 + SiT-XL/1, paper settings
    .venv/bin/python bench/gpu_check.py --device cpu      # CPU smoke run at tiny sizes (CI runs this)
    .venv/bin/python bench/gpu_check.py --out gpu_check.json

What it measures, for the paper's two trained networks at the paper's settings (App. B Tables 7-8:
bf16 autocast, TF32 matmuls, PyTorch's fused SDPA kernels, torch.compile as in training):
- a training step (forward, backward, AdamW) of the MAETok-B/16 tokenizer with its HOG, DINO and
  CLIP aux decoders (random teacher features of the teachers' widths stand in for the frozen teachers,
  whose forward is not part of the tokenizer's own cost), at the per-GPU batch of Table 7 (512 / 8);
- a training step of SiT-XL/1 on 128 x 32 latents through the flow-matching loss, at the per-GPU batch
  of Table 8 (256 / 8);
- img/s, peak memory, and model FLOPs utilisation (MFU): 3 x the forward FLOPs (forward + a backward
  of twice its cost) per image, over the device's dense bf16 peak. SiT's forward FLOPs are the
  analytic count that `maetok model-info` reports; the tokenizer's are counted by PyTorch's
  FlopCounterMode on a one-image forward (same convention: 2 FLOPs a multiply-add, attention included);
- which SDPA kernels (flash, memory-efficient) run at the models' head sizes in bf16;
- a one-process DDP start (NCCL on CUDA, gloo on CPU), an all-reduce and a DDP step.

On CPU the sizes shrink to MAETok-XS and SiT-T/1 and torch.compile is off unless asked for; MFU is
then given against `--peak-tflops` when set, and otherwise against the fp32 matmul rate this check
measures on the machine (named as such in the output); peak memory on a CPU is the process's resident
peak so far.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from maetok.models import sit, tokenizer
from maetok.transport import Transport

# Dense bf16 peak TFLOP/s by device name (vendor data sheets, without sparsity). Matched by substring.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "GH200": 989.4, "B200": 2250.0,
                    "A100": 312.0, "L40S": 362.0, "A6000": 154.8, "L4": 121.0}

# Per-device settings: the paper's models and per-GPU batches on CUDA, the tiny stand-ins on CPU.
SETTINGS = {
    "cuda": {"tokenizer": "MAETok-B/16", "tokenizer_batch": 64, "generator": "SiT-XL/1", "generator_batch": 32,
             "latent_tokens": 128, "latent_dim": 32, "num_classes": 1000, "steps": 10},
    "cpu": {"tokenizer": "MAETok-XS", "tokenizer_batch": 8, "generator": "SiT-T/1", "generator_batch": 32,
            "latent_tokens": 8, "latent_dim": 32, "num_classes": 10, "steps": 3},
}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device) -> float:
    """Peak allocated memory of this process: CUDA's allocator on a GPU, the resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def device_peak_tflops(device, override: float | None, measured: float) -> tuple[float, str]:
    """(dense bf16 peak, where it comes from); `measured` is the matmul rate, the reference on a CPU."""
    if override:
        return override, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops, f"data sheet ({name})"
        raise SystemExit(f"no bf16 peak known for {name!r}: pass --peak-tflops (the data sheet's dense bf16 TFLOP/s)")
    return measured, "measured fp32 matmul rate of this CPU"


def matmul_tflops(device, n=None, repeats=5) -> float:
    """Achieved TFLOP/s of one large square matmul, the ceiling a model step can approach: bf16 on a
    GPU; fp32 on a CPU, where a plain bf16 matmul may take a slow path that autocast's Linear avoids."""
    n = n or (8192 if device.type == "cuda" else 1024)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronize(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e12


def timed_steps(step, device, steps) -> float:
    """Seconds per step: two untimed steps (compile, allocator warm-up), then the mean of `steps`."""
    for _ in range(2):
        step()
    synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - t) / steps


def tokenizer_check(name, batch, device, compile_, steps) -> dict:
    """Training step of a tokenizer with the paper's three aux decoders; returns its measurements."""
    torch.manual_seed(0)
    model = tokenizer.MAETok_models[name](aux_targets=("hog", "dino", "clip")).to(device)
    size, grid = model.img_size, model.img_size // model.patch_size
    # Random features of each teacher's width stand in for the frozen teachers' outputs.
    widths = {t: model.aux_decoders[t].head.out_features for t in ("dino", "clip")}
    targets = {t: torch.randn(batch, grid * grid, w, device=device) for t, w in widths.items()}
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1

    # Counted through the math SDPA kernel, whose matmuls FlopCounterMode sees on every device (it has
    # no formula for the fused CPU kernel, so attention would silently drop out of the count there).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x[:1], targets={t: f[:1] for t, f in targets.items()})
    forward_flops = counter.get_total_flops()

    if compile_:
        model.compile_blocks()
    opt = torch.optim.AdamW(model.parameters(), 1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")

    def step():
        with torch.autocast(device.type, torch.bfloat16):
            out = model(x, targets=targets)
            loss = F.mse_loss(out["x_rec"].float(), x) + sum(out["aux_loss"].values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak_memory(device)
    seconds = timed_steps(step, device, steps)
    return {"model": name, "batch": batch, "image_size": size, "compiled": compile_,
            "forward_gflops_per_image": forward_flops / 1e9, "step_s": seconds, "img_per_s": batch / seconds,
            "peak_memory_gib": peak_memory_gib(device)}


def generator_check(name, batch, tokens, dim, num_classes, device, compile_, steps) -> dict:
    """Training step of a SiT on random latents through the flow-matching loss."""
    torch.manual_seed(0)
    model = sit.SiT_models[name](num_tokens=tokens, in_channels=dim, num_classes=num_classes).to(device)
    forward_gflops = sit.forward_gflops(model, tokens)
    transport = Transport("linear", "logit_normal")
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), 1e-4, fused=device.type == "cuda")
    x = torch.randn(batch, tokens, dim, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        with torch.autocast(device.type, torch.bfloat16):
            loss = transport.training_losses(net, x, {"y": y})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak_memory(device)
    seconds = timed_steps(step, device, steps)
    return {"model": name, "batch": batch, "latent_shape": [tokens, dim], "compiled": compile_,
            "forward_gflops_per_image": forward_gflops, "step_s": seconds, "img_per_s": batch / seconds,
            "peak_memory_gib": peak_memory_gib(device)}


def sdpa_kernels(device, head_dims) -> dict:
    """{head_dim: {kernel: runs?}} for bf16 attention at 512 tokens, each kernel forced alone."""
    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH}
    if device.type != "cuda":
        kernels = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}  # CPU has a flash kernel too
    out = {}
    for d in head_dims:
        q = torch.randn(2, 4, 512, d, device=device, dtype=torch.bfloat16, requires_grad=True)
        out[d] = {}
        for kname, backend in kernels.items():
            try:
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, q, q).sum().backward()
                out[d][kname] = True
            except RuntimeError:
                out[d][kname] = False
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_check(device) -> dict:
    """Start a one-process group (NCCL on CUDA, gloo on CPU), all-reduce, and run one DDP step."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    t = time.perf_counter()
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        ones = torch.ones(4, device=device)
        dist.all_reduce(ones)
        layer = torch.nn.Linear(16, 16).to(device)
        ids = [device.index] if device.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel(layer, device_ids=ids)
        ddp(torch.randn(8, 16, device=device)).sum().backward()
        synchronize(device)
        ok = bool(ones.eq(1).all()) and layer.weight.grad is not None
    finally:
        dist.destroy_process_group()
    return {"backend": backend, "ok": ok, "init_and_step_s": time.perf_counter() - t}


def add_mfu(result: dict, peak_tflops: float) -> None:
    achieved = 3 * result["forward_gflops_per_image"] * result["img_per_s"] / 1e3  # TFLOP/s
    result["train_tflops"] = achieved
    result["mfu"] = achieved / peak_tflops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile as in training (default: on for CUDA, off for CPU)")
    parser.add_argument("--steps", type=int, help="timed steps per model (default: 10 on CUDA, 3 on CPU)")
    parser.add_argument("--tokenizer-batch", type=int)
    parser.add_argument("--generator-batch", type=int)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the device, for MFU")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu for the CPU smoke check")
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    s = SETTINGS[device.type]
    compile_ = device.type == "cuda" if args.compile is None else args.compile
    steps = args.steps or s["steps"]

    matmul = matmul_tflops(device)
    peak, peak_source = device_peak_tflops(device, args.peak_tflops, matmul)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "peak_tflops": peak, "peak_source": peak_source, "matmul_tflops": matmul}
    report["tokenizer"] = tokenizer_check(s["tokenizer"], args.tokenizer_batch or s["tokenizer_batch"], device,
                                          compile_, steps)
    report["generator"] = generator_check(s["generator"], args.generator_batch or s["generator_batch"],
                                          s["latent_tokens"], s["latent_dim"], s["num_classes"], device,
                                          compile_, steps)
    for key in ("tokenizer", "generator"):
        add_mfu(report[key], peak)
    # Head sizes of MAETok-B/16 (768 / 12) and SiT-XL/1 (1152 / 16).
    report["sdpa_kernels"] = sdpa_kernels(device, (64, 72))
    report["ddp"] = ddp_check(device)

    print(f"device: {report['device']}  torch {report['torch']}  peak {peak:.3f} TFLOP/s ({peak_source}); "
          f"matmul {report['matmul_tflops']:.3f} TFLOP/s")
    for key in ("tokenizer", "generator"):
        r = report[key]
        print(f"{r['model']:>12} train step, batch {r['batch']}{' compiled' if r['compiled'] else ''}: "
              f"{r['step_s'] * 1e3:.1f} ms, {r['img_per_s']:.1f} img/s, {r['train_tflops']:.3f} TFLOP/s, "
              f"MFU {r['mfu']:.1%}, peak memory {r['peak_memory_gib']:.2f} GiB")
    for d, ok in report["sdpa_kernels"].items():
        print(f"bf16 SDPA, head dim {d}: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in ok.items()))
    ddp = report["ddp"]
    print(f"DDP ({ddp['backend']}, 1 process): {'ok' if ddp['ok'] else 'FAILED'} in {ddp['init_and_step_s']:.1f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.out)
    return 0 if ddp["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
