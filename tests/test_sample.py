"""Sampling: shard determinism, class balance, the .npz layout, tokenizer pairing checks, guidance names."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from maetok import config as C
from maetok import latents
from maetok.latents import LatentCacheError
from maetok.sample import Guidance, parse_guidance, sample_generator
from maetok.train.generator import GeneratorJob, train_generator
from maetok.utils.io import sha256_file

L, H, CLASSES = 8, 4, 3


def tiny_cfg() -> C.GeneratorConfig:
    cfg = C.load_params().generator("sit_l", "tiny")
    o = dataclasses.replace(cfg.optim, batch_size=8, steps=2, ckpt_every=10, log_every=1, warmup_steps=0)
    return dataclasses.replace(cfg, optim=o, eval_steps=(2,))


class FakeTokenizer(torch.nn.Module):
    num_latent_tokens, latent_dim = L, H

    def decode(self, z):
        """(B, L, H) -> (B, 3, 8, 8) in [-1, 1]."""
        x = torch.tanh(z.flatten(1)).repeat(1, 2)[:, :64].reshape(-1, 1, 8, 8)
        return x.expand(-1, 3, -1, -1)


@pytest.fixture
def trained(latent_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(latents, "load_tokenizer", lambda path, device: (FakeTokenizer().eval(), None, {}))
    tok = tmp_path / "tok.safetensors"
    tok.write_bytes(b"tokenizer A")
    lat = latent_cache(tmp_path / "lat", sha=sha256_file(tok))
    cfg = tiny_cfg()
    gen = tmp_path / "gen" / "ema.safetensors"
    train_generator(cfg, GeneratorJob(latents=str(lat), out=str(gen), steps_dir=str(tmp_path / "gen" / "steps"),
                                      loss_curve=str(tmp_path / "gen" / "loss.json"), ckpt_dir=str(tmp_path / "ckpt"),
                                      progress=False, tokenizer=str(tok),
                                      sample_grid=str(tmp_path / "gen" / "preview.png")))
    assert (tmp_path / "gen" / "preview.png").stat().st_size > 0
    return tok, lat, gen


def sampling(sampler="sde", batch_size=12, num_samples=12):
    s = C.load_params().scales["tiny"].sampling
    return dataclasses.replace(s, sampler=sampler, num_steps=3, num_samples=num_samples, batch_size=batch_size)


@pytest.mark.parametrize("sampler,guidance", [("sde", "cfg"), ("ode", "nocfg")])
def test_shards_regenerate_identically(trained, tmp_path, sampler, guidance):
    tok, lat, gen = trained
    whole = tmp_path / "whole.npz"
    sample_generator(sampling(sampler), gen, lat, tok, whole, guidance, seed=1, grid=tmp_path / "grid.png",
                     progress=False)
    parts = [tmp_path / "a.npz", tmp_path / "b.npz"]
    sample_generator(sampling(sampler, batch_size=2), gen, lat, tok, parts[0], guidance, seed=1, end=5,
                     progress=False)
    sample_generator(sampling(sampler, batch_size=5), gen, lat, tok, parts[1], guidance, seed=1, start=5,
                     progress=False)
    w = np.load(whole)
    assert sorted(w.files) == ["images", "indices", "labels"]
    assert w["images"].dtype == np.uint8 and w["images"].shape == (12, 8, 8, 3)
    assert (w["indices"] == np.arange(12)).all()
    joined = np.concatenate([np.load(p)["images"] for p in parts])
    assert np.abs(joined.astype(int) - w["images"].astype(int)).max() <= 1
    assert (np.concatenate([np.load(p)["labels"] for p in parts]) == w["labels"]).all()
    assert w["images"].std() > 0
    other = tmp_path / "other.npz"
    sample_generator(sampling(sampler), gen, lat, tok, other, guidance, seed=2, progress=False)
    assert not np.array_equal(np.load(other)["images"], w["images"])
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_labels_are_class_balanced(trained, tmp_path):
    tok, lat, gen = trained
    out = tmp_path / "s.npz"
    sample_generator(sampling("ode", batch_size=4, num_samples=3 * CLASSES), gen, lat, tok, out, "nocfg",
                     progress=False)
    labels = np.load(out)["labels"]
    assert np.bincount(labels, minlength=CLASSES).tolist() == [3] * CLASSES


def test_wrong_tokenizer_or_latents_is_a_clear_error(latent_cache, trained, tmp_path):
    tok, lat, gen = trained
    other_tok = tmp_path / "tok_b.safetensors"
    other_tok.write_bytes(b"tokenizer B")
    other_lat = latent_cache(tmp_path / "lat_b", sha=sha256_file(other_tok))
    with pytest.raises(LatentCacheError, match="different tokenizers"):
        sample_generator(sampling(), gen, other_lat, other_tok, tmp_path / "x.npz", "nocfg", progress=False)
    with pytest.raises(LatentCacheError, match="is not the one"):
        sample_generator(sampling(), gen, lat, other_tok, tmp_path / "x.npz", "nocfg", progress=False)
    assert not (tmp_path / "x.npz").exists()
    assert json.loads((lat / "stats.json").read_text())["tokenizer_sha256"] == sha256_file(tok)


def test_unbalanceable_sample_count_is_a_clear_error(trained, tmp_path):
    tok, lat, gen = trained
    with pytest.raises(ValueError, match="sampling.num_samples"):
        sample_generator(sampling("ode", num_samples=3 * CLASSES + 1), gen, lat, tok, tmp_path / "s.npz", "nocfg",
                         progress=False)


def test_cfg_interval_outside_unit_range_is_rejected():
    bad = {**C.to_dict(C.load_params().scales["tiny"].sampling), "cfg_interval_high": 1.5}
    with pytest.raises(C.ConfigError, match="cfg_interval_high"):
        C.from_dict(C.SamplingConfig, bad, "sampling")


def test_guidance_names():
    s = sampling()  # tiny: cfg_scale 1.9 on [0, 0.75]
    assert parse_guidance("nocfg", s).scale == 1.0
    assert parse_guidance("cfg", s) == Guidance(1.9, (0.0, 0.75))
    assert parse_guidance("cfg1.8_0.125-0.8", s) == Guidance(1.8, (0.125, 0.8))
    assert parse_guidance("cfg2_0-1", s) == Guidance(2.0, (0.0, 1.0))
    for bad, message in (("cfg1.9", "cfg<scale>_<low>-<high>"), ("cfg1.9_0-0.75x", "got"),
                         ("cfg1.9_0.8-0.7", "low <= high"), ("cfg1.9_0-1.5", "low <= high")):
        with pytest.raises(ValueError, match=message):
            parse_guidance(bad, s)


def test_sweep_point_samples_its_own_cfg_setting(trained, tmp_path):
    """A Table 12 point at the configured setting reproduces `cfg` exactly; another scale differs."""
    tok, lat, gen = trained
    out = {name: tmp_path / f"{name}.npz" for name in ("cfg", "cfg1.9_0-0.75", "cfg4_0-1")}
    for name, path in out.items():
        summary = sample_generator(sampling(), gen, lat, tok, path, name, seed=1, progress=False)
    assert summary["cfg_scale"] == 4.0 and summary["cfg_interval"] == [0.0, 1.0]
    images = {name: np.load(path)["images"] for name, path in out.items()}
    assert np.array_equal(images["cfg"], images["cfg1.9_0-0.75"])
    assert not np.array_equal(images["cfg"], images["cfg4_0-1"])



def test_cpu_bf16_autocast_follows_the_hardware(monkeypatch):
    """The configs' bf16 flags turn autocast on where it pays: always on CUDA, on a CPU only with bf16
    instructions (emulated bf16 matmuls are several times slower than fp32)."""
    from maetok.utils import device

    for has, expected in ((True, True), (False, False)):
        monkeypatch.setattr(device, "cpu_has_bf16", lambda has=has: has)
        assert device.bf16_enabled("cpu", True) is expected
        with device.bf16_autocast("cpu", True):
            assert torch.is_autocast_enabled("cpu") is expected
    assert device.bf16_enabled("cuda", True) and not device.bf16_enabled("cuda", False)
    assert not device.bf16_enabled("cpu", False)


def test_cpu_bf16_detection_can_be_overridden(monkeypatch):
    from maetok.utils import device

    try:
        for value, expected in (("1", True), ("0", False)):
            with monkeypatch.context() as m:
                m.setenv("MAETOK_CPU_BF16", value)
                device.cpu_has_bf16.cache_clear()
                assert device.cpu_has_bf16() is expected
    finally:
        device.cpu_has_bf16.cache_clear()  # the next caller detects this machine's CPU again
