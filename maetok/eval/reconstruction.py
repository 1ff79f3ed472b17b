"""`eval_reconstruction`: rFID, PSNR and SSIM of a tokenizer (paper Tables 1, 4, 13).

In-domain: the val split (paper: ImageNet val; tiny: the Fashion-MNIST test split).
Out-of-domain, like the paper's COCO column (Table 4): COCO val at paper scale; at tiny a
STAND-IN, scikit-learn's bundled 8x8 digits upsampled to the tokenizer's resolution.

PSNR and SSIM are computed on images in [0, 1] with data_range 1 (the official script
uses data_range 2 on [0, 1] images, which inflates SSIM).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from maetok import config as C
from maetok.data import ImageDataset, load_manifest
from maetok.data.imagefolder import IMAGE_EXTENSIONS, center_crop_arr
from maetok.tracking import Run
from maetok.utils.images import save_grid, to_uint8
from maetok.utils.io import write_json


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004; Gaussian 11x11, sigma 1.5, valid region), (B, C, H, W) -> (B,)."""
    c = x.shape[1]
    w = _gaussian_window().to(x).expand(c, 1, -1, -1)
    k1, k2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t):
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + k1) * (2 * sxy + k2)) / ((mu_x**2 + mu_y**2 + k1) * (sxx + syy + k2))
    return s.flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, (B, C, H, W) -> (B,)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


@torch.no_grad()
def reconstruct_all(model, images: torch.Tensor, batch_size: int, device, desc: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> reconstructions uint8 (N, 3, H, W), encoder without masking."""
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, mininterval=5):
        x = images[i:i + batch_size].to(device).float().div(127.5).sub(1)
        out.append(to_uint8(model.decode(model.encode(x), img_size=x.shape[-1])).cpu())
    return torch.cat(out)


def pixel_metrics(real: torch.Tensor, recon: torch.Tensor, batch_size: int = 1000) -> dict:
    """Mean PSNR and SSIM of uint8 image pairs on [0, 1] with data_range 1."""
    p, s = [], []
    for i in range(0, len(real), batch_size):
        a, b = real[i:i + batch_size].float() / 255, recon[i:i + batch_size].float() / 255
        p.append(psnr(a, b))
        s.append(ssim(a, b))
    return {"psnr": torch.cat(p).mean().item(), "ssim": torch.cat(s).mean().item()}


def val_images(data_dir: str | Path, n: int) -> torch.Tensor:
    ds = ImageDataset(data_dir, "val")
    n = min(n, len(ds))
    return torch.stack([ds.uint8(i) for i in range(n)])


def ood_images(cfg: C.EvaluationConfig, size: int) -> tuple[torch.Tensor, str]:
    """The out-of-domain set: uint8 (N, 3, size, size) and its name."""
    if cfg.ood_dataset == "digits":
        from sklearn.datasets import load_digits

        d = torch.from_numpy(load_digits().images).float().div(16).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
        d = F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False)
        return d.mul(255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), \
            "digits (STAND-IN for COCO)"
    root = Path(cfg.ood_root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) if root.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no images under {root} (params.yaml `evaluation.ood_root`): point it at COCO "
                                "val2017 (https://cocodataset.org) or set `evaluation.ood_dataset: digits`")
    from PIL import Image

    arrs = []
    for f in files[: cfg.num_recon]:
        with Image.open(f) as im:
            arrs.append(center_crop_arr(im, size))
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous(), "COCO val"


def run(tokenizer_path: str | Path, data_dir: str | Path, cfg: C.EvaluationConfig, evaluator: str | None,
        out: str | Path, grid: str | Path, fid_cache: str | Path, tags: dict | None = None) -> dict:
    """Evaluate one tokenizer in-domain and out-of-domain; write the metrics JSON and a grid PNG."""
    from maetok.eval.fidelity import fidelity_metrics
    from maetok.models.io import load_tokenizer
    from maetok.utils.images import resize_images

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tok_cfg, info = load_tokenizer(tokenizer_path, device)
    size = int(info["image_size"])
    metrics = {"tokenizer": str(tokenizer_path), "variant": info.get("variant", "")}
    val = val_images(data_dir, cfg.num_recon)
    # Reference statistics are cached under a name that says where the images come from: the
    # prepared data (dataset and its image size: data/ and data_hires/ differ), how they were
    # resized, and how many there are.
    m = load_manifest(data_dir)
    source = f"{m.get('dataset', 'data')}{m['image_size']}-val{len(val)}"
    ood, ood_name = ood_images(cfg, size)
    sets = {"val": (val, "val split", source), "ood": (ood, ood_name, f"ood-{cfg.ood_dataset}{len(ood)}-{size}px")}
    hires = max(tok_cfg.mixed_resolution, default=size)
    if hires > size:  # mixed-resolution training (Table 13b): the val split at the largest training size
        up = resize_images(val.float().div(127.5).sub(1), hires)
        sets["hires"] = (to_uint8(up), f"val split resized to {hires} px", f"{source}-up{hires}px")
    for split, (real, name, ref) in sets.items():
        recon = reconstruct_all(model, real, cfg.batch_size, device, f"reconstruct {split}")
        fid = fidelity_metrics(recon, real, cfg, evaluator, fid_cache, metrics=("fid",), reference_name=ref)
        metrics[split] = {"dataset": name, "n": len(real), "image_size": real.shape[-1], "rfid": fid["fid"],
                          **pixel_metrics(real, recon)}
        if split == "val":
            save_grid(torch.cat([real[:16], recon[:16]]), grid, nrow=16, scale=4 if size <= 64 else 1)
    for k in ("rfid", "psnr", "ssim"):
        metrics[k] = metrics["val"][k]
    write_json(out, metrics)
    tags = {"tokenizer": (tags or {}).get("variant") or metrics["variant"], **(tags or {}),
            "stage": "eval_reconstruction"}
    with Run(f"{metrics['variant']}/eval_reconstruction", tags,
             {**C.to_dict(cfg), "tokenizer_path": str(tokenizer_path), "evaluator": evaluator or ""}) as r:
        r.log_metrics({f"{s}_{k}": metrics[s][k] for s in sets for k in ("rfid", "psnr", "ssim")
                       if not math.isnan(metrics[s][k])})
        r.log_artifact(out)
        r.log_artifact(grid)
    return metrics
