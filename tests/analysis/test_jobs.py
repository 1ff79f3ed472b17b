"""Analysis jobs (fit-gmm, linear-probe, plot-umap, plot-figure) on small synthetic latent caches
laid out as rule cache_latents writes them."""

import json

import numpy as np
import pytest

from maetok import cli
from maetok import config as C
from maetok.analysis import jobs
from maetok.commands import analysis as analysis_commands

L, H, CLASSES = 4, 8, 10
CFG = C.AnalysisConfig(gmm_components=[1, 3], gmm_covariance="diag", gmm_pca_dim=64, gmm_max_samples=300,
                       gmm_backend="sklearn", probe_epochs=5, probe_lr=1.0e-2, umap_per_class=5)


def make_cache(d, n_train=600, n_val=200, sep=1.5, seed=0):
    """A latent cache: class means + noise, float16 (N, L, H), labels, stats.json."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    means = rng.normal(0, sep, (CLASSES, L * H))
    for split, n in (("train", n_train), ("val", n_val)):
        y = np.arange(n) % CLASSES
        z = means[y] + rng.normal(0, 1, (n, L * H))
        np.save(d / f"{split}.npy", z.reshape(n, L, H).astype(np.float16))
        np.save(d / f"{split}_labels.npy", y.astype(np.int64))
    np.save(d / "train_flip.npy", np.full((n_train, L, H), np.nan, np.float16))  # NaN: must not be read
    (d / "stats.json").write_text(json.dumps({
        "mean": 0.0, "std": 1.0, "channel_mean": [0.0] * H, "channel_std": [1.0] * H, "num_latent_tokens": L,
        "latent_dim": H, "num_classes": CLASSES, "tokenizer_sha256": "0" * 64, "hflip": True,
        "counts": {"train": n_train, "val": n_val}}))
    return d


@pytest.fixture(autouse=True)
def no_mlflow(monkeypatch):
    monkeypatch.setenv("MAETOK_NO_MLFLOW", "1")


@pytest.fixture
def cache(tmp_path):
    return make_cache(tmp_path / "latents" / "maetok")


def test_balanced_subsample_is_balanced_deterministic_and_exact():
    y = np.repeat(np.arange(4), [50, 50, 50, 5])  # one small class
    idx = jobs.balanced_subsample(y, 65, seed=1)
    assert len(idx) == 65 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [20, 20, 20, 5]  # the small class gives all it has
    assert np.array_equal(idx, jobs.balanced_subsample(y, 65, seed=1))
    assert not np.array_equal(idx, jobs.balanced_subsample(y, 65, seed=2))
    assert np.array_equal(jobs.balanced_subsample(y, 1000), np.arange(len(y)))


def test_fit_gmm_json_layout(cache, tmp_path, monkeypatch):
    logged = []

    class FakeRun:
        def __init__(self, name, tags, params=None):
            logged.append(("run", name, tags))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def log_metrics(self, metrics, step=None):
            logged.append(("metrics", step, metrics))

        def log_artifact(self, path, artifact_path=None):
            logged.append(("artifact", str(path)))

    monkeypatch.setattr(jobs, "Run", FakeRun)
    out = tmp_path / "analysis" / "maetok" / "gmm.json"
    m = jobs.fit_gmm(CFG, cache, out, seed=0, variant="maetok", scale="tiny")
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert on_disk["tokenizer"] == "maetok" and on_disk["latent_shape"] == [L, H]
    # gmm_pca_dim 64 > the 32-d latents: clipped, and this tokenizer's own 90% dimension reported
    assert on_disk["requested_pca_dim"] == 64 and on_disk["pca_dim"] == L * H and on_disk["pca_dim_clipped"]
    assert 1 <= on_disk["own_pca_dim_90"] <= L * H
    assert on_disk["n_train"] == 300 and on_disk["n_heldout"] == 200  # subsample; held-out = the val split
    assert on_disk["train_class_counts"] == [30] * CLASSES
    assert [r["k"] for r in on_disk["results"]] == [1, 3]
    assert all(np.isfinite(r["nll_heldout"]) and "converged" in r for r in on_disk["results"])
    assert on_disk["config"] == C.to_dict(CFG)
    assert logged[0] == ("run", "fit_gmm/maetok", {"scale": "tiny", "stage": "fit_gmm", "variant": "maetok"})
    assert {s for kind, s, *_ in logged if kind == "metrics"} >= {1, 3}
    assert ("artifact", str(out)) in logged


def test_fit_gmm_uses_shared_dim_when_it_fits(cache, tmp_path):
    cfg = C.from_dict(C.AnalysisConfig, {**C.to_dict(CFG), "gmm_pca_dim": 5}, "analysis")
    m = jobs.fit_gmm(cfg, cache, tmp_path / "gmm.json")
    assert m["pca_dim"] == 5 and not m["pca_dim_clipped"]
    assert 0 < m["explained_variance"] < 1


def test_linear_probe_json(cache, tmp_path):
    out = tmp_path / "probe.json"
    m = jobs.run_linear_probe(CFG, cache, out, variant="maetok")
    on_disk = json.loads(out.read_text())
    assert on_disk["val_acc"] == m["val_acc"] > 0.5  # separable classes; chance is 0.1
    assert on_disk["n_train"] == 600 and on_disk["n_val"] == 200 and on_disk["input_dim"] == L * H
    assert on_disk["num_classes"] == CLASSES and on_disk["epochs"] == 5 and on_disk["lr"] == 1.0e-2


def test_plot_umap_job_wiring(tmp_path, monkeypatch):
    """Val latents, panel order and the manifest's class names reach umap_panels (umap itself is
    tested in test_figures.py; here it is replaced to keep the test fast)."""
    from maetok.analysis import umap_plot

    caches = [make_cache(tmp_path / n, seed=i) for i, n in enumerate(("ae", "maetok"))]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"classes": [f"c{i}" for i in range(CLASSES)]}))
    seen = {}

    def fake_panels(panels, out_png, **kw):
        seen.update(panels=panels, out=out_png, **kw)
        return {"png": str(out_png), "pdf": "x.pdf", "panels": [{"name": n, "seconds": 0.0} for n in panels]}

    monkeypatch.setattr(umap_plot, "umap_panels", fake_panels)
    jobs.plot_umap(CFG, ["ae", "maetok"], caches, manifest, tmp_path / "fig4.png", seed=3)
    assert list(seen["panels"]) == ["ae", "maetok"]
    assert seen["panels"]["ae"][0].shape == (200, L, H)  # the val split
    assert seen["class_names"][3] == "c3" and seen["per_class"] == 5 and seen["random_state"] == 3
    assert seen["classes"] is None  # 10 classes: all shown
    with pytest.raises(ValueError, match="2 names for 1"):
        jobs.plot_umap(CFG, ["ae", "maetok"], caches[:1], manifest, tmp_path / "f.png")


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _assert_png_pdf(stem):
    assert (stem.parent / f"{stem.name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (stem.parent / f"{stem.name}.pdf").read_bytes()[:4] == b"%PDF"


def test_figure_jobs_write_png_and_pdf(tmp_path):
    toks = ["ae", "vae", "maetok"]
    gmm = [_write(tmp_path / t / "gmm.json", {"results": [{"k": k, "nll_heldout": 30 - i - k / 10}
                                                           for k in (5, 10, 20)]}) for i, t in enumerate(toks)]
    loss = [_write(tmp_path / t / "loss_curve.json", {"log_every": 10, "step": [10, 20, 30], "loss": [0.9, 0.7, 0.6]})
            for t in toks]
    gfid = [_write(tmp_path / t / "nocfg.json", {"gfid": 20.0 - 5 * i}) for i, t in enumerate(toks)]
    probe = [_write(tmp_path / t / "probe.json", {"val_acc": 0.3 + 0.2 * i}) for i, t in enumerate(toks)]
    steps = [(t, _write(tmp_path / t / f"step{s}_nocfg.json", {"gfid": 50.0 / s - i}))
             for i, t in enumerate(toks) for s in (100, 200)]

    r = jobs.plot_figure("gmm-nll", toks, gmm, tmp_path / "figures" / "fig2a.png")
    assert r["data"]["vae"] == [(5, 28.5), (10, 28.0), (20, 27.0)]
    _assert_png_pdf(tmp_path / "figures" / "fig2a")
    r = jobs.plot_figure("loss-curves", toks, loss, tmp_path / "figures" / "fig2b.png")
    assert r["data"]["ae"] == [(10, 0.9), (20, 0.7), (30, 0.6)]
    _assert_png_pdf(tmp_path / "figures" / "fig2b")
    r = jobs.plot_figure("gfid-vs-probe", toks, gfid, tmp_path / "figures" / "fig5a.png", probe=probe)
    assert r["data"]["maetok"] == (0.7, 10.0)
    _assert_png_pdf(tmp_path / "figures" / "fig5a")
    r = jobs.plot_figure("gfid-vs-steps", [t for t, _ in steps], [p for _, p in steps],
                         tmp_path / "figures" / "fig5b.png")
    assert r["data"]["vae"] == [(100, -0.5), (200, -0.75)]
    _assert_png_pdf(tmp_path / "figures" / "fig5b")

    with pytest.raises(ValueError, match="one --probe JSON per name"):
        jobs.figure_data("gfid-vs-probe", toks, gfid, probe[:2])
    with pytest.raises(ValueError, match="step<N>"):
        jobs.figure_data("gfid-vs-steps", ["ae"], [gfid[0]])
    # explicit steps: the final point may be the final generator's nocfg.json (no step in its name)
    assert jobs.figure_data("gfid-vs-steps", ["ae", "ae"], [steps[0][1], gfid[0]], steps=[100, 800]) == \
        {"ae": [(100, jobs.read_json(steps[0][1])["gfid"]), (800, jobs.read_json(gfid[0])["gfid"])]}
    with pytest.raises(ValueError, match="one --steps value per name"):
        jobs.figure_data("gfid-vs-steps", ["ae", "ae"], [steps[0][1], gfid[0]], steps=[100])


def test_cli_runs_fit_gmm_and_plot_figure(cache, tmp_path, capsys):
    assert set(analysis_commands.FIGURE_KINDS) == set(jobs.FIGURE_KINDS)
    out = tmp_path / "gmm.json"
    rc = cli.main(["fit-gmm", "--config-json", json.dumps(C.to_dict(CFG)), "--latents", str(cache),
                   "--out", str(out), "--variant", "maetok", "--seed", "1"])
    assert rc == 0 and json.loads(out.read_text())["seed"] == 1
    rc = cli.main(["plot-figure", "--kind", "gmm-nll", "--names", "maetok", "--metrics", str(out),
                   "--out", str(tmp_path / "fig2a.png")])
    assert rc == 0
    _assert_png_pdf(tmp_path / "fig2a")
    assert "fit-gmm: PCA 32 -> 32 dims" in capsys.readouterr().out
