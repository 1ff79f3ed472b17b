"""Datasets: canonical prepared data on disk and torch Datasets that read it.

`prepare(cfg, out_dir)` writes the canonical dataset of a scale; `ImageDataset` reads
it back as (3, H, W) float tensors in [-1, 1] with integer labels, for both scales.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maetok.data.fashion_mnist import DataError
from maetok.data.imagefolder import center_crop_arr, read_file_list
from maetok.utils.io import load_npy, read_json

SPLITS = ("train", "val")

__all__ = ["DataError", "ImageDataset", "SPLITS", "load_manifest", "to_unit_range"]


def to_unit_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x_uint8.float().div(127.5).sub(1.0)


def load_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path} not found: run `snakemake prepare_data` (or `maetok prepare-data`) first")
    return read_json(path)


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """A prepared .npy array, or a DataError saying how to rebuild it."""
    return load_npy(path, mmap, DataError, "rerun prepare_data (`snakemake -R prepare_data`, or `maetok prepare-data`)")


class ImageDataset(torch.utils.data.Dataset):
    """The prepared dataset of one split, as (x: (3, H, W) in [-1, 1], y: int).

    Tiny scale: memory-mapped uint8 arrays (N, H, W), replicated to RGB here.
    Paper scale: a file list over an ImageFolder tree, ADM center crop per item.
    """

    def __init__(self, data_dir: str | Path, split: str, hflip: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.data_dir = Path(data_dir)
        self.manifest = load_manifest(data_dir)
        self.hflip = hflip
        self.kind = self.manifest["kind"]
        info = self.manifest["splits"][split]
        if self.kind == "arrays":
            self.images = _load_array(self.data_dir / info["images"], mmap=True)
            self.labels = _load_array(self.data_dir / info["labels"], mmap=False)
            if len(self.images) != info["count"]:
                raise DataError(f"{self.data_dir / info['images']}: {len(self.images)} images, manifest says "
                                f"{info['count']}; rerun prepare_data (snakemake -R prepare_data)")
        else:
            self.root = Path(self.manifest["root"])
            self.paths, self.labels = read_file_list(self.data_dir / info["list"])
        self.image_size = self.manifest["image_size"]

    def __len__(self) -> int:
        return len(self.labels)

    def uint8(self, i: int) -> torch.Tensor:
        """Item i as (3, H, W) uint8, without augmentation."""
        if self.kind == "arrays":
            x = torch.from_numpy(np.array(self.images[i]))
            return x.unsqueeze(0).expand(3, -1, -1).contiguous()
        with Image.open(self.root / self.paths[i]) as im:
            arr = center_crop_arr(im, self.image_size)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = to_unit_range(self.uint8(i))
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])
