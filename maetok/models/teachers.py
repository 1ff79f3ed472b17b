"""Frozen teachers whose features are the DINO-/CLIP-type aux targets (paper §3.2).

`pretrained` (paper scale): timm models built from local weight files named in
params.yaml (DINOv2-L, SigLIP); a missing file is an error naming it, never a random
init. `standin` (tiny scale): the small CNNs trained by the `train_standin` rule.

Each teacher is returned as a callable x (B, 3, H, W) in [-1, 1] -> features that the
tokenizer resamples onto its patch grid, plus its feature width. How the images reach a
pretrained teacher (patch size, input size, normalisation) is not in the paper; params.yaml
`networks.teacher_input` and `networks.clip_norm` choose, by default as the official code
(docs/deviations.md). `teacher_dims` gives the widths without weights, for `maetok model-info`.
"""

from __future__ import annotations

import functools
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


def download_hint(name: str) -> str:
    """Where the weights of timm model `name` come from, read from timm's own pretrained config of that
    name (so the file offered is always one that loads into the configured model)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return f"timm knows no pretrained weights for {name!r}: check the model name."
    hint = []
    if cfg.hf_hub_id:
        file = cfg.hf_hub_filename or "model.safetensors"
        hint.append(f"`huggingface-cli download {cfg.hf_hub_id} {file}` (the Hugging Face hub repo "
                    f"{cfg.hf_hub_id}, file {file})")
    if cfg.url:
        hint.append(f"the original release {cfg.url}")
    return f"Download the weights of timm's {name} on a machine with internet: {' or '.join(hint)}."


@functools.cache
def timm_geometry(name: str) -> tuple[int, int]:
    """(feature width, patch size) of timm model `name`, from its architecture built on the meta device:
    the one place the teacher widths come from (the aux decoders' heads, `maetok model-info`)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    return model.num_features, model.patch_embed.patch_size[0]


def teacher_dims(cfg: NetworksConfig, targets) -> dict[str, int]:
    """{target: feature width} of the DINO-/CLIP-type teachers among `targets`, without loading weights."""
    dims = {}
    for name in targets:
        if name not in ("dino", "clip"):
            continue
        if cfg.kind == "standin":
            with torch.device("meta"):
                dims[name] = standins.Standin_models[f"teacher-{name}"]().num_features
        else:
            dims[name] = timm_geometry(cfg.dino_model if name == "dino" else cfg.clip_model)[0]
    return dims


def teacher_geometry(name: str, image_size: int, patch_size: int, teacher_input: str) -> tuple[int, int]:
    """(input size, patch size) the teacher runs at, so that its token grid is the tokenizer's.

    `official` (the official code): the patch embedding resampled to the tokenizer's patch, at the
    tokenizer's image size (DINOv2-L/14 as /16 at 256 px). `native`: the teacher's own patch, the
    images resized to image_size / patch_size patches of it (224 px for a /14 teacher at 256 / 16).
    """
    if teacher_input == "official":
        return image_size, patch_size
    native = timm_geometry(name)[1]
    return image_size // patch_size * native, native


def input_norm(target: str, clip_norm: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a teacher's inputs: ImageNet's, except SigLIP's own 0.5 for `clip` with
    clip_norm `siglip` (the official code feeds SigLIP ImageNet-normalised images)."""
    if target == "clip" and clip_norm == "siglip":
        return (0.5,) * 3, (0.5,) * 3
    return IMAGENET_MEAN, IMAGENET_STD


def _timm_teacher(target: str, cfg: NetworksConfig, image_size: int, patch_size: int) -> tuple[Callable, int]:
    import timm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = cfg.dino_model if target == "dino" else cfg.clip_model
    weights = cfg.dino_weights if target == "dino" else cfg.clip_weights
    path = require_file(weights, f"tokenizer.networks.{target}_weights",
                        download_hint(name) + " Save the file at that path.")
    size, patch = teacher_geometry(name, image_size, patch_size, cfg.teacher_input)
    # timm resamples a pretrained patch kernel of another size (bicubic, antialiased) and the
    # position table to the new grid while loading.
    model = timm.create_model(name, pretrained=True, num_classes=0, img_size=size, patch_size=patch,
                              pretrained_cfg_overlay=dict(file=str(path)))
    model.requires_grad_(False).eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_norm(target, cfg.clip_norm))

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
            fns[name], dims[name] = _timm_teacher(name, cfg, image_size, patch_size)
    return fns, dims
