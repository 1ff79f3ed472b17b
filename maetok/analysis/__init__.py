"""Latent-space analysis of tokenizers (paper §2 and §4.3): GMM fitting (Fig. 2a, App. B.3),
linear probing (Fig. 5a), UMAP panels (Fig. 4, Fig. 9) and the paper-style figures.

Each module has one entry function taking arrays and plain keyword parameters and returning a
JSON-serialisable dict: `fit_gmm_nll`, `linear_probe`, `umap_panels`, and the `plot_*` functions.
"""

from maetok.analysis.figures import (
    PALETTE,
    color_for,
    plot_gfid_vs_probe,
    plot_gfid_vs_steps,
    plot_gmm_nll,
    plot_loss_curves,
)
from maetok.analysis.gmm import TorchGMM, fit_gmm_nll, kmeans_init, pca_dim_for_variance
from maetok.analysis.probe import linear_probe
from maetok.analysis.umap_plot import umap_panels

__all__ = [
    "PALETTE",
    "TorchGMM",
    "color_for",
    "fit_gmm_nll",
    "kmeans_init",
    "linear_probe",
    "pca_dim_for_variance",
    "plot_gfid_vs_probe",
    "plot_gfid_vs_steps",
    "plot_gmm_nll",
    "plot_loss_curves",
    "umap_panels",
]
