"""The Slurm profile (profiles/slurm/config.yaml) against the rules: every rule whose jobs ask for a
GPU at paper scale must be sent to a GPU partition, not the default CPU one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def _gpus_per_rule(dry_run: str) -> dict[str, int]:
    """{rule: the most GPUs any of its jobs asks for} from the job blocks of a dry run."""
    gpus: dict[str, int] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", dry_run):
        rule = re.match(r"(?:local)?rule (\w+):\n", block)
        if rule:
            asked = re.search(r"^\s+resources: .*\bgpu=(\d+)", block, re.M)
            gpus[rule[1]] = max(gpus.get(rule[1], 0), int(asked[1]) if asked else 0)
    return gpus


# Rules that have no job at paper scale (the stand-in networks are tiny-scale only).
TINY_ONLY = {"train_standin"}
# Rules with jobs only for the released-weights tables, which `rule all` does not build (they need the
# downloads of docs/official_weights.md); CPU jobs, asking for no GPU (tests/workflow/test_release.py).
RELEASE_ONLY = {"import_tokenizer", "import_generator"}


def test_every_rule_asking_for_a_gpu_at_paper_scale_gets_a_gpu_partition(repo):
    def snakemake(*args):
        r = subprocess.run([str(BIN / "snakemake"), *args], cwd=repo, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout

    gpus = _gpus_per_rule(snakemake("-n", "--forceall", "--config", "scale=paper"))
    # Every rule has jobs in the paper-scale DAG, so none escapes the check below.
    rules = set(snakemake("--list-rules", "--config", "scale=paper").split())
    missing = rules - TINY_ONLY - RELEASE_ONLY - set(gpus)
    assert not missing, f"rules without a job in the paper-scale dry run: {missing} (TINY_ONLY if they never run there)"
    profile = yaml.safe_load((repo / "profiles" / "slurm" / "config.yaml").read_text())
    cpu = profile["default-resources"]["slurm_partition"]
    overrides = profile.get("set-resources") or {}
    on_gpu = sorted(rule for rule, n in gpus.items() if n > 0)
    assert "train_tokenizer" in on_gpu  # the dry run's resources were parsed
    bad = [rule for rule in on_gpu if (overrides.get(rule) or {}).get("slurm_partition", cpu) == cpu]
    assert not bad, (f"rules {bad} ask for GPUs but go to the default partition {cpu!r}: give each a set-resources "
                     "entry with a GPU slurm_partition in profiles/slurm/config.yaml")
