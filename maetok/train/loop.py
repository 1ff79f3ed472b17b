"""The training-loop skeleton of the tokenizer, generator and stand-in trainers.

`Session` does what every training job does the same way, so a trainer keeps only its
networks, its step and its outputs:

- the distributed set-up (torchrun) and the per-rank seed `seed * world_size + rank`,
- the stale-checkpoint check (checkpoints of another config are moved aside, never resumed)
  and the resume: weights, optimisers, RNG state and the loss curve,
- one MLflow run per job (maetok.tracking.Run): a resumed job continues the run its checkpoint
  directory records, logs each step once, and the run ends FINISHED, KILLED (stop signal) or
  FAILED (any error),
- the step loop (`fit`): non-finite loss check, loss curve, checkpoints, and on SIGTERM /
  SIGUSR1 (Slurm preemption) a checkpoint and `Preempted`: the process exits with status 3
  (PREEMPTED_EXIT, non-zero like any failure) and the resubmitted job resumes (Snakemake's
  `retries`, or the site's Slurm requeue),
- the cleanup in `finally`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from maetok.tracking import JOB_TAG, RUN_KEY_TAG, Run
from maetok.train import checkpoint as ckpt
from maetok.train.utils import (
    StopFlag,
    any_rank,
    check_finite,
    cleanup_distributed,
    log_weight_checksums,
    setup_distributed,
)

RUN_RECORD = "mlflow_run.json"   # in the checkpoint directory: the MLflow run the checkpoints belong to


@dataclass(kw_only=True)
class TrainJob:
    """What a training job gets besides its config: where to write, and its run context."""
    out: str                        # the final weights (.safetensors), written atomically at the end
    ckpt_dir: str = ""              # resumable checkpoints, outside the rule's outputs ("": none kept)
    variant: str = ""
    scale: str = ""
    seed: int = 0
    tags: dict | None = None        # more MLflow tags (tables, tokenizer, ...)
    progress: bool = True
    stop: StopFlag | None = None    # tests pass a stand-in; otherwise the session installs one


PREEMPTED_EXIT = 3   # the exit status of a job stopped by a signal after its checkpoint


class Preempted(SystemExit):
    """A stop signal ended the job after a checkpoint: the process exits with PREEMPTED_EXIT (non-zero,
    so Snakemake counts a failed attempt and its `retries` resubmit the job), and the rerun resumes
    from `step`."""

    def __init__(self, step: int, ckpt_dir: str | Path | None):
        super().__init__(PREEMPTED_EXIT)
        where = f"checkpoint saved in {ckpt_dir}" if ckpt_dir else "this job keeps no checkpoints; a rerun starts over"
        self.step, self.message = step, f"stopped by a signal at step {step}; {where}"

    def __str__(self) -> str:
        return self.message


def scaled_lr(optim) -> float:
    """The learning rate of the global batch: `lr` per 256 images with `optim.lr_batch_scaling` (as the
    official tokenizer code), else `lr` as given. Computed here once for every trainer."""
    return optim.lr * (optim.batch_size / 256 if optim.lr_batch_scaling else 1.0)


class _Meter:
    """The values logged every `log_every` steps: the last step's terms (`mean=False`), or each term's
    mean over the window, summed on the device so the steps in between need no host sync."""

    def __init__(self, log_every: int, mean: bool):
        self.log_every, self.mean = log_every, mean
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0   # steps in the window: fewer than log_every after a resume mid-window
        self.last: dict[str, float] = {}

    def add(self, terms: dict[str, torch.Tensor], done: int) -> dict[str, float] | None:
        if self.mean:
            for k, v in terms.items():
                if k not in self.sums:
                    self.sums[k] = torch.zeros((), device=v.device)
                self.sums[k] += v
            self.count += 1
        else:
            self.last = {k: float(v) for k, v in terms.items()}
        if not self.log_every or done % self.log_every:
            return None
        if not self.mean:
            return self.last
        values = {k: float(v) / self.count for k, v in self.sums.items()}
        for v in self.sums.values():
            v.zero_()
        self.count = 0
        return values


def _curve_from_state(saved) -> list[dict]:
    """The loss curve a checkpoint holds: a list of {"step", <term>...}; generator checkpoints from
    before the shared loop stored {"step": [...], "loss": [...]}."""
    curve = json.loads(saved) if saved else []
    if isinstance(curve, dict):
        curve = [{"step": s, "loss": v} for s, v in zip(curve["step"], curve["loss"], strict=True)]
    return curve


class Session:
    """One training job from set-up to clean-up; use as a context manager (see the module docstring).

    `key` is the identity of the run (checkpoint.run_key; None: the job keeps no checkpoints) and
    `steps` its length: both decide whether the checkpoints in `job.ckpt_dir` are resumed."""

    def __init__(self, job: TrainJob, *, name: str, stage: str, params: dict, key: str | None, steps: int,
                 tags: dict | None = None):
        self.job, self.key, self.steps = job, key, steps
        self.ckpt_dir = Path(job.ckpt_dir) if job.ckpt_dir and key else None
        self.rank, self.world, self.device = setup_distributed()
        torch.manual_seed(job.seed * self.world + self.rank)
        self.curve: list[dict] = []
        self.start, self.resumed, self.seconds = 0, False, 0.0
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if self.ckpt_dir is not None and self.rank == 0:
            ckpt.retire_stale(self.ckpt_dir, key, steps)
        if self.world > 1:
            dist.barrier()
        self.run = Run(name, self._tags(stage, tags), {**params, "seed": job.seed}, enabled=self.rank == 0,
                       record=self.ckpt_dir / RUN_RECORD if self.ckpt_dir else None, run_key=key or "")
        self.stop = job.stop or StopFlag()

    def _tags(self, stage: str, tags: dict | None) -> dict:
        merged = {k: v for k, v in {**(self.job.tags or {}), **(tags or {})}.items() if v not in (None, "")}
        for k, v in (("variant", self.job.variant), ("scale", self.job.scale)):
            if v:
                merged.setdefault(k, v)
        return {**merged, "stage": stage, JOB_TAG: str(Path(self.job.out).resolve()), RUN_KEY_TAG: self.key or ""}

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:
                self.run.end("KILLED" if issubclass(exc_type, Preempted) else "FAILED")
        finally:
            if self.job.stop is None:
                self.stop.restore()
            cleanup_distributed()
        return False

    def resume(self, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> int:
        """Restore the newest readable checkpoint into `modules` and `optimizers` (and the loss
        curve); return the step to start from (0 without one)."""
        self.modules, self.optimizers = modules, optimizers
        state = ckpt.load_latest(self.ckpt_dir, modules) if self.ckpt_dir else None
        if state is None:
            return 0
        for name, opt in optimizers.items():
            opt.load_state_dict(state[name])
        self.curve = _curve_from_state(state.get("curve"))
        self.start, self.resumed = state["step"], True
        if self.rank == 0:
            print(f"resumed from {self.ckpt_dir} at step {self.start}", flush=True)
        return self.start

    def save(self, step: int) -> None:
        """Checkpoint `step` (rank 0 writes; every rank waits for it)."""
        if self.rank == 0:
            state = {name: opt.state_dict() for name, opt in self.optimizers.items()}
            ckpt.save(self.ckpt_dir, step, self.modules, {**state, "curve": json.dumps(self.curve)},
                      {"run_key": self.key})
        if self.world > 1:
            dist.barrier()

    def fit(self, step_fn: Callable[[int], dict[str, torch.Tensor]], *, ckpt_every: int = 0, log_every: int = 0,
            mean: bool = False, after_step: Callable[[int], None] | None = None, final_checkpoint: bool = False,
            desc: str = "train") -> dict[str, float]:
        """Run steps `start`..`steps - 1`; `step_fn(step)` trains one and returns its loss terms.
        Every `log_every` steps the terms (their window mean with `mean`) join the curve and the MLflow
        run; a checkpoint every `ckpt_every` steps (and after the last with `final_checkpoint`). Returns
        the last step's terms (with `mean=False`)."""
        meter = _Meter(log_every, mean)
        bar = tqdm(total=self.steps, initial=self.start, desc=desc, disable=not (self.job.progress and self.rank == 0),
                   mininterval=10)
        t0 = time.perf_counter()
        try:
            for step in range(self.start, self.steps):
                terms = step_fn(step)
                check_finite(terms, step, str(self.ckpt_dir or ""))
                done = step + 1
                values = meter.add(terms, done)
                if values is not None:
                    self.curve.append({"step": done, **values})
                    speed = (done - self.start) / (time.perf_counter() - t0)
                    self.run.log_metrics({**values, "steps_per_s": speed}, done)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
                if after_step is not None:
                    after_step(done)
                saved = bool(self.ckpt_dir and ckpt_every and (done % ckpt_every == 0
                                                              or (final_checkpoint and done == self.steps)))
                if saved:
                    self.save(done)
                if done < self.steps and any_rank(self.stop.stop, self.device, self.world):
                    if self.ckpt_dir and not saved:
                        self.save(done)
                    stopped = Preempted(done, self.ckpt_dir)
                    if self.rank == 0:
                        print(stopped, file=sys.stderr, flush=True)
                    raise stopped
                bar.update(1)
        finally:
            bar.close()
        self.seconds = time.perf_counter() - t0
        return meter.last

    def finish(self, summary: dict, artifacts=()) -> None:
        """After the outputs are written: log the summary metrics (at the last step) and the artifacts
        (the metrics JSON first), and end the run FINISHED."""
        if self.modules:
            log_weight_checksums(self.modules, self.rank)
        self.run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))}, self.steps)
        for path in artifacts:
            if path and Path(path).is_file():
                self.run.log_artifact(path)
        self.run.end()
