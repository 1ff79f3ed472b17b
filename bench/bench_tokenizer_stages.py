"""Benchmark (not a test): wall time of tokenizer stage 1 + stage 2 of one variant, as the rules run them.

    .venv/bin/python bench/bench_tokenizer_stages.py [--variant maetok] [--threads 2]

Runs `maetok train-tokenizer` and then `maetok finetune-decoder` (when the variant has a stage 2)
as separate processes, exactly as the Snakemake rules do (process start, data loading, teachers,
checkpoints and the final write included), on the pipeline's prepared data and stand-in networks
(results/<scale>/data, results/<scale>/aux_models; build them first with
`snakemake --cores 2 results/tiny/aux_models/teacher_dino.safetensors ...`). Every output, checkpoint
and MLflow record goes to a temporary directory; results/ is not touched. Run on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from maetok import config as C


def run_stage(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def loop_note(metrics_json: str, wall: float) -> str:
    """The training loop's share of a stage's wall time, from the metrics JSON the stage wrote."""
    m = json.loads(Path(metrics_json).read_text())
    return (f" = training loop {m['seconds']:.1f} s ({m['images_per_second']:.0f} img/s) + start-up, "
            f"compile and final write {wall - m['seconds']:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="maetok")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--threads", type=int, default=2, help="OMP/torch threads, as the rule's `threads:`")
    args = parser.parse_args()
    params = C.load_params(args.params)
    scale, cfg = params.scale, params.tokenizer(args.variant)
    data, aux = Path(f"results/{scale}/data"), Path(f"results/{scale}/aux_models")
    if not (data / "manifest.json").is_file():
        raise SystemExit(f"{data} is missing: run `snakemake --cores 2 {data}` first")
    maetok = str(Path(sys.executable).with_name("maetok"))
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        common = ["--params", args.params, "--variant", args.variant, "--data", str(data), "--aux", str(aux)]
        stage1 = run_stage([maetok, "train-tokenizer", *common, "--out", f"{tmp}/stage1.safetensors",
                            "--ckpt-dir", f"{tmp}/ckpt1"], env)
        print(f"{args.variant} stage 1 ({cfg.optim.steps} steps of {cfg.optim.batch_size}): {stage1:.1f} s"
              f"{loop_note(f'{tmp}/stage1.json', stage1)}")
        stage2 = 0.0
        if cfg.finetune.enabled:
            stage2 = run_stage([maetok, "finetune-decoder", *common, "--init", f"{tmp}/stage1.safetensors",
                                "--out", f"{tmp}/final.safetensors", "--ckpt-dir", f"{tmp}/ckpt2"], env)
            print(f"{args.variant} stage 2 ({cfg.finetune.steps} steps): {stage2:.1f} s"
                  f"{loop_note(f'{tmp}/final.json', stage2)}")
        print(f"{args.variant} stage 1 + 2: {stage1 + stage2:.1f} s = {(stage1 + stage2) / 60:.2f} min "
              f"({args.threads} threads)")


if __name__ == "__main__":
    main()
