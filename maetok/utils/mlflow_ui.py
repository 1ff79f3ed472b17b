"""The address of the `maetok` experiment's runs table in the MLflow UI (`make mlflow-ui` prints it).

    python -m maetok.utils.mlflow_ui [--store results/mlflow.db] [--base http://127.0.0.1:5000] [--table table4]

MLflow 3's UI has a global GenAI / Model training switch (remembered per browser) and opens an
experiment in its GenAI view, on traces, unless the address carries `workflowType=machine_learning`;
the experiment's `mlflow.experimentKind` tag (maetok.tracking sets it) is what older 3.x UIs read
instead. This address carries both the switch and, with --table, the filter on one table's runs.
"""

from __future__ import annotations

import argparse
import sqlite3
import urllib.parse
from pathlib import Path

EXPERIMENT = "maetok"
ML_VIEW = "workflowType=machine_learning"


def experiment_id(store: str | Path, name: str = EXPERIMENT) -> str | None:
    """The id of experiment `name` in an MLflow SQLite store, or None (no store, no such experiment)."""
    store = Path(store)
    if not store.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            row = db.execute("SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
                             (name,)).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def table_filter(table: str) -> str:
    """The runs search that finds the runs feeding one table or figure (ids sit between commas)."""
    return f"tags.tables LIKE '%,{table},%'"


def runs_url(base: str, exp_id: str | None, table: str | None = None) -> str:
    """The runs table of experiment `exp_id` (the experiments list when None), in the model-training view."""
    base = base.rstrip("/")
    if exp_id is None:
        return f"{base}/#/experiments?{ML_VIEW}"
    query = ML_VIEW + (f"&searchFilter={urllib.parse.quote(table_filter(table))}" if table else "")
    return f"{base}/#/experiments/{exp_id}/runs?{query}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m maetok.utils.mlflow_ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="results/mlflow.db", help="the MLflow SQLite store")
    ap.add_argument("--base", default="http://127.0.0.1:5000", help="where the server listens")
    ap.add_argument("--table", default=None, help="show only the runs of this table or figure id (e.g. table4)")
    a = ap.parse_args(argv)
    print(runs_url(a.base, experiment_id(a.store), a.table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
