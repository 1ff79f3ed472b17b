"""`maetok` command line: one subcommand per pipeline stage (rule names with dashes).

Each stage subcommand takes its merged config either from Snakemake (`--config-json`,
the exact dict the rule records as its params) or from params.yaml (`--params`,
`--scale`, `--variant`), so a rule, a manual run and a test all go through the same
`run()` function. The subcommands live in maetok/commands/, one module per group, each
with a `register(subparsers)`; the options they share come from `maetok.commands.add_options`.
"""

from __future__ import annotations

import argparse
import sys

from maetok import config as C
from maetok.commands import analysis, data, generator, mlflow_import, official, report, tokenizer, tools
from maetok.utils.malloc import retain_freed_memory

# The subcommand groups, in the order `maetok --help` lists them.
GROUPS = (data, tokenizer, tools, generator, analysis, report, mlflow_import, official)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maetok", description="MAETok reproduction: pipeline stages and tools. "
        "Normally run through Snakemake (see README); every stage can also be run by hand.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def _user_errors() -> tuple[type, ...]:
    """Exceptions that describe a user-fixable problem: printed as one message, exit code 2."""
    from maetok.data import DataError
    from maetok.eval.fidelity import FidelityError
    from maetok.eval.generation import SamplesError
    from maetok.latents import LatentCacheError
    from maetok.models.io import CheckpointError
    from maetok.models.official import OfficialWeightsError
    from maetok.models.sit import LatentShapeError
    from maetok.models.tokenizer import ImageSizeError
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
