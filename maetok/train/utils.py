"""Small helpers shared by the training loops (MAE / DiT style)."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator

import torch
import torch.distributed as dist

from maetok.utils.device import bf16_autocast, compile_enabled


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf; the last good checkpoint is kept."""


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with a warm-up, min(decay, (1 + step) / (10 + step)): a short run's EMA is not
    dominated by the random init. At the paper's 500K steps this equals `decay` after ~90K steps
    at 0.9999 and changes nothing that matters; at tiny scale (hundreds of steps) it is essential."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for every parameter (buffers copied), as two
    multi-tensor ops: at tiny scale a step is bound by per-op overhead, not arithmetic."""
    ema_params, params = list(ema.parameters()), [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError(f"EMA has {len(ema_params)} parameters, the model {len(params)}")
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def compile_modules(modules, enabled: bool) -> bool:
    """`torch.compile` each module whole, in place (its state_dict keys unchanged); returns whether
    it did (see `compile_enabled`). The tokenizer compiles per block instead (`MAETok.compile_blocks`)."""
    if not compile_enabled(enabled):
        return False
    for module in modules:
        module.compile()
    return True


def requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, schedule: str,
          min_lr_ratio: float = 0.0) -> float:
    """Learning rate at `step`: linear warm-up, then `constant` or `cosine` down to min_lr_ratio * base_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def check_finite(losses: dict[str, torch.Tensor], step: int, ckpt_dir: str) -> None:
    bad = {k: float(v) for k, v in losses.items() if torch.is_tensor(v) and not torch.isfinite(v).all()}
    if bad:
        kept = (f"The last good checkpoint in {ckpt_dir} is kept; lower the learning rate or check the inputs, "
                "then rerun the same target to resume.") if ckpt_dir else (
                "This job keeps no checkpoints; lower the learning rate or check the inputs, then rerun it.")
        raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}. {kept}")


def adamw(params, lr: float, betas: tuple[float, float], weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one kernel per parameter instead of ~30 ops): 2.6 vs 17.7 ms a
    step for MAETok-XS + aux decoders on one CPU thread (226 tensors). CPU and CUDA both have it."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Global-norm gradient clipping over the parameters that have a gradient (multi-tensor kernels)."""
    return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm, foreach=True)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms and other 1-D parameters (timm convention)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- distributed
def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Initialises torch.distributed under torchrun (NCCL on GPU, gloo on CPU).

    `rank` is the global rank over all nodes (torchrun's RANK), from which the trainers derive the
    seed (seed * world_size + rank) and the data shard; the GPU is the node-local one, LOCAL_RANK.
    """
    if "RANK" in os.environ and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        try:
            torch.cuda.set_device(local)
        except RuntimeError as e:  # CUDA's invalid device ordinal
            raise RuntimeError(
                f"rank {rank} (LOCAL_RANK {local}) finds {torch.cuda.device_count()} GPUs on its node: start at most "
                "one process per GPU of a node (torchrun --nproc_per_node; in the workflow the training rule's "
                "`gpu` resource, split over params.yaml scales.<scale>.nodes)") from e
        device = torch.device("cuda", local)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    return rank, world, device


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on the given device; on a CPU only where it has bf16 instructions (utils/device.py)."""
    return bf16_autocast(device.type, enabled)


class StopFlag:
    """Set on SIGTERM/SIGUSR1 (Slurm preemption): the loop saves a checkpoint and exits."""

    def __init__(self):
        self.stop = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGUSR1)}

    def _handle(self, signum, frame):
        self.stop = True

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def index_stream(n: int, batch_size: int, seed: int, start_step: int, rank: int = 0,
                 world: int = 1) -> Iterator[torch.Tensor]:
    """Batches of indices into a dataset of size n for this rank, from `start_step` on.

    Deterministic in (seed, step): epoch e is a permutation seeded by (seed, e); the
    global batch of step s is positions [s*B, (s+1)*B) of the concatenated epochs, and
    rank r takes its contiguous slice. Resuming at step s yields exactly what an
    uninterrupted run would, and the global batch is the same for any world size.
    """
    if batch_size % world:
        raise ValueError(f"global batch size {batch_size} is not divisible by the number of processes {world}")
    per_rank = batch_size // world
    step = start_step
    perm_epoch, perm = -1, None
    while True:
        start = step * batch_size + rank * per_rank
        idx = []
        for pos in range(start, start + per_rank):
            epoch, off = divmod(pos, n)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(seed * 100_003 + epoch)
                perm, perm_epoch = torch.randperm(n, generator=g), epoch
            idx.append(perm[off])
        yield torch.stack(idx)
        step += 1


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Rank `src`'s parameters and buffers on every rank, in place (what DDP does for the model
    it wraps, for a module trained outside DDP)."""
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src)


@torch.no_grad()
def all_reduce_grads(params, world: int) -> None:
    """Average the gradients of `params` over the processes, as DDP does in its backward pass (for
    a module that cannot be wrapped in DDP), in one flat all-reduce. Every rank must hold
    gradients for the same parameters, as it does when all run the same graph."""
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def any_rank(flag: bool, device, world: int) -> bool:
    """True on every rank if `flag` is set on any (a preemption signal may reach ranks at different steps)."""
    if world == 1:
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


WEIGHT_CHECKSUMS_ENV = "MAETOK_WEIGHT_CHECKSUMS"


@torch.no_grad()
def log_weight_checksums(modules: dict[str, torch.nn.Module], rank: int) -> None:
    """With $MAETOK_WEIGHT_CHECKSUMS set, print one line per process at the end of training,
    `weight-checksums {"rank": r, "<module>": sha256 prefix, ...}`, hashing each module's parameters
    and buffers by name. Only rank 0 writes weights, so this is how a multi-process run shows that
    the other ranks trained the same ones (tests/workflow/test_rehearsal.py reads the job logs)."""
    if not os.environ.get(WEIGHT_CHECKSUMS_ENV):
        return
    import hashlib
    import json

    sums = {}
    for name, module in modules.items():
        h = hashlib.sha256()
        for key, t in sorted([*module.named_parameters(), *module.named_buffers()], key=lambda kv: kv[0]):
            h.update(key.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        sums[name] = h.hexdigest()[:16]
    print("weight-checksums " + json.dumps({"rank": rank, **sums}, sort_keys=True), flush=True)
