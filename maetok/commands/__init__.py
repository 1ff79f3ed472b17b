"""Subcommand groups of the `maetok` CLI, each with a `register(subparsers)` function.

Every stage subcommand reads its merged config the same way: `--config-json` (what a
Snakemake rule passes: exactly the dict it records as its param) or, by hand,
params.yaml at `--scale` (and `--variant` for tokenizer/generator variants).
"""

from __future__ import annotations

import argparse
import json

from maetok import config as C
from maetok.utils.io import check_writable


def add_config_args(p: argparse.ArgumentParser, block: str) -> None:
    p.add_argument("--config-json", help=f"merged `{block}` config as JSON (what Snakemake passes); "
                   "overrides --params/--scale")
    p.add_argument("--params", default=str(C.DEFAULT_PARAMS), help="params.yaml to read (default: %(default)s)")
    p.add_argument("--scale", choices=C.SCALES, help="override `scale` from params.yaml")


def load_config(args, cls: type, block: str):
    """The `block` config of a subcommand: from --config-json, else params.yaml (variants need --variant)."""
    if args.config_json:
        return C.from_dict(cls, json.loads(args.config_json), block)
    params = C.load_params(args.params, {"scale": args.scale} if args.scale else None)
    if block in ("tokenizer", "generator"):
        if not getattr(args, "variant", None):
            raise C.ConfigError(f"--variant is required without --config-json (a {block}_variants id)")
        return getattr(params, block)(args.variant)
    return getattr(params.active, block)


def check_outputs(*paths: str | None, ckpt_dir: str | None = None) -> None:
    """Fail before any work if an output file (or the checkpoint directory) cannot be written;
    OutputDirError names the directory."""
    for path in paths:
        if path:
            check_writable(path)
    if ckpt_dir:
        check_writable(ckpt_dir, is_dir=True)
