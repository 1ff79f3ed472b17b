"""ImageNet-style data for the paper scale: file lists and the ADM center crop.

An ImageFolder tree `<root>/<split>/<class>/<image>` is scanned once by `prepare_data`
into a tab-separated list `relative/path<TAB>label`; training reads that list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maetok.data.fashion_mnist import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp", ".bmp")


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM center crop (Dhariwal & Nichol 2021): BOX-halve while large, bicubic resize, crop.

    Returns (size, size, 3) uint8.
    """
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image.convert("RGB"))
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def scan(root: str | Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """All images of `<root>/<split>` as (relative path, label) with classes sorted by name."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist. Set `scales.paper.data.root` in params.yaml to a directory "
                        f"with train/ and val/ sub-directories in ImageFolder layout (<split>/<class>/<image>).")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{split_dir} has no class sub-directories (expected <split>/<class>/<image>)")
    items = [(str(p.relative_to(root)), label)
             for label, c in enumerate(classes)
             for p in sorted((split_dir / c).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    return items, classes


def read_file_list(path: str | Path) -> tuple[list[str], np.ndarray]:
    paths, labels = [], []
    with open(path) as f:
        for line in f:
            rel, label = line.rstrip("\n").split("\t")
            paths.append(rel)
            labels.append(int(label))
    return paths, np.asarray(labels, dtype=np.int64)
