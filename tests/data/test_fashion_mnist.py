"""Fashion-MNIST reader, padding, prepared dataset and its errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from maetok import config as C
from maetok.data import DataError, ImageDataset, fashion_mnist, prepare


def _cfg(root, **kw) -> C.DataConfig:
    base = dict(dataset="fashion_mnist", root=str(root) if root else None, download=False, url="",
                image_size=32, num_classes=10, hflip=False)
    return C.DataConfig(**{**base, **kw})


def test_read_idx_shapes_dtype_and_labels(fake_fmnist):
    images, labels = fashion_mnist.load_split(fake_fmnist, "train")
    assert images.shape == (60_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60_000,) and labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), [6000] * 10)


def test_padding_is_symmetric_zero_border():
    x = np.full((2, 28, 28), 255, np.uint8)
    y = fashion_mnist.pad_to(x, 32)
    assert y.shape == (2, 32, 32)
    assert (y[:, 2:30, 2:30] == 255).all()
    assert y[:, :2].sum() == 0 and y[:, 30:].sum() == 0 and y[:, :, :2].sum() == 0 and y[:, :, 30:].sum() == 0
    with pytest.raises(DataError, match="image_size"):
        fashion_mnist.pad_to(x, 31)


def test_prepared_dataset_range_rgb_and_determinism(fake_fmnist, tmp_path):
    out = tmp_path / "data"
    manifest = prepare.run(_cfg(fake_fmnist), out)
    assert manifest["splits"]["train"]["count"] == 60_000
    assert manifest["splits"]["val"]["per_class"] == [1000] * 10
    ds = ImageDataset(out, "val")
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # replicated to RGB
    assert (x[:, :2] == -1).all()  # the padded border is black
    assert y == 3
    # the split is the official one, read the same way every time
    raw, labels = fashion_mnist.load_split(fake_fmnist, "test")
    assert torch.equal(ds.uint8(3)[0, 2:30, 2:30], torch.from_numpy(raw[3].copy()))
    again = prepare.run(_cfg(fake_fmnist), tmp_path / "data2")
    assert again["splits"]["train"]["sha256"] == manifest["splits"]["train"]["sha256"]


def test_hflip_flips_about_the_vertical_axis(fake_fmnist, tmp_path):
    prepare.run(_cfg(fake_fmnist), tmp_path / "d")
    plain, flipping = ImageDataset(tmp_path / "d", "train"), ImageDataset(tmp_path / "d", "train", hflip=True)
    torch.manual_seed(0)
    seen = {torch.equal(flipping[0][0], plain[0][0].flip(-1)) for _ in range(20)}
    assert seen == {True, False}


def test_truncated_gz_fails_with_a_clear_message(fake_fmnist):
    path = fake_fmnist / fashion_mnist.FILES["test"][0]
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated or corrupted"):
        fashion_mnist.load_split(fake_fmnist, "test")


def test_payload_shorter_than_header_is_reported(tmp_path, idx_writer):
    idx_writer(tmp_path / "x.gz", np.zeros((10, 28, 28), np.uint8))
    data = gzip.decompress((tmp_path / "x.gz").read_bytes())[:-100]
    (tmp_path / "x.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match="header declares shape"):
        fashion_mnist.read_idx(tmp_path / "x.gz")


def test_missing_dataset_lists_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_PATH", tmp_path / "nowhere")
    with pytest.raises(DataError) as e:
        fashion_mnist.locate(None, False, "", tmp_path / "cache")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "scales.tiny.data.root" in msg and fashion_mnist.ENV_VAR in msg
    assert "download: true" in msg


def test_env_var_is_honoured(fake_fmnist, tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(fake_fmnist))
    assert fashion_mnist.locate(None, False, "", tmp_path / "cache") == fake_fmnist


def test_failed_download_still_explains(tmp_path, monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_PATH", tmp_path / "nowhere")
    with pytest.raises(DataError, match="download from .* failed"):
        fashion_mnist.locate(None, True, "http://127.0.0.1:9/", tmp_path / "cache")


def test_real_fashion_mnist_manifest(real_fmnist, tmp_path):
    manifest = prepare.run(_cfg(None), tmp_path / "data")
    assert manifest["splits"]["train"]["count"] == 60_000
    assert manifest["splits"]["val"]["count"] == 10_000
    assert manifest["splits"]["train"]["per_class"] == [6000] * 10
    assert manifest["splits"]["val"]["per_class"] == [1000] * 10
    ds = ImageDataset(tmp_path / "data", "train")
    x, y = ds[0]
    assert y == 9  # the first Fashion-MNIST training image is an ankle boot
    assert x.min() == -1.0 and x.max() == 1.0
