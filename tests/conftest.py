"""Shared fixtures: the repository root, a synthetic Fashion-MNIST directory."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from maetok.data import fashion_mnist

REPO = Path(__file__).resolve().parent.parent


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_writer():
    return write_idx


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def fake_fmnist(tmp_path, monkeypatch) -> Path:
    """A Fashion-MNIST directory with the official counts; pixels: 10 seeded random images tiled
    (the repetition keeps gzip fast)."""
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    d = tmp_path / "fmnist"
    d.mkdir()
    for split, (img_name, lbl_name) in fashion_mnist.FILES.items():
        n = fashion_mnist.EXPECTED_COUNT[split]
        write_idx(d / img_name, np.tile(tile, (n // 10, 1, 1)))
        write_idx(d / lbl_name, np.arange(n) % 10)
    return d


@pytest.fixture
def real_fmnist() -> Path:
    if not fashion_mnist._has_files(fashion_mnist.DEBIAN_PATH):
        pytest.skip("Debian package dataset-fashion-mnist not installed (.ci/run installs it)")
    return fashion_mnist.DEBIAN_PATH
