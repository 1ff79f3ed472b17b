"""`train_standin`: the tiny-scale stand-in networks (DESIGN.md).

- teacher `clip`: a small CNN trained with labels (the CLIP-type target; also the
  perceptual-loss network and the discriminator backbone),
- teacher `dino`: a small CNN trained self-supervised (SimCLR) for the DINO-type target,
- evaluator: a classifier whose features replace Inception-v3 for FID/IS/PR.

Each writes its weights (safetensors) and a metrics JSON with its held-out accuracy, so
the tables can say how good each stand-in is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maetok import config as C
from maetok.data import ImageDataset
from maetok.models import standins
from maetok.tracking import Run
from maetok.utils.io import write_json

ROLES = ("teacher-dino", "teacher-clip", "evaluator")


def run(role: str, cfg: C.StandinsConfig, data_dir: str | Path, out: str | Path, seed: int = 0,
        tags: dict | None = None) -> dict:
    """Train stand-in `role` on the prepared train split; evaluate on the val split; write `out` + JSON."""
    if role not in ROLES:
        raise ValueError(f"unknown stand-in role {role!r}; valid: {list(ROLES)}")
    train, val = ImageDataset(data_dir, "train"), ImageDataset(data_dir, "val")
    if train.kind != "arrays":
        raise ValueError("stand-ins are trained at scale: tiny only (paper scale uses pretrained networks)")
    images, labels = np.asarray(train.images), np.asarray(train.labels)
    eval_data = (np.asarray(val.images), np.asarray(val.labels))
    steps = cfg.evaluator_steps if role == "evaluator" else cfg.teacher_steps
    net = standins.seeded(standins.Standin_models[role], seed)
    common = dict(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, eval_data=eval_data, bf16=cfg.bf16)
    if role == "teacher-dino":
        metrics = standins.train_self_supervised(net, images, labels=labels, **common)
    else:
        metrics = standins.train_supervised(net, images, labels, **common)
    metrics = {"role": role, "stand_in_for": {"teacher-dino": "DINOv2-L", "teacher-clip": "SigLIP / LPIPS-VGG / "
               "DINO discriminator", "evaluator": "Inception-v3 (FID/IS) and VGG16 (precision/recall)"}[role],
               "params": standins.count_params(net), **metrics}
    standins.save_weights(net, out, metadata={"role": role})
    write_json(Path(out).with_suffix(".json"), metrics)
    with Run(role, {**(tags or {}), "stage": "train_standin", "variant": role}, C.to_dict(cfg)) as mlrun:
        mlrun.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return metrics
