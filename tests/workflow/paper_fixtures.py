"""TEST FIXTURES for the paper-path rehearsal (test_rehearsal.py): the inputs a user provides at
paper scale, in the same on-disk formats, made up on the spot. Nothing here is pretrained.

- `write_imagenet`: an ImageFolder tree `<root>/{train,val}/<wnid>/*.JPEG` (what
  `scales.paper.data.root` points at) of synthetic pictures in a few sizes around 256 px, one
  large enough for the ADM center crop's box-halving step.
- `write_coco`: a flat folder of synthetic `.jpg` files (what `evaluation.ood_root` points at).
- `write_random_weights`: RANDOMLY INITIALISED networks saved under the file names and in the
  formats of the real downloads named in params.yaml's paper block, so the code that finds and
  loads them runs exactly as on a cluster:
    * DINOv2-L, SigLIP-L (teachers) and DINOv2-S (discriminator backbone): timm's own state dict
      of `timm.create_model(<name>, pretrained=False)` at the model's default size (DINOv2's
      518 px position table, as in the hub file), as safetensors, like the hub's model.safetensors;
    * VGG16: torchvision's state dict (`features.*`, `classifier.*`) saved with torch.save, as
      vgg16-397923af.pth; once under `networks.vgg_weights` (LPIPS backbone) and once under
      `<evaluation.torch_home>/hub/checkpoints/` (torch-fidelity's precision/recall features);
    * LPIPS v0.1 linear heads: `lin{0..4}.model.1.weight` of shape (1, C, 1, 1), torch.save;
    * torch-fidelity's Inception-v3 (FID/IS): the state dict of its FeatureExtractorInceptionV3
      under its release file name, in `<evaluation.torch_home>/hub/checkpoints/`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from maetok import config as C
from maetok.eval.fidelity import INCEPTION_FILE, VGG16_FILE

# Two ImageNet classes (tench, goldfish): their real WordNet ids, so paths look like a user's.
WNIDS = ("n01440764", "n01443537")
# (width, height) of the synthetic JPEGs, cycled: square, landscape, portrait, and one whose short
# side is >= 512, which the ADM center crop first box-halves (maetok/data/imagefolder.py).
SIZES = ((256, 256), (320, 256), (256, 300), (600, 520))
LPIPS_CHANNELS = (64, 128, 256, 512, 512)  # VGG16 stages tapped by LPIPS


def _picture(rng: np.random.Generator, size: tuple[int, int], label: int) -> Image.Image:
    """A smooth synthetic picture: a class-tinted gradient plus a bright disc at a random place."""
    w, h = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    tint = np.array([[200, 60, 40], [40, 90, 210]][label % 2], dtype=np.float32)
    img = tint * (0.4 + 0.6 * (xx / w))[..., None] + 30 * np.sin(yy / rng.uniform(8, 24))[..., None]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.1, 0.25) * min(w, h)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 235
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_imagenet(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """`root/<split>/<wnid>/*.JPEG` for the WNIDS classes; per_class: images per class and split."""
    per_class = per_class or {"train": 3, "val": 2}
    rng = np.random.default_rng(seed)
    k = 0
    for split, n in per_class.items():
        for label, wnid in enumerate(WNIDS):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{k + 1:08d}.JPEG"
                _picture(rng, SIZES[k % len(SIZES)], label).save(d / name, quality=90)
                k += 1
    return root


def write_coco(root: Path, n: int = 4, seed: int = 1) -> Path:
    """`root/<12-digit id>.jpg`, COCO val2017's naming."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _picture(rng, SIZES[(i + 1) % len(SIZES)], i).save(root / f"{139 + i:012d}.jpg", quality=90)
    return root


def _save_timm(name: str, path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    model = timm.create_model(name, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _random_inception_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception-v3 module with its random init (its constructor would load weights)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the random init

    with mock.patch.object(torch, "load", return_value={}):  # no weights file is read
        net = RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path="random-init")
    # He-initialised convolutions keep the activations' scale through the ~90 conv + BN + ReLU layers;
    # PyTorch's default init shrinks them to denormal floats, which makes every conv crawl on a CPU.
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.state_dict()


def write_random_weights(root: Path, networks: C.NetworksConfig, torch_home: str, seed: int = 0) -> list[Path]:
    """Every pretrained-network file the paper block of params.yaml names, randomly initialised, at
    `root / <path as params.yaml writes it>`; returns the files written."""
    from torchvision.models import vgg16

    absolute = [p for p in (networks.dino_weights, networks.clip_weights, networks.disc_weights,
                            networks.vgg_weights, networks.lpips_weights, torch_home) if Path(p).is_absolute()]
    if absolute:
        raise ValueError(f"params.yaml names absolute weight paths {absolute}; the fixtures need them relative")
    torch.manual_seed(seed)
    ckpts = root / torch_home / "hub" / "checkpoints"
    files = {
        "dino": root / networks.dino_weights, "clip": root / networks.clip_weights,
        "disc": root / networks.disc_weights, "vgg": root / networks.vgg_weights,
        "lpips": root / networks.lpips_weights, "inception": ckpts / INCEPTION_FILE, "fid_vgg": ckpts / VGG16_FILE,
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    for key, name in (("dino", networks.dino_model), ("clip", networks.clip_model), ("disc", networks.disc_model)):
        _save_timm(name, files[key])
    torch.save(vgg16(weights=None).state_dict(), files["vgg"])
    _link_or_copy(files["vgg"], files["fid_vgg"])  # the same file in both places
    torch.save({f"lin{i}.model.1.weight": 0.1 * torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)},
               files["lpips"])
    torch.save(_random_inception_state(), files["inception"])
    return list(files.values())


def write_paper_inputs(root: Path, params: C.Params) -> dict[str, Path]:
    """The whole rehearsal input set under `root`: {"imagenet", "coco", "resources"}. Weight files go
    where params.yaml's paper block names them, relative to `root` (so `root` plays the repository)."""
    paper = params.scales["paper"]
    write_random_weights(root, paper.tokenizer.networks, paper.evaluation.torch_home)
    return {"imagenet": write_imagenet(root / "datasets" / "imagenet"),
            "coco": write_coco(root / "datasets" / "coco" / "val2017"),
            "resources": root / "resources"}
