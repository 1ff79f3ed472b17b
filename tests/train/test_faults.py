"""Training survives faults: SIGKILL and SIGTERM mid-run resume bit-identically, truncated
checkpoints fall back to the previous one, a non-finite loss stops with a clear message and
keeps the last good checkpoint."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_generator import StopAfter  # tests/train is on sys.path (rootdir-relative imports)

from maetok import cli, losses
from maetok import config as C
from maetok.train import checkpoint as ckpt
from maetok.train.generator import GeneratorJob, train_generator
from maetok.train.loop import PREEMPTED_EXIT, Preempted
from maetok.train.tokenizer import TokenizerJob, train


def _workflow_helpers():
    """copy_workflow and run_snakemake of tests/workflow/conftest.py (not importable by name)."""
    path = Path(__file__).resolve().parents[1] / "workflow" / "conftest.py"
    spec = importlib.util.spec_from_file_location("workflow_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.copy_workflow, module.run_snakemake


copy_workflow, run_snakemake = _workflow_helpers()

VARIANT = "maetok"   # mask modeling + HOG/DINO/CLIP aux decoders + perceptual loss: every RNG consumer
STEPS, CKPT_EVERY = 10, 2


def wait_for(predicate, timeout: float, what: str, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def assert_identical(a_path, b_path) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def seed_workflow(work: Path, data: Path, aux: Path) -> None:
    """Place prepare_data's and train_standin's outputs (upstream of train_tokenizer) in the copy,
    and lengthen the micro tokenizer run to STEPS steps with a checkpoint every CKPT_EVERY."""
    shutil.copytree(data, work / "results/tiny/data")
    dest = work / "results/tiny/aux_models"
    dest.mkdir(parents=True)
    for role in ("teacher_clip", "teacher_dino"):
        shutil.copy(aux / f"{role}.safetensors", dest / f"{role}.safetensors")
        (dest / f"{role}.json").write_text("{}")
    micro = yaml.safe_load((work / "micro.yaml").read_text())
    micro["scales"]["tiny"]["tokenizer"]["optim"].update(steps=STEPS, ckpt_every=CKPT_EVERY)
    (work / "micro.yaml").write_text(yaml.safe_dump(micro))


def workflow_config(work: Path) -> tuple[C.TokenizerConfig, C.DataConfig, int]:
    """What train_tokenizer passes to `maetok train-tokenizer` (its --config-json and --seed)."""
    params = C.load_params(C.read_yaml(work / "params.yaml"), C.read_yaml(work / "micro.yaml"))
    return params.tokenizer(VARIANT), params.active.data, params.seed


def reference(tmp_path: Path, cfg, data_cfg, seed: int, work: Path) -> Path:
    """The uninterrupted run, in this process (one torch thread, as the jobs with OMP_NUM_THREADS=1)."""
    job = TokenizerJob(data_dir=str(work / "results/tiny/data"), aux_dir=str(work / "results/tiny/aux_models"),
                       out=str(tmp_path / "reference" / "stage1.safetensors"),
                       ckpt_dir=str(tmp_path / "reference" / "ckpt"), seed=seed)
    train(cfg, data_cfg, job, 1)
    return Path(job.out)


def cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:  # a shell that has just exited
        return []


@pytest.fixture
def work(tmp_path, tiny_data, standin_dir) -> Path:
    w = copy_workflow(tmp_path / "work")
    seed_workflow(w, tiny_data, standin_dir)
    return w


@pytest.mark.slow
def test_sigkill_mid_run_resumes_bit_identically_through_snakemake(tmp_path, work):
    target = f"results/tiny/tokenizer/{VARIANT}/stage1.safetensors"
    first = work / f"results/tiny/ckpt/tokenizer/{VARIANT}/stage1/step_{CKPT_EVERY:08d}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).with_name("snakemake")), target, "--cores", "1",
           "--configfile", "params.yaml", "micro.yaml"]
    smk = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(first.is_dir, 180, "the first checkpoint", smk)
        jobs = [p for p in psutil.Process(smk.pid).children(recursive=True) if "train-tokenizer" in cmdline(p)]
        assert jobs, "no train-tokenizer process under snakemake"
        for p in jobs:
            p.send_signal(signal.SIGKILL)
        out, _ = smk.communicate(timeout=60)
    finally:
        smk.kill()
    assert smk.returncode != 0, out[-3000:]
    assert not (work / target).exists()
    steps_done = [int(d.name[5:]) for d in ckpt.step_dirs(first.parent)]
    assert steps_done and max(steps_done) < STEPS, "the job finished before the kill; raise STEPS"

    r = run_snakemake(work, target, "--cores", "1", timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((work / target).with_suffix(".json").read_text())
    assert metrics["resumed_from"] == max(steps_done)
    assert_identical(reference(tmp_path, *workflow_config(work), work), work / target)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_non_zero_and_resumes_bit_identically(tmp_path, work):
    cfg, data_cfg, seed = workflow_config(work)
    ck, out = tmp_path / "ckpt", tmp_path / "stage1.safetensors"
    argv = ["train-tokenizer", "--config-json", json.dumps({"tokenizer": C.to_dict(cfg), "data": C.to_dict(data_cfg),
            }), "--seed", str(seed), "--scale", "tiny", "--data", str(work / "results/tiny/data"),
            "--aux", str(work / "results/tiny/aux_models"), "--ckpt-dir", str(ck), "--out", str(out)]

    def preempt():   # Slurm's SIGTERM, once the first checkpoint exists
        wait_for(lambda: (ck / f"step_{CKPT_EVERY:08d}").is_dir(), 120, "the first checkpoint")
        os.kill(os.getpid(), signal.SIGTERM)

    # A late signal (after the run restored the handlers) must not kill pytest: it lands here instead.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    sender = threading.Thread(target=preempt)
    sender.start()
    try:
        with pytest.raises(SystemExit, match="stopped by a signal at step") as stopped:
            cli.main(argv)
    finally:
        sender.join()
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.code == PREEMPTED_EXIT   # the process exits with this status: Slurm requeues the job
    stop_step = stopped.value.step
    assert CKPT_EVERY <= stop_step < STEPS
    assert ckpt.step_dirs(ck)[-1].name == f"step_{stop_step:08d}"
    assert not out.exists()

    assert cli.main(argv) == 0
    assert json.loads(out.with_suffix(".json").read_text())["resumed_from"] == stop_step
    assert_identical(reference(tmp_path, cfg, data_cfg, seed, work), out)


def gen_cfg() -> C.GeneratorConfig:
    cfg = C.load_params().generator("sit_l", "tiny")
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, batch_size=8, steps=4, ckpt_every=1,
                                                              log_every=1, warmup_steps=0), eval_steps=(4,))


def gen_job(root: Path, latents: Path) -> GeneratorJob:
    return GeneratorJob(latents=str(latents), out=str(root / "ema.safetensors"), steps_dir=str(root / "steps"),
                        loss_curve=str(root / "loss.json"), ckpt_dir=str(root / "ckpt"), progress=False)


@pytest.mark.parametrize("damage", ["model.safetensors", "state.pt", "meta.json"])
def test_truncated_generator_checkpoint_falls_back_to_the_previous_one(tmp_path, latent_cache, damage):
    """A newest checkpoint cut short (any of its files) is skipped with a warning; the run resumes from the
    previous one and still ends bit-identical to an uninterrupted run. (The tokenizer's fallback is covered
    by tests/train/test_tokenizer_training.py.)"""
    lat, cfg = latent_cache(tmp_path / "lat"), gen_cfg()
    full = gen_job(tmp_path / "full", lat)
    train_generator(cfg, full)
    part = gen_job(tmp_path / "part", lat)
    part.stop = StopAfter(3)
    with pytest.raises(Preempted) as stopped:
        train_generator(cfg, part)
    assert stopped.value.step == 3
    newest = ckpt.step_dirs(part.ckpt_dir)[-1]
    f = newest / damage
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    part.stop = StopAfter(100)
    with pytest.warns(UserWarning, match="unreadable"):
        train_generator(cfg, part)
    assert_identical(full.out, part.out)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
        tmp_path, tiny_data, monkeypatch, capsys):
    base = C.to_dict(C.load_params().tokenizer("target_hog"))
    cfg = C.from_dict(C.TokenizerConfig, C.deep_merge(base, {"optim": {
        "batch_size": 8, "steps": 4, "ckpt_every": 1, "log_every": 1, "warmup_steps": 1},
        "loss": {"perceptual_weight": 0.0}}))
    data_cfg = C.load_params().active.data
    ck, out = tmp_path / "ckpt", tmp_path / "stage1.safetensors"
    argv = ["train-tokenizer", "--config-json", json.dumps({"tokenizer": C.to_dict(cfg), "data": C.to_dict(data_cfg),
            }), "--seed", "0", "--scale", "tiny", "--data", str(tiny_data), "--ckpt-dir", str(ck),
            "--out", str(out)]
    original = losses.TokenizerLoss.generator_loss

    def diverge_at_step_2(self, x, x_rec, step, *args, **kwargs):
        terms = original(self, x, x_rec, step, *args, **kwargs)
        if step == 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(losses.TokenizerLoss, "generator_loss", diverge_at_step_2)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step 2" in err and f"last good checkpoint in {ck} is kept" in err
    dirs = ckpt.step_dirs(ck)
    assert [d.name for d in dirs] == ["step_00000001", "step_00000002"]
    kept = load_file(str(dirs[-1] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in kept.values() if v.is_floating_point())
    assert not out.exists()
    monkeypatch.setattr(losses.TokenizerLoss, "generator_loss", original)
    assert cli.main(argv) == 0
    assert json.loads(out.with_suffix(".json").read_text())["resumed_from"] == 2
