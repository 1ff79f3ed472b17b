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


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=str(C.DEFAULT_PARAMS), help="params.yaml to read (default: %(default)s)")
    p.add_argument("--scale", choices=C.SCALES, help="override `scale` from params.yaml")
    p.add_argument("--config-json", help="the stage's merged config as JSON (what Snakemake passes); "
                   "overrides --params/--scale")


def _params(args) -> C.Params:
    return C.load_params(args.params, {"scale": args.scale} if args.scale else None)


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


def cmd_check_params(args) -> int:
    params = _params(args)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (C.ConfigError, RuntimeError) as e:
        from maetok.data import DataError

        if isinstance(e, (C.ConfigError, DataError)):
            print(f"maetok {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
