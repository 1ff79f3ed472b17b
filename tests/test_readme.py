"""Every command in the README's code blocks refers to something real."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from maetok.cli import build_parser

BIN = Path(sys.executable).parent


def readme_commands(repo) -> list[str]:
    text = (repo / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def make_targets(repo) -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (repo / "Makefile").read_text(), flags=re.M))


def test_quickstart_is_two_commands(repo):
    quick = (repo / "README.md").read_text().split("## Quickstart", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    assert [line.split("#")[0].split() for line in quick.strip().splitlines()] == [["make", "reproduce"],
                                                                                   ["make", "test"]]


def test_every_readme_command_is_real(repo):
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    commands = readme_commands(repo)
    assert commands
    for cmd in commands:
        argv = shlex.split(cmd)
        tool = Path(argv[0]).name
        if tool == "make":
            assert set(argv[1:]) <= make_targets(repo), cmd
        elif tool == "maetok":
            assert argv[1] in subcommands | {"--help"}, cmd
        elif tool == "snakemake":
            if "slurm" in argv and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
                continue  # the `slurm` extra is not installed here (no sacct/squeue); CI installs it
            dry = argv[1:] if "-n" in argv else [*argv[1:], "-n"]
            r = subprocess.run([str(BIN / "snakemake"), *dry], cwd=repo, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
        elif tool == "dvc":
            r = subprocess.run([str(BIN / "dvc"), argv[1], "--help"], cwd=repo, capture_output=True, text=True)
            assert r.returncode == 0, cmd
        else:
            pytest.fail(f"README command with an unknown tool: {cmd}")
