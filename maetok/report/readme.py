"""Rewrite the README's results section from a built Table 1 (`make readme-results`).

    python -m maetok.report.readme [--table tables/table1.csv] [--figure PNG] [--readme README.md]

Reads the table the pipeline wrote (`maetok make-table`: our value beside the paper's), copies one
figure of the same run to docs/figures/, and replaces everything between the README's
`<!-- results:begin -->` and `<!-- results:end -->` lines with the table, the figure and where they
come from: the git commit(s) recorded on the table's MLflow runs (else the checkout's HEAD, marked
when it has uncommitted changes) and the date the table was written. Nothing is typed by hand, so
the section can only show numbers a run produced.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from maetok.utils.io import atomic_path, write_text

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
TABLE = Path("tables/table1.csv")
FIGURE = "results/{scale}/samples/maetok/sit_l/nocfg.png"   # MAETok + SiT-L w/o CFG: Table 1a's last row
FIGURE_OUT = Path("docs/figures/table1_samples.png")
STORE = Path("results/mlflow.db")
METRICS = (("rfid", "rFID"), ("gfid", "gFID"))
PARTS = {"a": "mask modeling", "b": "target", "c": "mask ratio", "d": "aux decoder depth"}
REQUIRED = ("part", "label", "tokenizer", "source", "scale") + tuple(
    c for m, _ in METRICS for c in (m, f"{m}_paper"))


class ReadmeError(ValueError):
    """The results section cannot be rebuilt; the message names the problem and the fix."""


def read_table(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ReadmeError(f"{path} not found: build Table 1 first (`snakemake --cores all {path}`), "
                          "or pass --table")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        rows = list(reader)
    if missing:
        raise ReadmeError(f"{path} lacks the columns {', '.join(missing)}: it is not a table written by "
                          "`maetok make-table table1`; rebuild it with `snakemake --cores all tables/table1.csv`")
    ours = [r for r in rows if r["source"] == "ours"]
    if not ours:
        raise ReadmeError(f"{path} has no row of ours (source = ours); rebuild it with "
                          "`snakemake --cores all tables/table1.csv`")
    return ours


def _cell(v: str) -> str:
    try:
        return f"{float(v):.2f}"
    except ValueError:
        return v or "-"


def markdown_table(rows: list[dict[str, str]]) -> str:
    heads = ["Part", "Setting", "Tokenizer"] + [f"{name} {who}" for _, name in METRICS for who in ("ours", "paper")]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        part = f"1{r['part']} {PARTS.get(r['part'], '')}".strip()
        cells = [part, r["label"], f"`{r['tokenizer']}`"]
        for m, _ in METRICS:
            cells += [_cell(r[m]), _cell(r[f"{m}_paper"])]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def mlflow_commits(store: Path, table: str = "table1") -> list[str]:
    """Distinct git commits MLflow recorded on the runs that feed `table` (empty without a store)."""
    if not store.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            found = db.execute(
                "SELECT DISTINCT c.value FROM tags c JOIN tags t ON c.run_uuid = t.run_uuid "
                "WHERE c.key = 'mlflow.source.git.commit' AND t.key = 'tables' AND t.value LIKE ?",
                (f"%,{table},%",)).fetchall()
    except sqlite3.Error:
        return []  # not an MLflow store (or another schema): fall back to the checkout
    return sorted(v for (v,) in found if v)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def provenance(table: Path, store: Path) -> str:
    commits = mlflow_commits(store)
    if commits:
        where = "commit" + ("s " if len(commits) > 1 else " ") + ", ".join(f"`{c[:10]}`" for c in commits)
        where += " (recorded on the table's MLflow runs)"
    else:
        head = _git("rev-parse", "--short=10", "HEAD") or "unknown"
        dirty = " with uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else ""
        where = f"commit `{head}`{dirty} (the checkout's; no MLflow runs record one)"
    written = dt.datetime.fromtimestamp(table.stat().st_mtime, dt.UTC)
    return f"{where}; `{table}` written {written:%Y-%m-%d %H:%M} UTC"


def results_block(rows: list[dict[str, str]], table: Path, figure_rel: str, store: Path) -> str:
    scale = rows[0]["scale"]
    return "\n".join([
        BEGIN,
        f"Table 1 (ablations, rFID and gFID of SiT-L without CFG) at `scale: {scale}`, our run beside the "
        f"paper's numbers; from {provenance(table, store)}. Rebuilt by `make readme-results`; every "
        "footnote of the full table is in `tables/table1.md`.",
        "",
        markdown_table(rows),
        "",
        f"![Samples of MAETok + SiT-L without CFG, one row per class, scale {scale}]({figure_rel})",
        "",
        f"Samples of `maetok` + `sit_l` without CFG (`{FIGURE.format(scale=scale)}`), one row per class.",
        END,
    ])


def replace_block(text: str, block: str, readme: Path) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReadmeError(f"{readme} must hold one `{BEGIN}` line followed by one `{END}` line; "
                          "put them back around the results section")
    head, rest = text.split(BEGIN, 1)
    return head + block + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m maetok.report.readme", description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=TABLE, help="Table 1 as `maetok make-table` writes it")
    ap.add_argument("--figure", default=None,
                    help=f"figure to show (default: {FIGURE}, with the table's scale)")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--store", type=Path, default=STORE, help="MLflow SQLite store holding the runs' commits")
    ap.add_argument("--figure-out", type=Path, default=FIGURE_OUT, help="where the figure is copied")
    a = ap.parse_args(argv)
    try:
        rows = read_table(a.table)
        figure = Path(a.figure or FIGURE.format(scale=rows[0]["scale"]))
        if not figure.is_file():
            raise ReadmeError(f"{figure} not found: build it with `snakemake --cores all {figure}` "
                              "(it is part of Table 1's chain), or pass --figure")
        if not a.readme.is_file():
            raise ReadmeError(f"{a.readme} not found: run from the repository root or pass --readme")
        text = a.readme.read_text()
        base, out = a.readme.resolve().parent, a.figure_out.resolve()
        figure_rel = out.relative_to(base).as_posix() if out.is_relative_to(base) else out.as_posix()
        new = replace_block(text, results_block(rows, a.table, figure_rel, a.store), a.readme)
    except ReadmeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with atomic_path(a.figure_out) as tmp:
        shutil.copyfile(figure, tmp)
    write_text(a.readme, new)
    print(f"{a.readme}: results section rebuilt from {a.table} ({len(rows)} rows); figure {a.figure_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
