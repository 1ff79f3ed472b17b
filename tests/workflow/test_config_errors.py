"""Config errors that only the workflow's own load can catch stop `snakemake -n` before any job,
with one line naming the key (or table) and the fix: a duplicate key or a YAML syntax error in
params.yaml, which Snakemake's loader merges silently or reports without a line; a table naming a
variant params.yaml lacks; a CFG-sweep step the generator does not keep; a non-string description.
One dry run per kind of check, each in a copy of the workflow (tests/test_bad_input.py checks the
same errors through the config loader)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow  # tests/workflow/conftest.py

BIN = Path(sys.executable).parent


def _insert_after(text: str, after: str, line: str) -> str:
    lines = text.splitlines(keepends=True)
    i = next(n for n, t in enumerate(lines) if t.strip().startswith(after))
    return "".join(lines[: i + 1] + [line] + lines[i + 1 :])


def _drop_variant(text: str, name: str) -> str:
    raw = yaml.safe_load(text)
    del raw["tokenizer_variants"][name]
    return yaml.safe_dump(raw, sort_keys=False)


CASES = {
    "duplicate key": (lambda t: _insert_after(t, "image_size: 32", "      image_size: 48\n"), None,
                      "params.yaml: duplicate key 'scales.tiny.data.image_size' on lines"),
    "duplicate key in an overlay": (None, "scales:\n  tiny:\n    seed: 1\n  tiny:\n    seed: 2\n",
                                    "overlay.yaml: duplicate key 'scales.tiny' on lines 2 and 4"),
    "syntax error": (lambda t: _insert_after(t, "image_size: 32", "      num_classes: 10: 12\n"), None,
                     "params.yaml: YAML syntax error at line"),
    "table variant": (lambda t: _drop_variant(t, "mask_0_60"), None,
                      "table1c (paper row 1) uses tokenizer variant 'mask_0_60'"),
    "sweep step": (None, "scales:\n  tiny:\n    cfg_sweep:\n      generator_step: 300\n",
                   "scales.tiny.cfg_sweep.generator_step: 300 is not one of the steps"),
    "description": (None, "tokenizer_variants:\n  ae:\n    description: 5\n",
                    "tokenizer_variants.ae.description: expected a string, got int 5"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_config_error_stops_the_dry_run_with_one_line(tmp_path, case):
    edit, overlay, message = CASES[case]
    work = copy_workflow(tmp_path / "work")
    if edit:
        params = work / "params.yaml"
        params.write_text(edit(params.read_text()))
    args = ["--configfile", "overlay.yaml"] if overlay else []
    if overlay:
        (work / "overlay.yaml").write_text(overlay)
    r = subprocess.run([str(BIN / "snakemake"), "-n", *args], cwd=work, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert any(message in line for line in out.splitlines()), out[-2000:]
    assert "Traceback" not in out and "Failed validating" not in out and "Job stats" not in out
