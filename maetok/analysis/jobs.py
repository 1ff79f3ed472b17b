"""Pipeline jobs of the latent-space analyses (paper §2, §4.3, App. B.3): the functions the
`maetok fit-gmm / linear-probe / plot-umap / plot-figure` subcommands call.

Each job reads what earlier rules wrote (latent caches of `cache_latents`, metrics JSONs of
`eval_generation`, loss curves of `train_generator`), calls one function of the analysis
library (`fit_gmm_nll`, `linear_probe`, `umap_panels`, the `plot_*` figures), writes its
output atomically, and logs the result to a best-effort MLflow run. The caller gives every
path; nothing here invents one.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maetok.config import AnalysisConfig, to_dict
from maetok.latents import LatentStats, load_latents
from maetok.tracking import Run
from maetok.utils.io import read_json, write_json

# The plot-figure kinds: Fig. 2a, 2b, 5a, 5b (maetok/commands/analysis.py describes their inputs).
FIGURE_KINDS = ("gmm-nll", "loss-curves", "gfid-vs-probe", "gfid-vs-steps")
# UMAP of a 1000-class latent space: the paper shows a handful of classes (Fig. 4 and 9 do
# not say which); above MAX_UMAP_CLASSES classes we show UMAP_CLASSES evenly spaced class ids.
MAX_UMAP_CLASSES = 20
UMAP_CLASSES = 10
# EMA weight of the Fig. 2b loss curves (0 = raw): the per-`log_every` means of a small
# batch are still noisy and the curves of different tokenizers overlap.
LOSS_SMOOTHING = 0.6


@contextlib.contextmanager
def _single_thread(enabled: bool = True):
    """torch and BLAS on one thread when no GPU is used: on a small shared CPU the tiny GMM and probe
    jobs run several times faster than with the default thread pool (bench/README.md)."""
    import torch
    from threadpoolctl import threadpool_limits

    if not enabled or torch.cuda.is_available():
        yield
        return

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def balanced_subsample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of min(n, len(y)) samples, as class-balanced as the class sizes allow:
    each class is shuffled (seeded), then samples are taken round-robin over the classes, so a
    small class contributes all it has and the rest is shared by the others. Deterministic."""
    y = np.asarray(y).reshape(-1)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    rank = np.empty(len(y), dtype=np.int64)  # position of each sample in its class's shuffled order
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx[rng.permutation(len(idx))]] = np.arange(len(idx))
    order = np.lexsort((y, rank))  # by rank, ties broken by class id
    return np.sort(order[:n])


def _tags(stage: str, variant: str, scale: str) -> dict:
    return {"scale": scale, "stage": stage, "variant": variant}


# ----------------------------------------------------------------------------- GMM (Fig. 2a)


def fit_gmm(cfg: AnalysisConfig, latents: str | Path, out: str | Path, *, seed: int = 0, variant: str = "",
            scale: str = "", single_thread: bool = True, device=None) -> dict:
    """GMM NLL of one tokenizer's latents (App. B.3): a class-balanced subsample of
    `cfg.gmm_max_samples` train latents (unflipped) to fit PCA, standardisation and the GMMs;
    the whole val split as held-out data. PCA dimension: the shared `cfg.gmm_pca_dim`, clipped
    to the latent dimension; this tokenizer's own 90%-variance dimension is reported too.
    Writes `out` (JSON) and returns its dict."""
    from maetok.analysis.gmm import fit_gmm_nll

    t0 = time.perf_counter()
    z_train, y_train = load_latents(latents, "train")
    z_val, _ = load_latents(latents, "val")
    idx = balanced_subsample(y_train, cfg.gmm_max_samples, seed)
    x_train = np.asarray(z_train[idx])  # (n, L, H) float16: one read of the subsample
    input_dim = int(np.prod(z_train.shape[1:]))
    pca_dim = min(cfg.gmm_pca_dim, input_dim)
    with _single_thread(single_thread):
        result = fit_gmm_nll(x_train, z_val, cfg.gmm_components, pca_dim=pca_dim, covariance=cfg.gmm_covariance,
                             backend=cfg.gmm_backend, seed=seed, device=device)
    metrics = {
        "tokenizer": variant,
        "latents": str(latents),
        "latent_shape": list(z_train.shape[1:]),
        "requested_pca_dim": cfg.gmm_pca_dim,
        "pca_dim_clipped": pca_dim < cfg.gmm_pca_dim,
        **result,
        "train_class_counts": np.bincount(y_train[idx]).tolist(),
        "seed": seed,
        "config": to_dict(cfg),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(out, metrics)
    with Run(f"fit_gmm/{variant}", _tags("fit_gmm", variant, scale), to_dict(cfg)) as run:
        for r in result["results"]:
            run.log_metrics({"gmm_nll_heldout": r["nll_heldout"], "gmm_nll_train": r["nll_train"],
                             "gmm_bic": r["bic"]}, step=r["k"])
        run.log_metrics({"pca_dim": result["pca_dim"], "own_pca_dim_90": result["own_pca_dim_90"],
                         "explained_variance": result["explained_variance"], "seconds": metrics["seconds"]})
        run.log_artifact(out)
    return metrics


# ----------------------------------------------------------------------------- linear probe (Fig. 5a)


def run_linear_probe(cfg: AnalysisConfig, latents: str | Path, out: str | Path, *, seed: int = 0,
                     variant: str = "", scale: str = "", single_thread: bool = True, device=None) -> dict:
    """Linear probe (§4.3): trained on the unflipped train latents, evaluated on the val split.
    Writes `out` (JSON with val_acc, train_acc, losses, sizes) and returns its dict."""
    from maetok.analysis.probe import linear_probe

    t0 = time.perf_counter()
    x_train, y_train = load_latents(latents, "train")
    x_val, y_val = load_latents(latents, "val")
    num_classes = LatentStats.load(latents).num_classes
    with _single_thread(single_thread):
        result = linear_probe(x_train, y_train, x_val, y_val, seed=seed, epochs=cfg.probe_epochs, lr=cfg.probe_lr,
                              num_classes=num_classes, device=device)
    metrics = {"tokenizer": variant, "latents": str(latents), **result, "lr": cfg.probe_lr, "seed": seed,
               "config": to_dict(cfg), "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out, metrics)
    with Run(f"linear_probe/{variant}", _tags("linear_probe", variant, scale), to_dict(cfg)) as run:
        run.log_metrics({k: metrics[k] for k in ("val_acc", "train_acc", "val_loss", "train_loss", "seconds")})
        run.log_artifact(out)
    return metrics


# ----------------------------------------------------------------------------- UMAP (Fig. 4, 9)


def plot_umap(cfg: AnalysisConfig, names: Sequence[str], latents: Sequence[str | Path], manifest: str | Path,
              out: str | Path, *, seed: int = 0, scale: str = "", figure: str = "") -> dict:
    """One UMAP panel per tokenizer of its val latents, all in this process (umap's numba JIT
    is paid once). Class names come from the data manifest. Writes out's .png and .pdf."""
    from maetok.analysis.umap_plot import umap_panels

    if len(names) != len(latents):
        raise ValueError(f"{len(names)} names for {len(latents)} latent directories")
    class_names = read_json(manifest).get("classes")
    panels = {name: load_latents(d, "val") for name, d in zip(names, latents, strict=True)}
    n_classes = len(np.unique(next(iter(panels.values()))[1]))
    classes = None
    if n_classes > MAX_UMAP_CLASSES:
        classes = np.linspace(0, n_classes - 1, UMAP_CLASSES).round().astype(int).tolist()
    info = umap_panels(panels, out, class_names=class_names, per_class=cfg.umap_per_class, classes=classes,
                       random_state=seed)
    with Run(f"plot_umap/{figure or Path(out).stem}", _tags("plot_umap", ",".join(names), scale),
             to_dict(cfg)) as run:
        run.log_metrics({f"seconds.{p['name']}": p["seconds"] for p in info["panels"]})
        run.log_artifact(info["png"])
        run.log_artifact(info["pdf"])
    return info


# ----------------------------------------------------------------------------- figures (Fig. 2a, 2b, 5a, 5b)

_STEP = re.compile(r"step(\d+)_")


def _step_of(path: str | Path) -> int:
    """`.../step2000_nocfg.json` -> 2000 (the file naming of rule eval_generation)."""
    m = _STEP.search(Path(path).name)
    if not m:
        raise ValueError(f"{path}: expected a step<N>_<guidance>.json file (rule eval_generation)")
    return int(m.group(1))


def figure_data(kind: str, names: Sequence[str], metrics: Sequence[str | Path],
                probe: Sequence[str | Path] = (), steps: Sequence[int] = ()) -> dict:
    """The series a `kind` of figure plots, read from its input files.

    names[i] labels metrics[i] (for gfid-vs-steps a name repeats once per step file);
    for gfid-vs-probe, probe[i] is the linear-probe JSON of names[i]; for gfid-vs-steps,
    steps[i] is the training step of metrics[i] (default: parsed from step<N>_*.json names).
    """
    if kind not in FIGURE_KINDS:
        raise ValueError(f"kind must be one of {FIGURE_KINDS}, got {kind!r}")
    if len(names) != len(metrics):
        raise ValueError(f"{len(names)} names for {len(metrics)} metrics files")
    data = {}
    if kind == "gmm-nll":
        for name, path in zip(names, metrics, strict=True):
            data[name] = [(r["k"], r["nll_heldout"]) for r in read_json(path)["results"]]
    elif kind == "loss-curves":
        for name, path in zip(names, metrics, strict=True):
            curve = read_json(path)
            data[name] = list(zip(curve["step"], curve["loss"], strict=True))
    elif kind == "gfid-vs-probe":
        if len(probe) != len(names):
            raise ValueError(f"gfid-vs-probe needs one --probe JSON per name: {len(probe)} for {len(names)}")
        for name, path, probe_path in zip(names, metrics, probe, strict=True):
            data[name] = (read_json(probe_path)["val_acc"], read_json(path)["gfid"])
    else:
        if steps and len(steps) != len(names):
            raise ValueError(f"gfid-vs-steps needs one --steps value per name: {len(steps)} for {len(names)}")
        for i, (name, path) in enumerate(zip(names, metrics, strict=True)):
            data.setdefault(name, []).append((steps[i] if steps else _step_of(path), read_json(path)["gfid"]))
    return data


def plot_figure(kind: str, names: Sequence[str], metrics: Sequence[str | Path], out: str | Path, *,
                probe: Sequence[str | Path] = (), scale: str = "", figure: str = "", steps: Sequence[int] = ()) -> dict:
    """Draw one paper figure from metrics files; writes out's .png and .pdf.
    Returns {"png", "pdf", "data"}."""
    from maetok.analysis import figures

    data = figure_data(kind, names, metrics, probe, steps)
    if kind == "gmm-nll":
        paths = figures.plot_gmm_nll(data, out)
    elif kind == "loss-curves":
        paths = figures.plot_loss_curves(data, out, smooth=LOSS_SMOOTHING)
    elif kind == "gfid-vs-probe":
        paths = figures.plot_gfid_vs_probe(data, out)
    else:
        paths = figures.plot_gfid_vs_steps(data, out)
    with Run(f"plot_figure/{figure or Path(out).stem}", _tags("plot_figure", ",".join(dict.fromkeys(names)), scale),
             {"kind": kind, "inputs": json.dumps([str(p) for p in metrics])}) as run:
        run.log_artifact(paths["png"])
        run.log_artifact(paths["pdf"])
    return {**paths, "data": data}
