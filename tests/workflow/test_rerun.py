"""Rerun semantics on a "finished" Table 1: editing one tokenizer variant plans exactly that
variant's jobs (and the table); editing package code plans nothing (docs/pipeline.md: What reruns
after a change).

Running Table 1 for real takes 17 tokenizers, so the finished state is made the way a user
would mark results as done: every output of the DAG is created as an empty placeholder, then
`snakemake --touch` records each job's metadata (params included) as if it had run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, REPO, copy_workflow, run_snakemake  # tests/workflow/conftest.py

TARGET = "tables/table1.csv"
NOTHING = "Nothing to be done"
# Table 1 evaluates every tokenizer with SiT-L without CFG (table_specs.yaml: table1).
DOWNSTREAM = {"eval_reconstruction", "cache_latents", "train_generator", "sample_generator", "eval_generation"}


def planned_jobs(stdout: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job block in a `snakemake -n` printout."""
    jobs = []
    for block in re.split(r"^(?:local)?rule ", stdout, flags=re.M)[1:]:
        w = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        jobs.append((block.split(":", 1)[0], w.group(1) if w else ""))
    return jobs


def dag_outputs(stdout: str) -> set[str]:
    return {p.strip() for m in re.finditer(r"^\s+output: (.*)$", stdout, re.M) for p in m.group(1).split(",")}


@pytest.fixture(scope="module")
def finished_table1(tmp_path_factory) -> Path:
    """A workflow copy in which every job of Table 1's DAG counts as done, with metadata."""
    work = copy_workflow(tmp_path_factory.mktemp("rerun") / "work")
    r = run_snakemake(work, "-n", "--forceall", TARGET, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    outputs = dag_outputs(r.stdout)
    assert "tables/table1.csv" in outputs and len(outputs) > 100
    for out in sorted(outputs):
        p = work / out
        if p.suffix:  # every file output has a suffix; directory() outputs (data, latents, steps) have none
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        else:
            p.mkdir(parents=True, exist_ok=True)
    r = run_snakemake(work, "--touch", "--forceall", "--cores", "1", TARGET, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_snakemake(work, "-n", TARGET, timeout=120)
    assert r.returncode == 0 and NOTHING in r.stdout + r.stderr, r.stdout[-3000:]
    return work


def test_editing_one_variant_reruns_only_its_jobs(finished_table1):
    params = finished_table1 / "params.yaml"
    original = params.read_text()
    anchor = '    description: "Mask modeling, HOG aux target (Table 1b HOG, Table 1c 40-60)"\n'
    assert original.count(anchor) == 1, "target_hog's description moved; update the anchor"
    # 30-60% is no other variant's ratio, so target_hog stays its own canonical tokenizer
    params.write_text(original.replace(anchor, anchor + "    mask: {ratio_low: 0.3, ratio_high: 0.6}\n"))
    try:
        r = run_snakemake(finished_table1, "-n", TARGET, timeout=120)
    finally:
        params.write_text(original)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout)
    assert ("train_tokenizer", "tok=target_hog") in jobs
    assert re.search(r"reason: Params have changed", r.stdout)
    rules = sorted(rule for rule, _ in jobs)
    assert rules == sorted({"train_tokenizer", "make_table", *DOWNSTREAM}), jobs
    for rule, wildcards in jobs:
        if rule != "make_table":
            assert wildcards.startswith("tok=target_hog"), (rule, wildcards)
    assert ("eval_generation", "tok=target_hog, gen=sit_l, name=nocfg") in jobs
    assert ("make_table", "table=table1") in jobs


def test_editing_package_code_plans_nothing(finished_table1, tmp_path):
    """Snakemake tracks params, inputs, the shell command and the env file, not imported code:
    a changed module under maetok/ (here imported from an edited copy) plans no job."""
    pkg = tmp_path / "pkg"
    shutil.copytree(REPO / "maetok", pkg / "maetok", ignore=shutil.ignore_patterns("__pycache__"))
    module = pkg / "maetok" / "models" / "tokenizer.py"
    module.write_text(module.read_text() + "\n\ndef _edited_for_test():\n    return 1\n")
    env = {**os.environ, "PYTHONPATH": str(pkg)}
    # snakemake runs on this interpreter (BIN), which then imports the edited copy
    find = "import importlib.util; print(importlib.util.find_spec('maetok.models.tokenizer').origin)"
    where = subprocess.run([str(BIN / "python"), "-c", find],
                           cwd=finished_table1, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(module), where.stderr
    r = run_snakemake(finished_table1, "-n", TARGET, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert NOTHING in r.stdout + r.stderr
    assert not planned_jobs(r.stdout)
