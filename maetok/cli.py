"""`maetok` command line: one subcommand per pipeline stage (rule names with dashes).

Each stage subcommand takes its merged config either from Snakemake (`--config-json`,
the exact dict the rule records as its params) or from params.yaml (`--params`,
`--scale`, `--variant`), so a rule, a manual run and a test all go through the same
`run()` function.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from maetok import config as C
from maetok.commands import add_config_args, check_outputs, load_config
from maetok.utils.malloc import retain_freed_memory


def _add_config_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "stage")


def _params(args) -> C.Params:
    return C.load_params(args.params, {"scale": args.scale} if args.scale else None)


def cmd_prepare_hires(args) -> int:
    from maetok.data import prepare

    cfg = load_config(args, C.HiresConfig, "hires")
    t0 = time.perf_counter()
    manifest = prepare.run_hires(args.data, cfg.image_size, args.out)
    print(f"prepare-hires: wrote {args.out}/manifest.json ({manifest['image_size']} px) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def cmd_prepare_data(args) -> int:
    from maetok.data import prepare

    if args.config_json:
        cfg = C.from_dict(C.DataConfig, json.loads(args.config_json), "data")
        out = args.out
    else:
        params = _params(args)
        cfg = params.active.data
        out = args.out or f"results/{params.scale}/data"
    if not out:
        raise SystemExit("prepare-data: --out is required together with --config-json")
    t0 = time.perf_counter()
    manifest = prepare.run(cfg, out)
    counts = ", ".join(f"{s}: {v['count']:,}" for s, v in manifest["splits"].items())
    print(f"prepare-data: wrote {out}/manifest.json ({counts}) in {time.perf_counter() - t0:.1f} s")
    return 0


def _stage_config(args, **blocks):
    """{name: dataclass} of a stage from --config-json (Snakemake) or params.yaml (--params/--scale/--variant).

    `blocks` maps each top-level key to (dataclass, getter(params, variant)).
    """
    if args.config_json:
        raw = json.loads(args.config_json)
        out = {k: C.from_dict(cls, raw[k], k) for k, (cls, _) in blocks.items()}
        out["seed"] = raw.get("seed", 0)
        out["scale"] = raw.get("scale", "")
        return out
    params = _params(args)
    out = {k: get(params, getattr(args, "variant", None)) for k, (_, get) in blocks.items()}
    out["seed"], out["scale"] = params.seed, params.scale
    return out


TOKENIZER_BLOCKS = {
    "tokenizer": (C.TokenizerConfig, lambda p, v: p.tokenizer(v or "maetok")),
    "data": (C.DataConfig, lambda p, v: p.tokenizer_data(v or "maetok")),  # `resolution: hires` -> hires size
}


def _tags(args, stage_cfg, stage: str) -> dict:
    return {"scale": stage_cfg["scale"], "stage": stage, "variant": getattr(args, "variant", "") or "",
            "tables": getattr(args, "tables", "") or ""}


def cmd_train_standin(args) -> int:
    from maetok.train import standins

    cfg = _stage_config(args, standins=(C.StandinsConfig, lambda p, v: p.active.standins))
    check_outputs(args.out)
    metrics = standins.run(args.role, cfg["standins"], args.data, args.out, cfg["seed"],
                           _tags(args, cfg, "train_standin"))
    acc = metrics.get("test_acc", metrics.get("knn_acc"))
    print(f"train-standin {args.role}: held-out accuracy {acc:.4f}, wrote {args.out}")
    return 0


def _tokenizer_job(args, cfg, stage: int) -> int:
    from maetok.train.tokenizer import Job, train

    check_outputs(args.out, ckpt_dir=args.ckpt_dir)
    job = Job(data_dir=args.data, aux_dir=args.aux, out=args.out, ckpt_dir=args.ckpt_dir,
              init=getattr(args, "init", "") or "", variant=args.variant or "", scale=cfg["scale"],
              seed=cfg["seed"], tags=_tags(args, cfg, f"tokenizer_stage{stage}"))
    metrics = train(cfg["tokenizer"], cfg["data"], job, stage)
    print(f"stage {stage}: {metrics['steps']} steps in {metrics['seconds']} s "
          f"({metrics['images_per_second']} img/s); final {metrics['final']}")
    return 0


def cmd_train_tokenizer(args) -> int:
    return _tokenizer_job(args, _stage_config(args, **TOKENIZER_BLOCKS), 1)


def cmd_finetune_decoder(args) -> int:
    return _tokenizer_job(args, _stage_config(args, **TOKENIZER_BLOCKS), 2)


def cmd_eval_reconstruction(args) -> int:
    from maetok.eval import reconstruction

    cfg = _stage_config(args, evaluation=(C.EvaluationConfig, lambda p, v: p.active.evaluation))
    check_outputs(args.out, args.grid)
    m = reconstruction.run(args.tokenizer, args.data, cfg["evaluation"], args.evaluator, args.out, args.grid,
                           args.fid_cache, _tags(args, cfg, "eval_reconstruction"))
    print(f"eval-reconstruction: rFID {m['rfid']:.3f}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f} "
          f"(ood rFID {m['ood']['rfid']:.3f})")
    return 0


def cmd_model_info(args) -> int:
    from maetok.models import info, tokenizer

    networks = (C.load_params(args.params).scales[args.scale].tokenizer.networks
                if args.name in tokenizer.MAETok_models else None)
    print(json.dumps(info.model_info(args.name, **({"num_tokens": args.tokens} if args.tokens else {}),
                                     networks=networks), indent=2))
    return 0


def cmd_check_params(args) -> int:
    from maetok.report.tables import ReportError, check_params

    params = _params(args)
    try:
        check_params(params)  # the tables' variants and CFG-sweep step, as the workflow checks at load
    except ReportError as e:
        raise C.ConfigError(str(e)) from None
    print(f"{args.params}: OK (scale={params.scale})")
    return 0


def cmd_schema(args) -> int:
    if args.check:
        current = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else None
        if current != C.json_schema():
            print(f"{args.out} is out of date with maetok/config.py: run `maetok schema`", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    print(f"wrote {C.write_schema(Path(args.out))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maetok", description="MAETok reproduction: pipeline stages and tools. "
        "Normally run through Snakemake (see README); every stage can also be run by hand.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare-data", help="write the canonical dataset of the active scale + manifest",
                       description="Read the dataset of the active scale (Fashion-MNIST at tiny, an ImageNet "
                       "ImageFolder at paper) and write results/<scale>/data/ with a manifest.json.")
    _add_config_args(p)
    p.add_argument("--out", help="output directory (default: results/<scale>/data)")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("prepare-hires", help="the prepared data at the higher resolution of `hires` tokenizers",
                       description="Write the prepared base data (--data) at `hires.image_size` (Tables 3, 4, 11): "
                       "the same file lists cropped at that size (paper), or the images upsampled (tiny).")
    add_config_args(p, "hires")
    p.add_argument("--data", required=True, help="prepared base data directory (rule prepare_data)")
    p.add_argument("--out", required=True, help="output directory (results/<scale>/data_hires)")
    p.set_defaults(func=cmd_prepare_hires)

    p = sub.add_parser("train-standin", help="train a tiny-scale stand-in network (teacher or FID evaluator)",
                       description="Train a stand-in (DESIGN.md): teacher-dino (self-supervised), teacher-clip "
                       "(supervised; also perceptual/discriminator net) or evaluator (FID features).")
    _add_config_args(p)
    p.add_argument("--role", required=True, choices=("teacher-dino", "teacher-clip", "evaluator"))
    p.add_argument("--data", required=True, help="prepared data directory (results/<scale>/data)")
    p.add_argument("--out", required=True, help="output weights (.safetensors); metrics go beside it (.json)")
    p.set_defaults(func=cmd_train_standin)

    for name, func, what in (("train-tokenizer", cmd_train_tokenizer, "stage 1: mask modeling + aux decoders "
                              "(or an AE/VAE baseline)"),
                             ("finetune-decoder", cmd_finetune_decoder, "stage 2: frozen encoder, pixel-decoder "
                              "fine-tuning with the mask ratio annealed to 0")):
        p = sub.add_parser(name, help=what, description=f"Tokenizer {what}. Resumes from --ckpt-dir; writes "
                           "--out (weights + config) and a metrics JSON beside it.")
        _add_config_args(p)
        p.add_argument("--variant", help="tokenizer variant (params.yaml tokenizer_variants; default maetok)")
        p.add_argument("--tables", default="", help="tables this run feeds (MLflow tag)")
        p.add_argument("--data", required=True, help="prepared data directory")
        p.add_argument("--aux", default="", help="directory of the stand-in networks (tiny scale)")
        p.add_argument("--out", required=True, help="output .safetensors")
        p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (kept outside rule outputs)")
        if name == "finetune-decoder":
            p.add_argument("--init", required=True, help="the stage-1 tokenizer .safetensors")
        p.set_defaults(func=func)

    p = sub.add_parser("eval-reconstruction", help="rFID, PSNR, SSIM of a tokenizer (in- and out-of-domain)",
                       description="Reconstruct the val split and the out-of-domain set; write metrics JSON + grid.")
    _add_config_args(p)
    p.add_argument("--variant", default="", help="tokenizer variant (MLflow tag)")
    p.add_argument("--tables", default="", help="tables this run feeds (MLflow tag)")
    p.add_argument("--tokenizer", required=True, help="tokenizer .safetensors")
    p.add_argument("--data", required=True, help="prepared data directory")
    p.add_argument("--evaluator", default=None, help="stand-in evaluator weights (tiny scale)")
    p.add_argument("--fid-cache", required=True, help="directory for cached reference statistics")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--grid", required=True, help="reconstruction grid PNG")
    p.set_defaults(func=cmd_eval_reconstruction)

    p = sub.add_parser("model-info", help="parameter counts (and generator GFLOPs) of a registry model",
                       description="Print JSON with total and trainable parameters per component of a tokenizer "
                       "(MAETok_models) or generator (SiT_models); generators also report forward GFLOPs.")
    p.add_argument("name", help="registry name, e.g. MAETok-B/16 or SiT-XL/1")
    p.add_argument("--tokens", type=int, help="latent tokens for generator GFLOPs (default 128)")
    p.add_argument("--params", default=str(C.DEFAULT_PARAMS),
                   help="params.yaml whose tokenizer.networks size the aux heads (default: %(default)s)")
    p.add_argument("--scale", default="paper", choices=C.SCALES,
                   help="scale of those networks (default: paper; tiny: the stand-in teachers)")
    p.set_defaults(func=cmd_model_info)

    from maetok.commands import generator as generator_commands

    generator_commands.register(sub)
    from maetok.commands import analysis as analysis_commands
    analysis_commands.register(sub)
    from maetok.commands import report as report_commands
    report_commands.register(sub)
    from maetok.commands import mlflow_import

    mlflow_import.register(sub)
    from maetok.commands import official as official_commands

    official_commands.register(sub)

    p = sub.add_parser("check-params", help="validate params.yaml and exit",
                       description="Load params.yaml strictly; print the first problem with its key path.")
    _add_config_args(p)
    p.set_defaults(func=cmd_check_params)

    p = sub.add_parser("schema", help="(re)generate workflow/schemas/params.schema.json from maetok/config.py",
                       description="Write the JSON schema of params.yaml derived from the config dataclasses.")
    p.add_argument("--out", default=str(C.SCHEMA_PATH), help="schema path (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only check that the file is current")
    p.set_defaults(func=cmd_schema)
    return parser


def _user_errors() -> tuple[type, ...]:
    """Exceptions that describe a user-fixable problem: printed as one message, exit code 2."""
    from maetok.data import DataError
    from maetok.eval.fidelity import FidelityError
    from maetok.eval.generation import SamplesError
    from maetok.latents import LatentCacheError
    from maetok.models.official import OfficialWeightsError
    from maetok.models.sit import LatentShapeError
    from maetok.models.tokenizer import ImageSizeError
    from maetok.train.checkpoint import CheckpointError
    from maetok.train.utils import NonFiniteLossError
    from maetok.utils.io import OutputDirError

    return (C.ConfigError, DataError, CheckpointError, NonFiniteLossError, LatentCacheError, SamplesError,
            FidelityError, OutputDirError, ImageSizeError, LatentShapeError, OfficialWeightsError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # big-batch CPU jobs: freed tensors reused, not re-faulted (maetok/utils/malloc.py)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"maetok {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
