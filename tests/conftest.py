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


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch):
    """Every test: one torch thread (tiny tensors gain nothing from intra-op threads, and on a
    busy 2-core machine the hand-offs cost seconds; results do not depend on it) and no MLflow
    (tests must not write results/mlflow.db) and no torch.compile (each short training would pay
    a compile; tests/train/test_tokenizer_training.py checks the compiled path once)."""
    import torch

    monkeypatch.setenv("MAETOK_NO_MLFLOW", "1")
    monkeypatch.setenv("MAETOK_NO_COMPILE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A prepared tiny dataset (the `arrays` layout of prepare_data) with 256 train / 64 val images:
    per-class blobs at different positions, so a model can learn something in a few steps."""
    import json

    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    d.mkdir()
    splits = {}
    for split, n in (("train", 256), ("val", 64)):
        labels = np.arange(n) % 10
        yy, xx = np.mgrid[:32, :32]
        cy, cx = 8 + 2 * labels, 22 - labels
        imgs = 255 * np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 18.0)
        imgs = np.clip(imgs + rng.normal(0, 8, imgs.shape), 0, 255).astype(np.uint8)
        np.save(d / f"{split}_images.npy", imgs)
        np.save(d / f"{split}_labels.npy", labels.astype(np.int64))
        splits[split] = {"count": n, "per_class": np.bincount(labels).tolist(), "images": f"{split}_images.npy",
                         "labels": f"{split}_labels.npy"}
    (d / "manifest.json").write_text(json.dumps({"kind": "arrays", "image_size": 32, "num_classes": 10,
                                                 "classes": [str(i) for i in range(10)], "splits": splits}))
    return d


@pytest.fixture
def standin_dir(tmp_path) -> Path:
    """Stand-in teacher weights with seeded random init (tests only; the pipeline trains them)."""
    from maetok.models import standins

    d = tmp_path / "aux"
    for role in ("teacher-clip", "teacher-dino"):
        standins.save_weights(standins.seeded(standins.Standin_models[role], 0),
                              d / f"{role.replace('-', '_')}.safetensors")
    return d


LATENT_SHAPE = (8, 4)  # (L, H) of the synthetic latent caches below
LATENT_CLASSES = 3


def write_latent_cache(d: Path, n: int = 32, sha: str = "a" * 64, seed: int = 0) -> Path:
    """A latent cache in cache_latents' layout: seeded random fp16 latents, labels, stats.json
    naming the tokenizer's sha256."""
    import json

    L, H = LATENT_SHAPE
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in ("train", "train_flip", "val"):
        np.save(d / f"{name}.npy", rng.normal(0.5, 2.0, (n, L, H)).astype(np.float16))
    for split in ("train", "val"):
        np.save(d / f"{split}_labels.npy", np.arange(n) % LATENT_CLASSES)
    stats = {"mean": 0.5, "std": 2.0, "channel_mean": [0.5] * H, "channel_std": [2.0] * H, "num_latent_tokens": L,
             "latent_dim": H, "num_classes": LATENT_CLASSES, "tokenizer_sha256": sha, "hflip": True}
    (d / "stats.json").write_text(json.dumps(stats))
    return d


@pytest.fixture
def latent_cache():
    """`write_latent_cache(dir, n=32, sha=..., seed=0)`: a synthetic latent cache."""
    return write_latent_cache


@pytest.fixture
def one_thread():
    """torch on one thread for the test, as the official golden fixtures were computed."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
