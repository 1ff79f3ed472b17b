"""Figures (Fig. 2a/2b/4/5a/5b/9): files written, colours consistent, UMAP panels."""

import matplotlib.colors as mcolors
import numpy as np
import pytest
from PIL import Image

from maetok.analysis import figures
from maetok.analysis.figures import PALETTE, canonical_name, color_for, output_paths
from maetok.analysis.umap_plot import balanced_subset, umap_panels

TOKS = ["ae", "vae", "vavae", "maetok"]


def _assert_written(paths):
    for key in ("png", "pdf"):
        assert paths[key].endswith("." + key)
        with open(paths[key], "rb") as f:
            head = f.read(8)
        assert head.startswith(b"\x89PNG" if key == "png" else b"%PDF")


def _line_colors(monkeypatch):
    """Record the colour of every line/scatter each plot draws, by label."""
    seen = []
    real_save = figures.save_figure

    def spy(fig, out, dpi=150):
        for ax in fig.axes:
            for line in ax.get_lines():
                seen.append((line.get_label(), mcolors.to_hex(line.get_color())))
            for coll in ax.collections:
                seen.append((coll.get_label(), mcolors.to_hex(coll.get_facecolor()[0])))
        return real_save(fig, out, dpi)

    monkeypatch.setattr(figures, "save_figure", spy)
    return seen


def test_each_plot_writes_png_and_pdf_with_consistent_colours(tmp_path, monkeypatch):
    seen = _line_colors(monkeypatch)
    ks = [1, 10, 50, 100, 200]
    gmm = {t: [(k, 30 - i - 3 * np.log(k)) for k in ks] for i, t in enumerate(TOKS)}
    probe = {"AE": (0.22, 24.1), "VAE": (0.18, 22.3), "VA-VAE": (0.41, 12.5), "MAETok": (0.48, 5.7)}
    steps = {t: [(s, 40 / (1 + s / 1e5) + i) for s in (5e4, 1e5, 2e5, 4e5)] for i, t in enumerate(TOKS)}
    loss = {t: [(s, 0.5 - 0.01 * i + 0.1 / (1 + s / 1e3)) for s in range(0, 10_000, 500)]
            for i, t in enumerate(TOKS)}
    _assert_written(figures.plot_gmm_nll(gmm, tmp_path / "fig2a"))
    _assert_written(figures.plot_gfid_vs_probe(probe, tmp_path / "fig5a.png"))
    _assert_written(figures.plot_gfid_vs_steps(steps, tmp_path / "sub" / "fig5b.pdf"))
    _assert_written(figures.plot_loss_curves(loss, tmp_path / "fig2b", smooth=0.5))
    by_label = {}
    for label, color in seen:
        by_label.setdefault(label, set()).add(color)
    assert {"AE", "VAE", "VA-VAE", "MAETok"} <= set(by_label)
    assert all(len(c) == 1 for c in by_label.values())  # one colour per tokenizer everywhere
    assert by_label["MAETok"] == {PALETTE["maetok"]}
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no temporaries


def test_names_and_fallback_colours():
    assert canonical_name("VA-VAE") == canonical_name("va_vae") == "vavae"
    assert canonical_name("MAETok") == "maetok" and canonical_name("target_pixel") == "target_pixel"
    assert color_for("HOG") == PALETTE["target_hog"]
    other = color_for("my_new_tokenizer")
    assert other == color_for("my_new_tokenizer") and other not in PALETTE.values()
    assert output_paths("a/b.v2") == output_paths("a/b.v2.png")


def test_balanced_subset_is_deterministic():
    y = np.repeat(np.arange(5), [30, 3, 30, 30, 30])
    idx = balanced_subset(y, 10, seed=0)
    np.testing.assert_array_equal(np.bincount(y[idx]), [10, 3, 10, 10, 10])
    np.testing.assert_array_equal(idx, balanced_subset(y, 10, seed=0))
    assert not np.array_equal(idx, balanced_subset(y, 10, seed=1))


def test_umap_panels_writes_figure(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 80)
    separated = rng.normal(size=(400, 4, 4)) + 4 * np.eye(16)[y * 3].reshape(400, 4, 4)
    entangled = rng.normal(size=(400, 16))
    names = ["tench", "goldfish", "white shark", "tiger shark", "hammerhead"]
    out = umap_panels({"AE": (entangled, y), "MAETok": (separated, y)}, tmp_path / "fig4.png",
                      class_names=names, per_class=40, n_epochs=50, title="UMAP of latents")
    _assert_written(out)
    assert [p["n_points"] for p in out["panels"]] == [200, 200]
    with Image.open(out["png"]) as im:
        assert im.size[0] > im.size[1] > 200


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_loss_smoothing_is_checked(tmp_path, bad):
    with pytest.raises(ValueError):
        figures.plot_loss_curves({"ae": [(0, 1.0)]}, tmp_path / "x", smooth=bad)
