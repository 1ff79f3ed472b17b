"""Latent cache: statistics on known latents, hflip latents, deterministic flip picking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maetok import latents
from maetok.latents import LatentCacheError, LatentDataset, LatentStats, cache_latents

L, H = 4, 3


class FakeTokenizer(torch.nn.Module):
    """encode: the first L*H pixels of the red channel (so latents are known exactly); decode: unused."""
    num_latent_tokens, latent_dim = L, H

    def encode(self, x):
        return x[:, 0].flatten(1)[:, : L * H].reshape(-1, L, H) * 2.0 + 1.0

    def decode(self, z):
        return torch.zeros(len(z), 3, 8, 8)


def write_data(d, n_train=40, n_val=10, size=8, classes=4):
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        np.save(d / f"{split}_images.npy", rng.integers(0, 256, (n, size, size), dtype=np.uint8))
        np.save(d / f"{split}_labels.npy", np.arange(n) % classes)
        splits[split] = {"images": f"{split}_images.npy", "labels": f"{split}_labels.npy", "count": n}
    (d / "manifest.json").write_text(json.dumps({"dataset": "fake", "image_size": size, "num_classes": classes,
                                                 "kind": "arrays", "classes": None, "splits": splits}))
    return d


@pytest.fixture
def cached(tmp_path, monkeypatch):
    monkeypatch.setattr(latents, "load_tokenizer", lambda path, device: (FakeTokenizer().eval(), None, {}))
    data = write_data(tmp_path / "data")
    tok = tmp_path / "tok.safetensors"
    tok.write_bytes(b"tokenizer A")
    out = tmp_path / "latents"
    stats = cache_latents(tok, data, out, batch_size=16, progress=False)
    return data, out, stats


def test_latent_stats_match_known_latents(cached):
    data, out, stats = cached
    images = np.load(data / "train_images.npy").astype(np.float64)
    z = (images / 127.5 - 1.0).reshape(len(images), -1)[:, : L * H].reshape(-1, L, H) * 2 + 1
    assert stats["mean"] == pytest.approx(z.mean(), abs=1e-6)
    assert stats["std"] == pytest.approx(z.std(), abs=1e-6)
    assert np.allclose(stats["channel_mean"], z.reshape(-1, H).mean(0))
    assert np.allclose(stats["channel_std"], z.reshape(-1, H).std(0))
    cached_z = np.load(out / "train.npy")
    assert cached_z.dtype == np.float16 and cached_z.shape == (40, L, H)
    assert np.allclose(cached_z, z, atol=2e-3)
    flipped = (images[:, :, ::-1] / 127.5 - 1.0).reshape(len(images), -1)[:, : L * H].reshape(-1, L, H) * 2 + 1
    assert np.allclose(np.load(out / "train_flip.npy"), flipped, atol=2e-3)
    assert np.load(out / "val.npy").shape == (10, L, H)
    assert (np.load(out / "train_labels.npy") == np.arange(40) % 4).all()
    assert stats["tokenizer_sha256"] == LatentStats.load(out).tokenizer_sha256 != ""
    assert not list(out.parent.glob(".latents.*")), "temporary directory left behind"


def test_normalisation_scalar_and_channel(cached):
    _, out, stats = cached
    for norm in ("scalar", "channel"):
        ds = LatentDataset(out, norm, hflip=False)
        x, y = ds.batch(torch.arange(40), step=0)
        dims = (0, 1) if norm == "channel" else (0, 1, 2)
        assert torch.allclose(x.mean(dims), torch.zeros(()), atol=2e-3)
        assert torch.allclose(x.std(dims, unbiased=False), torch.ones(()), atol=2e-3)
        assert torch.allclose(ds.stats.denormalize(x, norm), torch.from_numpy(np.load(out / "train.npy")).float(),
                              atol=1e-4)
    with pytest.raises(ValueError, match="latent_norm"):
        LatentDataset(out, "bogus")


def test_flip_picking_is_deterministic_and_world_invariant(cached):
    _, out, _ = cached
    a, b = LatentDataset(out, seed=3), LatentDataset(out, seed=3)
    idx = torch.arange(16)
    xa, _ = a.batch(idx, step=5)
    xb, _ = b.batch(idx, step=5)
    assert torch.equal(xa, xb)
    flips = a.flips(5, 16)
    assert 0 < flips.sum() < 16
    plain = a.stats.normalize(torch.from_numpy(np.load(out / "train.npy")[:16]).float(), "scalar")
    flipped = a.stats.normalize(torch.from_numpy(np.load(out / "train_flip.npy")[:16]).float(), "scalar")
    assert torch.equal(xa[flips], flipped[flips]) and torch.equal(xa[~flips], plain[~flips])
    # two ranks with half the batch each see the same global batch
    halves = torch.cat([a.batch(idx[:8], 5, offset=0)[0], a.batch(idx[8:], 5, offset=8)[0]])
    assert torch.equal(halves, xa)
    assert not torch.equal(a.flips(6, 16), flips)


def test_wrong_tokenizer_is_detected(cached):
    _, out, _ = cached
    with pytest.raises(LatentCacheError, match="different tokenizers"):
        LatentStats.load(out).check_tokenizer("0" * 64, "generator g.safetensors")
    with pytest.raises(LatentCacheError, match="cache_latents"):
        LatentStats.load(out.parent / "missing")


def tok_cfg(bf16=False, compile=False):
    """The part of a TokenizerConfig that cache_latents reads."""
    return type("Cfg", (), {"optim": type("Optim", (), {"bf16": bf16, "compile": compile})()})()


@pytest.mark.parametrize("bf16", [True, False])
def test_encoder_runs_at_the_tokenizers_training_precision(tmp_path, monkeypatch, bf16):
    """The cache encodes under bf16 autocast exactly when the tokenizer trained with optim.bf16 (on a CPU
    with bf16 instructions, which the test declares whatever this machine has)."""
    monkeypatch.setattr("maetok.utils.device.cpu_has_bf16", lambda: True)
    seen = []

    class Recording(FakeTokenizer):
        def encode(self, x):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().encode(x)

    monkeypatch.setattr(latents, "load_tokenizer", lambda path, device: (Recording().eval(), tok_cfg(bf16), {}))
    tok = tmp_path / "tok.safetensors"
    tok.write_bytes(b"tokenizer")
    stats = cache_latents(tok, write_data(tmp_path / "data"), tmp_path / "latents", batch_size=16, progress=False,
                          device="cpu")
    assert seen and all(s == bf16 for s in seen)
    assert stats["encode_autocast"] == ("bf16" if bf16 else "off")


def test_compiled_encoder_sees_one_batch_shape(tmp_path, monkeypatch):
    """With the tokenizer's optim.compile the encoder's blocks are compiled, every encode gets a full
    batch (the last one zero-padded, so one graph serves the job), and the cache equals the eager one."""
    calls, compiled = [], []

    class Recording(FakeTokenizer):
        def compile_blocks(self, parts):
            compiled.append(tuple(parts))

        def encode(self, x):
            calls.append(len(x))
            return super().encode(x)

    data, tok = write_data(tmp_path / "data"), tmp_path / "tok.safetensors"  # 40 train, 10 val images
    tok.write_bytes(b"tokenizer")
    monkeypatch.delenv("MAETOK_NO_COMPILE")

    def run(name, compile_):
        calls.clear()
        monkeypatch.setattr(latents, "load_tokenizer",
                            lambda path, device: (Recording().eval(), tok_cfg(compile=compile_), {}))
        cache_latents(tok, data, tmp_path / name, batch_size=16, progress=False, device="cpu")
        return sorted(set(calls))

    assert run("eager", False) == [8, 10, 16] and compiled == []
    assert run("compiled", True) == [16] and compiled == [("encoder",)]
    for name in ("train.npy", "train_flip.npy", "val.npy", "train_labels.npy", "val_labels.npy"):
        assert np.array_equal(np.load(tmp_path / "eager" / name), np.load(tmp_path / "compiled" / name)), name
