# Validation, paths and every input/params function of the workflow.
import functools
import json
import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.utils import validate

from maetok import config as C
from maetok.report.tables import ReportError
from maetok.report.tables import check_params as check_tables
from maetok.report.tables import inputs_for

# The strict dataclass load names the offending key path (unknown/missing keys, types,
# enums, cross-field checks); the schema it generates is checked too, for tools that
# read the schema alone.
try:
    PARAMS = C.load_params(config)
except C.ConfigError as e:
    raise WorkflowError(f"params.yaml: {e}\n(fix the key in params.yaml or the --config/--configfile override)") from None
try:
    validate(config, schema="../schemas/params.schema.json")
except WorkflowError as e:  # jsonschema's report runs to a dozen lines: keep the key path and the problem
    bad = e.__cause__ or e.__context__
    problem = (f"{'.'.join(map(str, bad.absolute_path))}: {bad.message}" if hasattr(bad, "absolute_path")
               else str(e).splitlines()[0])
    raise WorkflowError(f"params.yaml: {problem} (workflow/schemas/params.schema.json)\n"
                        "(fix the key in params.yaml or the --config/--configfile override)") from None
# Tables whose rows name a variant params.yaml lacks, or a CFG-sweep step their generator does not
# keep, stop here rather than in a job's input function.
try:
    check_tables(PARAMS)
except ReportError as e:
    raise WorkflowError(str(e)) from None

# Rules call `maetok`/`torchrun` from the environment running Snakemake (e.g. .venv/bin),
# also when that environment is not activated.
_env = os.environ
_env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), _env.get("PATH", "")]))

SCALE = PARAMS.scale
RESULTS = f"results/{SCALE}"
DATA = f"{RESULTS}/data"
DATA_HIRES = f"{RESULTS}/data_hires"  # `resolution: hires` tokenizers (the 512x512 tables)
AUX = f"{RESULTS}/aux_models"
TOKENIZERS = list(PARAMS.tokenizer_variants)
# GPUs per job: none at tiny scale (a laptop CPU); at paper scale 8 per node of a training
# job (params.yaml scales.<scale>.nodes: train_resources) and one GPU per encoding/sampling/
# evaluation job (override per rule with the profile's set-resources). Training rules launch
# through torchrun whenever a job gets GPUs, one process per GPU (launcher).
TRAIN_GPUS = 0 if SCALE == "tiny" else 8
EVAL_GPUS = 0 if SCALE == "tiny" else 1
# CPU threads per compute job. Snakemake exports OMP_NUM_THREADS = threads to each job, so
# jobs that declare no threads run torch on one thread. Two threads make one job 1.4-1.5x faster
# (bench/README.md), which pays on a chain of dependent jobs (one variant, one ablation rerun);
# two one-thread jobs side by side get more done on a wide DAG on 2 cores:
# `snakemake --set-threads train_tokenizer=1 ...` or a profile (profiles/laptop).
# On Slurm a job gets cpus_per_task from the profile.
JOB_THREADS = 2 if SCALE == "tiny" else 8
TORCHRUN_NODES = Path(workflow.basedir, "workflow", "scripts", "torchrun_nodes.sh")


def train_resources(stage):
    """`gpu` and `nodes` of a training job of `stage` ("tokenizer" or "generator"), on
    params.yaml scales.<scale>.nodes.<stage> nodes with TRAIN_GPUS each; `gpu` is the job's
    total (the Slurm plugin: sbatch --gpus=N --nodes=M). On several nodes also what makes
    the plugin run the job's shell once, on the first node, for the launcher's own srun:
    `mpi` (no `srun -n1` around the shell) and `tasks` (sbatch --ntasks, one per node), with
    `tasks_per_gpu=0`, without which a GPU job's `tasks` would become --ntasks-per-gpu."""
    nodes = getattr(PARAMS.active.nodes, stage)
    resources = {"gpu": TRAIN_GPUS * nodes, "nodes": nodes}
    if nodes > 1:
        resources.update(tasks=nodes, tasks_per_gpu=0, mpi="srun")
    return resources


def launcher(wildcards, resources, threads):
    """What starts `maetok` in a training job (a derived param: no reruns): itself on one CPU
    node; `torchrun --standalone`, one process per GPU, on one GPU node; on N > 1 nodes
    workflow/scripts/torchrun_nodes.sh (srun: a torchrun on each node, one process per GPU or
    one per CPU node, c10d rendezvous on the job's first node)."""
    gpus, nodes = int(resources.get("gpu", 0)), int(resources.get("nodes", 1))
    if nodes == 1:
        return "maetok" if gpus == 0 else f"torchrun --standalone --nproc_per_node={gpus} -m maetok"
    if "mpi" not in resources.keys() or gpus % nodes:
        raise WorkflowError(
            f"nodes={nodes}, gpu={gpus}: a training job on several nodes takes its resources from params.yaml "
            f"scales.{SCALE}.nodes (the job's tasks and GPUs per node follow from it); set the nodes there, "
            "not with --set-resources")
    per_node = gpus // nodes
    cpus = resources.get("cpus_per_task") or threads
    return f"bash {shlex.quote(str(TORCHRUN_NODES))} {nodes} {max(per_node, 1)} {cpus} {per_node} -m maetok"


GENERATORS = list(PARAMS.generator_variants)
# `nocfg`, `cfg` (the generator variant's CFG setting) or a Table 12 sweep point such as
# `cfg1.9_0-0.75` (scale 1.9 on [0, 0.75]; maetok/sample.py: parse_guidance).
_SWEEP = re.sub(r"\?P<\w+>", "?:", C.SWEEP_GUIDANCE.pattern)  # no named groups inside a wildcard
GUIDANCE = f"nocfg|cfg|{_SWEEP}"


wildcard_constraints:
    tok="|".join(re.escape(v) for v in TOKENIZERS),
    gen="|".join(re.escape(v) for v in GENERATORS),
    guidance=GUIDANCE,


# Variants with `weights` (params.yaml; docs/official_weights.md) import the authors' released files
# instead of training: rules import_tokenizer / import_generator write them where a trained variant's
# final weights go (tokenizer_weights(), {GEN}/ema.safetensors), so every rule downstream reads them
# unchanged, and the training rules match only the other variants. Paper scale only.
RELEASED = {kind: [v for v in getattr(PARAMS, f"{kind}_variants") if PARAMS.released(kind, v)]
            for kind in ("tokenizer", "generator")}


def one_of(names):
    """A wildcard constraint matching exactly `names` (none: nothing)."""
    return "|".join(re.escape(v) for v in names) or "(?!)"


TRAINED_TOKENIZERS = one_of(v for v in TOKENIZERS if v not in RELEASED["tokenizer"])
TRAINED_GENERATORS = one_of(v for v in GENERATORS if v not in RELEASED["generator"])
RELEASED_TOKENIZERS = one_of(RELEASED["tokenizer"])
RELEASED_GENERATORS = one_of(RELEASED["generator"])


def released_weights(kind, variant):
    """The `weights` of a released `kind` variant, which the workflow imports at paper scale only."""
    if SCALE != "paper":
        raise WorkflowError(
            f"{kind} variant {variant!r} is the authors' released model ({kind}_variants.{variant}.weights in "
            f"params.yaml), an ImageNet model used at paper scale only: run with `--config scale=paper` "
            "(docs/official_weights.md)")
    return PARAMS.released(kind, variant)


def released_inputs(kind, variant):
    """The released file of a variant (and a tokenizer's config.json), which must have been downloaded."""
    w = released_weights(kind, variant)
    files = [w.path] + ([w.config] if w.config else [])
    for path in files:
        if not Path(path).is_file():
            get = (f"`huggingface-cli download {w.repo} --local-dir {Path(w.path).parent}`" if w.repo
                   else "the commands of docs/official_weights.md")
            raise WorkflowError(
                f"{path} not found: the released weights of {kind} variant {variant!r} ({kind}_variants.{variant}"
                f".weights in params.yaml) are not downloaded. Download them with {get} (docs/official_weights.md), "
                "or point `weights.path` at your copy")
    return {"src": w.path, "config": w.config or []}


def released_tokenizer_inputs(wildcards):
    return released_inputs("tokenizer", wildcards.tok)


def released_generator_inputs(wildcards):
    """The released SiT and the imported tokenizer whose latents it was trained on (its `weights.tokenizer`)."""
    w = released_weights("generator", wildcards.gen)
    if wildcards.tok != w.tokenizer:
        raise WorkflowError(
            f"generator variant {wildcards.gen!r} is a released model trained on the latents of tokenizer variant "
            f"{w.tokenizer!r} (generator_variants.{wildcards.gen}.weights.tokenizer), not {wildcards.tok!r}: ask "
            f"for {RESULTS}/generator/{w.tokenizer}/{wildcards.gen}/...")
    return {"src": released_inputs("generator", wildcards.gen)["src"], "tokenizer": tokenizer_weights(wildcards.tok)}


def import_options(kind):
    """`maetok import-official` options of a released variant: its expected sha256 and latent normalisation."""

    def options(wildcards):
        w = PARAMS.released(kind, wildcards.tok if kind == "tokenizer" else wildcards.gen)
        opts = ["--sha256", w.sha256] if w.sha256 else []
        if w.latent_mean is not None:
            opts += ["--latent-mean", repr(w.latent_mean), "--latent-std", repr(w.latent_std)]
        return " ".join(opts)

    return options


def sampling_json(wildcards):
    """The sampling config of one job (Params.job_sampling): the generator variant's, with a Table 12
    point's own CFG setting and sample count; `nocfg` jobs record the base CFG fields, which they ignore."""
    return cfg_json(PARAMS.job_sampling(wildcards.gen, wildcards.guidance))


def cfg_json(*blocks, **named):
    """Merged config as the JSON string a rule passes to `maetok --config-json`.

    Rules record this string as their param, so editing one stage's (or one variant's)
    settings reruns only the jobs that read them (Snakemake's params rerun trigger). Pass one
    dataclass, or named ones (they become top-level keys).
    """
    obj = C.to_dict(blocks[0]) if blocks else {k: C.to_dict(v) for k, v in named.items()}
    return json.dumps(obj, sort_keys=True)


# Merged variant configs, built once per Snakemake process: the DAG asks for them
# thousands of times, and rebuilding them each time made a no-op `snakemake -n` several times slower.
@functools.cache
def tokenizer_config(tok):
    return PARAMS.tokenizer(tok)


@functools.cache
def generator_config(gen):
    return PARAMS.generator(gen)


def tok_cfg(wildcards):
    return tokenizer_config(wildcards.tok)


def gen_cfg(wildcards):
    return generator_config(wildcards.gen)


@functools.cache
def tokenizer_data_config(tok):
    return PARAMS.tokenizer_data(tok)


def tok_data(wildcards):
    """The prepared data of a tokenizer variant's resolution (params.yaml `resolution`)."""
    return DATA_HIRES if PARAMS.resolution(wildcards.tok) == "hires" else DATA


def tok_data_cfg(wildcards):
    return tokenizer_data_config(wildcards.tok)


# Scheduling order (`priority:`, higher first; Snakemake does not pass a job's priority on to the
# jobs it waits for). A tokenizer is the root of the longest chains of the DAG (stage 1 -> stage
# 2 -> latents -> generators -> samplings), the 2x-resolution ones longest of all. Left to input
# size, Snakemake started `maetok_512` (a 20-min stage 1 at tiny) 94 min into `rule all`, and its
# chain then ran alone on one core for the last ~30 min; and it trained the DINO-type teacher,
# which 8 of Table 1's tokenizers wait for, only after 11 other jobs. So: the teachers first,
# then the tokenizers (the 2x ones before the rest), then everything else.
def tokenizer_priority(wildcards):
    return 2 if PARAMS.resolution(wildcards.tok) == "hires" else 1


def standin_priority(wildcards):
    """The teachers gate the tokenizers; the FID evaluator only the evaluation jobs."""
    return 3 if wildcards.role.startswith("teacher") else 1


# Variants that differ only at another scale are one run here (maetok_main is maetok and sit_xl
# is sit_l at tiny): {variant: the first variant with the same merged config and data}. Their
# tokenizer is trained once, and tables and figures read the first variant's latents, generators,
# samples and metrics (maetok.report.tables.row_runs), so nothing is computed twice.
SAME_TOKENIZER = PARAMS.same_runs("tokenizer")
SAME_GENERATOR = PARAMS.same_runs("generator")


def canonical_tokenizer(tok):
    """The variant whose trained tokenizer `tok` uses at this scale (Params.same_runs)."""
    return SAME_TOKENIZER[tok]


def canonical_generator(gen):
    """The variant whose runs generator variant `gen` reads at this scale (Params.same_runs)."""
    return SAME_GENERATOR[gen]


def tokenizer_weights(tok):
    """The tokenizer a downstream job uses: stage 2's output if the variant fine-tunes, else stage 1's;
    for released weights, the imported file (rule import_tokenizer), in stage 2's place."""
    tok = canonical_tokenizer(tok)
    if PARAMS.released("tokenizer", tok):
        released_weights("tokenizer", tok)
        return f"{RESULTS}/tokenizer/{tok}/final.safetensors"
    stage = "final" if tokenizer_config(tok).finetune.enabled else "stage1"
    return f"{RESULTS}/tokenizer/{tok}/{stage}.safetensors"


def standin_inputs(names):
    """Stand-in weight files a job needs at tiny scale (nothing at paper scale)."""
    if SCALE != "tiny" and PARAMS.active.tokenizer.networks.kind != "standin":
        return []
    return [f"{AUX}/{n}.safetensors" for n in names]


def tokenizer_standins(wildcards):
    """Teachers (for dino/clip targets) and the perceptual/discriminator network of a tokenizer job."""
    cfg = tok_cfg(wildcards)
    if cfg.networks.kind != "standin":
        return []
    names = {"teacher_clip"}  # perceptual loss + discriminator backbone
    names |= {f"teacher_{t}" for t in cfg.aux.targets if t in ("dino", "clip")}
    return standin_inputs(sorted(names))


def evaluator_input():
    return [f"{AUX}/evaluator.safetensors"] if PARAMS.active.evaluation.feature_network == "standin" else []


# MLflow tags only the workflow knows: which tables/figures a job's run feeds, and the
# scale. Passed as $MAETOK_TAGS through *derived* params (functions taking `output`),
# which Snakemake does not record: when a table starts or stops using a run, later runs
# are retagged and nothing reruns. Filter one table's runs with `tags.tables LIKE '%,table4,%'`
# (each id sits between commas; see maetok/tracking.py and docs/tracking.md).
GFID_FIGURES = ("fig5a", "fig5b")  # figures of gFID (the stand-in evaluator's), on FIGURE_GEN runs
GEN_FIGURES = ("fig2b", *GFID_FIGURES)  # figures that read FIGURE_GEN's runs


@functools.cache
def _users():
    """{(tokenizer variant, generator variant or None): ids of the tables and figures using its runs}."""
    from maetok.report.tables import get_spec, row_runs

    users = {}
    for table in (*TABLES, *RELEASE_TABLES):
        for _, row in get_spec(table).our_rows():
            tok, gen = row_runs(row, PARAMS, SCALE)
            users.setdefault((tok, None), set()).add(table)
            if gen:
                users.setdefault((tok, gen), set()).add(table)
    for fig, toks in FIGURES.items():
        for tok in map(canonical_tokenizer, toks):
            users.setdefault((tok, None), set()).add(fig)
            if fig in GEN_FIGURES:
                users.setdefault((tok, FIGURE_GEN), set()).add(fig)
    return users


def _tags_json(ids):
    order = {t: i for i, t in enumerate([*TABLES, *RELEASE_TABLES, *FIGURES])}
    tables = ",".join(sorted(ids, key=lambda t: order.get(t, len(order))))
    return json.dumps({"scale": SCALE, "tables": f",{tables}," if tables else ""})


def _tokenizer_users(users, keep):
    """Ids using any tokenizer variant `t` with keep(t)."""
    return set().union(set(), *(ids for (t, gen), ids in users.items() if gen is None and keep(t)))


def table_inputs(wildcards):
    """The metrics JSONs of a table (report.smk); a release table at tiny scale stops here, saying to
    use paper scale."""
    try:
        return inputs_for(wildcards.table, SCALE, RESULTS, PARAMS)
    except ReportError as e:
        raise WorkflowError(str(e)) from None


def mlflow_tags(wildcards, output):
    """A job of one variant (`tok`, and `gen` if any): the ids using (tok, gen) or tok alone.
    Stand-ins: teachers feed the ids of the tokenizers trained with them; the evaluator feeds
    every table with our rows and the gFID figures."""
    users = _users()
    role = getattr(wildcards, "role", None)
    if role == "evaluator":
        return _tags_json(_tokenizer_users(users, lambda t: True) & set(TABLES) | set(GFID_FIGURES))
    if role:
        weights = f"{AUX}/{role}.safetensors"
        return _tags_json(_tokenizer_users(users, lambda t: weights in tokenizer_standins(SimpleNamespace(tok=t))))
    return _tags_json(users.get((wildcards.tok, getattr(wildcards, "gen", None)), set()))


def shared_tokenizer_tags(wildcards, output):
    """Tokenizer training: the ids using any variant that shares these weights (canonical_tokenizer)."""
    tok = canonical_tokenizer(wildcards.tok)
    return _tags_json(_tokenizer_users(_users(), lambda t: canonical_tokenizer(t) == tok))
