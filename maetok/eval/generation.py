"""`eval_generation`: gFID, IS, precision and recall of a samples .npz (paper Tables 1-6, Fig. 5b).

The reference is the prepared train split (ADM's reference statistics are those of the
ImageNet train set); see `maetok.eval.fidelity` for the feature networks and caching.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from maetok import config as C
from maetok.eval.fidelity import fidelity_metrics
from maetok.tracking import Run
from maetok.utils.io import write_json


class SamplesError(RuntimeError):
    """A samples .npz that is missing, truncated or not in `maetok.sample`'s layout."""


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W, 3) uint8, labels (N,)) of a samples .npz written by `maetok.sample`, checked."""
    path = Path(path)
    rebuild = f"delete it and rerun `snakemake {path}` (rule sample_generator)"
    if not path.is_file():
        raise SamplesError(f"samples file {path} not found: build it with `snakemake {path}` (rule sample_generator)")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("images", "labels") if k not in f.files]
            if missing:
                raise SamplesError(f"{path} has no {missing[0]!r} array (expected images, labels, indices): "
                                   f"{rebuild}")
            images, labels = f["images"], f["labels"]
    except SamplesError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile, zlib and numpy raise many types for a damaged .npz
        raise SamplesError(f"{path} is unreadable ({type(e).__name__}: {e}): the file is truncated or "
                           f"corrupted; {rebuild}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise SamplesError(f"{path}: images are {images.dtype} {images.shape}, expected uint8 (N, H, W, 3): {rebuild}")
    if labels.shape != (len(images),):
        raise SamplesError(f"{path}: {labels.shape} labels for {len(images)} images: {rebuild}")
    return images, labels


def label_accuracy(images: np.ndarray, labels: np.ndarray, evaluator: str, batch_size: int = 500) -> float:
    """Fraction of samples the stand-in evaluator classifies as the class they were generated for:
    a direct check that class-conditional samples are recognisably of their class (tiny scale)."""
    import torch

    from maetok.models import standins

    net = standins.load_weights(standins.Evaluator(), evaluator).eval().to(memory_format=torch.channels_last)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    preds = []
    with torch.no_grad():  # channels-last, as the FID feature extractor (standins.EvaluatorFeatureExtractor)
        for i in range(0, len(x), batch_size):
            batch = standins.to_model_input(x[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
            preds.append(net.head(net(batch)[1]).argmax(1))
    return float((torch.cat(preds).numpy() == labels).mean())


def eval_generation(samples: str | Path, data_dir: str | Path, cfg: C.EvaluationConfig, evaluator: str | None,
                    out: str | Path, fid_cache: str | Path, tags: dict | None = None, seed: int = 0) -> dict:
    """Metrics of one samples file against the train split; writes `out` (JSON) and logs an MLflow run."""
    t0 = time.perf_counter()
    images, labels = load_samples(samples)
    m = fidelity_metrics(images, data_dir, cfg, evaluator, fid_cache, seed=seed)
    extra = {"label_accuracy": label_accuracy(images, labels, evaluator)} if cfg.feature_network == "standin" else {}
    metrics = {"samples": str(samples), "num_samples": int(len(images)),
               "gfid": m["fid"], "is": m["isc_mean"], "is_std": m["isc_std"],
               "precision": m["precision"], "recall": m["recall"], **extra,
               "feature_network": cfg.feature_network, **(tags or {}),
               "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out, metrics)
    with Run(f"{(tags or {}).get('variant', '')}/eval_generation", {**(tags or {}), "stage": "eval_generation"},
             {**C.to_dict(cfg), "seed": seed, "samples": str(samples), "evaluator": evaluator or ""}) as r:
        r.log_metrics({k: metrics[k] for k in ("gfid", "is", "precision", "recall")})
        r.log_artifact(out)
        grid = Path(samples).with_suffix(".png")  # sample_generator's class grid, when it drew one
        if grid.is_file():
            r.log_artifact(grid)
    return metrics
