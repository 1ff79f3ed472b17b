"""Generator training: SiT / LightningDiT on cached, normalised tokenizer latents
(paper §4.1, App. B Tables 8-9; official `train/train_sit.py`, spec §5).

Flow matching with the transport of `maetok.transport` (linear path, v-prediction),
AdamW + `lr_at` schedule, grad clip, EMA after every step, label dropout 0.1 for CFG
inside the model. Unconditional models (Table 5) see only the null class.

The caller gives every path (`GeneratorJob`): the final EMA weights (written atomically
at the end), the directory of EMA weights at `eval_steps` (Fig. 5b), the loss-curve JSON
(Fig. 2b), and the resumable checkpoint directory, which lives outside the rule's outputs.
Saved weights carry their config, the latent statistics and the tokenizer's sha256 in
the safetensors metadata, so sampling rebuilds the model and detects a mismatched
tokenizer.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from maetok import config as C
from maetok.latents import LatentDataset, LatentStats
from maetok.models.sit import SiT, SiT_models
from maetok.tracking import Run
from maetok.train import checkpoint as ckpt
from maetok.train.utils import (
    StopFlag,
    adamw,
    any_rank,
    autocast,
    check_finite,
    cleanup_distributed,
    clip_grad_norm,
    compile_modules,
    ema_decay_at,
    index_stream,
    log_weight_checksums,
    lr_at,
    param_groups,
    setup_distributed,
    update_ema,
)
from maetok.transport import Transport, null_labels
from maetok.utils.io import write_json


@dataclass
class GeneratorJob:
    """Paths and runtime context of one generator run (everything besides the config)."""
    latents: str            # latent cache directory (maetok.latents)
    out: str                # final EMA weights (.safetensors)
    steps_dir: str          # EMA weights at cfg.eval_steps: <steps_dir>/step<N>.safetensors
    loss_curve: str         # JSON: {"step": [...], "loss": [...]}
    ckpt_dir: str           # resumable checkpoints (outside the rule's outputs)
    variant: str = ""
    scale: str = ""
    seed: int = 0
    tags: dict | None = None
    tokenizer: str | None = None    # with sample_grid: decode a preview grid at the end
    sample_grid: str | None = None  # optional PNG (one row per class) logged to MLflow
    progress: bool = True
    stop: StopFlag | None = None    # tests pass one; otherwise installed here


# --------------------------------------------------------------------------- model I/O
def build_generator(cfg: C.GeneratorConfig, num_tokens: int, latent_dim: int, num_classes: int) -> SiT:
    dropout = cfg.transport.class_dropout if cfg.transport.conditional else 0.0
    depth = {"depth": cfg.depth} if cfg.depth else {}  # else the size's own
    return SiT_models[cfg.size](num_tokens=num_tokens, in_channels=latent_dim, num_classes=num_classes,
                                class_dropout_prob=dropout, **depth)


def build_transport(cfg: C.TransportConfig) -> Transport:
    return Transport(cfg.path, cfg.time_sampling, cfg.time_mean, cfg.time_std, cfg.cos_weight)


def weights_metadata(cfg: C.GeneratorConfig, stats: LatentStats, step: int) -> dict:
    return {"config": json.dumps(C.to_dict(cfg)), "step": step, "num_tokens": stats.num_latent_tokens,
            "latent_dim": stats.latent_dim, "num_classes": stats.num_classes,
            "tokenizer_sha256": stats.tokenizer_sha256,
            "latent_stats": json.dumps({k: stats.raw[k] for k in ("mean", "std", "channel_mean", "channel_std")})}


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[SiT, C.GeneratorConfig, dict]:
    """EMA weights saved by `train_generator` -> (eval-mode SiT, its config, metadata)."""
    state, meta = ckpt.read_weights(path, "generator weights", "train_generator")
    cfg = C.from_dict(C.GeneratorConfig, json.loads(meta["config"]), f"{path}:config")
    info = {"step": int(meta["step"]), "num_tokens": int(meta["num_tokens"]), "latent_dim": int(meta["latent_dim"]),
            "num_classes": int(meta["num_classes"]), "tokenizer_sha256": meta["tokenizer_sha256"],
            "latent_stats": json.loads(meta["latent_stats"])}
    model = build_generator(cfg, info["num_tokens"], info["latent_dim"], info["num_classes"])
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, info


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

    Returns early with {"stopped": step} after saving a checkpoint when SIGTERM/SIGUSR1
    arrives (Slurm preemption); the rerun resumes there.
    """
    rank, world, device = setup_distributed()
    torch.manual_seed(job.seed * world + rank)
    oc = cfg.optim
    data = LatentDataset(job.latents, cfg.latent_norm, hflip=True, seed=job.seed)
    stats = data.stats
    model = build_generator(cfg, stats.num_latent_tokens, stats.latent_dim, stats.num_classes).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    compile_modules([model], oc.compile)
    transport = build_transport(cfg.transport)
    lr = oc.lr * (oc.batch_size / 256 if oc.lr_batch_scaling else 1.0)
    opt = adamw(param_groups(model, oc.weight_decay), lr, (oc.beta1, oc.beta2))
    ckpt_dir, key = Path(job.ckpt_dir), _run_key(cfg, stats, job.seed)
    if rank == 0:
        ckpt.retire_stale(ckpt_dir, key, oc.steps)
    if world > 1:
        dist.barrier()
    state = ckpt.load_latest(ckpt_dir, {"model": model, "ema": ema})
    start, curve = 0, {"step": [], "loss": []}
    if state:
        opt.load_state_dict(state["opt"])
        start, curve = state["step"], json.loads(state["curve"])
        if rank == 0:
            print(f"resumed from {ckpt_dir} at step {start}", flush=True)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model
    ddp.train()
    stop = job.stop or StopFlag()
    run = Run(f"train_generator/{job.variant}", {"stage": "train_generator", "variant": job.variant,
                                                  "scale": job.scale, **(job.tags or {})},
              C.to_dict(cfg), enabled=rank == 0)
    eval_dir = ckpt_dir / "eval_steps"

    def save_checkpoint(step):
        if rank == 0:
            ckpt.save(ckpt_dir, step, {"model": model, "ema": ema},
                      {"opt": opt.state_dict(), "curve": json.dumps(curve)}, {"run_key": key})
        if world > 1:
            dist.barrier()

    per_rank = oc.batch_size // world
    running, t0, step = torch.zeros((), device=device), time.perf_counter(), start
    batches = index_stream(len(data), oc.batch_size, job.seed, start, rank, world)
    pbar = tqdm(range(start, oc.steps), initial=start, total=oc.steps, disable=not (job.progress and rank == 0),
                desc="train_generator", mininterval=10)
    try:
        for step in pbar:
            x, y = data.batch(next(batches), step, offset=rank * per_rank)
            if not cfg.transport.conditional:
                y = null_labels(len(y), stats.num_classes)
            loss = train_step(ddp, transport, opt, x.to(device), y.to(device), oc,
                              lr_at(step, lr, oc.warmup_steps, oc.steps, oc.schedule, oc.min_lr_ratio), device, world)
            check_finite({"loss": loss}, step, str(ckpt_dir))
            opt.step()
            update_ema(ema, model, ema_decay_at(step, oc.ema_decay))
            running += loss
            done = step + 1
            if done % oc.log_every == 0:
                mean = float(running) / oc.log_every
                running.zero_()
                curve["step"].append(done)
                curve["loss"].append(mean)
                run.log_metrics({"loss": mean, "steps_per_s": (done - start) / (time.perf_counter() - t0)}, done)
                pbar.set_postfix(loss=f"{mean:.4f}", refresh=False)
            if rank == 0 and (done in cfg.eval_steps or done == oc.steps):
                ckpt.save_weights(ema, eval_dir / f"step{done}.safetensors", weights_metadata(cfg, stats, done))
            if done % oc.ckpt_every == 0 or done == oc.steps:
                save_checkpoint(done)
            if done < oc.steps and any_rank(stop.stop, device, world):
                if done % oc.ckpt_every:
                    save_checkpoint(done)
                if rank == 0:
                    print(f"stop signal: checkpoint at step {done} in {ckpt_dir}; rerun to resume", flush=True)
                run.end("KILLED")
                return {"stopped": done}
        log_weight_checksums({"model": model, "ema": ema}, rank)
        metrics = {"steps": oc.steps, "final_loss": curve["loss"][-1] if curve["loss"] else None,
                   "seconds_this_run": round(time.perf_counter() - t0, 1)}
        if rank == 0:
            _write_outputs(cfg, job, ema, stats, curve, eval_dir, run)
            run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        run.end()
        return metrics
    except BaseException:
        run.end("FAILED")
        raise
    finally:
        pbar.close()
        if job.stop is None:
            stop.restore()
        cleanup_distributed()


def _write_outputs(cfg, job: GeneratorJob, ema, stats, curve, eval_dir: Path, run: Run) -> None:
    """Loss curve, EMA weights at eval_steps (copied from the checkpoint area) and the final EMA."""
    write_json(job.loss_curve, {"log_every": cfg.optim.log_every, **curve})
    steps_dir = Path(job.steps_dir)
    steps_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{steps_dir.name}.", dir=steps_dir.parent))
    try:
        for s in sorted({*cfg.eval_steps, cfg.optim.steps}):
            src = eval_dir / f"step{s}.safetensors"
            if not src.is_file():
                raise ckpt.CheckpointError(f"{src} missing: the EMA weights of step {s} were not kept; delete "
                                           f"{job.ckpt_dir} and rerun to retrain")
            shutil.copy2(src, tmp / src.name)
        shutil.rmtree(steps_dir, ignore_errors=True)
        tmp.rename(steps_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ckpt.save_weights(ema, job.out, weights_metadata(cfg, stats, cfg.optim.steps))
    run.log_artifact(job.loss_curve)
    if job.sample_grid and job.tokenizer:
        from maetok.sample import preview_grid

        preview_grid(ema, cfg, stats, job.tokenizer, job.sample_grid, seed=job.seed)
        run.log_artifact(job.sample_grid)
