"""One MLflow run per training job, whatever happens to it: a job SIGKILLed after a checkpoint, rerun,
preempted with SIGTERM and rerun to completion is one run, FINISHED, whose metric history holds every
logged step exactly once; its metrics JSON has the whole loss curve too. Real `maetok` processes on a
sqlite store, as under Snakemake or Slurm."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import wait_for  # tests/train is on sys.path (rootdir-relative imports)

from maetok import config as C
from maetok.tracking import JOB_TAG
from maetok.train.loop import PREEMPTED_EXIT, RUN_RECORD

STEPS, CKPT_EVERY = 10, 2
SUMMARY = {"seconds", "steps", "final_loss", "seconds_this_run"}   # logged once, at the end

# `maetok` with each training step slowed down, so that the test can signal it between two checkpoints.
DRIVER = """
import os, sys, time
from maetok.cli import main
from maetok.train import generator, tokenizer

for module in (tokenizer, generator):
    def slow(*args, _step=module.train_step, **kwargs):
        time.sleep(float(os.environ["STEP_DELAY"]))
        return _step(*args, **kwargs)
    module.train_step = slow
sys.exit(main(sys.argv[1:]))
"""


def tokenizer_job(tmp_path: Path, tiny_data: Path, latent_cache) -> tuple[list[str], Path, Path]:
    base = C.to_dict(C.load_params().tokenizer("maetok"))
    small = {"aux": {"targets": ["hog"]}, "loss": {"perceptual_weight": 0.0, "disc_weight": 0.0},
             "optim": {"batch_size": 8, "steps": STEPS, "ckpt_every": CKPT_EVERY, "log_every": 1, "warmup_steps": 1}}
    cfg = C.from_dict(C.TokenizerConfig, C.deep_merge(base, small))
    config = {"tokenizer": C.to_dict(cfg), "data": C.to_dict(C.load_params().active.data)}
    out = tmp_path / "tok" / "stage1.safetensors"
    argv = ["train-tokenizer", "--variant", "maetok", "--config-json", json.dumps(config), "--seed", "0",
            "--scale", "tiny", "--data", str(tiny_data),
            "--ckpt-dir", str(tmp_path / "ckpt"), "--out", str(out)]
    return argv, out, out.with_suffix(".json")


def generator_job(tmp_path: Path, tiny_data: Path, latent_cache) -> tuple[list[str], Path, Path]:
    cfg = C.load_params().generator("sit_l", "tiny")
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(
        cfg.optim, batch_size=8, steps=STEPS, ckpt_every=CKPT_EVERY, log_every=1, warmup_steps=0), eval_steps=(STEPS,))
    d = tmp_path / "gen"
    argv = ["train-generator", "--variant", "sit_l", "--tokenizer-variant", "maetok", "--config-json",
            json.dumps(C.to_dict(cfg)), "--latents", str(latent_cache(tmp_path / "lat")), "--out",
            str(d / "ema.safetensors"), "--steps-dir", str(d / "steps"), "--loss-curve", str(d / "loss_curve.json"),
            "--ckpt-dir", str(tmp_path / "ckpt")]
    return argv, d / "ema.safetensors", d / "loss_curve.json"


def curve_steps(kind: str, path: Path) -> list[int]:
    data = json.loads(path.read_text())
    return [e["step"] for e in data["curve"]] if kind == "tokenizer" else data["step"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tokenizer", "generator"])
def test_kill_preemption_and_resume_make_one_finished_run(kind, tmp_path, tiny_data, latent_cache, monkeypatch):
    from mlflow import MlflowClient

    argv, out, metrics_json = (tokenizer_job if kind == "tokenizer" else generator_job)(tmp_path, tiny_data,
                                                                                       latent_cache)
    ck = tmp_path / "ckpt"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("MAETOK_NO_MLFLOW", "MAETOK_TAGS")}
    env.update(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", STEP_DELAY="0.15")
    client = MlflowClient(tracking_uri=uri)

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", DRIVER, *argv], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def the_run():
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert len(runs) == 1, [(r.info.run_name, r.info.status) for r in runs]
        return runs[0]

    job = start()   # 1. killed outright after its first checkpoint: its run is left RUNNING
    try:
        wait_for(lambda: (ck / f"step_{CKPT_EVERY:08d}").is_dir(), 120, "the first checkpoint", job)
        job.kill()
    finally:
        job.kill()
        job.communicate()
    first = the_run()
    assert first.info.status == "RUNNING"
    assert json.loads((ck / RUN_RECORD).read_text())["run_id"] == first.info.run_id

    job = start()   # 2. continues that run; preempted (SIGTERM) after a later checkpoint: KILLED
    try:
        wait_for(lambda: (ck / f"step_{3 * CKPT_EVERY:08d}").is_dir(), 120, "a later checkpoint", job)
        job.send_signal(signal.SIGTERM)
        log = job.communicate(timeout=120)[0]
    finally:
        job.kill()
    assert job.returncode == PREEMPTED_EXIT, log[-3000:]
    assert "resumed from" in log and "stopped by a signal at step" in log
    second = the_run()
    assert second.info.run_id == first.info.run_id and second.info.status == "KILLED"
    assert not out.exists()

    done = subprocess.run([sys.executable, "-c", DRIVER, *argv], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=300)   # 3. continues it to the end
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = the_run()
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert {"loss", "steps_per_s"} <= set(run.data.metrics)
    for key in run.data.metrics:   # every step once: the step terms at 1..STEPS, the summary at STEPS
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == ([STEPS] if key in SUMMARY else list(range(1, STEPS + 1))), key
    assert curve_steps(kind, metrics_json) == list(range(1, STEPS + 1))   # the job's own JSON: whole, too
    assert run.data.tags["stage"] == ("tokenizer_stage1" if kind == "tokenizer" else "train_generator")
    assert run.data.tags["tokenizer"] == "maetok" and run.data.tags[JOB_TAG] == str(out.resolve())
    assert run.data.params["optim.steps"] == str(STEPS) and run.data.params["seed"] == "0"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [metrics_json.name]
