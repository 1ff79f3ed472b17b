"""`maetok import-official` / `maetok export-official`: the released MAETok and SiT weights of the official
code in this project's format and back (maetok/models/official.py; docs/official_weights.md).

The imported file is what our trainers write, config embedded: `--params` / `--scale` / `--variant` pick
the tokenizer or generator variant whose settings it carries besides the architecture, which is read from
the weights (default: the paper-scale variants of the released models), or `--config-json` gives that
config (what the rules import_tokenizer / import_generator pass). `--sha256` checks the source first.
"""

from __future__ import annotations

import json

from maetok import config as C
from maetok.commands import add_options, check_outputs

DEFAULT_VARIANTS = {"tokenizer": "maetok_main", "generator": "sit_xl"}


def _base_config(args):
    """The merged tokenizer / generator config the imported file carries: --config-json (what the rules
    import_tokenizer / import_generator pass), else the variant of params.yaml."""
    cls = C.TokenizerConfig if args.kind == "tokenizer" else C.GeneratorConfig
    if args.config_json:
        return C.from_dict(cls, json.loads(args.config_json), args.kind)
    params = C.load_params(args.params)
    return getattr(params, args.kind)(args.variant or DEFAULT_VARIANTS[args.kind], args.scale)


def cmd_import_official(args) -> int:
    from maetok.models import official

    check_outputs(args.out)
    if args.sha256:
        official.check_sha256(args.src, args.sha256)
    base = _base_config(args)
    if args.kind == "tokenizer":
        s = official.import_tokenizer(args.src, args.out, base, args.state_key, args.official_config)
        what = (f"{s['size']} at {s['image_size']} px, L = {s['num_latent_tokens']}, H = {s['latent_dim']}; "
                f"{s['dropped']} unused official tensors dropped")
    else:
        s = official.import_generator(args.src, args.out, base, args.tokenizer, args.latent_mean, args.latent_std,
                                      args.state_key)
        what = (f"{s['size']} on ({s['num_tokens']}, {s['latent_dim']}) latents, {s['num_classes']} classes; "
                f"latent mean {s['latent_mean']:g}, std {s['latent_std']:g}")
    wrapper = f" [{s['source']['wrapper']}]" if s["source"]["wrapper"] else ""
    print(f"import-official {args.kind}: {args.src}{wrapper} -> {args.out}: {what}")
    return 0


def cmd_export_official(args) -> int:
    from maetok.models import official

    check_outputs(args.out)
    n = official.export_weights(args.kind, args.src, args.out)
    print(f"export-official {args.kind}: {args.src} -> {args.out} ({n} tensors, official layout)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("import-official", help="convert released official MAETok / SiT weights to our format",
                       description="Read a released tokenizer (AEModel) or SiT file of the official code "
                       "(.safetensors, .bin, .pt, .pth; bare state dict or under ema/model/state_dict) and write our "
                       ".safetensors with the config embedded. Unknown or missing keys and shape mismatches are "
                       "errors naming the keys. See docs/official_weights.md.")
    p.add_argument("kind", choices=("tokenizer", "generator"), help="what the file holds")
    p.add_argument("src", help="the released weights file")
    add_options(p, "out", out="output .safetensors in this project's format")
    p.add_argument("--state-key", help="key of the state dict in a training checkpoint (default: ema, model, "
                   "state_dict, whichever comes first)")
    add_options(p, "params", "scale", "variant", "config-json",
                scale={"default": "paper", "help": "scale of the variant whose settings the file carries "
                       "(default: %(default)s)"},
                variant="tokenizer_variants / generator_variants id whose settings the file carries besides the "
                f"architecture (default: {DEFAULT_VARIANTS['tokenizer']} / {DEFAULT_VARIANTS['generator']})",
                config_json="merged tokenizer / generator config as JSON that the file carries (what Snakemake "
                "passes); overrides --params/--scale/--variant")
    p.add_argument("--sha256", help="expected sha256 of SRC, checked before the import (an error names both hashes)")
    p.add_argument("--official-config", help="tokenizer: the config.json released with it; checked against the "
                   "weights, and its vq_mean / vq_std are recorded for the SiT import")
    p.add_argument("--tokenizer", help="generator: our imported tokenizer file its latents come from (checked; its "
                   "sha256 pairs the generator with latent caches of that tokenizer)")
    p.add_argument("--latent-mean", type=float, help="generator: vq_mean of the official latent normalisation "
                   "(default: recorded in --tokenizer)")
    p.add_argument("--latent-std", type=float, help="generator: vq_std of the official latent normalisation "
                   "(default: recorded in --tokenizer)")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("export-official", help="write our tokenizer / generator weights in the official layout",
                       description="Write a tokenizer or generator file of this project as a state dict with the "
                       "official code's parameter names (strict-loadable by its AEModel / SiT); .safetensors, or "
                       ".bin / .pt / .pth via torch.save. See docs/official_weights.md.")
    p.add_argument("kind", choices=("tokenizer", "generator"), help="what the file holds")
    p.add_argument("src", help="our tokenizer / generator .safetensors")
    add_options(p, "out", out="output file in the official layout")
    p.set_defaults(func=cmd_export_official)
