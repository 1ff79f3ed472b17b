"""Tool subcommands: model-info (parameter counts), check-params (validate params.yaml) and schema
(the JSON schema of params.yaml)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from maetok import config as C
from maetok.commands import add_config_args, add_options, load_params


def cmd_model_info(args) -> int:
    from maetok.models import info, tokenizer

    networks = (C.load_params(args.params).scales[args.scale].tokenizer.networks
                if args.name in tokenizer.MAETok_models else None)
    print(json.dumps(info.model_info(args.name, **({"num_tokens": args.tokens} if args.tokens else {}),
                                     networks=networks), indent=2))
    return 0


def cmd_check_params(args) -> int:
    from maetok.report.tables import ReportError, check_params

    params = load_params(args)
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
            print(f"{args.out} is out of date with the config dataclasses (maetok/config_stages.py, "
                  "config.py): run `maetok schema`", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    print(f"wrote {C.write_schema(Path(args.out))}")
    return 0


def register(sub) -> None:
    """Add the tool subcommands to an argparse subparsers object."""
    p = sub.add_parser("model-info", help="parameter counts (and generator GFLOPs) of a registry model",
                       description="Print JSON with total and trainable parameters per component of a tokenizer "
                       "(MAETok_models) or generator (SiT_models); generators also report forward GFLOPs.")
    p.add_argument("name", help="registry name, e.g. MAETok-B/16 or SiT-XL/1")
    p.add_argument("--tokens", type=int, help="latent tokens for generator GFLOPs (default 128)")
    add_options(p, "params", "scale",
                params="params.yaml whose tokenizer.networks size the aux heads (default: %(default)s)",
                scale={"default": "paper", "help": "scale of those networks (default: paper; tiny: the stand-in "
                       "teachers)"})
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser("check-params", help="validate params.yaml and exit",
                       description="Load params.yaml strictly; print the first problem with its key path.")
    add_config_args(p, "stage")
    p.set_defaults(func=cmd_check_params)

    p = sub.add_parser("schema", help="(re)generate workflow/schemas/params.schema.json from the config dataclasses",
                       description="Write the JSON schema of params.yaml derived from the config dataclasses.")
    p.add_argument("--out", default=str(C.SCHEMA_PATH), help="schema path (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only check that the file is current")
    p.set_defaults(func=cmd_schema)
