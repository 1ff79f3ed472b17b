# Aggregation: tables/<name>.csv + .md, our metrics beside the paper's (maetok/report/).
# The spec (maetok/report/table_specs.yaml) says which metrics JSONs each table reads, so
# `snakemake tables/table1.csv` builds exactly the runs Table 1 needs. RELEASE_TABLES (rows from the
# authors' released weights; docs/official_weights.md) are built at paper scale, on request only.
from maetok.report.tables import RELEASE_TABLES, TABLES

# `snakemake --report report.html TARGETS`: the tables and figures that exist, with the
# captions of workflow/report/ (docs/pipeline.md: HTML report).
report: "../report/workflow.rst"


rule make_table:
    input:
        table_inputs,
    output:
        csv=report("tables/{table}.csv", caption="../report/table.rst", category="Tables", subcategory="{table}",
                   labels={"table": "{table}", "format": "CSV"}),
        md=report("tables/{table}.md", caption="../report/table.rst", category="Tables", subcategory="{table}",
                  labels={"table": "{table}", "format": "Markdown"}),
    wildcard_constraints:
        table="|".join((*TABLES, *RELEASE_TABLES)),
    params:
        scale=SCALE,
        results=RESULTS,
        cfg=json.dumps(config, sort_keys=True),
    log:
        f"logs/{SCALE}/make_table/{{table}}.log",
    benchmark:
        f"benchmarks/{SCALE}/make_table/{{table}}.tsv"
    localrule: True
    conda:
        "../../environment.yml"
    shell:
        "maetok make-table {wildcards.table} --scale {params.scale} --results {params.results} "
        "--config-json {params.cfg:q} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
