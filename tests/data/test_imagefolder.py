"""ImageFolder file lists and the ADM center crop (paper scale)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maetok import config as C
from maetok.data import DataError, ImageDataset, prepare
from maetok.data.imagefolder import center_crop_arr


def test_center_crop_shape_and_centre():
    arr = np.zeros((300, 600, 3), np.uint8)
    arr[:, 250:350] = 255  # a bright vertical band in the middle
    out = center_crop_arr(Image.fromarray(arr), 64)
    assert out.shape == (64, 64, 3)
    assert out[:, 32].mean() > 200 and out[:, 0].mean() < 20


def _tree(root, n_per_class=3):
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n_per_class):
                Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(d / f"{i}.png")


def test_prepare_imagefolder_writes_lists_and_reads_back(tmp_path):
    _tree(tmp_path / "imnet")
    cfg = C.DataConfig(dataset="imagefolder", root=str(tmp_path / "imnet"), download=False, url="",
                       image_size=32, num_classes=2, hflip=True)
    manifest = prepare.run(cfg, tmp_path / "data")
    assert manifest["splits"]["train"]["per_class"] == [3, 3]
    ds = ImageDataset(tmp_path / "data", "val")
    x, y = ds[4]
    assert x.shape == (3, 32, 32) and y == 1
    assert x.min() >= -1 and x.max() <= 1


def test_imagefolder_errors_name_the_key(tmp_path):
    cfg = C.DataConfig(dataset="imagefolder", root=str(tmp_path / "missing"), download=False, url="",
                       image_size=32, num_classes=2, hflip=True)
    with pytest.raises(DataError, match="scales.paper.data.root"):
        prepare.run(cfg, tmp_path / "data")
    _tree(tmp_path / "imnet")
    cfg = C.DataConfig(**{**C.to_dict(cfg), "root": str(tmp_path / "imnet"), "num_classes": 1000})
    with pytest.raises(DataError, match="num_classes"):
        prepare.run(cfg, tmp_path / "data")
