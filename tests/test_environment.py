"""pyproject.toml and environment.yml install the same package set."""

from __future__ import annotations

import re
import tomllib

import yaml


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_and_environment_yml_agree(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    py = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((repo / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    assert conda == py, f"only in pyproject: {set(py) - set(conda)}; only in environment.yml: {set(conda) - set(py)}"


def test_slurm_plugin_is_an_extra(repo):
    """snakemake imports every installed executor plugin at start, and the Slurm plugin raises
    when neither sacct nor squeue is on PATH: a hard dependency would break laptops."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert "snakemake-executor-plugin-slurm" not in names
    assert [_name(r) for r in project["optional-dependencies"]["slurm"]] == ["snakemake-executor-plugin-slurm"]
    assert "pip install 'snakemake-executor-plugin-slurm" in (repo / "environment.yml").read_text()


def test_torch_is_pinned_to_the_local_builds(repo):
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
