"""workflow/scripts/tiny_study.py: the study's table is read from the metrics JSONs the pipeline writes,
rows an arm does not change come from the first arm, and the MAETok-versus-AE verdicts have the
direction of the paper's claims (lower gFID and GMM NLL, higher probe accuracy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import BIN, REPO  # tests/workflow/conftest.py

SCRIPT = REPO / "workflow" / "scripts" / "tiny_study.py"


def write_row(results: Path, tok: str, rfid: float, gfid: float, probe: float, nll: float) -> None:
    """The files one Table 1a row leaves in results/tiny, with the keys the pipeline writes."""
    def put(rel: str, obj: dict) -> None:
        p = results / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj))
    put(f"tokenizer/{tok}/recon.json", {"rfid": rfid, "psnr": 20.0})
    gen = f"generator/{tok}/sit_l"
    put(f"{gen}/nocfg.json", {"gfid": gfid})
    for step, extra in ((200, 3.0), (400, 1.0)):
        put(f"{gen}/step{step}_nocfg.json", {"gfid": gfid + extra})
    put(f"{gen}/loss_curve.json", {"log_every": 100, "step": [100, 200, 300, 400, 500, 600, 700, 800],
                                   "loss": [1.0] * 8})
    put(f"analysis/{tok}/probe.json", {"val_acc": probe})
    put(f"analysis/{tok}/gmm.json", {"results": [{"k": 5, "nll_heldout": nll + 1}, {"k": 10, "nll_heldout": nll}]})


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_arms_seeds_shared_rows_and_verdicts(tmp_path):
    base, light = tmp_path / "base", tmp_path / "light"
    write_row(base, "ae", rfid=4.0, gfid=6.0, probe=0.78, nll=30.0)
    write_row(base, "maetok", rfid=9.0, gfid=10.0, probe=0.73, nll=25.0)
    write_row(light, "maetok", rfid=5.0, gfid=5.5, probe=0.80, nll=31.0)  # the arm leaves the AE unchanged
    out = tmp_path / "study.md"
    r = run("--arm", f"baseline:0={base}", "--arm", f"light:0={light}", "--out", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert text == r.stdout
    lines = text.splitlines()
    assert "| baseline | 0 | AE | 4.000 | 20.000 | 9.000 | 7.000 | 6.000 | 2.000 | 0.780 | 30.000 |" in lines
    assert "| light | 0 | AE (shared) | 4.000 |" in text
    assert not any("VAE" in line for line in lines)  # never built: left out, not invented
    verdicts = {line.split(" | ")[0].strip("| "): line for line in lines if "hold" in line}
    assert verdicts["baseline"].count("does not hold") == 2      # worse gFID and probe, better NLL
    assert "-5.000 (holds)" in verdicts["baseline"]               # NLL 25 vs 30
    assert "-0.500 (holds)" in verdicts["light"] and "+0.020 (holds)" in verdicts["light"]
    assert "+1.000 (does not hold)" in verdicts["light"]


def test_figure_plots_each_arm_against_generator_steps(tmp_path):
    base, light = tmp_path / "base", tmp_path / "light"
    write_row(base, "ae", rfid=4.0, gfid=6.0, probe=0.78, nll=30.0)
    write_row(base, "maetok", rfid=9.0, gfid=10.0, probe=0.73, nll=25.0)
    write_row(light, "maetok", rfid=5.0, gfid=5.5, probe=0.80, nll=31.0)
    png = tmp_path / "fig" / "gfid.png"
    r = run("--arm", f"baseline:0={base}", "--arm", f"light:0={light}", "--figure", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import tiny_study
    finally:
        sys.path.remove(str(SCRIPT.parent))
    records = tiny_study.collect([("baseline", 0, base), ("light", 0, light)])
    # the final gFID is drawn at the generator's last logged step; a shared row keeps its arm's step
    assert {(r["arm"], r["tok"], r["shared"], r["last_step"]) for r in records} == {
        ("baseline", "ae", False, 800), ("baseline", "maetok", False, 800),
        ("light", "ae", True, 800), ("light", "maetok", False, 800)}


def test_a_partly_built_row_names_the_missing_files(tmp_path):
    write_row(tmp_path, "ae", rfid=4.0, gfid=6.0, probe=0.78, nll=30.0)
    (tmp_path / "analysis/ae/gmm.json").unlink()
    r = run("--arm", f"baseline:0={tmp_path}")
    assert r.returncode != 0
    assert "analysis/ae/gmm.json" in r.stderr and "snakemake --profile profiles/laptop" in r.stderr


def test_a_malformed_arm_says_the_expected_form():
    r = run("--arm", "baseline=results/tiny")
    assert r.returncode != 0 and "NAME:SEED=RESULTS" in r.stderr


def test_light_mm_overlay_changes_only_what_it_says(micro_workdir):
    """The study arm's overlay passes the config checks and reaches the tokenizer job's config."""
    overlay = REPO / "workflow" / "study" / "light_mm.yaml"
    targets = ["results/tiny/tokenizer/maetok/stage1.safetensors", "results/tiny/tokenizer/ae/stage1.safetensors"]
    r = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--configfile", "params.yaml", "micro.yaml", str(overlay),
                        "--", *targets], cwd=micro_workdir, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    cmds = {v: line for line in r.stdout.splitlines() if "train-tokenizer --variant" in line
            for v in ("maetok", "ae") if f"--variant {v} " in line}
    assert '"ratio_high": 0.2, "ratio_low": 0.1' in cmds["maetok"] and '"weight": 0.1' in cmds["maetok"]
    assert '"enabled": false' in cmds["ae"].split('"mask":')[1].split("}")[0]   # the AE has no mask either way


def test_run_arm_refuses_without_the_default_runs_data(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    script = REPO / "workflow" / "study" / "run_arm.sh"
    r = subprocess.run(["bash", str(script), "light_mm", str(tmp_path / "arm")], cwd=repo,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "results/tiny/data is missing" in r.stderr and "tables/table1.csv" in r.stderr
    assert not (tmp_path / "arm").exists()
