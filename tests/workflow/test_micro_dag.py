"""Table 4's whole DAG at micro size (the shared `micro_table4` run): the table holds our rows
beside the paper's, every output exists, a second dry run has nothing to do, and
`snakemake --report` puts the table into the HTML report."""

from __future__ import annotations

import base64
import csv
import math
import re
import time
from pathlib import Path

from conftest import REPO, run_snakemake  # tests/workflow/conftest.py

TARGET = "tables/table4.csv"
METRICS = ["imagenet_rfid", "imagenet_psnr", "imagenet_ssim", "coco_rfid", "coco_psnr", "coco_ssim"]
# maetok/report/table_specs.yaml (table4) through maetok/report/tables.py: csv_columns
COLUMNS = ["paper_row", "label", "resolution", "params_t_paper", "tokens", "tokenizer", "generator", "guidance",
           *[c for m in METRICS for c in (m, f"{m}_paper")], "source", "scale"]
PAPER_CSV = REPO / "maetok" / "report" / "paper_tables" / "table4.csv"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def dry_run_files(stdout: str, field: str) -> set[str]:
    """Every path on the `field:` lines (output, log, benchmark) of a dry-run printout."""
    return {p.strip() for m in re.finditer(rf"^\s+{field}: (.*)$", stdout, re.M) for p in m.group(1).split(",")}


def test_table4_has_our_row_beside_the_paper(micro_table4):
    columns, rows = read_csv(micro_table4 / TARGET)
    assert columns == COLUMNS
    _, paper = read_csv(PAPER_CSV)
    assert [r["paper_row"] for r in rows] == [p["row"] for p in paper]
    ours = [r for r in rows if r["source"] == "ours"]
    # the 256 MAETok, and the 512 one (`resolution: hires`: at micro/tiny, 64 px upsampled images)
    assert [(r["tokenizer"], r["paper_row"], r["generator"]) for r in ours] == [
        ("maetok_main", "6", ""), ("maetok_512", "10", "")]
    for row in ours:
        for m in METRICS:
            assert math.isfinite(float(row[m])), (m, row[m])
    sources = {r["paper_row"]: r["source"] for r in rows}
    assert {n for n, s in sources.items() if s == "paper"} == {"11"}  # the LAION-COCO MAETok
    assert {n for n, s in sources.items() if s == "cited"} == {str(n) for n in range(1, 10)} - {"6"}
    for r, p in zip(rows, paper, strict=True):
        assert all(r[f"{m}_paper"] == p[m] for m in METRICS), r["paper_row"]
        assert (r["resolution"], r["tokens"]) == (p["resolution"], p["tokens"])
        assert r["scale"] == "tiny"
        if r["source"] != "ours":
            assert all(r[m] == "" for m in METRICS), r
    assert rows[5]["imagenet_rfid_paper"] == "0.48"  # MAETok 256, as printed in the paper

    md = (micro_table4 / "tables/table4.md").read_text()
    assert md.startswith("# Table 4")
    for standin in ("stands in for ImageNet-1k", "64x64 (the 32x32 images upsampled) for 512x512", "stand-in CNNs",
                    "stands in for Inception-v3",
                    "out-of-domain reconstruction on scikit-learn's 8x8 digits", "NOT comparable"):
        assert standin in md, standin


def test_every_output_exists_and_nothing_is_left_to_do(micro_table4):
    r = run_snakemake(micro_table4, "-n", "--forceall", TARGET, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    planned = {m.group(1) for m in re.finditer(r"^(?:local)?rule (\w+):", r.stdout, re.M)}
    assert planned == {"prepare_data", "prepare_hires", "train_standin", "train_tokenizer", "finetune_decoder",
                       "eval_reconstruction", "make_table"}
    for field in ("output", "log", "benchmark"):
        files = dry_run_files(r.stdout, field)
        assert files, field
        missing = sorted(f for f in files if not (micro_table4 / f).exists())
        assert not missing, f"{field}: {missing}"

    start = time.perf_counter()
    r = run_snakemake(micro_table4, "-n", TARGET, timeout=120)
    seconds = time.perf_counter() - start
    print(f"no-op dry run of {TARGET}: {seconds:.1f} s")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Nothing to be done" in r.stdout + r.stderr
    assert seconds < 15, f"the no-op dry run took {seconds:.1f} s (README: < 5 s on an idle machine)"


def test_html_report_shows_table4(micro_table4):
    def snapshot():
        return {p: p.stat().st_mtime_ns for p in micro_table4.rglob("*") if p.is_file()}

    report = micro_table4 / "report.html"
    before = snapshot()
    try:
        r = run_snakemake(micro_table4, "--report", "report.html", TARGET, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        html = report.read_text()
    finally:
        report.unlink(missing_ok=True)
    after = snapshot()
    # the fixture is shared: --report must leave the rest of the directory as it was
    assert {p: t for p, t in after.items() if ".snakemake" not in p.parts} == \
        {p: t for p, t in before.items() if ".snakemake" not in p.parts}
    # the table is embedded (base64 data URI), under its wildcard label
    embedded = re.search(r"data:text/csv;charset=utf8;filename=table4\.csv;base64,([A-Za-z0-9+/=]+)", html)
    assert embedded, "tables/table4.csv is not in the report"
    assert base64.b64decode(embedded.group(1)) == (micro_table4 / TARGET).read_bytes()
    assert "filename=table4.md" in html
    assert "Paper table" in html  # workflow/report/table.rst, the caption of the tables
    assert "Masked Autoencoders Are Effective Tokenizers" in html  # workflow/report/workflow.rst
