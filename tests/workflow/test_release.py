"""Released-weights variants in the DAG (docs/official_weights.md): at paper scale, Tables 2 and 3 from the
released files plan the imports, evaluations and samplings and no training; a missing download, a release
table at tiny scale and a released SiT asked for on another tokenizer stop the dry run with the fix."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import BIN, copy_workflow  # tests/workflow/conftest.py

from maetok import config as C

PARAMS = C.load_params()
RELEASED = {kind: {v: PARAMS.released(kind, v) for v in getattr(PARAMS, f"{kind}_variants")
                   if PARAMS.released(kind, v)} for kind in ("tokenizer", "generator")}
SHA = "ab" * 32


def snakemake(work, *args):
    cmd = [str(BIN / "snakemake"), "-n", *args]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)


def job_counts(out: str) -> dict[str, int]:
    stats = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A copy of the workflow with small stand-in files where params.yaml expects the downloads (a dry
    run reads nothing but their existence), and an overlay pinning one sha256."""
    work = copy_workflow(tmp_path_factory.mktemp("release") / "work")
    for w in (*RELEASED["tokenizer"].values(), *RELEASED["generator"].values()):
        for path in (w.path, w.config):
            if path:
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                (work / path).write_text("stand-in for the download")
    (work / "sha.yaml").write_text(f"tokenizer_variants:\n  maetok_release:\n    weights:\n      sha256: {SHA}\n")
    return work


def test_paper_dry_run_imports_instead_of_training(work):
    r = snakemake(work, "-p", "--config", "scale=paper", "--configfile", "params.yaml", "sha.yaml", "--",
                  "tables/table2_release.csv", "tables/table3_release.csv",
                  "results/paper/analysis/maetok_release/gmm.json")
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout)
    assert not {"train_tokenizer", "finetune_decoder", "train_generator", "train_standin"} & set(counts), counts
    assert counts["import_tokenizer"] == counts["import_generator"] == counts["eval_reconstruction"] == 2
    assert counts["cache_latents"] == 2 and counts["fit_gmm"] == 1 and counts["make_table"] == 2
    assert counts["sample_generator"] == counts["eval_generation"] == 4  # w/o and w/ CFG per generator

    blocks = re.split(r"\n(?=rule \w+:\n)", r.stdout)
    import_blocks = [b for b in blocks if b.startswith("rule import_")]
    assert len(import_blocks) == 4 and not any(re.search(r"gpu=[1-9]", b) for b in import_blocks)  # CPU jobs

    lines = r.stdout.splitlines()
    imports = [line for line in lines if "maetok import-official" in line]
    tok = next(line for line in imports if "import-official tokenizer resources/weights/official/maetok-b-128/" in line)
    assert f"--sha256 {SHA}" in tok and "--official-config resources/weights/official/maetok-b-128/config.json" in tok
    assert "--out results/paper/tokenizer/maetok_release/final.safetensors" in tok
    gen = next(line for line in imports if "import-official generator" in line and "sit-xl_maetok-b-128-512" in line)
    assert "--tokenizer results/paper/tokenizer/maetok_512_release/final.safetensors" in gen
    assert "--out results/paper/generator/maetok_512_release/sit_xl_512_release/ema.safetensors" in gen
    assert "--sha256" not in gen  # null in params.yaml: not checked
    samples = [line for line in lines if "maetok sample-generator" in line and "--guidance cfg " in line]
    assert sorted(re.search(r'"cfg_scale": ([\d.]+)', c)[1] for c in samples) == ["1.5", "1.9"]  # App. C.2
    recon = next(line for line in lines if "eval-reconstruction --variant maetok_512_release" in line)
    assert "--data results/paper/data_hires " in recon


def test_missing_download_names_the_file_and_the_command(work):
    path = work / RELEASED["generator"]["sit_xl_release"].path
    path.rename(path.with_suffix(".bak"))
    try:
        r = snakemake(work, "--config", "scale=paper", "--", "tables/table2_release.csv")
    finally:
        path.with_suffix(".bak").rename(path)
    assert r.returncode != 0
    err = " ".join((r.stdout + r.stderr).split())
    assert "resources/weights/official/sit-xl_maetok-b-128/model.safetensors not found" in err
    assert ("`huggingface-cli download MAETok/sit-xl_maetok-b-128 --local-dir "
            "resources/weights/official/sit-xl_maetok-b-128`") in err


def test_release_table_at_tiny_scale_is_an_error(work):
    r = snakemake(work, "tables/table2_release.csv")
    assert r.returncode != 0
    assert "table2_release is built from the authors' released weights, at paper scale only" in r.stdout + r.stderr


def test_released_sit_on_another_tokenizer_is_an_error(work):
    r = snakemake(work, "--config", "scale=paper", "--", "results/paper/generator/maetok_main/sit_xl_release/cfg.json")
    assert r.returncode != 0
    err = " ".join((r.stdout + r.stderr).split())
    assert "trained on the latents of tokenizer variant 'maetok_release'" in err
    assert "ask for results/paper/generator/maetok_release/sit_xl_release/" in err
