# Stand-in networks (tiny scale), tokenizer stage 1 and 2 (or the import of released weights),
# reconstruction metrics.


rule train_standin:
    input:
        DATA,
    output:
        weights=f"{AUX}/{{role}}.safetensors",
        metrics=f"{AUX}/{{role}}.json",
    wildcard_constraints:
        role="teacher_dino|teacher_clip|evaluator",
    params:
        cfg=cfg_json(standins=PARAMS.active.standins),
        seed=PARAMS.seed,
        scale=SCALE,
        role=lambda wc: wc.role.replace("_", "-"),
        tags=mlflow_tags,
    priority: standin_priority
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/train_standin/{{role}}.log",
    benchmark:
        f"benchmarks/{SCALE}/train_standin/{{role}}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} maetok train-standin --role {params.role} --config-json {params.cfg:q} --seed {params.seed} "
        "--scale {params.scale} --data {input} "
        "--out {output.weights} > {log} 2>&1"


rule train_tokenizer:
    input:
        data=tok_data,
        standins=tokenizer_standins,
    output:
        weights=f"{RESULTS}/tokenizer/{{tok}}/stage1.safetensors",
        metrics=f"{RESULTS}/tokenizer/{{tok}}/stage1.json",
    wildcard_constraints:
        tok=TRAINED_TOKENIZERS,
    params:
        cfg=lambda wc: cfg_json(tokenizer=tok_cfg(wc), data=tok_data_cfg(wc)),
        seed=PARAMS.seed,
        scale=SCALE,
        ckpt=f"{RESULTS}/ckpt/tokenizer/{{tok}}/stage1",
        launch=launcher,
        aux=AUX,
        tags=shared_tokenizer_tags,
    priority: tokenizer_priority
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/train_tokenizer/{{tok}}.log",
    benchmark:
        f"benchmarks/{SCALE}/train_tokenizer/{{tok}}.tsv"
    resources:
        **train_resources("tokenizer"),
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} {params.launch} train-tokenizer --variant {wildcards.tok} --config-json {params.cfg:q} "
        "--seed {params.seed} --scale {params.scale} --data {input.data} "
        "--aux {params.aux} --ckpt-dir {params.ckpt} --out {output.weights} > {log} 2>&1"


rule finetune_decoder:
    input:
        init=rules.train_tokenizer.output.weights,
        data=tok_data,
        standins=tokenizer_standins,
    output:
        weights=f"{RESULTS}/tokenizer/{{tok}}/final.safetensors",
        metrics=f"{RESULTS}/tokenizer/{{tok}}/final.json",
    wildcard_constraints:
        tok=TRAINED_TOKENIZERS,
    params:
        cfg=lambda wc: cfg_json(tokenizer=tok_cfg(wc), data=tok_data_cfg(wc)),
        seed=PARAMS.seed,
        scale=SCALE,
        ckpt=f"{RESULTS}/ckpt/tokenizer/{{tok}}/stage2",
        launch=launcher,
        aux=AUX,
        tags=shared_tokenizer_tags,
    priority: tokenizer_priority
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/finetune_decoder/{{tok}}.log",
    benchmark:
        f"benchmarks/{SCALE}/finetune_decoder/{{tok}}.tsv"
    resources:
        **train_resources("tokenizer"),
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} {params.launch} finetune-decoder --variant {wildcards.tok} --config-json {params.cfg:q} "
        "--seed {params.seed} --scale {params.scale} --data {input.data} "
        "--aux {params.aux} --init {input.init} --ckpt-dir {params.ckpt} --out {output.weights} > {log} 2>&1"


# A variant with released `weights` (params.yaml, paper scale): the authors' file converted to ours, in
# stage 2's place (tokenizer_weights()); its sha256 is checked first when params.yaml gives it.
rule import_tokenizer:
    input:
        unpack(released_tokenizer_inputs),
    output:
        weights=f"{RESULTS}/tokenizer/{{tok}}/final.safetensors",
    wildcard_constraints:
        tok=RELEASED_TOKENIZERS,
    params:
        cfg=lambda wc: cfg_json(tok_cfg(wc)),
        options=import_options("tokenizer"),
        official_config=lambda wc, input: f"--official-config {input.config}" if input.config else "",
    log:
        f"logs/{SCALE}/import_tokenizer/{{tok}}.log",
    resources:
        mem_mb=16000,
    conda:
        "../../environment.yml"
    shell:
        "maetok import-official tokenizer {input.src} --config-json {params.cfg:q} {params.options} "
        "{params.official_config} --out {output.weights} > {log} 2>&1"


rule eval_reconstruction:
    input:
        tokenizer=lambda wc: tokenizer_weights(wc.tok),
        data=tok_data,
        evaluator=evaluator_input(),
    output:
        metrics=f"{RESULTS}/tokenizer/{{tok}}/recon.json",
        grid=f"{RESULTS}/tokenizer/{{tok}}/recon.png",
    params:
        cfg=cfg_json(evaluation=PARAMS.active.evaluation),
        scale=SCALE,
        evaluator=lambda wc, input: f"--evaluator {input.evaluator}" if input.evaluator else "",
        fid_cache=f"{RESULTS}/fid_cache",
        tags=mlflow_tags,
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/eval_reconstruction/{{tok}}.log",
    benchmark:
        f"benchmarks/{SCALE}/eval_reconstruction/{{tok}}.tsv"
    resources:
        gpu=EVAL_GPUS, mem_mb=32000 if TRAIN_GPUS else 4000, runtime=240,
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} maetok eval-reconstruction --variant {wildcards.tok} --config-json {params.cfg:q} "
        "--scale {params.scale} "
        "--tokenizer {input.tokenizer} --data {input.data} {params.evaluator} --fid-cache {params.fid_cache} "
        "--out {output.metrics} --grid {output.grid} > {log} 2>&1"
