"""torch-fidelity wrapper: FID of a set vs itself ~ 0, vs a shifted set > 0, cached reference, clear errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from maetok import config as C
from maetok.eval.fidelity import FidelityError, fidelity_metrics
from maetok.models.standins import Evaluator, EvaluatorFeatureExtractor, save_weights, seeded


@pytest.fixture
def setup(tmp_path):
    weights = tmp_path / "evaluator.safetensors"
    save_weights(seeded(Evaluator, 0), weights)  # random but saved: tests only, never the pipeline
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 1, 32, 32))
    images = np.clip(base.repeat(40, 0) + rng.integers(-20, 21, (320, 1, 32, 32)), 0, 255).astype(np.uint8)
    images = torch.from_numpy(images).expand(-1, 3, -1, -1).contiguous()
    cfg = dataclasses.replace(C.load_params().scales["tiny"].evaluation, batch_size=64)
    return weights, images, cfg


def test_fid_self_zero_shifted_positive(setup, tmp_path):
    weights, images, cfg = setup
    same = fidelity_metrics(images, images, cfg, weights, tmp_path / "cache", metrics=("fid", "isc", "prc"))
    assert abs(same["fid"]) < 1e-3
    assert same["precision"] == pytest.approx(1.0) and same["recall"] == pytest.approx(1.0)
    assert same["isc_mean"] >= 1.0
    shifted = (images.int() // 2 + 100).to(torch.uint8)
    other = fidelity_metrics(shifted, images, cfg, weights, tmp_path / "cache", metrics=("fid",))
    assert set(other) == {"fid"} and other["fid"] > 1e-2 and other["fid"] > 1e3 * abs(same["fid"])
    nhwc = fidelity_metrics(images.permute(0, 2, 3, 1).numpy(), images, cfg, weights, tmp_path / "cache", ("fid",))
    assert abs(nhwc["fid"]) < 1e-3


def test_reference_directory_is_cached(setup, tmp_path):
    weights, images, cfg = setup
    d = tmp_path / "data"
    d.mkdir()
    np.save(d / "train_images.npy", images[:, 0].numpy())
    np.save(d / "train_labels.npy", np.arange(len(images)) % 8)
    split = {"images": "train_images.npy", "labels": "train_labels.npy", "count": len(images)}
    (d / "manifest.json").write_text(json.dumps({"dataset": "fake", "image_size": 32, "num_classes": 8,
                                                 "kind": "arrays", "splits": {"train": split, "val": split}}))
    cache = tmp_path / "cache"
    first = fidelity_metrics(images[:100], d, cfg, weights, cache, metrics=("fid", "prc"), prc_reference_size=150)
    files = sorted(p.name for p in cache.iterdir())
    assert any("fake32-train320" in f and "stat-fid" in f for f in files)
    assert any("sub150" in f for f in files)
    again = fidelity_metrics(images[:100], d, cfg, weights, cache, metrics=("fid", "prc"), prc_reference_size=150)
    assert again == first
    assert sorted(p.name for p in cache.iterdir()) == files


def test_images_pass_a_shared_network_once(setup, tmp_path, monkeypatch):
    """At tiny scale FID/IS and precision/recall use one network: the images' features are extracted
    once and read back by the second torch-fidelity call; the temporary cache entry is removed."""
    weights, images, cfg = setup
    seen = []
    forward = EvaluatorFeatureExtractor.forward
    monkeypatch.setattr(EvaluatorFeatureExtractor, "forward", lambda self, x: seen.append(len(x)) or forward(self, x))
    cache, ref = tmp_path / "cache", images[:200]
    both = fidelity_metrics(images, ref, cfg, weights, cache, metrics=("fid", "isc", "prc"))
    assert sum(seen) == len(images) + 2 * len(ref)  # the unnamed reference is not cached: once per call
    assert not list(cache.glob("input1-*"))
    separate = {**fidelity_metrics(images, ref, cfg, weights, cache, metrics=("fid", "isc")),
                **fidelity_metrics(images, ref, cfg, weights, cache, metrics=("prc",))}
    assert both == pytest.approx(separate)


def test_missing_weights_are_clear_errors(setup, tmp_path):
    _, images, cfg = setup
    paper = dataclasses.replace(cfg, feature_network="inception", torch_home=str(tmp_path / "th"))
    with pytest.raises(FidelityError, match="weights-inception-2015-12-05-6726825d.pth not found.*curl"):
        fidelity_metrics(images, images, paper, None, tmp_path / "cache")
    with pytest.raises(FidelityError, match="evaluator weights"):
        fidelity_metrics(images, images, cfg, None, tmp_path / "cache")


def test_label_accuracy_reads_images_in_npz_layout(tmp_path):
    import torch

    from maetok.eval.generation import label_accuracy
    from maetok.models.standins import Evaluator, save_weights, seeded, to_model_input

    weights = tmp_path / "ev.safetensors"
    net = seeded(Evaluator, 0).eval()
    save_weights(net, weights)
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)  # (N, H, W, 3) as in .npz
    with torch.no_grad():
        own = net.head(net(to_model_input(torch.from_numpy(images).permute(0, 3, 1, 2)))[1]).argmax(1).numpy()
    assert label_accuracy(images, own, str(weights)) == 1.0
    assert label_accuracy(images, (own + 1) % 10, str(weights)) == 0.0
