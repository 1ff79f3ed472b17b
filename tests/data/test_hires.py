"""prepare_hires: the prepared data at the `hires` resolution (Tables 3, 4, 11)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maetok import config as C
from maetok.data import DataError, ImageDataset, prepare
from maetok.data.imagefolder import center_crop_arr
from maetok.utils.images import resize_images, to_uint8


def test_arrays_are_upsampled_with_the_pipelines_resize(tiny_data, tmp_path):
    manifest = prepare.run_hires(tiny_data, 64, tmp_path / "hires")
    assert manifest["image_size"] == 64 and manifest["derived_from"]["image_size"] == 32
    base, hires = ImageDataset(tiny_data, "val"), ImageDataset(tmp_path / "hires", "val")
    assert len(hires) == len(base) and hires.image_size == 64
    assert (np.asarray(hires.labels) == np.asarray(base.labels)).all()
    x = np.stack([base.uint8(i).numpy() for i in range(8)])
    # the same images as the 2x evaluation of a 32 px tokenizer (eval/reconstruction.py, Table 13b)
    expected = to_uint8(resize_images(torch_float(x), 64))
    got = np.stack([hires.uint8(i).numpy() for i in range(8)])
    assert got.shape == (8, 3, 64, 64) and (got == expected.numpy()).all()
    assert hires.uint8(0).float().std() > 0


def torch_float(x_uint8: np.ndarray):
    import torch

    return torch.from_numpy(x_uint8).float().div(127.5).sub(1)


def test_file_lists_are_cropped_at_the_larger_size(tmp_path):
    """Paper scale: the hires data is the same images, center-cropped from the originals at the larger
    size (not the base crops upsampled)."""
    yy, xx = np.mgrid[:300, :400]
    image = np.stack([(xx * 255 // 399), (yy * 255 // 299), (xx + yy) % 256], -1).astype(np.uint8)
    for split in ("train", "val"):
        d = tmp_path / "imnet" / split / "n01"
        d.mkdir(parents=True)
        Image.fromarray(image).save(d / "0.png")
    cfg = C.DataConfig(dataset="imagefolder", root=str(tmp_path / "imnet"), download=False, url="",
                       image_size=64, num_classes=1, hflip=True)
    prepare.run(cfg, tmp_path / "data")
    prepare.run_hires(tmp_path / "data", 128, tmp_path / "hires")
    ds = ImageDataset(tmp_path / "hires", "train")
    assert ds.image_size == 128 and ds[0][1] == 0
    expected = center_crop_arr(Image.fromarray(image), 128)
    assert (ds.uint8(0).permute(1, 2, 0).numpy() == expected).all()
    assert (tmp_path / "hires" / "val.txt").read_text() == (tmp_path / "data" / "val.txt").read_text()


def test_hires_must_be_larger_than_the_base_data(tiny_data, tmp_path):
    with pytest.raises(DataError, match="hires.image_size = 32 must be larger"):
        prepare.run_hires(tiny_data, 32, tmp_path / "hires")
