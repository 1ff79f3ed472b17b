"""Tokenizer-side subcommands: train-standin, train-tokenizer (stage 1), finetune-decoder (stage 2) and
eval-reconstruction.

Each takes its merged config as `--config-json` (what the Snakemake rule records as its param) or,
when run by hand, reads it from params.yaml (`--params`, `--scale`, `--variant`); every input and
output path is an explicit argument.
"""

from __future__ import annotations

import json

from maetok import config as C
from maetok.commands import add_config_args, add_options, check_outputs, load_params

TOKENIZER_BLOCKS = {
    "tokenizer": (C.TokenizerConfig, lambda p, v: p.tokenizer(v or "maetok")),
    "data": (C.DataConfig, lambda p, v: p.tokenizer_data(v or "maetok")),  # `resolution: hires` -> hires size
}


SEED_OPTION = {"default": None, "help": "global seed (default: params.yaml's `seed`)"}


def stage_config(args, **blocks) -> dict:
    """{name: dataclass} of a stage from --config-json (Snakemake) or params.yaml (--params/--scale/--variant),
    plus its "seed" and "scale". `blocks` maps each top-level key to (dataclass, getter(params, variant)).
    Seed and scale come from --seed and --scale, as for every other stage (by hand: params.yaml's)."""
    seed = getattr(args, "seed", None)
    if args.config_json:
        raw = json.loads(args.config_json)
        extra = sorted(set(raw) - set(blocks))
        if extra:
            raise C.ConfigError(f"--config-json has the keys {extra} besides {sorted(blocks)}: pass the seed and the "
                                "scale as --seed and --scale")
        out = {k: C.from_dict(cls, raw[k], k) for k, (cls, _) in blocks.items()}
        out["seed"], out["scale"] = seed or 0, args.scale or ""
        return out
    params = load_params(args)
    out = {k: get(params, getattr(args, "variant", None)) for k, (_, get) in blocks.items()}
    out["seed"], out["scale"] = params.seed if seed is None else seed, params.scale
    return out


def _tags(args, stage_cfg, stage: str) -> dict:
    return {"scale": stage_cfg["scale"], "stage": stage, "variant": getattr(args, "variant", "") or "",
            "tables": getattr(args, "tables", "") or ""}


def cmd_train_standin(args) -> int:
    from maetok.train import standins

    cfg = stage_config(args, standins=(C.StandinsConfig, lambda p, v: p.active.standins))
    check_outputs(args.out)
    job = standins.StandinJob(role=args.role, data_dir=args.data, out=args.out, seed=cfg["seed"],
                              scale=cfg["scale"], tags=_tags(args, cfg, "train_standin"))
    metrics = standins.run(cfg["standins"], job)
    acc = metrics.get("test_acc", metrics.get("knn_acc"))
    print(f"train-standin {args.role}: held-out accuracy {acc:.4f}, wrote {args.out}")
    return 0


def _tokenizer_job(args, cfg, stage: int) -> int:
    from maetok.train.tokenizer import TokenizerJob, train

    check_outputs(args.out, ckpt_dir=args.ckpt_dir)
    job = TokenizerJob(data_dir=args.data, aux_dir=args.aux, out=args.out, ckpt_dir=args.ckpt_dir,
                       init=getattr(args, "init", "") or "", variant=args.variant or "", scale=cfg["scale"],
                       seed=cfg["seed"], tags=_tags(args, cfg, f"tokenizer_stage{stage}"))
    metrics = train(cfg["tokenizer"], cfg["data"], job, stage)
    print(f"stage {stage}: {metrics['steps']} steps in {metrics['seconds']} s "
          f"({metrics['images_per_second']} img/s); final {metrics['final']}")
    return 0


def cmd_train_tokenizer(args) -> int:
    return _tokenizer_job(args, stage_config(args, **TOKENIZER_BLOCKS), 1)


def cmd_finetune_decoder(args) -> int:
    return _tokenizer_job(args, stage_config(args, **TOKENIZER_BLOCKS), 2)


def cmd_eval_reconstruction(args) -> int:
    from maetok.eval import reconstruction

    cfg = stage_config(args, evaluation=(C.EvaluationConfig, lambda p, v: p.active.evaluation))
    check_outputs(args.out, args.grid)
    m = reconstruction.run(args.tokenizer, args.data, cfg["evaluation"], args.evaluator, args.out, args.grid,
                           args.fid_cache, _tags(args, cfg, "eval_reconstruction"))
    print(f"eval-reconstruction: rFID {m['rfid']:.3f}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f} "
          f"(ood rFID {m['ood']['rfid']:.3f})")
    return 0


def register(sub) -> None:
    """Add the tokenizer-side subcommands to an argparse subparsers object."""
    p = sub.add_parser("train-standin", help="train a tiny-scale stand-in network (teacher or FID evaluator)",
                       description="Train a tiny-scale stand-in: teacher-dino (self-supervised), teacher-clip "
                       "(supervised; also perceptual/discriminator net) or evaluator (FID features).")
    add_config_args(p, "stage")
    add_options(p, "seed", seed=SEED_OPTION)
    p.add_argument("--role", required=True, choices=("teacher-dino", "teacher-clip", "evaluator"))
    add_options(p, "data", "out", data="prepared data directory (results/<scale>/data)",
                out="output weights (.safetensors); metrics go beside it (.json)")
    p.set_defaults(func=cmd_train_standin)

    for name, func, what in (("train-tokenizer", cmd_train_tokenizer, "stage 1: mask modeling + aux decoders "
                              "(or an AE/VAE baseline)"),
                             ("finetune-decoder", cmd_finetune_decoder, "stage 2: frozen encoder, pixel-decoder "
                              "fine-tuning with the mask ratio annealed to 0")):
        p = sub.add_parser(name, help=what, description=f"Tokenizer {what}. Resumes from --ckpt-dir; writes "
                           "--out (weights + config) and a metrics JSON beside it.")
        add_config_args(p, "stage")
        add_options(p, "seed", seed=SEED_OPTION)
        add_options(p, "variant", "tables", "data",
                    variant="tokenizer variant (params.yaml tokenizer_variants; default maetok)")
        p.add_argument("--aux", default="", help="directory of the stand-in networks (tiny scale)")
        add_options(p, "out", out="output .safetensors")
        p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (kept outside rule outputs)")
        if name == "finetune-decoder":
            p.add_argument("--init", required=True, help="the stage-1 tokenizer .safetensors")
        p.set_defaults(func=func)

    p = sub.add_parser("eval-reconstruction", help="rFID, PSNR, SSIM of a tokenizer (in- and out-of-domain)",
                       description="Reconstruct the val split and the out-of-domain set; write metrics JSON + grid.")
    add_config_args(p, "stage")
    add_options(p, "variant", "tables", variant={"default": "", "help": "tokenizer variant (MLflow tag)"})
    p.add_argument("--tokenizer", required=True, help="tokenizer .safetensors")
    add_options(p, "data", "evaluator", "fid-cache", "out", out="metrics JSON")
    p.add_argument("--grid", required=True, help="reconstruction grid PNG")
    p.set_defaults(func=cmd_eval_reconstruction)
