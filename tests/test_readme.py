"""Every command in the code blocks of the README and the docs pages refers to something real; the
README stays a short front door; its results section is rebuilt by a command, never by hand."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from maetok.cli import build_parser
from maetok.report import readme

BIN = Path(sys.executable).parent
README_MAX_LINES = 200


# The README and the pages its details moved to, so that their commands stay checked too.
DOC_PAGES = ("README.md", "docs/pipeline.md", "docs/cluster.md", "docs/tracking.md", "bench/README.md")


def doc_pages(repo) -> list[Path]:
    return [repo / p for p in DOC_PAGES]


def doc_commands(path: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def readme_commands(repo) -> list[str]:
    return doc_commands(repo / "README.md")


def make_targets(repo) -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (repo / "Makefile").read_text(), flags=re.M))


def test_quickstart_is_two_commands(repo):
    quick = (repo / "README.md").read_text().split("## Quickstart", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    assert [line.split("#")[0].split() for line in quick.strip().splitlines()] == [["make", "reproduce"],
                                                                                   ["make", "test"]]


def test_readme_is_a_front_door(repo):
    text = (repo / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md grew past 200 lines: move details to docs/"
    for heading in ("## Quickstart", "## Results", "## Stages", "## Running on a cluster", "## Rerun one ablation"):
        assert f"\n{heading}" in text, heading
    for page in re.findall(r"\b((?:docs|bench)/[\w./-]+\.md)\b", text):
        assert (repo / page).is_file(), f"README links to {page}, which does not exist"
    assert text.index("## Results") < text.index(readme.BEGIN) < text.index(readme.END)


def _check_command(repo, cmd: str, subcommands: set[str]) -> None:
    argv = shlex.split(cmd)
    tool = Path(argv[0]).name
    if tool == "make":
        assert set(argv[1:]) <= make_targets(repo) | {a for a in argv[1:] if "=" in a}, cmd
    elif tool == "maetok":
        assert argv[1] in subcommands | {"--help"}, cmd
    elif tool == "python":
        if argv[1] == "-m":
            assert importlib.util.find_spec(argv[2]) is not None, cmd
        else:
            assert (repo / argv[1]).is_file(), cmd
    elif tool == "snakemake":
        if "--unlock" in argv:  # acts on the checkout's lock at once: check the option, do not run it
            r = subprocess.run([str(BIN / "snakemake"), "--help"], capture_output=True, text=True, timeout=120)
            assert "--unlock" in r.stdout, cmd
            return
        if "slurm" in argv and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
            return  # the `slurm` extra is not installed here (no sacct/squeue); CI installs it
        dry = argv[1:] if "-n" in argv else [*argv[1:], "-n"]
        r = subprocess.run([str(BIN / "snakemake"), *dry], cwd=repo, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
    elif tool == "dvc":
        r = subprocess.run([str(BIN / "dvc"), argv[1], "--help"], cwd=repo, capture_output=True, text=True)
        assert r.returncode == 0, cmd
    else:
        pytest.fail(f"command with an unknown tool: {cmd}")


def test_every_documented_command_is_real(repo):
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    assert readme_commands(repo)
    seen = set()
    for page in doc_pages(repo):
        for cmd in doc_commands(page):
            argv = shlex.split(cmd)  # the same command twice is checked once (thread counts aside)
            key = tuple(a for i, a in enumerate(argv) if a != "-n" and "--cores" not in argv[max(i - 1, 0):i + 1])
            if key not in seen:
                seen.add(key)
                _check_command(repo, cmd, subcommands)


# --------------------------------------------------------------------------- the results section
TABLE1 = """part,paper_row,label,tokenizer,generator,guidance,rfid,rfid_paper,gfid,gfid_paper,source,scale
a,1,VAE,vae,sit_l,nocfg,12.3456,1.22,30.1,22.58,ours,tiny
a,5,AE+MM+FT,maetok,sit_l,nocfg,8.5,0.48,9.9,5.78,ours,tiny
b,9,cited row,,,,,1.0,,2.0,cited,tiny
"""
PAGE = "# X\n\n## Results\n\n<!-- results:begin -->\npending\n<!-- results:end -->\n\n## After\n\ntext\n"


@pytest.fixture
def results_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "table1.csv").write_text(TABLE1)
    grid = tmp_path / "results" / "tiny" / "samples" / "maetok" / "sit_l" / "nocfg.png"
    grid.parent.mkdir(parents=True)
    grid.write_bytes(b"\x89PNG fake grid")
    (tmp_path / "README.md").write_text(PAGE)
    return tmp_path


def test_readme_results_rewrites_only_its_block(results_tree):
    store = results_tree / "results" / "mlflow.db"
    with sqlite3.connect(store) as db:  # the columns of MLflow's tags table that the command reads
        db.execute("CREATE TABLE tags (key TEXT, value TEXT, run_uuid TEXT)")
        db.executemany("INSERT INTO tags VALUES (?, ?, ?)", [
            ("tables", ",table1,table6,", "r1"), ("mlflow.source.git.commit", "abcdef1234567890", "r1"),
            ("tables", ",table10,", "r2"), ("mlflow.source.git.commit", "ffffffffffffffff", "r2")])
    assert readme.main([]) == 0
    text = (results_tree / "README.md").read_text()
    head, block = text.split(readme.BEGIN)
    block, tail = block.split(readme.END)
    assert head == "# X\n\n## Results\n\n" and tail == "\n\n## After\n\ntext\n"
    assert "| 1a mask modeling | VAE | `vae` | 12.35 | 1.22 | 30.10 | 22.58 |" in block
    assert "| 1a mask modeling | AE+MM+FT | `maetok` | 8.50 | 0.48 | 9.90 | 5.78 |" in block
    assert "cited row" not in block
    assert "`abcdef1234`" in block and "ffffffff" not in block  # table1's runs only, not table10's
    assert "scale: tiny" in block and "](docs/figures/table1_samples.png)" in block
    assert (results_tree / "docs" / "figures" / "table1_samples.png").read_bytes() == b"\x89PNG fake grid"
    assert readme.main([]) == 0
    assert (results_tree / "README.md").read_text() == text  # idempotent


def test_readme_results_errors_name_the_fix(results_tree, capsys):
    (results_tree / "README.md").write_text("# no markers\n")
    assert readme.main([]) == 2
    assert "<!-- results:begin -->" in capsys.readouterr().err
    assert readme.main(["--table", "tables/missing.csv"]) == 2
    assert "snakemake --cores all tables/missing.csv" in capsys.readouterr().err
    (results_tree / "tables" / "table1.csv").write_text("part,label\na,x\n")
    assert readme.main([]) == 2
    assert "lacks the columns" in capsys.readouterr().err
