"""Generator training: exact resume, stop signal, non-finite guard, outputs, stale checkpoints."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maetok import config as C
from maetok.models.io import load_generator
from maetok.train import checkpoint as ckpt
from maetok.train.generator import GeneratorJob, train_generator
from maetok.train.loop import Preempted
from maetok.train.utils import NonFiniteLossError

L, H, CLASSES = 8, 4, 3


def tiny_cfg(**optim) -> C.GeneratorConfig:
    cfg = C.load_params().generator("sit_l", "tiny")
    o = dataclasses.replace(cfg.optim, batch_size=8, steps=3, ckpt_every=10, log_every=1, warmup_steps=0,
                            **optim)
    return dataclasses.replace(cfg, optim=o, eval_steps=(1, 3))


class StopAfter:
    """A StopFlag stand-in that reports a stop signal after `n` checks (one check per step)."""

    def __init__(self, n):
        self.n = n

    @property
    def stop(self):
        self.n -= 1
        return self.n <= 0


def job(tmp, latents, name, **kw):
    d = tmp / name
    return GeneratorJob(latents=str(latents), out=str(d / "ema.safetensors"), steps_dir=str(d / "steps"),
                        loss_curve=str(d / "loss.json"), ckpt_dir=str(tmp / "ckpt" / name), progress=False, **kw)


def test_resume_is_bit_exact_and_stop_saves(latent_cache, tmp_path):
    lat = latent_cache(tmp_path / "lat")
    cfg = tiny_cfg()
    full = job(tmp_path, lat, "full")
    assert train_generator(cfg, full)["steps"] == 3

    part = job(tmp_path, lat, "part", stop=StopAfter(2))
    with pytest.raises(Preempted) as stopped:
        train_generator(cfg, part)
    assert stopped.value.step == 2 and str(stopped.value) == f"stopped by a signal at step 2; checkpoint saved in " \
        f"{part.ckpt_dir}"
    assert [p.name for p in ckpt.step_dirs(part.ckpt_dir)] == ["step_00000002"]
    assert not (tmp_path / "part" / "ema.safetensors").exists()
    part.stop = StopAfter(10)
    train_generator(cfg, part)

    a, b = load_file(full.out), load_file(part.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    curves = [json.loads((tmp_path / n / "loss.json").read_text()) for n in ("full", "part")]
    assert curves[0] == curves[1]
    ma, mb = (load_file(str(ckpt.step_dirs(j.ckpt_dir)[-1] / "model.safetensors")) for j in (full, part))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)

    curve = json.loads((tmp_path / "full" / "loss.json").read_text())
    assert curve["step"] == [1, 2, 3] and len(curve["loss"]) == 3
    assert sorted(p.name for p in (tmp_path / "full" / "steps").iterdir()) == ["step1.safetensors", "step3.safetensors"]
    model, gcfg, info = load_generator(full.out)
    assert gcfg == cfg and info["step"] == 3 and info["tokenizer_sha256"] == "a" * 64
    step1 = load_file(str(tmp_path / "full" / "steps" / "step1.safetensors"))
    assert not torch.equal(step1["final_layer.linear.weight"], a["final_layer.linear.weight"])


def test_non_finite_loss_keeps_last_good_checkpoint(latent_cache, tmp_path):
    lat = latent_cache(tmp_path / "lat")
    cfg = tiny_cfg()
    j = job(tmp_path, lat, "run", stop=StopAfter(2))
    with pytest.raises(Preempted):
        train_generator(cfg, j)
    good = load_file(str(ckpt.step_dirs(j.ckpt_dir)[-1] / "model.safetensors"))
    for name in ("train", "train_flip"):
        np.save(lat / f"{name}.npy", np.full((32, L, H), np.inf, np.float16))
    j.stop = StopAfter(10)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 2"):
        train_generator(cfg, j)
    dirs = ckpt.step_dirs(j.ckpt_dir)
    assert [d.name for d in dirs] == ["step_00000002"]
    kept = load_file(str(dirs[-1] / "model.safetensors"))
    assert all(torch.equal(good[k], kept[k]) for k in good)
    assert not (tmp_path / "run" / "ema.safetensors").exists()


def test_unconditional_and_stale_checkpoints(latent_cache, tmp_path, monkeypatch):
    lat = latent_cache(tmp_path / "lat")
    cfg = tiny_cfg()
    cfg = dataclasses.replace(cfg, transport=dataclasses.replace(cfg.transport, conditional=False))
    seen = []
    from maetok.transport import Transport

    original = Transport.training_losses

    def spy(self, model, x, model_kwargs=None, **kw):
        seen.append(model_kwargs["y"].clone())
        return original(self, model, x, model_kwargs, **kw)

    monkeypatch.setattr(Transport, "training_losses", spy)
    j = job(tmp_path, lat, "u", stop=StopAfter(1))
    with pytest.raises(Preempted):
        train_generator(cfg, j)
    assert all((y == CLASSES).all() for y in seen)
    # the same checkpoint directory with another tokenizer's latents is never resumed
    latent_cache(tmp_path / "lat", sha="b" * 64)
    j.stop = StopAfter(10)
    with pytest.warns(UserWarning, match="another config or input"):
        train_generator(cfg, j)
    assert list((tmp_path / "ckpt").glob("u.stale-*"))
    assert len(seen) == 1 + 3


@pytest.mark.slow
def test_compiled_training_matches_eager(latent_cache, tmp_path, monkeypatch):
    """optim.compile (on at both scales): the compiled generator trains to the eager weights (to fp32
    rounding) and saves the same keys. Every other test runs with MAETOK_NO_COMPILE=1 (conftest).
    Inductor draws the label dropout from its own generator unless `fallback_random` is set."""
    from maetok.models.sit import SiT

    lat = latent_cache(tmp_path / "lat")
    cfg = tiny_cfg(compile=True)
    assert C.load_params().generator("sit_l", "tiny").optim.compile
    compiled, real = [], SiT.compile

    def spy(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(SiT, "compile", spy)
    eager = job(tmp_path, lat, "eager")
    train_generator(cfg, eager)
    assert compiled == []
    monkeypatch.delenv("MAETOK_NO_COMPILE")
    fast = job(tmp_path, lat, "compiled")
    with torch._inductor.config.patch(fallback_random=True):  # (monkeypatch's undo would hide the option)
        train_generator(cfg, fast)
    assert compiled == ["SiT"]
    a, b = load_file(eager.out), load_file(fast.out)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
