"""The repository stands on its own: no tracked file points at notes that live outside it (the
project's working notes, design files or shared folders a clone does not have). Code, comments and
docs cite the paper (section, table, equation) or the repository's own docs/ instead."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

# References to material outside the repository, as they were written before.
OUTSIDE = re.compile("|".join(map(re.escape, ("shared/", "DESIGN.md", "pipeline_tools", "spec §"))))
SKIP_DIRS = {".git", ".venv", ".snakemake", ".dvc", "results", "tables", "figures", "logs", "benchmarks",
             "__pycache__", ".pytest_cache", ".ruff_cache"}


def tracked_files(repo: Path) -> list[Path]:
    """The files git tracks (and the untracked ones it does not ignore); without git, a walk of the tree."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                             capture_output=True, check=True).stdout
        return sorted({repo / p for p in out.decode().split("\0") if p})
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in repo.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(repo).parts))


def outside_references(repo: Path) -> list[str]:
    hits = []
    for path in tracked_files(repo):
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (weights, images)
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(repo)}:{n}: {line.strip()[:160]}")
    return hits


def test_pattern_finds_what_it_should():
    assert OUTSIDE.search("see ../shared/reference/x.txt") and OUTSIDE.search("(spec §10.1)")
    assert not OUTSIDE.search("paper §4.1, docs/deviations.md, shared_run_notes")


def test_no_reference_to_files_outside_the_repository(repo):
    hits = outside_references(repo)
    assert not hits, ("files outside the repository are cited; cite the paper or docs/ instead:\n"
                      + "\n".join(hits))
