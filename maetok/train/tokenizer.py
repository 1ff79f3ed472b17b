"""Tokenizer training: stage 1 (`train_tokenizer`) and stage 2 (`finetune_decoder`).

Stage 1 (paper §3.1-3.2): mask modeling at the encoder, pixel decoder + auxiliary
shallow decoders, loss Eq. 6 + Eq. 8. Stage 2 (paper §3.3): the encoder is frozen, the
aux decoders are dropped, the mask ratio falls linearly from 60% to 0 and the pixel
decoder is fine-tuned with the same Eq. 6 loss, continuing stage 1's discriminator (its
weights, LeCAM EMAs and optimiser state travel in the stage-1 file, `gan.*` keys).

The caller gives every path (`TokenizerJob`): `out` (the final weights, written atomically
at the end, and its metrics JSON next to it) and `ckpt_dir` (resumable checkpoints, outside
the rule's outputs). Resume, preemption and the MLflow run are the shared loop's
(maetok/train/loop.py); model files are maetok/models/io.py's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maetok import config as C
from maetok import losses
from maetok.data import ImageDataset
from maetok.models import standins
from maetok.models.io import GAN_PREFIX, CheckpointError, build_tokenizer, load_tokenizer, read_weights, save_tokenizer
from maetok.models.teachers import STANDIN_FILES, load_teachers
from maetok.models.tokenizer import MAETok, MAETok_models
from maetok.train import checkpoint as ckpt
from maetok.train.loop import Session, TrainJob, scaled_lr
from maetok.train.utils import (
    adamw,
    all_reduce_grads,
    autocast,
    broadcast_module,
    clip_grad_norm,
    ema_decay_at,
    index_stream,
    lr_at,
    param_groups,
    requires_grad,
    update_ema,
)
from maetok.utils.device import compile_enabled
from maetok.utils.images import resize_images
from maetok.utils.io import sha256_file, write_json


# --------------------------------------------------------------------------- stage 1 -> stage 2 GAN state
def gan_state(loss_fn: losses.TokenizerLoss, opt_d: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The discriminator heads, the LeCAM EMAs and the D optimiser's per-parameter state as flat
    tensors under `GAN_PREFIX` (`gan.heads.*`, `gan.lecam.*`, `gan.opt.<index>.<name>`), for
    the stage-1 file. The frozen backbone is not stored: stage 2 rebuilds it from the config."""
    out = {f"{GAN_PREFIX}heads.{k}": v for k, v in loss_fn.discriminator.heads.state_dict().items()}
    out |= {f"{GAN_PREFIX}lecam.{k}": v for k, v in loss_fn.lecam.state_dict().items()}
    for i, values in opt_d.state_dict()["state"].items():
        out |= {f"{GAN_PREFIX}opt.{i}.{name}": v for name, v in values.items() if torch.is_tensor(v)}
    return out


def load_gan_state(path: str | Path, loss_fn: losses.TokenizerLoss, opt_d: torch.optim.Optimizer) -> None:
    """Continue stage 1's GAN in stage 2 (paper §3.3: the same Eq. 6 loss): the heads, LeCAM
    EMAs and D optimiser moments stored by `gan_state` in the stage-1 file `path`. The stage-2
    learning rate and betas stay those of stage 2."""
    tensors, _ = read_weights(path, "tokenizer file", "train_tokenizer",
                                   keep=lambda key: key.startswith(GAN_PREFIX))
    fix = f"rerun stage 1 with this config (`snakemake --forcerun {path}`)"
    if not tensors:
        raise CheckpointError(
            f"{path} holds no discriminator state (`{GAN_PREFIX}*` keys), which stage 2 continues from: it was "
            f"written without a GAN (tokenizer.loss.disc_weight: 0) or by an older version; {fix}")

    def part(name):
        prefix = f"{GAN_PREFIX}{name}."
        return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        loss_fn.discriminator.heads.load_state_dict(part("heads"))
        loss_fn.lecam.load_state_dict(part("lecam"))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its discriminator does not fit this config's ({e}); {fix}") from None
    params = [p for group in opt_d.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, v in part("opt").items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    bad = [i for i, values in state.items()
           if i >= len(params) or any(v.shape != params[i].shape for k, v in values.items() if k != "step")]
    if bad:
        raise CheckpointError(f"{path}: its discriminator optimiser state does not fit this config's "
                                   f"discriminator (parameters {bad}); {fix}")
    opt_d.load_state_dict({"state": state, "param_groups": opt_d.state_dict()["param_groups"]})


# --------------------------------------------------------------------------- training
@dataclass(kw_only=True)
class TokenizerJob(TrainJob):
    """A tokenizer stage: the prepared data, the stand-in networks and, for stage 2, the stage-1 file."""
    data_dir: str
    aux_dir: str = ""
    init: str = ""          # stage 2: the stage-1 tokenizer file


def step_size(sizes: list[int], seed: int, step: int) -> int | None:
    """The image size of a mixed-resolution step (the same on every rank), None without mixing."""
    if len(sizes) < 2:
        return sizes[0] if sizes else None
    g = torch.Generator().manual_seed(seed * 7_919 + step * 31 + 1)
    return sizes[int(torch.randint(len(sizes), (), generator=g))]


def _batches(dataset: ImageDataset, batch_size: int, seed: int, start: int, rank: int, world: int,
             hflip: bool, device: torch.device, sizes: list[int] | tuple = ()):
    """(step, x) from `start` on, deterministic in (seed, step); x: (B/world, 3, H, W) in [-1, 1].
    With `sizes` (mixed-resolution training) each step's batch is resized to one of them."""
    in_memory = dataset.kind == "arrays"
    images = torch.from_numpy(np.array(dataset.images)) if in_memory else None  # (N, H, W) uint8, 61 MB at tiny
    for step, idx in enumerate(index_stream(len(dataset), batch_size, seed, start, rank, world), start):
        if in_memory:
            x = images[idx].unsqueeze(1).expand(-1, 3, -1, -1).float().div(127.5).sub(1)
        else:
            x = torch.stack([dataset[int(i)][0] for i in idx])
        if hflip:  # coins for the whole global batch, this rank's slice: the same flips for any world size
            g = torch.Generator().manual_seed(seed * 7_919 + step * 31)
            offset = rank * len(x)
            flip = torch.rand(offset + len(x), generator=g)[offset:] < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        size = step_size(list(sizes), seed, step)
        if size is not None:
            x = resize_images(x, size)
        yield step, x.to(device, non_blocking=True)


def build_loss(cfg: C.TokenizerConfig, aux_dir: str, stage: int = 1) -> losses.TokenizerLoss:
    """Eq. 6 with the configured perceptual network and discriminator backbone (stand-in or pretrained).
    `loss.perceptual_stage1: false` (the tiny budget) leaves the perceptual term to stage 2 when the
    variant has one; without one (AE, VAE, most ablations) it covers the last
    `loss.perceptual_last_steps` stage-1 steps, so every tokenizer ends with the full Eq. 6.
    The GAN starts at stage-1 step `loss.disc_start` and at stage-2 step `finetune.disc_start`."""
    L, net = cfg.loss, cfg.networks
    perceptual = disc = None
    start = 0
    disc_start = L.disc_start if stage == 1 else cfg.finetune.disc_start
    if stage == 1 and not L.perceptual_stage1:
        last = 0 if cfg.finetune.enabled else min(L.perceptual_last_steps, cfg.optim.steps)
        if last == 0:
            L = C.dataclasses.replace(L, perceptual_weight=0.0)
        start = cfg.optim.steps - last
    if net.kind == "standin":
        # STAND-IN: the label-supervised teacher CNN plays LPIPS-VGG and the DINO discriminator backbone.
        def backbone():
            return standins.load_weights(standins.Standin_models["teacher-clip"](),
                                         Path(aux_dir) / "teacher_clip.safetensors")
        if L.perceptual_weight > 0:
            perceptual = losses.PerceptualLoss(backbone())
        if L.disc_weight > 0:
            b = backbone()
            disc = losses.Discriminator(b, b.stage_channels)
    else:
        if L.perceptual_weight > 0:
            perceptual = losses.lpips_vgg(net.vgg_weights, net.lpips_weights)
        if L.disc_weight > 0:
            b = losses.dino_vits16(net.disc_weights, net.disc_model)
            disc = losses.Discriminator(b, [b.vit.embed_dim] * (len(b.taps) + 1))  # the patch embedding + each tap
    return losses.TokenizerLoss(perceptual, disc, perceptual_weight=L.perceptual_weight,
                                perceptual_warmup=L.perceptual_warmup_steps, perceptual_start=start,
                                disc_weight=L.disc_weight,
                                disc_start=disc_start, lecam_weight=L.lecam_weight,
                                diffaug_prob=0.5 if L.diffaug else 0.0, kl_weight=cfg.model.kl_weight)


def stage2_mask_ratio(step: int, cfg: C.FinetuneConfig, num_tokens: int | None = None) -> float:
    """Paper §3.3/§4.1: the mask ratio falls linearly from mask_start at step 0 to exactly 0 at step
    anneal_steps - 1, the last step of the anneal, and stays 0 (anneal_steps <= 1: no masking).

    With `num_tokens` (the image tokens N) the ratio is rounded down to whole tokens. The stage-1
    masking rounds the masked-token count up (`random_masking`), so without this every step whose
    ratio is above 0 would mask a token; rounded down, the steps whose linear ratio falls below 1/N
    encode unmasked images (at paper scale, the last ~1/(0.6 * 256) of the anneal), as the
    fine-tuning is meant to end."""
    if cfg.anneal_steps <= 1:
        return 0.0
    ratio = cfg.mask_start * max(0.0, 1.0 - step / (cfg.anneal_steps - 1))
    if num_tokens:
        ratio = math.floor(round(ratio * num_tokens, 6)) / num_tokens
    return ratio


def train_step(model, ema, loss_fn, opt, opt_d, x, step, optim, stage_cfg, teachers, device,
               aux_weight: float = 1.0, world: int = 1) -> dict:
    """One generator (tokenizer) update, then one discriminator update on the same reconstruction.
    With `world` > 1 the discriminator's gradients are averaged over the processes here: it runs
    several forward passes per backward (real and fake), which DDP does not allow."""
    if stage_cfg is None:
        mask_ratio = None
    else:
        patch = getattr(model, "module", model).patch_size
        mask_ratio = stage2_mask_ratio(step, stage_cfg, (x.shape[-2] // patch) * (x.shape[-1] // patch))
    with autocast(device, optim.bf16):
        out = model(x, mask_ratio=mask_ratio, targets=teachers)
        last_layer = getattr(model, "module", model).decoder.head.weight
        terms = loss_fn.generator_loss(x, out["x_rec"], step, last_layer,
                                       {k: (v, aux_weight) for k, v in out["aux_loss"].items()}, out["kl"])
    # logged with the losses: the share of image tokens masked (stage 2 anneals it to 0, paper §3.3)
    terms["mask_fraction"] = out["mask"].float().mean() if out["mask"] is not None else torch.zeros(())
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if optim.grad_clip > 0:
        clip_grad_norm(model.parameters(), optim.grad_clip)
    opt.step()
    update_ema(ema, getattr(model, "module", model), ema_decay_at(step, optim.ema_decay))
    if opt_d is not None and loss_fn.gan_active(step):
        with autocast(device, optim.bf16):
            d_terms = loss_fn.discriminator_loss(x, out["x_rec"].detach(), step)
        opt_d.zero_grad(set_to_none=True)
        d_terms["loss"].backward()
        all_reduce_grads(loss_fn.discriminator.heads.parameters(), world)
        if optim.grad_clip > 0:
            clip_grad_norm(loss_fn.discriminator.heads.parameters(), optim.grad_clip)
        opt_d.step()
        terms.update({f"disc_{k}": v for k, v in d_terms.items()})
    return {k: v.detach().float() for k, v in terms.items() if torch.is_tensor(v)}


def _run_key(cfg: C.TokenizerConfig, stage: int, job: TokenizerJob) -> str:
    """Identity of a run (config, stage, seed, the stage-1 weights, stand-in networks): a
    checkpoint of another run is moved aside, never resumed (checkpoint.retire_stale)."""
    inputs = [job.init] if stage == 2 else []
    if cfg.networks.kind == "standin":  # the teachers (also the perceptual/GAN nets), not the evaluator:
        # which other files exist yet depends on the order jobs ran in
        inputs += [str(Path(job.aux_dir) / name) for name in sorted(STANDIN_FILES.values())]
    return ckpt.run_key({"cfg": C.to_dict(cfg), "stage": stage, "seed": job.seed,
                         "inputs": {Path(p).name: sha256_file(p) for p in inputs if Path(p).is_file()}})


def _patch_size(size: str) -> int:
    with torch.device("meta"):
        return MAETok_models[size]().patch_size


def check_sizes(cfg: C.TokenizerConfig, image_size: int) -> None:
    """Every training size must split into whole patches (and a fixed-size linear aux decoder cannot mix)."""
    patch = _patch_size(cfg.model.size)
    for key, sizes in (("data.image_size", [image_size]), ("tokenizer.mixed_resolution", cfg.mixed_resolution)):
        bad = [s for s in sizes if s % patch]
        if bad:
            raise C.ConfigError(f"{key}: image size(s) {bad} are not divisible by the patch size {patch} of "
                                f"{cfg.model.size}; use multiples of {patch}")
    if len(set(cfg.mixed_resolution)) > 1 and cfg.aux.depth == "linear" and cfg.aux.targets:
        raise C.ConfigError("tokenizer.mixed_resolution needs a transformer aux decoder: aux.depth 'linear' is "
                            "fixed to one patch count; set aux.depth to 1, 3, 6 or 12, or mixed_resolution: []")


@dataclass
class _Networks:
    model: MAETok
    ema: MAETok
    loss_fn: losses.TokenizerLoss
    opt: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    lr: float
    teachers: dict | None
    aux_dims: dict


def _networks(cfg: C.TokenizerConfig, data_cfg: C.DataConfig, job: TokenizerJob, stage: int, optim: C.OptimConfig,
              s: Session) -> _Networks:
    """The tokenizer (stage 1: new, with its aux decoders and teachers; stage 2: the stage-1 file with the
    encoder frozen), its EMA, the Eq. 6 loss with its discriminator, and both optimisers."""
    if stage == 1:
        teachers, aux_dims = load_teachers(cfg.networks, list(cfg.aux.targets), job.aux_dir,
                                           data_cfg.image_size, _patch_size(cfg.model.size))
        model = build_tokenizer(cfg, data_cfg.image_size, aux_dims)
    else:
        teachers, aux_dims = None, {}
        model, _, _ = load_tokenizer(job.init)
        model.train()
        requires_grad(model.encoder, False)   # paper §3.3: the encoder (and bottleneck) stay frozen
        requires_grad(model.bottleneck, False)
    model.to(s.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    # The blocks of the networks that train, compiled per block type (`MAETok.compile_blocks`). Stage 2
    # compiles only the decoder: the frozen encoder runs once a step without a backward pass.
    if compile_enabled(optim.compile if stage == 1 else cfg.finetune.compile):
        model.compile_blocks(("encoder", "decoder", "aux_decoders") if stage == 1 else ("decoder",))
    loss_fn = build_loss(cfg, job.aux_dir, stage).to(s.device)
    disc = loss_fn.discriminator
    if disc is not None and s.world > 1:
        # One discriminator for all processes, as the official code (SyncBatchNorm heads under
        # DDP): batch statistics over the global batch, LeCAM EMAs of the global batch, gradients
        # averaged in train_step and rank 0's weights broadcast in `train`. The backbone stays frozen.
        disc.heads = losses.sync_batchnorm(disc.heads, s.device)
        loss_fn.lecam.distributed = True
    lr = scaled_lr(optim)
    opt = adamw(param_groups(model, optim.weight_decay), lr, (optim.beta1, optim.beta2))
    opt_d = adamw([p for p in disc.parameters() if p.requires_grad], lr,
                  (optim.beta1, optim.beta2)) if disc is not None else None
    return _Networks(model, ema, loss_fn, opt, opt_d, lr, teachers, aux_dims)


def _resume(net: _Networks, s: Session, stage: int, init: str) -> dict[str, torch.nn.Module]:
    """Resume from the newest checkpoint, else (stage 2) start from stage 1's GAN; the same discriminator
    on every rank (a fresh one is seeded per rank). Returns the checkpointed modules."""
    disc = net.loss_fn.discriminator
    modules = {"model": net.model, "ema": net.ema, "lecam": net.loss_fn.lecam,
               **({"disc": disc.heads} if disc is not None else {})}
    s.resume(modules, {"opt": net.opt, **({"opt_d": net.opt_d} if net.opt_d is not None else {})})
    if not s.resumed and stage == 2 and disc is not None:
        load_gan_state(init, net.loss_fn, net.opt_d)
    if disc is not None and s.world > 1:
        broadcast_module(disc.heads)
        broadcast_module(net.loss_fn.lecam)
    return modules


def train(cfg: C.TokenizerConfig, data_cfg: C.DataConfig, job: TokenizerJob, stage: int) -> dict:
    """Run stage 1 or 2 to completion, resuming from `job.ckpt_dir`; write `job.out`; return metrics."""
    check_sizes(cfg, data_cfg.image_size)
    optim = cfg.optim if stage == 1 else C.dataclasses.replace(
        cfg.optim, steps=cfg.finetune.steps, lr=cfg.finetune.lr, warmup_steps=0)
    with Session(job, name=f"{job.variant}/stage{stage}", stage=f"tokenizer_stage{stage}",
                 params={**C.to_dict(cfg), "data": C.to_dict(data_cfg)}, key=_run_key(cfg, stage, job),
                 steps=optim.steps, tags={"tokenizer": job.variant}) as s:
        net = _networks(cfg, data_cfg, job, stage, optim, s)
        _resume(net, s, stage, job.init)
        dmodel = (torch.nn.parallel.DistributedDataParallel(net.model, find_unused_parameters=True)
                  if s.world > 1 else net.model)
        batches = _batches(ImageDataset(job.data_dir, "train"), optim.batch_size, job.seed, s.start, s.rank,
                           s.world, data_cfg.hflip, s.device, cfg.mixed_resolution)
        groups = net.opt.param_groups + (net.opt_d.param_groups if net.opt_d is not None else [])

        def step_fn(step: int) -> dict[str, torch.Tensor]:
            _, x = next(batches)
            for g in groups:
                g["lr"] = lr_at(step, net.lr, optim.warmup_steps, optim.steps, optim.schedule, optim.min_lr_ratio)
            return train_step(dmodel, net.ema, net.loss_fn, net.opt, net.opt_d, x, step, optim,
                              cfg.finetune if stage == 2 else None, net.teachers, s.device, cfg.aux.weight, s.world)

        last = s.fit(step_fn, ckpt_every=optim.ckpt_every, log_every=optim.log_every,
                     desc=f"tokenizer stage {stage}")
        metrics = {"stage": stage, "steps": optim.steps, "resumed_from": s.start, "seconds": round(s.seconds, 1),
                   "images_per_second": round((optim.steps - s.start) * optim.batch_size / max(s.seconds, 1e-9), 1),
                   "final": last, "curve": s.curve}
        json_path = Path(job.out).with_suffix(".json")
        if s.rank == 0:
            net.ema.eval()
            gan = (gan_state(net.loss_fn, net.opt_d) if stage == 1 and cfg.finetune.enabled
                   and net.opt_d is not None else None)
            save_tokenizer(net.ema, job.out, cfg, data_cfg.image_size, net.aux_dims,
                           {"stage": stage, "variant": job.variant}, gan)
            write_json(json_path, metrics)
        s.finish({"seconds": s.seconds}, [json_path] if s.rank == 0 else [])
    return metrics
