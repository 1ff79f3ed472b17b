"""The Snakemake workflow parses, lints, dry-runs locally and with the Slurm profile,
and stops on bad params before any job with a message naming the key path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_slurm_plugin  # tests/workflow/conftest.py

BIN = Path(sys.executable).parent


def snakemake(repo, *args, timeout=120):
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=repo, capture_output=True, text=True, timeout=timeout)


def test_dry_run(repo):
    r = snakemake(repo, "-n", "--forceall")
    assert r.returncode == 0, r.stderr
    assert "prepare_data" in r.stdout


def test_lint(repo):
    r = snakemake(repo, "--lint")
    assert r.returncode == 0, r.stdout + r.stderr


@needs_slurm_plugin
def test_slurm_profile_dry_run(repo):
    assert (repo / "slurm").is_symlink() and (repo / "slurm" / "config.yaml").is_file()
    assert not (repo / "profiles" / "default").exists(), "profiles/default would override the slurm profile"
    r = snakemake(repo, "--profile", "slurm", "-n", "--forceall")
    assert r.returncode == 0, r.stderr
    assert "slurm_partition=cpu" in r.stdout + r.stderr


@pytest.mark.parametrize("override, message", [
    ("scales:\n  tiny:\n    data:\n      colour: rgb\n", "unknown key 'scales.tiny.data.colour'"),
    ("scales:\n  tiny:\n    data:\n      image_size: '32'\n", "scales.tiny.data.image_size: expected an integer"),
    ("scale: huge\n", "scale: 'huge' is not one of ['tiny', 'paper']"),
])
def test_bad_params_stop_before_any_job(repo, tmp_path, override, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    r = snakemake(repo, "-n", "--configfile", str(bad))
    assert r.returncode != 0
    assert message in r.stdout + r.stderr
    assert "Job stats" not in r.stdout


def test_sampling_jobs_get_their_own_sampling_config(repo, tmp_path):
    """Table 12: one sampling job per CFG setting of the paper's sweep, each given
    `cfg_sweep.num_samples` (the main `cfg` sampling keeps `sampling.num_samples`); Table 2:
    LightningDiT samples with its own CFG scale (generator_variants.lightningdit.sampling)."""
    override = tmp_path / "sweep.yaml"
    override.write_text("scales:\n  tiny:\n    cfg_sweep:\n      num_samples: 1230\n")
    r = snakemake(repo, "tables/table12.csv", "tables/table2.csv", "-n", "-p", "--forceall",
                  "--configfile", str(override))
    assert r.returncode == 0, r.stderr[-3000:]
    commands = [line for line in r.stdout.splitlines() if "maetok sample-generator" in line]
    sweep = [c for c in commands if re.search(r"--guidance cfg\d", c)]
    # generator_step; at tiny maetok_main + sit_xl are sampled as maetok + sit_l (the same runs there)
    assert len(sweep) == 12 and all("maetok/sit_l/steps/step400.safetensors" in c for c in sweep)
    point = next(c for c in sweep if "--guidance cfg1.8_0.125-0.8 " in c)
    assert '"cfg_interval_low": 0.125' in point and '"cfg_scale": 1.8' in point
    assert all('"num_samples": 1230' in c for c in sweep)
    main = [c for c in commands if "--guidance cfg " in c]
    assert len(main) == 2 and all('"num_samples": 5000' in c for c in main)
    scales = {"lightningdit" if "/lightningdit/" in c else "sit_l": re.search(r'"cfg_scale": ([\d.]+)', c)[1]
              for c in main}
    assert scales == {"lightningdit": "1.8", "sit_l": "1.9"}


def test_hires_tokenizer_chain_reads_the_hires_data(repo):
    """Table 3 (512x512): maetok_512 is its own tokenizer (not canonicalised to maetok, whose
    config it shares) and every job of its chain reads results/tiny/data_hires."""
    r = snakemake(repo, "tables/table3.csv", "-n", "-p", "--forceall")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "rule prepare_hires:" in out and "maetok prepare-hires" in out
    assert "tok=maetok_512" in out and "results/tiny/tokenizer/maetok/" not in out
    for command in ("train-tokenizer", "finetune-decoder", "eval-reconstruction", "cache-latents",
                    "eval-generation"):
        lines = [line for line in out.splitlines() if f"maetok {command}" in line]
        assert lines and all("--data results/tiny/data_hires " in line for line in lines), command
    train = next(line for line in out.splitlines() if "train-tokenizer" in line)
    assert '"image_size": 64' in train


def _job_blocks(dry_run: str) -> list[str]:
    return re.split(r"\n(?=\[[^\]]*\d{4}\]\n)", dry_run)


def test_teachers_then_tokenizers_are_scheduled_first(repo):
    """The teachers come first (every aux-target tokenizer waits for them), then the tokenizers (the
    roots of the longest chains), the hires one before the others; generator rules keep the default 0."""
    r = snakemake(repo, "tables/table3.csv", "tables/table1.csv", "-n", "--forceall")
    assert r.returncode == 0, r.stderr[-3000:]
    priority = {}
    for block in _job_blocks(r.stdout):
        rule = re.search(r"^rule (\w+):", block, re.M)
        tok = re.search(r"wildcards: .*(?:tok|role)=(\w+)", block)
        if rule:
            level = re.search(r"priority: (\d+)", block)
            priority[(rule[1], tok[1] if tok else None)] = int(level[1]) if level else 0
    assert priority[("train_standin", "teacher_dino")] == priority[("train_standin", "teacher_clip")] == 3
    assert priority[("train_standin", "evaluator")] == 1
    assert priority[("train_tokenizer", "maetok_512")] == priority[("finetune_decoder", "maetok_512")] == 2
    assert priority[("train_tokenizer", "ae")] == priority[("finetune_decoder", "maetok")] == 1
    assert {p for (rule, _), p in priority.items() if rule in ("train_generator", "sample_generator",
                                                               "cache_latents")} == {0}
