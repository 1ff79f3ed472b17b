"""`prepare_data`: write the canonical dataset of the active scale with a manifest.

results/<scale>/data/
  manifest.json            kind, image size, classes, per split: count, per-class counts, checksums
  tiny:  {train,val}_images.npy (N, 32, 32) uint8 and {train,val}_labels.npy (N,) int64
         (`val` is Fashion-MNIST's official t10k test split)
  paper: {train,val}.txt   "relative/path<TAB>label" over the ImageFolder tree

`prepare_hires`: results/<scale>/data_hires/, the same splits at `hires.image_size` for the
`resolution: hires` tokenizers (the 512x512 tables): the same file lists with the center crop
taken at the larger size (paper), or the images upsampled with `resize_images` (tiny, a
STAND-IN for a higher-resolution dataset).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from maetok.config import DataConfig
from maetok.data import fashion_mnist, imagefolder, load_manifest
from maetok.utils.images import resize_images, to_uint8
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


def upsample_uint8(images: np.ndarray, size: int, chunk: int = 5000) -> np.ndarray:
    """(N, H, W) uint8 -> (N, size, size) uint8 through `resize_images` (bicubic), in chunks."""
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(np.array(images[i:i + chunk])).unsqueeze(1).float().div(127.5).sub(1)
        out[i:i + chunk] = to_uint8(resize_images(x, size)).squeeze(1).numpy()
    return out


def run_hires(base_dir: str | Path, image_size: int, out_dir: str | Path) -> dict:
    """Write the base dataset of `base_dir` at `image_size` under `out_dir`; return its manifest."""
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    base = load_manifest(base_dir)
    if image_size <= base["image_size"]:
        raise fashion_mnist.DataError(f"hires.image_size = {image_size} must be larger than the base data's "
                                      f"{base['image_size']} px ({base_dir}/manifest.json)")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits = {}
    for split, info in base["splits"].items():
        info = dict(info, sha256=dict(info.get("sha256", {})))
        if base["kind"] == "arrays":
            images = upsample_uint8(np.load(base_dir / info["images"], mmap_mode="r"), image_size)
            info["sha256"]["images"] = _save_npy(out_dir / info["images"], images)
            with atomic_path(out_dir / info["labels"]) as tmp:
                Path(tmp).write_bytes((base_dir / info["labels"]).read_bytes())
        else:  # the crop happens on read, at the manifest's image_size
            write_text(out_dir / info["list"], (base_dir / info["list"]).read_text())
        splits[split] = info
    storage = (f"the base images upsampled to {image_size} px (bicubic, maetok.utils.images.resize_images)"
               if base["kind"] == "arrays" else f"file list; ADM center crop to {image_size} on read")
    manifest = {**base, "image_size": image_size, "splits": splits, "storage": storage,
                "derived_from": {"dir": str(base_dir), "image_size": base["image_size"]},
                "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out_dir / "manifest.json", manifest)
    return manifest
