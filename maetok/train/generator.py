"""Generator training: SiT / LightningDiT on cached, normalised tokenizer latents
(paper §4.1, App. B Tables 8-9; official `train/train_sit.py`).

Flow matching with the transport of `maetok.transport` (linear path, v-prediction),
AdamW + `lr_at` schedule, grad clip, EMA after every step, label dropout 0.1 for CFG
inside the model. Unconditional models (Table 5) see only the null class.

The caller gives every path (`GeneratorJob`): the final EMA weights (written atomically
at the end), the directory of EMA weights at `eval_steps` (Fig. 5b), the loss-curve JSON
(Fig. 2b), and the resumable checkpoint directory, which lives outside the rule's outputs.
Saved weights carry their config, the latent statistics and the tokenizer's sha256 in
the safetensors metadata (maetok/models/io.py), so sampling rebuilds the model and detects
a mismatched tokenizer. Resume, preemption and the MLflow run are the shared loop's
(maetok/train/loop.py).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from maetok import config as C
from maetok.latents import LatentDataset, LatentStats
from maetok.models.io import CheckpointError, build_generator, save_weights, weights_metadata
from maetok.sample import preview_grid
from maetok.train import checkpoint as ckpt
from maetok.train.loop import Session, TrainJob, scaled_lr
from maetok.train.utils import (
    adamw,
    autocast,
    clip_grad_norm,
    compile_modules,
    ema_decay_at,
    index_stream,
    lr_at,
    param_groups,
    update_ema,
)
from maetok.transport import build_transport, null_labels
from maetok.utils.io import atomic_dir, write_json


@dataclass(kw_only=True)
class GeneratorJob(TrainJob):
    """A generator run: its latent cache and the outputs besides the final EMA weights (`out`)."""
    latents: str                    # latent cache directory (maetok.latents)
    steps_dir: str                  # EMA weights at cfg.eval_steps: <steps_dir>/step<N>.safetensors
    loss_curve: str                 # JSON: {"log_every", "step": [...], "loss": [...]}
    tokenizer: str | None = None    # with sample_grid: decode a preview grid at the end
    sample_grid: str | None = None  # optional PNG (one row per class) logged to MLflow


def _run_key(cfg: C.GeneratorConfig, stats: LatentStats, seed: int) -> str:
    """Identity of a run: a checkpoint with another key must not be resumed."""
    return ckpt.run_key({"cfg": C.to_dict(cfg), "tok": stats.tokenizer_sha256, "seed": seed})


# --------------------------------------------------------------------------- training
def train_step(model, transport, opt, x, y, cfg: C.OptimConfig, lr: float, device, world: int) -> torch.Tensor:
    """One optimisation step; returns the (all-reduced) loss, detached."""
    for group in opt.param_groups:
        group["lr"] = lr
    with autocast(device, cfg.bf16 and device.type == "cuda"):
        loss = transport.training_losses(model, x, {"y": y})["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        clip_grad_norm(model.parameters(), cfg.grad_clip)
    loss = loss.detach()
    if world > 1:
        dist.all_reduce(loss, op=dist.ReduceOp.AVG)
    return loss


def train_generator(cfg: C.GeneratorConfig, job: GeneratorJob) -> dict:
    """Train to cfg.optim.steps (resuming from job.ckpt_dir); write the outputs; return metrics.
    A stop signal (Slurm preemption) ends it with `Preempted` after a checkpoint."""
    oc = cfg.optim
    data = LatentDataset(job.latents, cfg.latent_norm, hflip=True, seed=job.seed)
    stats = data.stats
    with Session(job, name=f"train_generator/{job.variant}", stage="train_generator", params=C.to_dict(cfg),
                 key=_run_key(cfg, stats, job.seed), steps=oc.steps) as s:
        model = build_generator(cfg, stats.num_latent_tokens, stats.latent_dim, stats.num_classes).to(s.device)
        ema = copy.deepcopy(model).requires_grad_(False)
        compile_modules([model], oc.compile)
        transport = build_transport(cfg.transport)
        lr = scaled_lr(oc)
        opt = adamw(param_groups(model, oc.weight_decay), lr, (oc.beta1, oc.beta2))
        s.resume({"model": model, "ema": ema}, {"opt": opt})
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[s.device] if s.device.type == "cuda" else None) if s.world > 1 else model
        ddp.train()
        eval_dir = Path(job.ckpt_dir) / "eval_steps"
        per_rank = oc.batch_size // s.world
        batches = index_stream(len(data), oc.batch_size, job.seed, s.start, s.rank, s.world)

        def step_fn(step: int) -> dict[str, torch.Tensor]:
            x, y = data.batch(next(batches), step, offset=s.rank * per_rank)
            if not cfg.transport.conditional:
                y = null_labels(len(y), stats.num_classes)
            loss = train_step(ddp, transport, opt, x.to(s.device), y.to(s.device), oc,
                              lr_at(step, lr, oc.warmup_steps, oc.steps, oc.schedule, oc.min_lr_ratio), s.device,
                              s.world)
            opt.step()
            update_ema(ema, model, ema_decay_at(step, oc.ema_decay))
            return {"loss": loss}

        def keep_eval_weights(done: int) -> None:
            if s.rank == 0 and (done in cfg.eval_steps or done == oc.steps):
                save_weights(ema, eval_dir / f"step{done}.safetensors", weights_metadata(cfg, stats, done))

        s.fit(step_fn, ckpt_every=oc.ckpt_every, log_every=oc.log_every, mean=True, after_step=keep_eval_weights,
              final_checkpoint=True, desc="train_generator")
        losses = [e["loss"] for e in s.curve]
        metrics = {"steps": oc.steps, "final_loss": losses[-1] if losses else None,
                   "seconds_this_run": round(s.seconds, 1)}
        if s.rank == 0:
            _write_outputs(cfg, job, ema, stats, s.curve, eval_dir)
        s.finish(metrics, [job.loss_curve, job.sample_grid] if s.rank == 0 else [])
    return metrics


def _write_outputs(cfg, job: GeneratorJob, ema, stats, curve: list[dict], eval_dir: Path) -> None:
    """Loss curve, EMA weights at eval_steps (copied from the checkpoint area), the final EMA and the
    preview grid."""
    write_json(job.loss_curve, {"log_every": cfg.optim.log_every, "step": [e["step"] for e in curve],
                                "loss": [e["loss"] for e in curve]})
    with atomic_dir(job.steps_dir) as tmp:
        for s in sorted({*cfg.eval_steps, cfg.optim.steps}):
            src = eval_dir / f"step{s}.safetensors"
            if not src.is_file():
                raise CheckpointError(f"{src} missing: the EMA weights of step {s} were not kept; delete "
                                      f"{job.ckpt_dir} and rerun to retrain")
            shutil.copy2(src, tmp / src.name)
    save_weights(ema, job.out, weights_metadata(cfg, stats, cfg.optim.steps))
    if job.sample_grid and job.tokenizer:
        preview_grid(ema, cfg, stats, job.tokenizer, job.sample_grid, seed=job.seed)
