"""Data subcommands: prepare-data (the canonical dataset of a scale) and prepare-hires (the same data at
the higher resolution of `resolution: hires` tokenizers)."""

from __future__ import annotations

import json
import time

from maetok import config as C
from maetok.commands import add_config_args, add_options, load_config, load_params


def cmd_prepare_data(args) -> int:
    from maetok.data import prepare

    if args.config_json:
        cfg = C.from_dict(C.DataConfig, json.loads(args.config_json), "data")
        out = args.out
    else:
        params = load_params(args)
        cfg = params.active.data
        out = args.out or f"results/{params.scale}/data"
    if not out:
        raise SystemExit("prepare-data: --out is required together with --config-json")
    t0 = time.perf_counter()
    manifest = prepare.run(cfg, out)
    counts = ", ".join(f"{s}: {v['count']:,}" for s, v in manifest["splits"].items())
    print(f"prepare-data: wrote {out}/manifest.json ({counts}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_prepare_hires(args) -> int:
    from maetok.data import prepare

    cfg = load_config(args, C.HiresConfig, "hires")
    t0 = time.perf_counter()
    manifest = prepare.run_hires(args.data, cfg.image_size, args.out)
    print(f"prepare-hires: wrote {args.out}/manifest.json ({manifest['image_size']} px) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def register(sub) -> None:
    """Add the data subcommands to an argparse subparsers object."""
    p = sub.add_parser("prepare-data", help="write the canonical dataset of the active scale + manifest",
                       description="Read the dataset of the active scale (Fashion-MNIST at tiny, an ImageNet "
                       "ImageFolder at paper) and write results/<scale>/data/ with a manifest.json.")
    add_config_args(p, "stage")
    add_options(p, "out", out={"required": False, "help": "output directory (default: results/<scale>/data)"})
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("prepare-hires", help="the prepared data at the higher resolution of `hires` tokenizers",
                       description="Write the prepared base data (--data) at `hires.image_size` (Tables 3, 4, 11): "
                       "the same file lists cropped at that size (paper), or the images upsampled (tiny).")
    add_config_args(p, "hires")
    add_options(p, "data", "out", data="prepared base data directory (rule prepare_data)",
                out="output directory (results/<scale>/data_hires)")
    p.set_defaults(func=cmd_prepare_hires)
