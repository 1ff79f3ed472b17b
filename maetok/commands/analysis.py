"""Latent-space analysis subcommands: fit-gmm, linear-probe, plot-umap, plot-figure.

fit-gmm, linear-probe and plot-umap take the `analysis` config as `--config-json` (what the
Snakemake rule records as its param) or, run by hand, read it from params.yaml (`--params`,
`--scale`). plot-figure needs no config: it only draws metrics files. Every input and output
path is an explicit argument; the work is in `maetok.analysis.jobs`.
"""

from __future__ import annotations

import argparse

from maetok import config as C
from maetok.commands import add_options, load_config

# plot-figure kinds (= maetok.analysis.jobs.FIGURE_KINDS, not imported here to keep `maetok --help` fast).
FIGURE_KINDS = {
    "gmm-nll": "Fig. 2a from fit-gmm JSONs",
    "loss-curves": "Fig. 2b from train-generator loss_curve.json files",
    "gfid-vs-probe": "Fig. 5a from nocfg eval-generation JSONs plus --probe JSONs",
    "gfid-vs-steps": "Fig. 5b from nocfg eval-generation JSONs at several steps (a name repeats once per step)",
}


def _config(args) -> C.AnalysisConfig:
    return load_config(args, C.AnalysisConfig, "analysis")


def _common_args(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        add_options(p, "config-json", "params", "seed", block="analysis",
                    seed="seed of subsampling, GMM init, probe batches, UMAP (default: %(default)s)")
    add_options(p, "scale", scale="scale (MLflow tag; without --config-json also selects the params.yaml block)")


def cmd_fit_gmm(args) -> int:
    from maetok.analysis.jobs import fit_gmm

    m = fit_gmm(_config(args), args.latents, args.out, seed=args.seed, variant=args.variant or "",
                scale=args.scale or "")
    nll = ", ".join(f"K={r['k']}: {r['nll_heldout']:.3f}" for r in m["results"])
    print(f"fit-gmm: PCA {m['input_dim']} -> {m['pca_dim']} dims ({100 * m['explained_variance']:.1f}% variance; "
          f"own 90% dim {m['own_pca_dim_90']}); held-out NLL {nll}; {m['seconds']} s -> {args.out}")
    return 0


def cmd_linear_probe(args) -> int:
    from maetok.analysis.jobs import run_linear_probe

    m = run_linear_probe(_config(args), args.latents, args.out, seed=args.seed, variant=args.variant or "",
                         scale=args.scale or "")
    print(f"linear-probe: val acc {m['val_acc']:.4f} (train {m['train_acc']:.4f}) on {m['input_dim']}-d latents; "
          f"{m['seconds']} s -> {args.out}")
    return 0


def cmd_plot_umap(args) -> int:
    from maetok.analysis.jobs import plot_umap

    info = plot_umap(_config(args), args.names, args.latents, args.manifest, args.out, seed=args.seed,
                     scale=args.scale or "", figure=args.figure or "")
    panels = ", ".join(f"{p['name']} {p['n_points']} pts {p['seconds']:.1f} s" for p in info["panels"])
    print(f"plot-umap: {panels} -> {info['png']}, {info['pdf']}")
    return 0


def cmd_plot_figure(args) -> int:
    from maetok.analysis.jobs import plot_figure

    r = plot_figure(args.kind, args.names, args.metrics, args.out, probe=args.probe or (), scale=args.scale or "",
                    figure=args.figure or "", steps=args.steps or ())
    print(f"plot-figure {args.kind}: {len(r['data'])} series -> {r['png']}, {r['pdf']}")
    return 0


def register(sub) -> None:
    """Add the analysis subcommands to an argparse subparsers object."""
    p = sub.add_parser("fit-gmm", help="GMM NLL of a tokenizer's latents for each number of components (Fig. 2a)",
                       description="App. B.3: flatten a class-balanced subsample of analysis.gmm_max_samples train "
                       "latents -> PCA to analysis.gmm_pca_dim (clipped to the latent dimension) -> standardise -> "
                       "GMM for each K in analysis.gmm_components; NLL on the val split. Writes a metrics JSON and "
                       "an MLflow run.")
    _common_args(p)
    p.add_argument("--latents", required=True, help="latent cache directory (rule cache_latents)")
    p.add_argument("--out", required=True, help="output metrics JSON")
    p.add_argument("--variant", help="tokenizer id (JSON field and MLflow tag)")
    p.set_defaults(func=cmd_fit_gmm)

    p = sub.add_parser("linear-probe", help="linear-probe accuracy of a tokenizer's latents (Fig. 5a)",
                       description="§4.3: a linear classifier on the flattened, standardised train latents "
                       "(unflipped), analysis.probe_epochs epochs of AdamW at analysis.probe_lr; top-1 accuracy on "
                       "the val split. Writes a metrics JSON and an MLflow run.")
    _common_args(p)
    p.add_argument("--latents", required=True, help="latent cache directory (rule cache_latents)")
    p.add_argument("--out", required=True, help="output metrics JSON")
    p.add_argument("--variant", help="tokenizer id (JSON field and MLflow tag)")
    p.set_defaults(func=cmd_linear_probe)

    p = sub.add_parser("plot-umap", help="UMAP panels of several tokenizers' val latents (Fig. 4, Fig. 9)",
                       description="One UMAP panel per tokenizer, coloured by class (analysis.umap_per_class val "
                       "latents of each class), all in one process so numba compiles once. Writes OUT's .png "
                       "and .pdf.")
    _common_args(p)
    p.add_argument("--names", nargs="+", required=True, help="tokenizer ids, one per panel, in order")
    p.add_argument("--latents", nargs="+", required=True, help="latent cache directories, one per name")
    p.add_argument("--manifest", required=True, help="data manifest.json (rule prepare_data) with the class names")
    p.add_argument("--out", required=True, help="output figure (.png; the .pdf goes beside it)")
    p.add_argument("--figure", help="figure id (MLflow run name), e.g. fig4")
    p.set_defaults(func=cmd_plot_umap)

    p = sub.add_parser("plot-figure", help="draw Fig. 2a, 2b, 5a or 5b from metrics files",
                       description="Draw one paper figure from metrics files; writes OUT's .png and .pdf. "
                       "Kinds: " + "; ".join(f"{k}: {v}" for k, v in FIGURE_KINDS.items()) + ".")
    _common_args(p, config=False)
    p.add_argument("--kind", required=True, choices=list(FIGURE_KINDS), help="which figure to draw")
    p.add_argument("--names", nargs="+", required=True, help="tokenizer id of each metrics file, in order")
    p.add_argument("--metrics", nargs="+", required=True, help="input metrics files, one per name")
    p.add_argument("--probe", nargs="+", help="gfid-vs-probe only: linear-probe JSONs, one per name")
    p.add_argument("--steps", nargs="+", type=int,
                   help="gfid-vs-steps only: the training step of each metrics file (default: from step<N>_ names)")
    p.add_argument("--out", required=True, help="output figure (.png; the .pdf goes beside it)")
    p.add_argument("--figure", help="figure id (MLflow run name), e.g. fig2a")
    p.set_defaults(func=cmd_plot_figure)
