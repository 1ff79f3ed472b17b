"""The analysis rules plan the right jobs for the figures (dry run from the repo root)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _jobs(stdout: str) -> dict[str, set[str]]:
    """{rule: {wildcards of each planned job}} from a `snakemake -n` listing."""
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"^(?:local)?rule ", stdout, flags=re.M)[1:]:
        name = block.split(":", 1)[0]
        w = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        jobs.setdefault(name, set()).add(w.group(1) if w else "")
    return jobs

def test_fig4_and_fig2a_plan_analysis_jobs_for_their_tokenizers(repo):
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall", "figures/fig4.png", "figures/fig2a.png"],
                       cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    jobs = _jobs(r.stdout)
    assert jobs["fit_gmm"] == {f"tok={t}" for t in ("ae", "vae", "vavae", "maetok")}
    assert jobs["plot_umap"] == {"fig=fig4"}
    assert jobs["plot_gmm_nll"] == {""}
    assert jobs["cache_latents"] == {f"tok={t}" for t in ("ae", "vae", "vavae", "maetok")}
    assert jobs["train_tokenizer"] == {f"tok={t}" for t in ("ae", "vae", "vavae", "maetok")}
    assert "linear_probe" not in jobs and "train_generator" not in jobs
    fig4 = re.search(r"rule plot_umap:\n\s+input: ([^\n]*)", r.stdout).group(1)
    assert [p.strip() for p in fig4.split(",")][:3] == [f"results/tiny/latents/{t}" for t in ("ae", "vae", "maetok")]
