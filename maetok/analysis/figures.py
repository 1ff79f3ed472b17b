"""Paper-style figures from metrics dicts (Fig. 2a, 2b, 5a, 5b).

Every tokenizer keeps one colour and marker in every figure: `PALETTE` is keyed by canonical
names (`canonical_name` maps "VA-VAE", "va_vae", "MAETok" ... onto them); unknown names get a
deterministic colour from a hash of the name. Each plot writes a PNG and a PDF, atomically.
"""

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from maetok.utils.io import atomic_path  # noqa: E402

PALETTE = {
    "ae": "#1f77b4",
    "vae": "#ff7f0e",
    "vavae": "#2ca02c",
    "maetok": "#d62728",
    "target_pixel": "#9467bd",
    "target_hog": "#8c564b",
    "target_dino": "#e377c2",
    "target_clip": "#17becf",
}
DISPLAY_NAMES = {
    "ae": "AE",
    "vae": "VAE",
    "vavae": "VA-VAE",
    "maetok": "MAETok",
    "target_pixel": "MAETok (Pixel)",
    "target_hog": "MAETok (HOG)",
    "target_dino": "MAETok (DINO)",
    "target_clip": "MAETok (CLIP)",
}
MARKERS = {"ae": "o", "vae": "s", "vavae": "^", "maetok": "*", "target_pixel": "D",
           "target_hog": "v", "target_dino": "P", "target_clip": "X"}
_ALIASES = {"va_vae": "vavae", "kl_vae": "vae", "klvae": "vae", "pixel": "target_pixel",
            "hog": "target_hog", "dino": "target_dino", "dinov2": "target_dino", "clip": "target_clip"}
# Colours not in PALETTE (tab20's light tones + greys/olive) for names outside it.
_FALLBACK = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
             "#f7b6d2", "#7f7f7f", "#bcbd22", "#dbdb8d", "#9edae5", "#393b79"]


def canonical_name(name: str) -> str:
    """"VA-VAE" -> "vavae", "MAETok" -> "maetok", "target_pixel" stays."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    key = _ALIASES.get(key, key)
    if key in PALETTE:
        return key
    compact = key.replace("_", "")
    return _ALIASES.get(compact, compact if compact in PALETTE else key)


def color_for(name: str) -> str:
    key = canonical_name(name)
    if key in PALETTE:
        return PALETTE[key]
    h = int(hashlib.md5(key.encode()).hexdigest(), 16)  # stable across processes, unlike hash()
    return _FALLBACK[h % len(_FALLBACK)]


def marker_for(name: str) -> str:
    return MARKERS.get(canonical_name(name), "o")


def display_name(name: str) -> str:
    return DISPLAY_NAMES.get(canonical_name(name), name)


# ----------------------------------------------------------------------------- output


def output_paths(out) -> tuple[Path, Path]:
    """`out` is a path stem or a .png/.pdf path -> (png, pdf) paths."""
    out = Path(out)
    if out.suffix.lower() in (".png", ".pdf"):
        out = out.with_suffix("")
    return out.parent / (out.name + ".png"), out.parent / (out.name + ".pdf")


def atomic_savefig(fig, path, **kwargs) -> None:
    """Save to a temporary file in the target directory, then os.replace onto `path`,
    so a reader never sees a half-written figure."""
    path = Path(path)
    with atomic_path(path) as tmp:  # mode follows the umask, not mkstemp's 0600
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), **kwargs)


def save_figure(fig, out, dpi: int = 150) -> dict:
    png, pdf = output_paths(out)
    atomic_savefig(fig, png, dpi=dpi, bbox_inches="tight")
    atomic_savefig(fig, pdf, bbox_inches="tight")
    plt.close(fig)
    return {"png": str(png), "pdf": str(pdf)}


# ----------------------------------------------------------------------------- plots


def _format_steps(x: float, _pos=None) -> str:
    """Tick label for a step count: 400000 -> "400K", 1500000 -> "1.5M"."""
    for scale, suffix in ((1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def _line_plot(curves: Mapping[str, Sequence[tuple[float, float]]], out, xlabel, ylabel, title,
               logx=False, markers=True, steps=False) -> dict:
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for name, pts in curves.items():
        pts = sorted((float(a), float(b)) for a, b in pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=display_name(name), color=color_for(name),
                marker=marker_for(name) if markers else None, markersize=6, linewidth=1.8)
    if logx:
        ax.set_xscale("log")
    if steps:
        ax.xaxis.set_major_formatter(FuncFormatter(_format_steps))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return save_figure(fig, out)


def plot_gmm_nll(curves: Mapping[str, Sequence[tuple[int, float]]], out, *, title=None, logx=False) -> dict:
    """Fig. 2a: held-out GMM NLL against the number of components, one line per tokenizer.
    curves: {tokenizer: [(k, nll), ...]} (e.g. from `fit_gmm_nll`'s "results")."""
    return _line_plot(curves, out, "Number of GMM components", "GMM NLL (nats / sample)", title, logx=logx)


def plot_loss_curves(curves: Mapping[str, Sequence[tuple[int, float]]], out, *, title=None,
                     smooth: float = 0.0) -> dict:
    """Fig. 2b: diffusion training loss against step. smooth in [0, 1): exponential moving
    average weight applied to each curve before plotting (0 = raw)."""
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    smoothed = {}
    for name, pts in curves.items():
        pts = sorted((float(a), float(b)) for a, b in pts)
        ema, acc = [], None
        for step, loss in pts:
            acc = loss if acc is None else smooth * acc + (1 - smooth) * loss
            ema.append((step, acc))
        smoothed[name] = ema
    return _line_plot(smoothed, out, "Training step", "Diffusion loss", title, markers=False, steps=True)


def plot_gfid_vs_steps(curves: Mapping[str, Sequence[tuple[int, float]]], out, *, title=None) -> dict:
    """Fig. 5b: gFID of the diffusion model during training, one line per tokenizer."""
    return _line_plot(curves, out, "Training step", "gFID", title, steps=True)


def plot_gfid_vs_probe(points: Mapping[str, tuple[float, float]], out, *, title=None) -> dict:
    """Fig. 5a: gFID against linear-probing accuracy, one point per tokenizer.
    points: {tokenizer: (probe_acc as a fraction in [0, 1], gfid)}; the axis shows percent."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for name, (acc, gfid) in points.items():
        x, y = 100.0 * float(acc), float(gfid)
        ax.scatter([x], [y], s=80, color=color_for(name), marker=marker_for(name), label=display_name(name),
                   edgecolors="black", linewidths=0.5, zorder=3)
    # a legend, not per-point text: close points (e.g. the aux-target variants) made labels overlap
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.set_xlabel("Linear probing accuracy (%)")
    ax.set_ylabel("gFID")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    return save_figure(fig, out)
