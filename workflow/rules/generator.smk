# Generator half: tokenizer -> latent cache -> SiT/LightningDiT -> samples -> gFID.
# Resume checkpoints live in {RESULTS}/ckpt/ (never a declared output, so a failed or
# preempted job keeps them). At tiny scale no rule asks for a GPU, so a laptop runs them.
GEN = f"{RESULTS}/generator/{{tok}}/{{gen}}"
SAMPLES = f"{RESULTS}/samples/{{tok}}/{{gen}}"


rule cache_latents:
    input:
        tokenizer=lambda wc: tokenizer_weights(wc.tok),
        data=tok_data,
    output:
        directory(f"{RESULTS}/latents/{{tok}}"),
    params:
        cfg=lambda wc: cfg_json(tok_data_cfg(wc)),
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/cache_latents/{{tok}}.log",
    benchmark:
        f"benchmarks/{SCALE}/cache_latents/{{tok}}.tsv"
    resources:
        gpu=EVAL_GPUS, mem_mb=32000, runtime=240,
    conda:
        "../../environment.yml"
    shell:
        "maetok cache-latents --config-json {params.cfg:q} --tokenizer {input.tokenizer} --data {input.data} "
        "--out {output} > {log} 2>&1"


rule train_generator:
    input:
        latents=f"{RESULTS}/latents/{{tok}}",
        tokenizer=lambda wc: tokenizer_weights(wc.tok),
    output:
        ema=f"{GEN}/ema.safetensors",
        steps=directory(f"{GEN}/steps"),
        loss=f"{GEN}/loss_curve.json",
        grid=f"{GEN}/preview.png",
    wildcard_constraints:
        gen=TRAINED_GENERATORS,
    params:
        cfg=lambda wc: cfg_json(gen_cfg(wc)),
        seed=PARAMS.seed,
        ckpt=f"{RESULTS}/ckpt/generator/{{tok}}/{{gen}}",
        launch=launcher,
        scale=SCALE,
        tags=mlflow_tags,
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/train_generator/{{tok}}/{{gen}}.log",
    benchmark:
        f"benchmarks/{SCALE}/train_generator/{{tok}}/{{gen}}.tsv"
    resources:
        **train_resources("generator"), mem_mb=128000 if TRAIN_GPUS else 8000, runtime=2880, cpus_per_task=max(2, 4 * TRAIN_GPUS),
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} {params.launch} train-generator --config-json {params.cfg:q} --variant {wildcards.gen} "
        "--tokenizer-variant {wildcards.tok} --scale {params.scale} --seed {params.seed} --latents {input.latents} "
        "--tokenizer {input.tokenizer} --ckpt-dir {params.ckpt} --out {output.ema} --steps-dir {output.steps} "
        "--loss-curve {output.loss} --grid {output.grid} > {log} 2>&1"


# A generator variant with released `weights` (params.yaml, paper scale): the authors' SiT converted to
# ours in the final EMA's place, recording the imported tokenizer (the one its latents come from) and the
# official latent normalisation, which sampling then uses (maetok/sample.py: generator_stats). It keeps no
# intermediate EMAs (`steps`).
rule import_generator:
    input:
        unpack(released_generator_inputs),
    output:
        ema=f"{GEN}/ema.safetensors",
    wildcard_constraints:
        gen=RELEASED_GENERATORS,
    params:
        cfg=lambda wc: cfg_json(gen_cfg(wc)),
        options=import_options("generator"),
    log:
        f"logs/{SCALE}/import_generator/{{tok}}/{{gen}}.log",
    resources:
        mem_mb=16000,
    conda:
        "../../environment.yml"
    shell:
        "maetok import-official generator {input.src} --config-json {params.cfg:q} --tokenizer {input.tokenizer} "
        "{params.options} --out {output.ema} > {log} 2>&1"


rule sample_generator:
    input:
        generator=f"{GEN}/ema.safetensors",
        latents=f"{RESULTS}/latents/{{tok}}",
        tokenizer=lambda wc: tokenizer_weights(wc.tok),
    output:
        npz=f"{SAMPLES}/{{guidance}}.npz",
        grid=f"{SAMPLES}/{{guidance}}.png",
    params:
        cfg=sampling_json,
        seed=PARAMS.seed,
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/sample_generator/{{tok}}/{{gen}}/{{guidance}}.log",
    benchmark:
        f"benchmarks/{SCALE}/sample_generator/{{tok}}/{{gen}}/{{guidance}}.tsv"
    resources:
        gpu=EVAL_GPUS, mem_mb=32000 if TRAIN_GPUS else 4000, runtime=720,
    conda:
        "../../environment.yml"
    shell:
        "maetok sample-generator --config-json {params.cfg:q} --guidance {wildcards.guidance} --seed {params.seed} "
        "--generator {input.generator} --latents {input.latents} --tokenizer {input.tokenizer} "
        "--out {output.npz} --grid {output.grid} > {log} 2>&1"


# Fig. 5b: the EMA weights kept at eval_steps, sampled like the final ones.
rule sample_generator_step:
    input:
        steps=f"{GEN}/steps",
        latents=f"{RESULTS}/latents/{{tok}}",
        tokenizer=lambda wc: tokenizer_weights(wc.tok),
    output:
        npz=f"{SAMPLES}/step{{step}}_{{guidance}}.npz",
    wildcard_constraints:
        step=r"\d+",
    params:
        cfg=sampling_json,
        seed=PARAMS.seed,
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/sample_generator/{{tok}}/{{gen}}/step{{step}}_{{guidance}}.log",
    benchmark:
        f"benchmarks/{SCALE}/sample_generator/{{tok}}/{{gen}}/step{{step}}_{{guidance}}.tsv"
    resources:
        gpu=EVAL_GPUS, mem_mb=32000 if TRAIN_GPUS else 4000, runtime=720,
    conda:
        "../../environment.yml"
    shell:
        "maetok sample-generator --config-json {params.cfg:q} --guidance {wildcards.guidance} --seed {params.seed} "
        "--generator {input.steps}/step{wildcards.step}.safetensors --latents {input.latents} "
        "--tokenizer {input.tokenizer} --out {output.npz} > {log} 2>&1"


# {name} is a guidance of the final EMA (`nocfg`, `cfg` or a Table 12 sweep point such as
# `cfg1.9_0-0.75`) or `step<N>_<guidance>` (Fig. 5b).
rule eval_generation:
    input:
        samples=f"{SAMPLES}/{{name}}.npz",
        data=tok_data,
        evaluator=evaluator_input(),
    output:
        f"{GEN}/{{name}}.json",
    wildcard_constraints:
        name=rf"(step\d+_)?({GUIDANCE})",
    params:
        cfg=cfg_json(PARAMS.active.evaluation),
        seed=PARAMS.seed,
        fid_cache=f"{RESULTS}/fid_cache",
        tags=mlflow_tags,
        # no evaluator file with Inception features (paper scale): leave the option out
        evaluator=lambda wc, input: f"--evaluator {input.evaluator}" if input.evaluator else "",
    threads: JOB_THREADS
    log:
        f"logs/{SCALE}/eval_generation/{{tok}}/{{gen}}/{{name}}.log",
    benchmark:
        f"benchmarks/{SCALE}/eval_generation/{{tok}}/{{gen}}/{{name}}.tsv"
    resources:
        gpu=EVAL_GPUS, mem_mb=32000 if TRAIN_GPUS else 4000, runtime=240,
    conda:
        "../../environment.yml"
    shell:
        "MAETOK_TAGS={params.tags:q} maetok eval-generation --config-json {params.cfg:q} --samples {input.samples} --data {input.data} "
        "{params.evaluator} --fid-cache {params.fid_cache} --seed {params.seed} "
        "--variant {wildcards.gen} --tokenizer-variant {wildcards.tok} --out {output} > {log} 2>&1"
