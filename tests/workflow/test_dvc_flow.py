"""DVC versioning of the micro Table 4 run: add/commit/push, a change, then `make restore` of the
earlier revision gives back its files, and Snakemake finds nothing to do."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import BIN, REPO, run_snakemake  # tests/workflow/conftest.py

from maetok.report.tables import TABLES

TRACKED = ("results/tiny/data", "results/tiny/aux_models", "results/tiny/tokenizer", "tables")


def _hashes(root: Path) -> dict[str, str]:
    files = [f for d in TRACKED for f in sorted((root / d).rglob("*")) if f.is_file() and f.name != ".gitignore"]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 300) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def test_dvc_yaml_has_one_stage_per_table_and_figure():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    figures = re.search(r"^FIGURES = \{(.*?)^\}", (REPO / "workflow/rules/analysis.smk").read_text(), re.M | re.S)
    assert stages["table"]["foreach"] == list(TABLES)
    assert stages["figure"]["foreach"] == re.findall(r'^\s+"(\w+)":', figures.group(1), re.M)


def test_restore_brings_back_an_earlier_revision(micro_table4, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(micro_table4, repo, symlinks=True, ignore=shutil.ignore_patterns("mlartifacts", "mlflow.db"))
    for name in (".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
        (repo / name).parent.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
           "MAETOK_NO_MLFLOW": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    make = ["make", "-s", f"BIN={BIN}", "CONFIGFILES=params.yaml micro.yaml"]

    def git(*args):
        return _run(["git", *args], repo, env)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "workflow")
    assert "table@table4" in _run([*make, "dvc-commit"], repo, env)
    git("add", "-A")
    assert {"results/tiny/data.dvc", "results/tiny/aux_models.dvc", "dvc.lock"} <= set(
        git("diff", "--cached", "--name-only").split())
    git("commit", "-qm", "results v1")
    _run([*make, "dvc-push"], repo, env)
    rev1, before, micro = git("rev-parse", "HEAD").strip(), _hashes(repo), (repo / "micro.yaml").read_text()

    # A new revision: fewer reconstruction images -> eval_reconstruction and make_table rerun.
    (repo / "micro.yaml").write_text(micro.replace("num_recon: 200", "num_recon: 100"))
    r = run_snakemake(repo, "tables/table4.csv", "--cores", "2", env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    after, tok = _hashes(repo), "results/tiny/tokenizer"
    assert after[f"{tok}/maetok/recon.json"] != before[f"{tok}/maetok/recon.json"]  # maetok_main's row
    assert after[f"{tok}/maetok/final.safetensors"] == before[f"{tok}/maetok/final.safetensors"]  # not retrained
    _run([*make, "dvc-commit"], repo, env)
    git("commit", "-qam", "results v2")
    _run([*make, "dvc-push"], repo, env)

    _run([*make, "restore", f"REV={rev1}"], repo, env)
    assert _hashes(repo) == before
    assert (repo / "micro.yaml").read_text() == micro
    r = run_snakemake(repo, "-n", "tables/table4.csv", env=env, timeout=120)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]
    assert list((tmp_path / "maetok-dvc-remote").rglob("*")), "dvc push wrote nothing to the default remote"
