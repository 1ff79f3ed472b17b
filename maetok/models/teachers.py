"""Frozen teachers whose features are the DINO-/CLIP-type aux targets (paper §3.2).

`pretrained` (paper scale): timm models built from local weight files named in
params.yaml (DINOv2-L, SigLIP); a missing file is an error naming it, never a random
init. `standin` (tiny scale): the small CNNs trained by the `train_standin` rule.

Each teacher is returned as a callable x (B, 3, H, W) in [-1, 1] -> features that the
tokenizer resamples onto its patch grid, plus its feature width.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from maetok.config import NetworksConfig
from maetok.models import standins

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STANDIN_FILES = {"dino": "teacher_dino.safetensors", "clip": "teacher_clip.safetensors"}


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file named in params.yaml is absent."""


def require_file(path: str, key: str, how: str) -> Path:
    if not path or not Path(path).is_file():
        raise MissingWeightsError(
            f"weight file {path!r} (params.yaml `{key}`) not found. {how} "
            "Then `dvc add resources/weights` to version it. Weights are never random-initialised in its place.")
    return Path(path)


def _timm_teacher(name: str, weights: str, key: str, image_size: int) -> tuple[Callable, int]:
    import timm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = require_file(weights, key, f"Download timm/{name} on a machine with internet "
                        f"(e.g. `huggingface-cli download timm/{name}`) and save its weights there.")
    patch = 14 if "patch14" in name else 16
    size = image_size // 16 * patch  # same token grid as the tokenizer's 16-px patches
    model = timm.create_model(name, pretrained=True, num_classes=0, img_size=size,
                              pretrained_cfg_overlay=dict(file=str(path)))
    model.requires_grad_(False).eval()
    siglip = "siglip" in name
    mean = torch.tensor((0.5,) * 3 if siglip else IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor((0.5,) * 3 if siglip else IMAGENET_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        x = (x.float() + 1) / 2
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        x = (x - mean.to(x.device)) / std.to(x.device)
        tokens = model.forward_features(x)  # (B, prefix + grid^2, C), final norm applied
        return tokens[:, model.num_prefix_tokens:]

    return _on_device(model, features), model.num_features


def _on_device(model: torch.nn.Module, fn: Callable) -> Callable:
    def call(x):
        if next(model.parameters()).device != x.device:
            model.to(x.device)
        return fn(x)

    call.module = model
    return call


def _standin_teacher(name: str, aux_dir: str | Path, patch_size: int) -> tuple[Callable, int]:
    """Features on the patch grid of the input's own size (mixed-resolution training included)."""
    role = f"teacher-{name}"
    path = Path(aux_dir) / STANDIN_FILES[name]
    net = standins.load_weights(standins.Standin_models[role](), path)
    net.requires_grad_(False).eval().to(memory_format=torch.channels_last)  # as teacher_features' input
    return (_on_device(net, lambda x: standins.teacher_features(net, x.float(), x.shape[-1] // patch_size)),
            net.num_features)


def load_teachers(cfg: NetworksConfig, targets: list[str], aux_dir: str | Path, image_size: int,
                  patch_size: int) -> tuple[dict[str, Callable], dict[str, int]]:
    """Teachers for the DINO-/CLIP-type targets among `targets`: ({name: fn}, {name: feature dim})."""
    fns, dims = {}, {}
    for name in targets:
        if name not in ("dino", "clip"):
            continue
        if cfg.kind == "standin":
            fns[name], dims[name] = _standin_teacher(name, aux_dir, patch_size)
        else:
            model = cfg.dino_model if name == "dino" else cfg.clip_model
            weights = cfg.dino_weights if name == "dino" else cfg.clip_weights
            fns[name], dims[name] = _timm_teacher(model, weights, f"tokenizer.networks.{name}_weights", image_size)
    return fns, dims
