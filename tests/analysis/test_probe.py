"""Linear probe (§4.3, Fig. 5a): separable -> ~100%, shuffled labels -> chance, seeded."""

import numpy as np
import pytest

from maetok.analysis.probe import linear_probe


def _separable(n, c, d, seed):
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(d, c))
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x @ w).argmax(1)


@pytest.mark.parametrize("optimizer", ["adamw", "lbfgs"])
def test_separable_classes_are_learned(optimizer):
    x, y = _separable(1200, 4, 16, seed=0)
    out = linear_probe(x[:800], y[:800], x[800:], y[800:], seed=0, epochs=15, batch_size=200,
                       lr=0.1 if optimizer == "adamw" else 1.0, optimizer=optimizer, device="cpu")
    assert out["train_acc"] > 0.97 and out["val_acc"] > 0.95
    assert out["num_classes"] == 4 and out["input_dim"] == 16 and out["n_val"] == 400


def test_shuffled_labels_give_chance():
    x, y = _separable(1600, 4, 16, seed=1)
    y = np.random.default_rng(5).permutation(y)
    out = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], seed=0, epochs=5, batch_size=200, lr=0.01,
                       device="cpu")
    assert 0.15 < out["val_acc"] < 0.36


def test_same_seed_same_result_and_memmap_input(tmp_path):
    x, y = _separable(600, 3, 6 * 4, seed=2)
    path = tmp_path / "latents.npy"
    np.save(path, x.reshape(600, 6, 4))
    mm = np.load(path, mmap_mode="r")
    kw = dict(seed=7, epochs=3, batch_size=50, lr=0.01, weight_decay=1e-4, device="cpu")
    a = linear_probe(mm[:400], y[:400], mm[400:], y[400:], **kw)
    b = linear_probe(x[:400], y[:400], x[400:], y[400:], **kw)
    assert a == b
    c = linear_probe(x[:400], y[:400], x[400:], y[400:], **{**kw, "seed": 8})
    assert c["train_loss"] != a["train_loss"]
