"""`train_standin`: training the tiny-scale stand-in networks (maetok/models/standins.py).

- teacher `clip`: a small CNN trained with labels (the CLIP-type target; also the
  perceptual-loss network and the discriminator backbone),
- teacher `dino`: a small CNN trained self-supervised (SimCLR) for the DINO-type target,
- evaluator: a classifier whose features replace Inception-v3 for FID/IS/PR.

Each writes its weights (safetensors) and a metrics JSON with its held-out accuracy, so
the tables can say how good each stand-in is. A job runs in the shared training loop
(maetok/train/loop.py) without checkpoints: it takes minutes, and a stopped one starts over.
`train_supervised` / `train_self_supervised` run the same steps outside a job.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from maetok import config as C
from maetok.data import ImageDataset
from maetok.models import standins
from maetok.models.standins import IMG_SIZE, accuracy, embed, knn_accuracy, to_model_input
from maetok.train.loop import Session, TrainJob
from maetok.utils.device import bf16_autocast
from maetok.utils.io import write_json

ROLES = ("teacher-dino", "teacher-clip", "evaluator")
STAND_IN_FOR = {"teacher-dino": "DINOv2-L", "teacher-clip": "SigLIP / LPIPS-VGG / DINO discriminator",
                "evaluator": "Inception-v3 (FID/IS) and VGG16 (precision/recall)"}


@dataclass(kw_only=True)
class StandinJob(TrainJob):
    """One stand-in network: its role and the prepared data it trains on."""
    role: str
    data_dir: str


def run(cfg: C.StandinsConfig, job: StandinJob) -> dict:
    """Train stand-in `job.role` on the prepared train split; evaluate on the val split; write `job.out` + JSON."""
    if job.role not in ROLES:
        raise ValueError(f"unknown stand-in role {job.role!r}; valid: {list(ROLES)}")
    train, val = ImageDataset(job.data_dir, "train"), ImageDataset(job.data_dir, "val")
    if train.kind != "arrays":
        raise ValueError("stand-ins are trained at scale: tiny only (paper scale uses pretrained networks)")
    images, labels = np.asarray(train.images), np.asarray(train.labels)
    eval_data = (np.asarray(val.images), np.asarray(val.labels))
    steps = cfg.evaluator_steps if job.role == "evaluator" else cfg.teacher_steps
    with Session(job, name=job.role, stage="train_standin", params=C.to_dict(cfg), key=None, steps=steps,
                 tags={"variant": job.role}) as s:
        net = standins.seeded(standins.Standin_models[job.role], job.seed)
        common = dict(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=job.seed, eval_data=eval_data,
                      bf16=cfg.bf16)
        if job.role == "teacher-dino":
            step, finish = _self_supervised(net, images, labels=labels, **common)
        else:
            step, finish = _supervised(net, images, labels, **common)
        s.fit(step, log_every=max(1, steps // 100), desc=f"train_standin {job.role}")
        metrics = {"role": job.role, "stand_in_for": STAND_IN_FOR[job.role], "params": standins.count_params(net),
                   **finish(s.seconds)}
        json_path = Path(job.out).with_suffix(".json")
        standins.save_weights(net, job.out, metadata={"role": job.role})
        write_json(json_path, metrics)
        s.finish(metrics, [json_path])
    return metrics


# --------------------------------------------------------------------------------------
# Augmentation, batches, schedule
# --------------------------------------------------------------------------------------
def _random_view(x, gen, scale=(1.0, 1.0), max_shift=0.0, jitter=0.0):
    """Batched random crop-and-resize, horizontal flip, translation and brightness/contrast jitter.

    scale: range of the crop's side as a fraction of the image side; max_shift: extra
    translation as a fraction of the half side (grid units); jitter: strength of the
    per-sample brightness/contrast change. Every draw comes from `gen`.
    """
    b = x.shape[0]
    s = torch.empty(b).uniform_(*scale, generator=gen)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * ((1 - s)[:, None] + max_shift)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s * flip
    theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        brightness = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter * 0.5
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + brightness
    return x


def _split_holdout(n, holdout, gen):
    perm = torch.randperm(n, generator=gen)
    n_eval = int(round(n * holdout))
    return perm[n_eval:], perm[:n_eval]


def _batches(n, batch_size, gen):
    """Endless stream of index batches: shuffled epochs, last partial batch dropped."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def _lr_at(step, steps, lr, warmup_frac=0.05):
    warmup = max(1, int(steps * warmup_frac))
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _eval_split(images, labels, eval_data, holdout, gen):
    """(train images, train labels, eval images, eval labels); holds out a seeded split if no eval_data."""
    if eval_data is not None:
        return images, labels, eval_data[0], eval_data[1]
    if labels is None:
        return images, None, None, None
    train_idx, eval_idx = _split_holdout(len(images), holdout, gen)
    labels = torch.as_tensor(labels)
    return images[train_idx.numpy()], labels[train_idx], images[eval_idx.numpy()], labels[eval_idx]


class _Optimise:
    """One optimiser step on a loss, keeping the running loss the metrics report (`final_loss`)."""

    def __init__(self, opt):
        self.opt, self.loss_ema = opt, None

    def __call__(self, loss) -> dict[str, torch.Tensor]:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss_ema = loss.item() if self.loss_ema is None else 0.95 * self.loss_ema + 0.05 * loss.item()
        return {"loss": loss.detach()}


def _alone(step, finish, steps: int, progress: bool, desc: str) -> dict:
    """Run the steps outside a training job (no checkpoints, no MLflow); the metrics."""
    start = time.time()
    for i in tqdm(range(steps), disable=not progress, desc=desc):
        step(i)
    return finish(time.time() - start)


# --------------------------------------------------------------------------------------
# Training: supervised ("clip" teacher, evaluator) and self-supervised ("dino" teacher)
# --------------------------------------------------------------------------------------
def _supervised(backbone, images, labels, steps, batch_size=256, lr=2e-3, seed=0, eval_data=None, holdout=0.1,
                weight_decay=5e-4, bf16=False):
    """(step(i), finish(seconds) -> metrics) of `train_supervised`."""
    gen = torch.Generator().manual_seed(seed)
    images, labels, eval_images, eval_labels = _eval_split(images, labels, eval_data, holdout, gen)
    labels = torch.as_tensor(labels).long()
    opt = torch.optim.AdamW(backbone.parameters(), lr=lr, weight_decay=weight_decay)
    optimise = _Optimise(opt)
    batches = _batches(len(images), batch_size, gen)
    backbone.train()

    def step(i):
        for group in opt.param_groups:
            group["lr"] = _lr_at(i, steps, lr)
        idx = next(batches)
        x = _random_view(to_model_input(images[idx.numpy()]), gen, max_shift=2 / (IMG_SIZE / 2))
        with bf16_autocast("cpu", bf16):
            loss = F.cross_entropy(backbone.head(backbone(x)[1]).float(), labels[idx])
        return optimise(loss)

    def finish(seconds):
        backbone.eval()
        return {"steps": steps, "train_seconds": seconds, "images_per_second": steps * batch_size / seconds,
                "final_loss": optimise.loss_ema, "test_acc": accuracy(backbone, eval_images, eval_labels),
                "num_eval": len(eval_labels)}

    return step, finish


def train_supervised(backbone, images, labels, steps, batch_size=256, lr=2e-3, seed=0, progress=True,
                     eval_data=None, holdout=0.1, weight_decay=5e-4, bf16=False):
    """Cross-entropy training of `backbone` (a SmallCNN with a class head) in place.

    images: uint8 (N, [C,] H, W) or float in [-1, 1]; labels: (N,) ints. Augmentation is
    flip + up to 2 px translation. Accuracy is measured on `eval_data = (images, labels)`
    or, if that is None, on a seeded `holdout` fraction kept out of training.
    Deterministic on CPU for a given seed. Returns a metrics dict.
    """
    return _alone(*_supervised(backbone, images, labels, steps, batch_size, lr, seed, eval_data, holdout,
                               weight_decay, bf16), steps, progress, "train_supervised")


def nt_xent(z1, z2, temperature=0.2):
    """SimCLR's normalised-temperature cross-entropy over 2B views (Chen et al. 2020)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, targets)


def _self_supervised(backbone, images, steps, batch_size=256, lr=2e-3, seed=0, labels=None, eval_data=None,
                     holdout=0.1, weight_decay=5e-4, temperature=0.2, knn_bank=10_000, bf16=False):
    """(step(i), finish(seconds) -> metrics) of `train_self_supervised`."""
    gen = torch.Generator().manual_seed(seed)
    images, labels, eval_images, eval_labels = _eval_split(images, labels, eval_data, holdout, gen)
    probe = eval_labels is not None
    if probe:
        bank_idx = torch.randperm(len(images), generator=gen)[:knn_bank].numpy()
        bank_labels = torch.as_tensor(labels)[bank_idx]

    def knn():
        return knn_accuracy(embed(backbone, images[bank_idx]), bank_labels, embed(backbone, eval_images), eval_labels)

    metrics = {"knn_acc_init": knn()} if probe else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        c = backbone.num_features
        projector = nn.Sequential(nn.Linear(c, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 128))
    params = list(backbone.parameters()) + list(projector.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    optimise = _Optimise(opt)
    batches = _batches(len(images), batch_size, gen)
    backbone.train()

    def step(i):
        for group in opt.param_groups:
            group["lr"] = _lr_at(i, steps, lr)
        x = to_model_input(images[next(batches).numpy()])
        views = torch.cat([_random_view(x, gen, scale=(0.6, 1.0), jitter=0.4) for _ in range(2)])
        with bf16_autocast("cpu", bf16):
            z = projector(backbone(views)[1]).float()
        return optimise(nt_xent(*z.chunk(2), temperature=temperature))

    def finish(seconds):
        backbone.eval()
        metrics.update(steps=steps, train_seconds=seconds, images_per_second=steps * batch_size / seconds,
                       final_loss=optimise.loss_ema, method="simclr")
        if probe:
            metrics.update(knn_acc=knn(), num_eval=len(eval_labels))
        return metrics

    return step, finish


def train_self_supervised(backbone, images, steps, batch_size=256, lr=2e-3, seed=0, progress=True,
                          labels=None, eval_data=None, holdout=0.1, weight_decay=5e-4, temperature=0.2,
                          knn_bank=10_000, bf16=False):
    """SimCLR (two augmented views, NT-Xent) training of `backbone` in place; labels are never trained on.

    Why SimCLR for the "dino" stand-in: like DINO it learns from two views of each image
    without labels, but the contrastive negatives rule out the collapse that
    self-distillation (DINO/BYOL/SimSiam) can fall into in a few hundred CPU steps.
    Views: crop of 60-100% side + resize, flip, brightness/contrast jitter.

    If `labels` (or `eval_data`) are given, reports a weighted 20-NN accuracy of the pooled
    features on the held-out split, before (`knn_acc_init`) and after training (`knn_acc`).
    The projector (C -> 256 -> 128) is discarded after training.
    """
    return _alone(*_self_supervised(backbone, images, steps, batch_size, lr, seed, labels, eval_data, holdout,
                                    weight_decay, temperature, knn_bank, bf16), steps, progress,
                  "train_self_supervised")
