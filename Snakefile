# MAETok reproduction pipeline. Every table and figure of the paper is a target;
# `snakemake --cores all` builds them all at the active scale (params.yaml: scale).
# Rules live in workflow/rules/, Python helpers in workflow/rules/common.smk,
# all the work in the `maetok` package (each rule runs one `maetok` subcommand).
from snakemake.utils import min_version

min_version("9.0")

# Snakemake's YAML loader keeps the last of two equal keys silently and drops a syntax error's line:
# read the params files first with maetok's, which names both (maetok/config.py: read_yaml).
from maetok.config import ConfigError, check_yaml_files

try:
    check_yaml_files(["params.yaml", *workflow.overwrite_configfiles])
except ConfigError as e:
    raise WorkflowError(str(e)) from None


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/generator.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"


# Every table and figure of the paper at the active scale, plus class-conditional sample
# grids of the main models. TABLES comes from report.smk, FIGURES from analysis.smk.
rule all:
    default_target: True
    input:
        expand("tables/{table}.{ext}", table=TABLES, ext=("csv", "md")),
        expand("figures/{fig}.{ext}", fig=FIGURES, ext=("png", "pdf")),
        [f"{RESULTS}/samples/{canonical_tokenizer('maetok_main')}/{canonical_generator(gen)}/cfg.png"
         for gen in ("sit_xl", "lightningdit")],
