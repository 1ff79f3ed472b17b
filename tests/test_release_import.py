"""Released weights as the workflow imports them (rules import_tokenizer / import_generator): the sha256
check of `maetok import-official --sha256`, and a released SiT sampled with the official latent
normalisation its file records rather than the latent cache's own statistics (docs/official_weights.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maetok import config as C
from maetok import latents
from maetok.cli import main
from maetok.models import official
from maetok.models.io import load_generator, load_tokenizer
from maetok.models.tokenizer import MAETok_models
from maetok.sample import sample_generator, sample_latents
from maetok.transport import balanced_labels, build_transport
from maetok.utils.io import sha256_file

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
SIT = FIXTURES / "sit_small.safetensors"  # an official SiT of random weights on (16, 32) latents, 1000 classes
VQ_MEAN, VQ_STD = -0.1, 0.7               # the official normalisation, as a released config.json gives it
CACHE_MEAN, CACHE_STD = 0.5, 2.0           # what our own encodings gave: deliberately different


pytestmark = pytest.mark.usefixtures("one_thread")  # the official fixtures were computed on one thread


def test_sha256_mismatch_names_the_file_and_both_hashes(tmp_path, capsys):
    wrong = "0" * 64
    out = tmp_path / "sit.safetensors"
    assert main(["import-official", "generator", str(SIT), "--sha256", wrong, "--latent-mean", "0",
                 "--latent-std", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(SIT) in err and f"expected {wrong}" in err and sha256_file(SIT) in err
    assert "download it again" in err and "docs/official_weights.md" in err
    assert not out.exists()


def test_missing_file_with_a_sha256_says_to_download(tmp_path, capsys):
    assert main(["import-official", "tokenizer", str(tmp_path / "model.safetensors"), "--sha256", "a" * 64,
                 "--out", str(tmp_path / "t.safetensors")]) == 2
    assert "not found: download the released file first (docs/official_weights.md)" in capsys.readouterr().err


@pytest.fixture
def released(tmp_path):
    """A released tokenizer (random MAETok-Fixture weights in the official layout, with a config.json giving
    vq_mean / vq_std) and the fixture SiT, imported as the rules do: --config-json of the release variants,
    --sha256 of the files. Returns (tokenizer, generator) in our format."""
    torch.manual_seed(0)
    src = tmp_path / "release" / "model.safetensors"
    src.parent.mkdir()
    official.write_official(official.export_tokenizer(MAETok_models["MAETok-Fixture"](num_latent_tokens=16)), src)
    config = src.with_name("config.json")
    config.write_text(json.dumps({"image_size": 64, "num_latent_tokens": 16, "codebook_embed_dim": 32,
                                  "vq_mean": VQ_MEAN, "vq_std": VQ_STD}))
    params = C.load_params(C.DEFAULT_PARAMS, {"scale": "paper"})
    tok, gen = tmp_path / "final.safetensors", tmp_path / "ema.safetensors"
    assert main(["import-official", "tokenizer", str(src), "--official-config", str(config), "--sha256",
                 sha256_file(src), "--config-json", json.dumps(C.to_dict(params.tokenizer("maetok_release"))),
                 "--out", str(tok)]) == 0
    assert main(["import-official", "generator", str(SIT), "--tokenizer", str(tok), "--sha256", sha256_file(SIT),
                 "--config-json", json.dumps(C.to_dict(params.generator("sit_xl_release"))), "--out", str(gen)]) == 0
    return tok, gen


def test_import_carries_the_variant_config(released):
    tok, gen = released
    _, tok_cfg, _ = load_tokenizer(tok)
    _, gen_cfg, info = load_generator(gen)
    assert tok_cfg.optim.steps == 500000  # maetok_release at paper scale, passed as --config-json
    assert gen_cfg.eval_steps == (4000000,) and gen_cfg.size == "SiT-Fixture/1"  # size: from the weights
    assert (info["latent_stats"]["mean"], info["latent_stats"]["std"]) == (VQ_MEAN, VQ_STD)


def test_released_sit_samples_with_its_recorded_normalisation(released, tmp_path, monkeypatch):
    """The latent cache of the released tokenizer has statistics of its own (our encodings); the released
    SiT was trained on (z - vq_mean) / vq_std, so its samples are decoded from x * vq_std + vq_mean."""
    tok_path, gen_path = released
    model, gcfg, info = load_generator(gen_path)
    cache = tmp_path / "latents"
    cache.mkdir()
    (cache / "stats.json").write_text(json.dumps({
        "mean": CACHE_MEAN, "std": CACHE_STD, "channel_mean": [CACHE_MEAN] * 32, "channel_std": [CACHE_STD] * 32,
        "num_latent_tokens": 16, "latent_dim": 32, "num_classes": info["num_classes"],
        "tokenizer_sha256": sha256_file(tok_path)}))
    tokenizer = load_tokenizer(tok_path)[0]
    decoded, real_decode = [], tokenizer.decode

    def decode(z):
        decoded.append(z.clone())
        return real_decode(z)

    monkeypatch.setattr(tokenizer, "decode", decode)
    monkeypatch.setattr(latents, "load_tokenizer", lambda path, device: (tokenizer, None, {}))
    n, classes = 4, info["num_classes"]  # the first 4 of a class-balanced run
    s = dataclasses.replace(C.load_params().scales["tiny"].sampling, sampler="ode", num_steps=2, num_samples=classes,
                            batch_size=n, bf16=False)
    sample_generator(s, gen_path, cache, tok_path, tmp_path / "s.npz", "nocfg", seed=3, end=n, progress=False)

    x0 = sample_latents(model, build_transport(gcfg.transport), torch.arange(n), balanced_labels(n, classes), 3,
                        "ode", 2, bf16=False)
    assert len(decoded) == 1
    torch.testing.assert_close(decoded[0], x0 * VQ_STD + VQ_MEAN)
    assert not torch.allclose(decoded[0], x0 * CACHE_STD + CACHE_MEAN)
    assert np.load(tmp_path / "s.npz")["images"].shape == (n, 64, 64, 3)
