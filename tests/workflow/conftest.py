"""Fixtures for tests that run the real workflow: a throw-away copy of the repository's
workflow files and the micro overlay (micro.yaml) that shrinks every loop to a few steps."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MICRO = Path(__file__).with_name("micro.yaml")
BIN = Path(sys.executable).parent
# What the workflow reads from its working directory (the package itself is imported from
# the environment, installed in editable mode).
# The Slurm executor plugin is the `slurm` extra (pyproject.toml), installed by `make bootstrap`
# only where sacct/squeue exist; without it `--profile slurm` cannot run.
needs_slurm_plugin = pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]' on a machine with Slurm)")

WORKFLOW_FILES = ("Snakefile", "params.yaml", "environment.yml", "workflow", "profiles", "dvc.yaml", "Makefile")


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow files of the checkout to `dest` (with the `slurm` profile link)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / "slurm").symlink_to("profiles/slurm")
    shutil.copy2(MICRO, dest / "micro.yaml")
    return dest


def run_snakemake(workdir: Path, *args: str, timeout: int = 600, env: dict | None = None):
    """`snakemake TARGETS... --configfile params.yaml micro.yaml` in `workdir`, killed (with its
    jobs) after `timeout` seconds; returns the CompletedProcess."""
    cmd = ["timeout", "-k", "10", str(timeout), str(BIN / "snakemake"), *args,
           "--configfile", "params.yaml", "micro.yaml"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=timeout + 30)


@pytest.fixture
def micro_workdir(tmp_path) -> Path:
    """A fresh copy of the workflow with micro.yaml beside params.yaml."""
    return copy_workflow(tmp_path / "work")


@pytest.fixture(scope="session")
def micro_table4(tmp_path_factory):
    """Table 4's whole DAG, run once per test session at micro size (prepare_data -> stand-ins
    -> tokenizer stage 1 + 2 -> eval_reconstruction -> make_table; ~1.5 min on 2 cores), with
    MLflow on (sqlite store results/mlflow.db in the copy). Shared: tests that change files
    must work on their own copy."""
    work = copy_workflow(tmp_path_factory.mktemp("micro") / "work")
    env = {k: v for k, v in os.environ.items() if k not in ("MAETOK_NO_MLFLOW", "MLFLOW_TRACKING_URI")}
    r = run_snakemake(work, "tables/table4.csv", "--cores", "2", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work
