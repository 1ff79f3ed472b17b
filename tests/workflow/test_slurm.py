"""Table 4's micro DAG through a real Slurm: `snakemake --profile slurm` on a one-node cluster
started on localhost (local_slurm.sh). The jobs must show up in `sacct` under their rules'
names, in the profile's partitions, and give the same numbers as the local run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_workflow, needs_slurm_plugin, run_snakemake  # tests/workflow/conftest.py
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

LOCAL_SLURM = Path(__file__).with_name("local_slurm.sh")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")
ACCOUNT = "ci"  # made for root by local_slurm.sh
# (rule, partition) of every job Table 4's DAG submits; make_table is a localrule.
# Table 4: the 256 tokenizer (maetok_main = maetok) and the 512 one (maetok_512, on data_hires).
SUBMITTED = sorted([("prepare_data", "cpu"), ("prepare_hires", "cpu"), ("train_standin", "cpu"),
                    ("train_standin", "cpu"), ("train_standin", "cpu")]
                   + [("train_tokenizer", "gpu"), ("finetune_decoder", "gpu"), ("eval_reconstruction", "gpu")] * 2)


def _script(action: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["timeout", "-k", "5", str(timeout), "bash", str(LOCAL_SLURM), action],
                          capture_output=True, text=True)


def _scancel_jobs_in(workdir: Path) -> None:
    """Cancel jobs of this test still queued or running (after a timeout), by job id."""
    r = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True)
    ids = [line.split()[0] for line in r.stdout.splitlines() if str(workdir) in line]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node Slurm (partitions cpu and gpu, accounting on), stopped afterwards
    unless it was already running before."""
    if os.geteuid() != 0:
        pytest.skip("local Slurm needs root (tests/workflow/local_slurm.sh starts the daemons)")
    missing = [d for d in DAEMONS if shutil.which(d, path=os.environ.get("PATH", "") + ":/usr/sbin") is None]
    if missing:
        pytest.skip(f"Slurm not installed ({', '.join(missing)} missing): "
                    "run `bash tests/workflow/local_slurm.sh install` as root (.ci/run does)")
    was_running = subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("is UP") > 0
    workdirs: list[Path] = []
    r = _script("start", 180)
    try:
        assert r.returncode == 0, f"local_slurm.sh start failed:\n{r.stderr[-3000:]}"
        yield workdirs
    finally:
        for w in workdirs:
            _scancel_jobs_in(w)
        if not was_running:
            _script("stop", 120)


def _ci_profile(work: Path) -> str:
    """profiles/slurm with what a 2-core test node needs: 1 CPU and 10 min a job, account
    `ci`, quick polling, no retries, Slurm logs kept. Everything else as shipped."""
    cfg = yaml.safe_load((work / "profiles" / "slurm" / "config.yaml").read_text())
    small = {"runtime": 10, "mem_mb": 2000, "cpus_per_task": 1}
    cfg["default-resources"].update(small, slurm_account=ACCOUNT)
    for res in cfg.get("set-resources", {}).values():
        res.update(small)
    cfg.update({"jobs": 2, "retries": 0, "latency-wait": 5, "slurm-keep-successful-logs": True,
                "slurm-init-seconds-before-status-checks": 6})
    dest = work / "profiles" / "slurm-ci"
    dest.mkdir()
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(dest.relative_to(work))


def _sacct(workdir: Path, since: datetime) -> list[dict]:
    """Allocations (no steps) submitted from `workdir` at or after `since`. The accounting
    database outlives a test session, and pytest reuses its tmp paths (pytest-0 again once
    /tmp/pytest-of-root is cleaned), so an earlier session's jobs can share the WorkDir."""
    fields = ["JobID", "JobName", "Comment", "Partition", "Account", "State", "AllocCPUS", "WorkDir", "Submit"]
    start = since.strftime("%Y-%m-%dT%H:%M:%S")
    r = subprocess.run(["sacct", "-X", "-n", "-P", "-S", start, "-o", ",".join(fields)],
                       capture_output=True, text=True, check=True)
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in r.stdout.splitlines()]
    return [row for row in rows if row["WorkDir"] == str(workdir) and row["Submit"] >= start]


TIMING = re.compile(r"seconds|per_second")  # wall-clock fields of the metrics JSONs


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if not TIMING.search(k)}
    return [_without_timings(v) for v in obj] if isinstance(obj, list) else obj


def _results(work: Path) -> dict[str, object]:
    """Every metrics JSON (less its timings) and weight file of the run, and the table, by path; not
    the MLflow run id a training job keeps with its checkpoints (mlflow_run.json), unique to each run.
    Safetensors are compared by tensors: safetensors writes its metadata in a random key
    order per process, so the tokenizer files (which carry metadata) differ byte-wise."""
    results = work / "results" / "tiny"
    out: dict[str, object] = {str(p.relative_to(work)): _without_timings(json.loads(p.read_text()))
                              for p in sorted(results.rglob("*.json")) if p.name != "mlflow_run.json"}
    out |= {str(p.relative_to(work)): load_file(p) for p in sorted(results.rglob("*.safetensors"))}
    out["tables/table4.csv"] = (work / "tables" / "table4.csv").read_text()
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict) and a and isinstance(next(iter(a.values())), torch.Tensor):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a == b


@needs_slurm_plugin
def test_table4_runs_as_slurm_jobs_with_local_results(slurm_cluster, micro_table4, tmp_path):
    work = copy_workflow(tmp_path / "work")
    slurm_cluster.append(work)
    profile = _ci_profile(work)
    # Same environment as micro_table4 (MLflow on); one thread a process on the 2-core node
    # (Snakemake also sets OMP_NUM_THREADS=threads=1 in every rule's shell).
    env = {k: v for k, v in os.environ.items() if k not in ("MAETOK_NO_MLFLOW", "MLFLOW_TRACKING_URI")}
    env["OMP_NUM_THREADS"] = "1"
    started = datetime.now().replace(microsecond=0)
    t0 = time.monotonic()
    r = run_snakemake(work, "--profile", profile, "tables/table4.csv", timeout=540, env=env)
    wall = time.monotonic() - t0
    log = r.stdout[-4000:] + r.stderr[-4000:]
    assert r.returncode == 0, f"snakemake via Slurm failed after {wall:.0f} s:\n{log}"
    print(f"Table 4 micro DAG via Slurm: {wall:.0f} s")

    jobs = _sacct(work, started)
    assert all(j["State"] == "COMPLETED" for j in jobs), jobs
    assert {j["Account"] for j in jobs} == {ACCOUNT}
    assert {j["AllocCPUS"] for j in jobs} == {"1"}
    assert len({j["JobName"] for j in jobs}) == 1, "one run: every job is named by the run's UUID"
    rules = sorted((re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", j["Comment"]).group(1), j["Partition"])
                   for j in jobs)
    assert rules == SUBMITTED, "\n".join(f"{j['JobID']} {j['Comment']} {j['Partition']}" for j in jobs)
    assert list((work / "logs" / "slurm").rglob("*.log")), "the profile's slurm-logdir holds the job logs"

    # The micro run is deterministic on CPU (same seeds, one thread each): only the
    # timings differ from the local run's.
    ours, local = _results(work), _results(micro_table4)
    assert ours.keys() == local.keys()
    differ = [k for k in ours if not _same(ours[k], local[k])]
    assert not differ, f"differ from the local run: {differ}"
