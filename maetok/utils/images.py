"""Image helpers: resizing, [-1, 1] <-> uint8, and PNG grids written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maetok.utils.io import atomic_path


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, C, size, size): bicubic, antialiased when shrinking. The one
    resize of the pipeline: mixed-resolution training, the 2x evaluation of Table 13b and the tiny
    `hires` data all use it, so their images agree exactly."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                         antialias=size < x.shape[-1]).clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float in [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
    return x.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, scale: int = 1, pad: int = 1) -> None:
    """Write uint8 (N, C, H, W) images as one PNG grid with `nrow` images per row."""
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    arr = images.permute(0, 2, 3, 1).expand(-1, -1, -1, 3).cpu().numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = arr[i]
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
