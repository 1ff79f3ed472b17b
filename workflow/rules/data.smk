rule prepare_data:
    output:
        directory(f"{RESULTS}/data"),
    params:
        cfg=cfg_json(PARAMS.active.data),
    log:
        f"logs/{SCALE}/prepare_data.log",
    benchmark:
        f"benchmarks/{SCALE}/prepare_data.tsv"
    conda:
        "../../environment.yml"
    shell:
        "maetok prepare-data --config-json {params.cfg:q} --out {output} > {log} 2>&1"
