# Latent-space analyses (paper §2, §4.3, App. B.3) and the figures built from them.
# Which tokenizers each figure shows, defined once; figures that need a generator use FIGURE_GEN.
FIGURES = {
    "fig2a": ["ae", "vae", "vavae", "maetok"],  # GMM NLL vs K
    "fig2b": ["ae", "vae", "vavae", "maetok"],  # generator training loss
    "fig4": ["ae", "vae", "maetok"],  # UMAP
    "fig5a": ["ae", "vae", "maetok", "target_pixel", "target_hog", "target_dino", "target_clip"],  # gFID vs LP acc
    "fig5b": ["ae", "vae", "maetok"],  # gFID vs generator steps
    "fig9": ["target_pixel", "target_hog", "target_dino", "target_clip"],  # UMAP per aux target
}
FIGURE_GEN = "sit_l"  # SiT-L, the generator of the paper's ablations (App. B.3, §4.3)
ANALYSIS = f"{RESULTS}/analysis/{{tok}}"

# Fig. 5b: (tokenizer, step, eval JSON) for each tokenizer and each kept EMA step of the
# generator; the last step's EMA is the final generator, so that point is its nocfg.json.
_FINAL_STEP = generator_config(FIGURE_GEN).optim.steps
FIG5B = [(t, s, f"{RESULTS}/generator/{t}/{FIGURE_GEN}/{'nocfg' if s == _FINAL_STEP else f'step{s}_nocfg'}.json")
         for t in FIGURES["fig5b"] for s in generator_config(FIGURE_GEN).eval_steps]

rule fit_gmm:
    input:
        f"{RESULTS}/latents/{{tok}}",
    output:
        f"{ANALYSIS}/gmm.json",
    params:
        cfg=cfg_json(PARAMS.active.analysis),
        seed=PARAMS.seed,
        scale=SCALE,
        tags=mlflow_tags,
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/fit_gmm/{{tok}}.log",
    benchmark:
        f"benchmarks/{SCALE}/fit_gmm/{{tok}}.tsv"
    resources:
        gpu=EVAL_GPUS, mem_mb=96000 if EVAL_GPUS else 4000, runtime=1440 if EVAL_GPUS else 30,
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} maetok fit-gmm --config-json {params.cfg:q} --seed {params.seed} --scale {params.scale} "
        "--variant {wildcards.tok} --latents {input} --out {output} > {log} 2>&1"


rule linear_probe:
    input:
        f"{RESULTS}/latents/{{tok}}",
    output:
        f"{ANALYSIS}/probe.json",
    params:
        cfg=cfg_json(PARAMS.active.analysis),
        seed=PARAMS.seed,
        scale=SCALE,
        tags=mlflow_tags,
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/linear_probe/{{tok}}.log",
    benchmark:
        f"benchmarks/{SCALE}/linear_probe/{{tok}}.tsv"
    resources:
        gpu=EVAL_GPUS, mem_mb=32000 if EVAL_GPUS else 4000, runtime=240 if EVAL_GPUS else 30,
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} maetok linear-probe --config-json {params.cfg:q} --seed {params.seed} --scale {params.scale} "
        "--variant {wildcards.tok} --latents {input} --out {output} > {log} 2>&1"


# Fig. 4 (AE, VAE, MAETok) and Fig. 9 (MAETok per aux target): all panels in one job.
rule plot_umap:
    input:
        latents=lambda wc: expand(f"{RESULTS}/latents/{{tok}}", tok=FIGURES[wc.fig]),
        data=DATA,
    output:
        png=report("figures/{fig}.png", caption="../report/umap.rst", category="Figures", subcategory="{fig}"),
        pdf="figures/{fig}.pdf",
    wildcard_constraints:
        fig="fig4|fig9",
    params:
        cfg=cfg_json(PARAMS.active.analysis),
        names=lambda wc: FIGURES[wc.fig],
        seed=PARAMS.seed,
        scale=SCALE,
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/plot_umap/{{fig}}.log",
    benchmark:
        f"benchmarks/{SCALE}/plot_umap/{{fig}}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "maetok plot-umap --config-json {params.cfg:q} --seed {params.seed} --scale {params.scale} "
        "--figure {wildcards.fig} --names {params.names} --latents {input.latents} "
        "--manifest {input.data}/manifest.json --out {output.png} > {log} 2>&1"


rule plot_gmm_nll:
    input:
        expand(f"{ANALYSIS}/gmm.json", tok=FIGURES["fig2a"]),
    output:
        png=report("figures/fig2a.png", caption="../report/gmm_nll.rst", category="Figures", subcategory="fig2a"),
        pdf="figures/fig2a.pdf",
    params:
        names=FIGURES["fig2a"],
    log:
        f"logs/{SCALE}/plot_figure/fig2a.log",
    conda:
        "../../environment.yml"
    shell:
        "maetok plot-figure --kind gmm-nll --figure fig2a --names {params.names} --metrics {input} "
        "--out {output.png} > {log} 2>&1"


rule plot_loss_curves:
    input:
        expand(f"{RESULTS}/generator/{{tok}}/{FIGURE_GEN}/loss_curve.json", tok=FIGURES["fig2b"]),
    output:
        png=report("figures/fig2b.png", caption="../report/loss_curves.rst", category="Figures", subcategory="fig2b"),
        pdf="figures/fig2b.pdf",
    params:
        names=FIGURES["fig2b"],
    log:
        f"logs/{SCALE}/plot_figure/fig2b.log",
    conda:
        "../../environment.yml"
    shell:
        "maetok plot-figure --kind loss-curves --figure fig2b --names {params.names} --metrics {input} "
        "--out {output.png} > {log} 2>&1"


rule plot_gfid_vs_probe:
    input:
        gfid=expand(f"{RESULTS}/generator/{{tok}}/{FIGURE_GEN}/nocfg.json", tok=FIGURES["fig5a"]),
        probe=expand(f"{ANALYSIS}/probe.json", tok=FIGURES["fig5a"]),
    output:
        png=report("figures/fig5a.png", caption="../report/gfid_vs_probe.rst", category="Figures", subcategory="fig5a"),
        pdf="figures/fig5a.pdf",
    params:
        names=FIGURES["fig5a"],
    log:
        f"logs/{SCALE}/plot_figure/fig5a.log",
    conda:
        "../../environment.yml"
    shell:
        "maetok plot-figure --kind gfid-vs-probe --figure fig5a --names {params.names} --metrics {input.gfid} "
        "--probe {input.probe} --out {output.png} > {log} 2>&1"


rule plot_gfid_vs_steps:
    input:
        [f for _, _, f in FIG5B],
    output:
        png=report("figures/fig5b.png", caption="../report/gfid_vs_steps.rst", category="Figures", subcategory="fig5b"),
        pdf="figures/fig5b.pdf",
    params:
        names=[t for t, _, _ in FIG5B],
        steps=[s for _, s, _ in FIG5B],
    log:
        f"logs/{SCALE}/plot_figure/fig5b.log",
    conda:
        "../../environment.yml"
    shell:
        "maetok plot-figure --kind gfid-vs-steps --figure fig5b --names {params.names} --steps {params.steps} --metrics {input} "
        "--out {output.png} > {log} 2>&1"
