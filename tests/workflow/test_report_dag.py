"""`snakemake -n tables/table1.csv` plans the table and each Table 1 tokenizer exactly once."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent
TABLE1_TOKENIZERS = {"vae", "vae_mm", "ae", "ae_mm", "maetok", "target_pixel", "target_hog", "target_dino",
                     "target_clip", "mask_0_60", "mask_10_40", "mask_20_60", "mask_40_40", "aux_linear", "aux_1",
                     "aux_6", "aux_12"}


def planned_jobs(stdout: str) -> list[tuple[str, str]]:
    """(rule, wildcards line) of every job block in a dry-run printout."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", stdout):
        m = re.match(r"rule (\w+):", block)
        if m:
            w = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.append((m.group(1), w.group(1) if w else ""))
    return jobs


def test_table1_dag(repo):
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall", "tables/table1.csv"], cwd=repo,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    jobs = planned_jobs(r.stdout)
    counts = Counter(rule for rule, _ in jobs)
    assert counts["make_table"] == 1
    trained = Counter(w.removeprefix("tok=") for rule, w in jobs if rule == "train_tokenizer")
    assert set(trained) == TABLE1_TOKENIZERS and set(trained.values()) == {1}
    # only maetok fine-tunes its decoder; every variant is evaluated with SiT-L w/o CFG once
    assert [w for rule, w in jobs if rule == "finetune_decoder"] == ["tok=maetok"]
    evals = [w for rule, w in jobs if rule == "eval_generation"]
    assert len(evals) == len(set(evals)) == 17 and all("gen=sit_l," in w and "name=nocfg" in w for w in evals)


def test_variants_that_are_one_run_at_tiny_are_computed_once(repo):
    """At tiny, maetok_main is maetok and sit_xl is sit_l (they differ only at paper scale): `rule all`
    plans no job of maetok_main or sit_xl, and no job twice; at paper scale both have their own runs."""
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall", "all"], cwd=repo,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout)
    assert len(jobs) == len(set(jobs)), [j for j, n in Counter(jobs).items() if n > 1]
    merged = [(rule, w) for rule, w in jobs if re.search(r"\b(tok=maetok_main|gen=sit_xl)\b", w)]
    assert not merged, merged
    assert ("train_generator", "tok=maetok, gen=sit_l") in jobs
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall", "--config", "scale=paper", "--",
                        "tables/table2.csv"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("train_generator", "tok=maetok_main, gen=sit_xl") in planned_jobs(r.stdout)
