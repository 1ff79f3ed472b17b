"""Two CPU processes (torchrun, gloo) train what one process trains at the same global batch.

Exact equality is not the claim: each rank draws its own stage-1 mask ratio and masks, and its
own flow-matching t, eps, from the seed `seed * world_size + rank` (as the official code, one draw
per GPU), so a 2-process run legitimately differs from a 1-process run. The tests therefore run
both through `ddp_probe.py`, which records the real per-rank draws (they must differ between
ranks) and then substitutes world-size-invariant ones (one draw per global batch, sliced per
rank). Everything else is the real code path: torchrun, setup_distributed, DDP gradient
averaging, index_stream sharding, augmentation, the all-reduced loss, EMA, checkpointing, and
rank-0-only writes. Label dropout is turned off in the generator comparison for the same reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_probe
import pytest
import torch
from safetensors.torch import load_file

from maetok import config as C
from maetok.train import checkpoint as ckpt
from maetok.train import utils as train_utils
from maetok.train.generator import GeneratorJob, train_generator
from maetok.train.tokenizer import TokenizerJob, train

PROBE = Path(ddp_probe.__file__)
TORCHRUN = Path(sys.executable).with_name("torchrun")
DATA = C.DataConfig(dataset="fashion_mnist", root=None, download=False, url="", image_size=32, num_classes=10,
                    hflip=True)


def torchrun(args: list[str], probe_dir: Path, watch: Path, timeout: int = 240) -> dict[int, dict]:
    """Run ddp_probe.py under torchrun with 2 CPU processes; return each rank's record."""
    probe_dir.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBE_DIR": str(probe_dir), "PROBE_WATCH": str(watch),
           "PROBE_INVARIANT": "1"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(PROBE), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return {rank: json.loads((probe_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)}


def assert_sharded(one: dict, two: dict[int, dict], batch: int) -> None:
    """Each step: the ranks' batches are disjoint halves that together are the 1-process batch."""
    assert len(two[0]["indices"]) == len(two[1]["indices"]) >= len(one["indices"]) - 1
    for step, full in enumerate(one["indices"][:len(two[0]["indices"])]):
        a, b = two[0]["indices"][step], two[1]["indices"][step]
        assert len(a) == len(b) == batch // 2
        assert not set(a) & set(b)
        assert a + b == full


def assert_close(a_path: str | Path, b_path: str | Path, atol: float) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < atol, f"largest weight difference {worst:.3g}"


def assert_only_rank0_writes(two: dict[int, dict], *expected: Path) -> None:
    """Rank 1 writes nothing; its pre-flight checks (maetok.commands.check_outputs: create the output
    directories, write and remove a `.write-check.*` probe) leave no file behind and are allowed."""
    assert [(e, p) for e, p in two[1]["writes"] if e != "os.mkdir" and ".write-check." not in p] == []
    written = {Path(p) for _, p in two[0]["writes"]}
    for path in expected:
        assert path in written, f"{path} not written by rank 0"


def tok_cfg() -> C.TokenizerConfig:
    base = C.to_dict(C.load_params().tokenizer("maetok"))
    small = {"aux": {"targets": ["hog"]}, "loss": {"perceptual_weight": 0.0, "disc_weight": 0.0},
             "optim": {"batch_size": 8, "steps": 3, "ckpt_every": 2, "log_every": 1, "warmup_steps": 1,
                       "bf16": False}}
    return C.from_dict(C.TokenizerConfig, C.deep_merge(base, small))


@pytest.mark.slow
def test_tokenizer_two_processes_match_one(tmp_path, tiny_data, monkeypatch):
    cfg = tok_cfg()
    one_probe = ddp_probe.install(invariant=True, setattr_=monkeypatch.setattr)
    one = TokenizerJob(data_dir=str(tiny_data), aux_dir="", out=str(tmp_path / "one" / "stage1.safetensors"),
                       ckpt_dir=str(tmp_path / "one" / "ckpt"))
    train(cfg, DATA, one, 1)

    out, ck = tmp_path / "two" / "stage1.safetensors", tmp_path / "two" / "ckpt"
    config_json = json.dumps({"tokenizer": C.to_dict(cfg), "data": C.to_dict(DATA)})
    two = torchrun(["train-tokenizer", "--config-json", config_json, "--seed", "0", "--scale", "tiny",
                    "--data", str(tiny_data), "--out", str(out),
                    "--ckpt-dir", str(ck)], tmp_path / "probe", tmp_path / "two")

    assert_sharded(one_probe.record, two, cfg.optim.batch_size)
    # per-rank seeds: the ranks' own mask ratios differ (they would be equal with one seed for all)
    ratios = [two[r]["mask_ratios"] for r in (0, 1)]
    assert len(ratios[0]) == len(ratios[1]) == cfg.optim.steps and ratios[0] != ratios[1]
    assert ratios[0] != one_probe.record["mask_ratios"] or ratios[1] != one_probe.record["mask_ratios"]
    assert_only_rank0_writes(two, out, out.with_suffix(".json"))
    assert [d.name for d in ckpt.step_dirs(ck)] == ["step_00000002"]
    assert_close(one.out, out, atol=1e-5)
    assert_close(ckpt.step_dirs(one.ckpt_dir)[-1] / "model.safetensors", ckpt.step_dirs(ck)[-1] / "model.safetensors",
                 atol=1e-5)


@pytest.mark.slow
def test_discriminator_is_one_network_across_processes(tmp_path, tiny_data, standin_dir):
    """With the GAN on, two processes train one discriminator: the same heads (weights, spectral-norm
    vectors, batch-norm running statistics) and LeCAM EMAs on both ranks, at the first step (rank 0's
    init, whereas each rank seeds its own) and after training; the backbone stays the frozen file."""
    cfg = C.from_dict(C.TokenizerConfig, C.deep_merge(C.to_dict(tok_cfg()), {
        "loss": {"disc_weight": 0.4, "disc_start": 0}, "optim": {"steps": 3}}))
    out, probe = tmp_path / "two" / "stage1.safetensors", tmp_path / "probe"
    config_json = json.dumps({"tokenizer": C.to_dict(cfg), "data": C.to_dict(DATA)})
    two = torchrun(["train-tokenizer", "--config-json", config_json, "--seed", "0", "--scale", "tiny",
                    "--data", str(tiny_data),
                    "--aux", str(standin_dir), "--out", str(out), "--ckpt-dir", str(tmp_path / "two" / "ckpt")],
                   probe, tmp_path / "two")
    assert all(two[r]["indices"][0] != two[1 - r]["indices"][0] for r in (0, 1))   # each rank saw its own half
    d0, d1 = (load_file(str(probe / f"disc_rank{r}.safetensors")) for r in (0, 1))
    assert d0.keys() == d1.keys()
    assert [k for k in d0 if not torch.equal(d0[k], d1[k])] == []
    heads = [k.removeprefix("last.") for k in d0 if k.startswith("last.heads.")]
    running = [k for k in heads if k.endswith("running_mean")]
    assert len(running) == 2 * len([k for k in heads if k.endswith(".out.parametrizations.weight.original")]) > 0
    # it trained: weights and running statistics moved away from the first step's
    assert any(not torch.equal(d0[f"first.{k}"], d0[f"last.{k}"]) for k in heads if "original" in k)
    assert all(not torch.equal(d0[f"first.{k}"], d0[f"last.{k}"]) for k in running)
    assert float(d0["last.lecam.ema_real"]) != 0.0
    # the backbone is the stand-in teacher file, untouched
    teacher = load_file(str(standin_dir / "teacher_clip.safetensors"))
    assert {k for k in d0 if k.startswith("last.backbone.")} == {f"last.backbone.{k}" for k in teacher}
    assert all(torch.equal(d0[f"last.backbone.{k}"], v) for k, v in teacher.items())


@pytest.mark.slow
def test_generator_two_processes_match_one(tmp_path, latent_cache, monkeypatch):
    lat = latent_cache(tmp_path / "lat")
    cfg = C.load_params().generator("sit_l", "tiny")
    cfg = dataclasses.replace(
        cfg, optim=dataclasses.replace(cfg.optim, batch_size=8, steps=3, ckpt_every=2, log_every=1, warmup_steps=0),
        transport=dataclasses.replace(cfg.transport, class_dropout=0.0), eval_steps=(3,))

    def job(root: Path) -> GeneratorJob:
        return GeneratorJob(latents=str(lat), out=str(root / "ema.safetensors"), steps_dir=str(root / "steps"),
                            loss_curve=str(root / "loss.json"), ckpt_dir=str(root / "ckpt"), progress=False)

    one_probe = ddp_probe.install(invariant=True, setattr_=monkeypatch.setattr)
    one = job(tmp_path / "one")
    train_generator(cfg, one)

    two_job = job(tmp_path / "two")
    two = torchrun(["train-generator", "--config-json", json.dumps(C.to_dict(cfg)), "--latents", str(lat),
                    "--out", two_job.out, "--steps-dir", two_job.steps_dir, "--loss-curve", two_job.loss_curve,
                    "--ckpt-dir", two_job.ckpt_dir], tmp_path / "probe", tmp_path / "two")

    assert_sharded(one_probe.record, two, cfg.optim.batch_size)
    t = [two[r]["t"] for r in (0, 1)]
    assert len(t[0]) == cfg.optim.steps and t[0] != t[1]   # per-rank noise streams
    assert_only_rank0_writes(two, Path(two_job.out), Path(two_job.loss_curve))
    assert_close(one.out, two_job.out, atol=1e-5)
    curves = [json.loads(Path(j.loss_curve).read_text()) for j in (one, two_job)]
    assert curves[0]["step"] == curves[1]["step"] == [1, 2, 3]
    assert curves[1]["loss"] == pytest.approx(curves[0]["loss"], rel=1e-5)   # the loss is all-reduced


def test_setup_distributed_uses_nccl_on_gpu(monkeypatch):
    """Under torchrun with CUDA, the same code path picks NCCL and the rank's local GPU."""
    calls = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("device", d))
    monkeypatch.setattr(train_utils.dist, "is_initialized", lambda: "backend" in calls)
    monkeypatch.setattr(train_utils.dist, "init_process_group", lambda backend: calls.setdefault("backend", backend))
    monkeypatch.setattr(train_utils.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(train_utils.dist, "get_world_size", lambda: 2)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        rank, world, device = train_utils.setup_distributed()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert calls == {"backend": "nccl", "device": 1}
    assert (rank, world, device) == (1, 2, torch.device("cuda", 1))
