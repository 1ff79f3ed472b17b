"""bench/rule_times.py reads Snakemake benchmark files into per-rule wall times."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "rule_times.py"
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _module():
    spec = importlib.util.spec_from_file_location("rule_times", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, seconds: float, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:00\t1\t1\t1\t1\t0\t0\t90\t{seconds}\n")
    os.utime(path, (mtime, mtime))


def test_per_rule_times_and_since_filter(tmp_path):
    rt = _module()
    _write(tmp_path / "train_tokenizer" / "ae.tsv", 200.0, 1000)
    _write(tmp_path / "train_tokenizer" / "vae.tsv", 300.0, 2000)
    _write(tmp_path / "eval_generation" / "ae" / "sit_l" / "nocfg.tsv", 20.0, 2000)
    _write(tmp_path / "prepare_hires.tsv", 10.0, 500)  # a rule without wildcards
    times = rt.read_times(tmp_path)
    assert times == {"train_tokenizer": [("ae", 200.0), ("vae", 300.0)],
                     "eval_generation": [("ae/sit_l/nocfg", 20.0)], "prepare_hires": [("", 10.0)]}
    assert rt.read_times(tmp_path, since=1500) == {"train_tokenizer": [("vae", 300.0)],
                                                   "eval_generation": [("ae/sit_l/nocfg", 20.0)]}
    text = rt.table(times)
    first, total = text.splitlines()[1], text.splitlines()[-1]
    assert first.split() == ["train_tokenizer", "2", "200", "250", "300", "8.3"]  # largest total first
    assert total.split() == ["total", "4", "8.8"]
    assert rt.table(times, markdown=True).startswith("| rule | jobs |")


def test_wall_span_and_parallelism(tmp_path):
    rt = _module()
    _write(tmp_path / "a" / "x.tsv", 100.0, 1100)  # ran 1000-1100
    _write(tmp_path / "b" / "y.tsv", 150.0, 1200)  # ran 1050-1200, beside x for 50 s
    _write(tmp_path / "old.tsv", 5.0, 10)          # another run's job
    assert rt.wall_span(rt.read_jobs(tmp_path, since=500)) == (200.0, 200.0, 250.0)
    assert rt.wall_span(rt.read_jobs(tmp_path, since=5000)) == (0.0, 0.0, 0.0)


def test_wall_span_leaves_out_the_pause_of_a_resumed_run(tmp_path):
    rt = _module()
    _write(tmp_path / "a" / "x.tsv", 100.0, 1100)  # segment 1: 1000-1100
    _write(tmp_path / "a" / "y.tsv", 60.0, 1090)   # 1030-1090, inside x
    _write(tmp_path / "b" / "z.tsv", 50.0, 1550)   # segment 2 after a 400 s pause: 1500-1550
    span, busy, serial = rt.wall_span(rt.read_jobs(tmp_path))
    assert (span, busy, serial) == (550.0, 150.0, 210.0)
    assert rt.read_times(tmp_path, jobs=rt.read_jobs(tmp_path, since=1200)) == {"b": [("z", 50.0)]}
