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


# The `resolution: hires` tokenizers' data (the 512x512 tables), derived from the base data.
rule prepare_hires:
    input:
        DATA,
    output:
        directory(DATA_HIRES),
    params:
        cfg=cfg_json(PARAMS.active.hires),
    log:
        f"logs/{SCALE}/prepare_hires.log",
    benchmark:
        f"benchmarks/{SCALE}/prepare_hires.tsv"
    conda:
        "../../environment.yml"
    shell:
        "maetok prepare-hires --config-json {params.cfg:q} --data {input} --out {output} > {log} 2>&1"
