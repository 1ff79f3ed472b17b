"""UMAP panels of tokenizer latents coloured by class (paper Fig. 4 and Fig. 9, §4.3, App. C.3).

All panels of a figure are embedded in one process: umap-learn's numba JIT compiles once per
process (seconds), so `umap` is imported inside `umap_panels` and every
panel reuses the compiled code. A fixed random_state makes UMAP deterministic (and single
threaded). The paper does not say how its points were chosen; we take the same class-balanced
subset from every panel (per_class samples of each class, drawn with random_state).
"""

import time
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from maetok.analysis.figures import atomic_savefig, display_name, output_paths  # selects the Agg backend


def balanced_subset(y: np.ndarray, per_class: int, classes: Sequence[int] | None = None,
                    seed: int = 0) -> np.ndarray:
    """Sorted indices of up to per_class samples of each class (all of a smaller class).
    Deterministic in (y, per_class, classes, seed); equal labels give equal indices."""
    y = np.asarray(y).reshape(-1)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        picked.append(idx[rng.permutation(len(idx))[:per_class]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def class_colors(n: int) -> list:
    """Distinct colours for n classes: tab10, tab20, then evenly spaced hues."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


def _class_label(c: int, class_names) -> str:
    if class_names is None:
        return str(c)
    if isinstance(class_names, Mapping):
        return str(class_names.get(c, c))
    return str(class_names[c]) if 0 <= c < len(class_names) else str(c)


def umap_panels(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out_png,
    out_pdf=None,
    *,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    per_class: int = 100,
    classes: Sequence[int] | None = None,
    random_state: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    metric: str = "euclidean",
    title: str | None = None,
    dpi: int = 150,
) -> dict:
    """One UMAP scatter per tokenizer, side by side, with a shared class legend.

    panels: {tokenizer name: (X (N, ...) latents, y (N,) int labels)}, plotted in order.
    classes: the class ids to show (default: all in the first panel; ImageNet plots should
    pass ~10). class_names: list indexed by class id or {id: name}. out_pdf defaults to the
    PNG path with a .pdf suffix. n_epochs: UMAP optimisation epochs (None = umap's default).
    Returns {"png", "pdf", "panels": [{"name", "n_points", "n_classes", "seconds"}, ...]}.
    """
    import umap  # lazy: importing umap-learn costs seconds and triggers numba

    if not panels:
        raise ValueError("no panels given")
    png = output_paths(out_png)[0]
    pdf = output_paths(out_pdf)[1] if out_pdf is not None else output_paths(out_png)[1]
    first_y = np.asarray(next(iter(panels.values()))[1]).reshape(-1)
    shown = np.unique(first_y) if classes is None else np.asarray(sorted(classes))
    colors = dict(zip(shown.tolist(), class_colors(len(shown)), strict=True))

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
    info = []
    for ax, (name, (x, y)) in zip(axes[0], panels.items(), strict=True):
        x = np.asarray(x).reshape(len(x), -1)
        y = np.asarray(y).reshape(-1)
        idx = balanced_subset(y, per_class, shown, seed=random_state)
        t0 = time.perf_counter()
        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs,
                            metric=metric, random_state=random_state, n_jobs=1)
        emb = reducer.fit_transform(np.asarray(x[idx], np.float32))
        seconds = time.perf_counter() - t0
        ys = y[idx]
        for c in shown.tolist():
            m = ys == c
            ax.scatter(emb[m, 0], emb[m, 1], s=6, color=colors[c], alpha=0.8, linewidths=0, rasterized=True)
        ax.set_title(display_name(name))
        ax.set_xticks([])
        ax.set_yticks([])
        info.append({"name": name, "n_points": int(len(idx)), "n_classes": int(len(np.unique(ys))),
                     "seconds": round(seconds, 3)})

    handles = [Line2D([], [], linestyle="", marker="o", markersize=6, color=colors[c],
                      label=_class_label(c, class_names)) for c in shown.tolist()]
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    # Below the panels; bbox_inches="tight" grows the canvas to fit it.
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 10),
               frameon=False, fontsize=9, handletextpad=0.2, columnspacing=1.2)
    atomic_savefig(fig, png, dpi=dpi, bbox_inches="tight")
    atomic_savefig(fig, pdf, bbox_inches="tight")
    plt.close(fig)
    return {"png": str(png), "pdf": str(pdf), "panels": info}
