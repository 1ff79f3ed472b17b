"""Reporting subcommand: make-table (aggregate metrics JSONs into tables/<name>.csv + .md)."""

from __future__ import annotations

import json
import sys

from maetok import config as C
from maetok.commands import add_options


def cmd_make_table(args) -> int:
    from maetok.report import tables

    raw = json.loads(args.config_json) if args.config_json else C.read_yaml(args.params)
    params = C.load_params(raw, {"scale": args.scale} if args.scale else None)
    scale = params.scale
    results = args.results or f"results/{scale}"
    out_csv = args.out_csv or f"tables/{args.table}.csv"
    out_md = args.out_md or f"tables/{args.table}.md"
    try:
        rows = tables.make_table(args.table, results, scale, out_csv, out_md, params)
    except tables.ReportError as e:
        print(f"maetok make-table: error: {e}", file=sys.stderr)
        return 2
    counts = {s: sum(r["source"] == s for r in rows) for s in tables.SOURCES}
    print(f"make-table {args.table} ({scale}): {counts} rows -> {out_csv}, {out_md}")
    return 0


def register(sub) -> None:
    """Add the reporting subcommands to an argparse subparsers object."""
    from maetok.report.tables import RELEASE_TABLES, TABLES

    p = sub.add_parser("make-table", help="rebuild one paper table: our metrics beside the paper's (CSV + Markdown)",
                       description="Read the metrics JSONs a table needs (maetok/report/table_specs.yaml) and the "
                       "paper's numbers (maetok/report/paper_tables/); write tables/<name>.csv and .md atomically. "
                       "A missing metrics JSON is an error naming the file and the snakemake target that builds it.")
    p.add_argument("table", choices=(*TABLES, *RELEASE_TABLES), help="table name")
    add_options(p, "scale", "params", "config-json",
                params="params.yaml, for the stand-in footnotes (default: %(default)s)",
                config_json="the whole params dict as JSON (what Snakemake passes); overrides --params")
    p.add_argument("--results", help="metrics root (default: results/<scale>)")
    p.add_argument("--out-csv", help="output CSV (default: tables/<table>.csv)")
    p.add_argument("--out-md", help="output Markdown (default: tables/<table>.md)")
    p.set_defaults(func=cmd_make_table)
