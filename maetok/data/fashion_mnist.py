"""Fashion-MNIST: the tiny-scale stand-in for ImageNet.

The four IDX .gz files of Xiao et al. (2017) are read with the official train/test
split (60,000 / 10,000, 6,000 / 1,000 per class). Images are zero-padded 28 -> 32 so
that a 4-pixel patch grid tiles them, replicated to RGB and scaled to [-1, 1].
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
EXPECTED_COUNT = {"train": 60_000, "test": 10_000}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "MAETOK_FASHION_MNIST"
NATIVE_SIZE = 28


class DataError(RuntimeError):
    """A dataset that is missing or unreadable; the message says how to fix it."""


def _has_files(d: Path) -> bool:
    return all((d / f).is_file() for pair in FILES.values() for f in pair)


def _how_to_provide(searched: list[str]) -> str:
    return (
        "Fashion-MNIST not found (looked in: " + ", ".join(searched) + "). Provide it in one of three ways:\n"
        "  1. apt-get install dataset-fashion-mnist\n"
        "     (Debian/Ubuntu; the files land in /usr/share/datasets/fashion-mnist)\n"
        f"  2. put the four IDX .gz files in a directory and set `scales.tiny.data.root` in params.yaml to it "
        f"(or export {ENV_VAR}=<dir>)\n"
        "  3. allow a download: set `scales.tiny.data.download: true` in params.yaml on a machine with internet"
    )


def locate(root: str | None, download: bool, url: str, cache_dir: str | Path) -> Path:
    """Directory holding the four IDX files: `root`, $MAETOK_FASHION_MNIST, the Debian path, or a download."""
    candidates = [Path(root)] if root else []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates += [DEBIAN_PATH, Path(cache_dir)]
    for d in candidates:
        if _has_files(d):
            return d
    searched = [str(d) for d in candidates]
    if download:
        try:
            return _download(url, Path(cache_dir))
        except OSError as e:
            raise DataError(_how_to_provide(searched) + f"\n(the download from {url} failed: {e})") from None
    raise DataError(_how_to_provide(searched))


def _download(url: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for pair in FILES.values():
        for name in pair:
            target = dest / name
            if target.is_file():
                continue
            tmp = target.with_suffix(".part")
            with urllib.request.urlopen(url.rstrip("/") + "/" + name, timeout=30) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            os.replace(tmp, target)
    return dest


def read_idx(path: str | Path) -> np.ndarray:
    """Read one gzipped IDX file (uint8 payload) into an array of its declared shape."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}). The file is truncated or corrupted: "
                        "delete it and reinstall (apt-get install --reinstall dataset-fashion-mnist) "
                        "or download it again.") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes); delete it and fetch it again.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path}: bad IDX magic (expected unsigned-byte data); is this a Fashion-MNIST file?")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    payload = memoryview(raw)[4 + 4 * ndim:]
    expected = int(np.prod(shape))
    if len(payload) != expected:
        raise DataError(f"{path}: holds {len(payload)} bytes of data but its header declares shape {shape} "
                        f"({expected} bytes); the file is truncated or corrupted. Delete it and fetch it again.")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def load_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw images (N, 28, 28) uint8 and labels (N,) int64 of the official `split` ('train' or 'test')."""
    images_file, labels_file = FILES[split]
    images = read_idx(Path(directory) / images_file)
    labels = read_idx(Path(directory) / labels_file).astype(np.int64)
    if images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE) or len(images) != len(labels):
        raise DataError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match "
                        "Fashion-MNIST's layout")
    if len(images) != EXPECTED_COUNT[split]:
        raise DataError(f"{directory}: {split} split has {len(images)} images, expected {EXPECTED_COUNT[split]}")
    return images, labels


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N, 28, 28) images symmetrically to (N, size, size); 0 maps to -1 after scaling."""
    extra = size - images.shape[-1]
    if extra < 0 or extra % 2:
        raise DataError(f"cannot pad {images.shape[-1]} px images to {size} px: "
                        "`data.image_size` must be >= 28 and an even number of pixels larger")
    p = extra // 2
    return np.pad(images, ((0, 0), (p, p), (p, p)))
