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

# The options several subcommands share, with their usual settings. `add_options` adds them; a
# subcommand overrides the help (or any add_argument keyword) where its meaning is narrower.
SHARED_OPTIONS = {
    "config-json": {"help": "merged `{block}` config as JSON (what Snakemake passes); overrides --params/--scale"},
    "params": {"default": str(C.DEFAULT_PARAMS), "help": "params.yaml to read (default: %(default)s)"},
    "scale": {"choices": C.SCALES, "help": "override `scale` from params.yaml"},
    "seed": {"type": int, "default": 0, "help": "global seed (default: %(default)s)"},
    "variant": {"help": "variant id (MLflow tag)"},
    "tokenizer-variant": {"help": "tokenizer id, for MLflow tags"},
    "tables": {"default": "", "help": "tables this run feeds (MLflow tag)"},
    "data": {"required": True, "help": "prepared data directory"},
    "out": {"required": True, "help": "output file"},
    "fid-cache": {"required": True, "help": "directory for cached reference statistics"},
    "evaluator": {"help": "stand-in evaluator weights (tiny scale)"},
}


def add_options(p: argparse.ArgumentParser, *names: str, block: str = "", **overrides) -> None:
    """Add the shared options `names` (keys of SHARED_OPTIONS, without dashes) to `p`, in that order.

    `overrides` is keyed by the option's name with underscores (config_json=...): a string replaces
    its help, a dict its add_argument keywords. `block` names the config of --config-json."""
    for name in names:
        spec = dict(SHARED_OPTIONS[name])
        override = overrides.pop(name.replace("-", "_"), {})
        spec.update({"help": override} if isinstance(override, str) else override)
        spec["help"] = spec["help"].replace("{block}", block)
        p.add_argument(f"--{name}", **spec)
    if overrides:
        raise TypeError(f"add_options: overrides for options not added: {sorted(overrides)}")


def add_config_args(p: argparse.ArgumentParser, block: str, **overrides) -> None:
    """--config-json / --params / --scale: how a stage subcommand gets its `block` config (see `load_config`)."""
    add_options(p, "config-json", "params", "scale", block=block, **overrides)


def load_params(args) -> C.Params:
    """params.yaml of --params, at --scale when given."""
    return C.load_params(args.params, {"scale": args.scale} if args.scale else None)


def load_config(args, cls: type, block: str):
    """The `block` config of a subcommand: from --config-json, else params.yaml (variants need --variant)."""
    if args.config_json:
        return C.from_dict(cls, json.loads(args.config_json), block)
    params = load_params(args)
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
