"""`prepare_data`: write the canonical dataset of the active scale with a manifest.

results/<scale>/data/
  manifest.json            kind, image size, classes, per split: count, per-class counts, checksums
  tiny:  {train,val}_images.npy (N, 32, 32) uint8 and {train,val}_labels.npy (N,) int64
         (`val` is Fashion-MNIST's official t10k test split)
  paper: {train,val}.txt   "relative/path<TAB>label" over the ImageFolder tree
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from maetok.config import DataConfig
from maetok.data import fashion_mnist, imagefolder
from maetok.utils.io import atomic_path, sha256_file, write_json, write_text

CACHE_DIR = Path(os.environ.get("MAETOK_CACHE", Path.home() / ".cache" / "maetok"))


def _class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(labels, minlength=num_classes).astype(int).tolist()


def _save_npy(path: Path, array: np.ndarray) -> str:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
    return sha256_file(path)


def prepare_fashion_mnist(cfg: DataConfig, out_dir: Path) -> dict:
    src = fashion_mnist.locate(cfg.root, cfg.download, cfg.url, CACHE_DIR / "fashion-mnist")
    splits = {}
    for split, source in (("train", "train"), ("val", "test")):
        images, labels = fashion_mnist.load_split(src, source)
        images = fashion_mnist.pad_to(images, cfg.image_size)
        splits[split] = {
            "source": f"Fashion-MNIST official {source} split ({fashion_mnist.FILES[source][0]})",
            "count": len(labels),
            "per_class": _class_counts(labels, cfg.num_classes),
            "images": f"{split}_images.npy",
            "labels": f"{split}_labels.npy",
            "sha256": {
                "images": _save_npy(out_dir / f"{split}_images.npy", images),
                "labels": _save_npy(out_dir / f"{split}_labels.npy", labels),
                "source_images": sha256_file(src / fashion_mnist.FILES[source][0]),
                "source_labels": sha256_file(src / fashion_mnist.FILES[source][1]),
            },
        }
    return {"kind": "arrays", "source_dir": str(src), "classes": list(fashion_mnist.CLASS_NAMES), "splits": splits,
            "storage": "uint8 grayscale (N, H, W), zero-padded 28->32; replicated to RGB and scaled to [-1, 1] on read"}


def prepare_imagefolder(cfg: DataConfig, out_dir: Path) -> dict:
    if not cfg.root:
        raise fashion_mnist.DataError("`scales.paper.data.root` is null: set it to the ImageNet directory "
                                      "(with train/ and val/ in ImageFolder layout) in params.yaml")
    splits, classes = {}, None
    for split in ("train", "val"):
        items, split_classes = imagefolder.scan(cfg.root, split)
        if classes is not None and split_classes != classes:
            raise fashion_mnist.DataError(f"{cfg.root}: train/ and val/ hold different class directories")
        classes = split_classes
        if len(classes) != cfg.num_classes:
            raise fashion_mnist.DataError(f"{cfg.root}/{split}: {len(classes)} classes, but "
                                          f"`data.num_classes` is {cfg.num_classes}")
        write_text(out_dir / f"{split}.txt", "".join(f"{p}\t{y}\n" for p, y in items))
        labels = np.array([y for _, y in items], dtype=np.int64)
        splits[split] = {"source": f"{cfg.root}/{split}", "count": len(items),
                         "per_class": _class_counts(labels, cfg.num_classes), "list": f"{split}.txt",
                         "sha256": {"list": sha256_file(out_dir / f"{split}.txt")}}
    return {"kind": "filelist", "root": str(Path(cfg.root).resolve()), "classes": classes, "splits": splits,
            "storage": "file list; ADM center crop to image_size on read"}


def run(cfg: DataConfig, out_dir: str | Path) -> dict:
    """Write the canonical dataset for `cfg` under `out_dir`; return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepare = prepare_fashion_mnist if cfg.dataset == "fashion_mnist" else prepare_imagefolder
    manifest = {"dataset": cfg.dataset, "image_size": cfg.image_size, "num_classes": cfg.num_classes,
                **prepare(cfg, out_dir)}
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "manifest.json", manifest)
    return manifest
