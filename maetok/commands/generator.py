"""Generator-side subcommands: cache-latents, train-generator, sample-generator, eval-generation.

Each takes its merged config as `--config-json` (what the Snakemake rule records as its
param) or, when run by hand, reads it from params.yaml (`--params`, `--scale`, and
`--variant` for the generator); every input and output path is an explicit argument.
"""

from __future__ import annotations

import argparse
import time

from maetok import config as C
from maetok.commands import add_config_args, add_options, check_outputs, load_config, load_params


def cmd_cache_latents(args) -> int:
    from maetok.latents import cache_latents

    data_cfg = load_config(args, C.DataConfig, "data")
    check_outputs(args.out)
    stats = cache_latents(args.tokenizer, args.data, args.out, batch_size=args.batch_size, hflip=data_cfg.hflip,
                          workers=args.workers)
    print(f"cache-latents: wrote {args.out} ({stats['counts']}; mean {stats['mean']:.4f}, std {stats['std']:.4f}) "
          f"in {stats['seconds']:.1f} s")
    return 0


def cmd_train_generator(args) -> int:
    from maetok.train.generator import GeneratorJob, train_generator

    cfg = load_config(args, C.GeneratorConfig, "generator")
    check_outputs(args.out, args.loss_curve, args.grid, args.steps_dir, ckpt_dir=args.ckpt_dir)
    job = GeneratorJob(latents=args.latents, out=args.out, steps_dir=args.steps_dir, loss_curve=args.loss_curve,
                       ckpt_dir=args.ckpt_dir, variant=args.variant or "", scale=args.scale or "", seed=args.seed,
                       tags={"tokenizer": args.tokenizer_variant} if args.tokenizer_variant else None,
                       tokenizer=args.tokenizer, sample_grid=args.grid)
    t0 = time.perf_counter()
    metrics = train_generator(cfg, job)
    print(f"train-generator: {metrics} in {time.perf_counter() - t0:.1f} s")
    return 0


def _guidance(name: str) -> str:
    from maetok.sample import check_guidance

    try:
        return check_guidance(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_sample_generator(args) -> int:
    from maetok.sample import sample_generator

    if args.config_json:
        cfg = load_config(args, C.SamplingConfig, "sampling")
    else:  # by hand: as the workflow would sample generator variant --variant with this guidance
        cfg = load_params(args).job_sampling(args.variant, args.guidance)
    check_outputs(args.out, args.grid)
    summary = sample_generator(cfg, args.generator, args.latents, args.tokenizer, args.out, args.guidance,
                               seed=args.seed, grid=args.grid, start=args.start, end=args.end)
    print(f"sample-generator: wrote {args.out} {summary}")
    return 0


def cmd_eval_generation(args) -> int:
    from maetok.eval.generation import eval_generation

    cfg = load_config(args, C.EvaluationConfig, "evaluation")
    check_outputs(args.out)
    tags = {k: v for k, v in (("tokenizer", args.tokenizer_variant), ("variant", args.variant)) if v}
    m = eval_generation(args.samples, args.data, cfg, args.evaluator, args.out, args.fid_cache, tags, seed=args.seed)
    print(f"eval-generation: gFID {m['gfid']:.3f}, IS {m['is']:.2f}, precision {m['precision']:.3f}, "
          f"recall {m['recall']:.3f} -> {args.out}")
    return 0


def register(sub) -> None:
    """Add the generator-side subcommands to an argparse subparsers object."""
    p = sub.add_parser("cache-latents", help="encode train (+ hflip) and val with a tokenizer; latent stats",
                       description="Encode the train split, its horizontal flips (if data.hflip) and the val split "
                       "with a frozen tokenizer; write float16 .npy latents, labels and stats.json (normalisation "
                       "statistics, tokenizer sha256) to --out, atomically.")
    add_config_args(p, "data")
    p.add_argument("--tokenizer", required=True, help="tokenizer weights (.safetensors)")
    add_options(p, "data", "out", data="prepared data directory (rule prepare_data)",
                out="output directory of the latent cache")
    p.add_argument("--batch-size", type=int, default=256, help="images per encoder batch (default: %(default)s)")
    p.add_argument("--workers", type=int, default=4, help="data-loader workers for image files (default: %(default)s)")
    p.set_defaults(func=cmd_cache_latents)

    p = sub.add_parser("train-generator", help="train SiT / LightningDiT on cached latents (resumable, DDP-ready)",
                       description="Train a generator on a latent cache. Resumes from --ckpt-dir; on SIGTERM/SIGUSR1 "
                       "it checkpoints and exits with status 3. Run under torchrun for several GPUs.")
    add_config_args(p, "generator")
    add_options(p, "variant", "tokenizer-variant",
                variant="generator_variants id (needed without --config-json; also the MLflow name)")
    p.add_argument("--latents", required=True, help="latent cache directory (rule cache_latents)")
    add_options(p, "out", out="final EMA weights (.safetensors)")
    p.add_argument("--steps-dir", required=True, help="output directory for EMA weights at eval_steps")
    p.add_argument("--loss-curve", required=True, help="output JSON of the training loss curve")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (keep outside the rule's outputs)")
    p.add_argument("--tokenizer", help="tokenizer weights, to decode the preview grid (optional)")
    p.add_argument("--grid", help="preview sample grid PNG written at the end and logged to MLflow (optional)")
    add_options(p, "seed")
    p.set_defaults(func=cmd_train_generator)

    p = sub.add_parser("sample-generator", help="sample a generator into an .npz of uint8 images + a PNG grid",
                       description="Euler ODE / Euler-Maruyama sampling with optional CFG; noise keyed by the global "
                       "sample index, so --start/--end shards reproduce the full run exactly.")
    add_config_args(p, "sampling")
    p.add_argument("--generator", required=True, help="generator EMA weights (.safetensors)")
    p.add_argument("--latents", required=True, help="latent cache the generator was trained on (statistics)")
    p.add_argument("--tokenizer", required=True, help="tokenizer weights, to decode")
    p.add_argument("--guidance", required=True, type=_guidance,
                   help="'nocfg', 'cfg' (the generator variant's CFG setting) or a Table 12 sweep point "
                   "'cfg<scale>_<low>-<high>', e.g. 'cfg1.9_0-0.75'")
    add_options(p, "variant", "out", variant={"default": "sit_xl", "help": "generator variant whose `sampling` "
                                              "settings apply without --config-json (default: %(default)s)"},
                out="output .npz (images (N, H, W, 3) uint8, labels, indices)")
    p.add_argument("--grid", help="output PNG grid, one row per class (optional)")
    add_options(p, "seed", seed="sampling seed (default: %(default)s)")
    p.add_argument("--start", type=int, default=0, help="first global sample index (default: %(default)s)")
    p.add_argument("--end", type=int, help="one past the last index (default: sampling.num_samples)")
    p.set_defaults(func=cmd_sample_generator)

    p = sub.add_parser("eval-generation", help="gFID, IS, precision, recall of a samples .npz",
                       description="Compare samples with the train split through torch-fidelity (stand-in evaluator "
                       "at tiny, Inception + VGG16 at paper scale); write a metrics JSON and an MLflow run.")
    add_config_args(p, "evaluation")
    p.add_argument("--samples", required=True, help="samples .npz (sample-generator)")
    add_options(p, "data", "evaluator", "fid-cache", "out", "variant", "tokenizer-variant", "seed",
                data="prepared data directory (the train split is the reference)",
                fid_cache="directory caching the reference statistics", out="output metrics JSON",
                variant="generator id, for tags", tokenizer_variant="tokenizer id, for tags",
                seed="seed of the precision/recall reference subset")
    p.set_defaults(func=cmd_eval_generation)
