"""Benchmark (not a test): wall time of N samples + their metrics for a trained tiny generator.

    .venv/bin/python bench/bench_sample_eval.py [--tok maetok] [--gen sit_l] [--num-samples 10000]

Uses the artifacts the pipeline made (results/<scale>/generator/<tok>/<gen>/ema.safetensors, the
latent cache, the tokenizer and the evaluator), samples `--num-samples` images with the active
scale's sampler settings, with and without CFG, then computes gFID / IS / precision / recall /
label accuracy as eval_generation does. Outputs go to a temporary directory; nothing in
results/ changes. Run it on an idle machine (it uses every thread torch is given).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from maetok import config as C
from maetok.eval.generation import eval_generation
from maetok.sample import sample_generator


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tok", default="maetok")
    parser.add_argument("--gen", default="sit_l")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["MAETOK_NO_MLFLOW"] = "1"
    params = C.load_params()
    res = Path("results") / params.scale
    final = res / "tokenizer" / args.tok / "final.safetensors"
    tokenizer = final if final.is_file() else res / "tokenizer" / args.tok / "stage1.safetensors"
    generator = res / "generator" / args.tok / args.gen / "ema.safetensors"
    sampling = C.dataclasses.replace(params.active.sampling, num_samples=args.num_samples)
    print(f"threads {args.threads}; {args.num_samples} samples, {sampling.sampler} {sampling.num_steps} steps, "
          f"batch {sampling.batch_size}, bf16 {sampling.bf16}; generator {generator}")
    with tempfile.TemporaryDirectory() as tmp:
        for guidance in ("nocfg", "cfg"):
            t0 = time.perf_counter()
            sample_generator(sampling, generator, res / "latents" / args.tok, tokenizer, Path(tmp) / "s.npz",
                             guidance, seed=params.seed, progress=False)
            t1 = time.perf_counter()
            m = eval_generation(Path(tmp) / "s.npz", res / "data", params.active.evaluation,
                                str(res / "aux_models" / "evaluator.safetensors"), Path(tmp) / "m.json",
                                res / "fid_cache", seed=params.seed)
            t2 = time.perf_counter()
            print(f"{guidance}: sampling {t1 - t0:.1f} s ({args.num_samples / (t1 - t0):.0f} img/s), metrics "
                  f"{t2 - t1:.1f} s, total {t2 - t0:.1f} s; gFID {m['gfid']:.2f}, IS {m['is']:.2f}, "
                  f"label accuracy {m.get('label_accuracy', float('nan')):.3f}")


if __name__ == "__main__":
    main()
