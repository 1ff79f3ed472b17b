"""Resumable checkpoints that survive a crash, a kill or a truncated write.

Layout of a run's checkpoint directory (kept outside the rule's declared outputs, so
Snakemake never deletes it when a job fails)::

    <ckpt_dir>/step_00001000/  model.safetensors  ema.safetensors  state.pt  meta.json
    <ckpt_dir>/step_00002000/  ...
    <ckpt_dir>/mlflow_run.json  the job's MLflow run, continued on resume (maetok/train/loop.py)

Each step directory is written under a temporary name and renamed into place once
complete, so a directory named `step_*` is always whole. Weights are safetensors;
optimizer state, RNG state and the loss curve are plain tensors/containers read back with
`torch.load(weights_only=True)`. `load_latest` verifies the newest checkpoint and falls
back to the previous one if it is unreadable, saying so.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from maetok.models.io import CheckpointError, state_dict_to_save
from maetok.utils.io import atomic_dir


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dirs(ckpt_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    d = Path(ckpt_dir)
    return sorted(p for p in d.glob("step_*") if p.is_dir()) if d.is_dir() else []


def save(ckpt_dir: str | Path, step: int, modules: dict[str, torch.nn.Module], state: dict,
         meta: dict | None = None, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` of them."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{step:08d}"
    with atomic_dir(final) as tmp:
        for name, module in modules.items():
            save_file(state_dict_to_save(module), str(tmp / f"{name}.safetensors"))
        torch.save({**state, "step": step, "rng": rng_state()}, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, **(meta or {})}, indent=2))
    for old in step_dirs(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_dir(d: Path, modules: dict[str, torch.nn.Module]) -> dict:
    tensors = {name: load_file(str(d / f"{name}.safetensors")) for name in modules}
    state = torch.load(d / "state.pt", map_location="cpu", weights_only=True)
    for name, module in modules.items():
        module.load_state_dict(tensors[name])
    return state


def load_latest(ckpt_dir: str | Path, modules: dict[str, torch.nn.Module]) -> dict | None:
    """Restore the newest readable checkpoint into `modules`; return its state (None if none).

    RNG state is restored too. An unreadable checkpoint is skipped with a warning (the
    previous one is used); if every checkpoint is unreadable, CheckpointError says which
    directory to delete.
    """
    dirs = step_dirs(ckpt_dir)
    bad = []
    for d in reversed(dirs):
        try:
            state = _load_dir(d, modules)
        except (SafetensorError, OSError, RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as e:
            warnings.warn(f"checkpoint {d} is unreadable ({type(e).__name__}: {e}); trying an older one",
                          stacklevel=2)
            bad.append(d)
            continue
        set_rng_state(state.pop("rng"))
        return state
    if bad:
        raise CheckpointError(f"no readable checkpoint in {ckpt_dir} (corrupted: {', '.join(map(str, bad))}). "
                              f"Delete {ckpt_dir} to restart this job from scratch.")
    return None


# --------------------------------------------------------------------------------------
# Run identity: never resume a checkpoint made with another config
# --------------------------------------------------------------------------------------
# Settings that do not change the trajectory up to a checkpoint: a run may be resumed
# after editing them (e.g. more steps: "train longer"); see retire_stale for fewer steps.
BOOKKEEPING = ("steps", "ckpt_every", "log_every", "eval_steps")


def run_key(identity: dict) -> str:
    """sha256 of a JSON-able description of a run (config, seed, input hashes), ignoring the
    BOOKKEEPING keys at any depth."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in BOOKKEEPING}
        return x
    return hashlib.sha256(json.dumps(strip(identity), sort_keys=True).encode()).hexdigest()


def retire_stale(ckpt_dir: str | Path, key: str, steps: int | None = None) -> None:
    """Move checkpoints of another run aside to `<ckpt_dir>.stale-<key>` (never resumed, never
    deleted): a different `run_key` (or none recorded), or a newest checkpoint beyond `steps`
    (the run was shortened). Without this, a rerun after a params edit would continue the old
    run, or with fewer steps simply hand back its weights. Resuming with *more* steps goes on
    from the checkpoint; with a cosine schedule that is not the same run as a fresh one
    (delete the directory, or `snakemake --forcerun`, to start over)."""
    ckpt_dir = Path(ckpt_dir)
    dirs = step_dirs(ckpt_dir)
    if not dirs:
        return
    old = None
    for d in reversed(dirs):  # the newest readable meta.json: a damaged one must not crash or retire the run
        try:
            old = json.loads((d / "meta.json").read_text()).get("run_key")
            break
        except (OSError, ValueError) as e:
            warnings.warn(f"{d / 'meta.json'} is unreadable ({type(e).__name__}: {e}); reading the run key of an "
                          "older checkpoint", stacklevel=2)
    newest = int(dirs[-1].name.split("_")[-1])
    if old != key or (steps is not None and newest > steps):
        stale = ckpt_dir.with_name(f"{ckpt_dir.name}.stale-{(old or 'unknown')[:8]}")
        shutil.rmtree(stale, ignore_errors=True)
        ckpt_dir.rename(stale)
        warnings.warn(f"checkpoints in {ckpt_dir} were made with another config or input; moved them to "
                      f"{stale} and starting from step 0", stacklevel=2)
