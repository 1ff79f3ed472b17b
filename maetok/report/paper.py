"""The paper's tables as transcribed once into `paper_tables/*.csv` (see its README.md).

Values stay the paper's digit strings (`0.80`, `156.0`): they are printed beside ours as
they appear in the paper, never re-rounded. An empty string is a cell with no value.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

PAPER_DIR = Path(__file__).resolve().parent / "paper_tables"


@functools.cache
def read_paper_table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of `paper_tables/<name>` (e.g. "table1a.csv") as {column: printed string}."""
    path = PAPER_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"paper table {path} not found (package data of maetok.report)")
    with open(path, newline="") as f:
        return tuple(dict(row) for row in csv.DictReader(f))


def paper_columns(name: str) -> list[str]:
    with open(PAPER_DIR / name, newline="") as f:
        return next(csv.reader(f))


def paper_row(name: str, row: int) -> dict[str, str]:
    """The row whose `row` column is `row` (the paper's 1-based order)."""
    for r in read_paper_table(name):
        if int(r["row"]) == row:
            return r
    raise KeyError(f"{name} has no row {row}")
