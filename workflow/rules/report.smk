# Aggregation: tables/<name>.csv + .md, our metrics beside the paper's (maetok/report/).
# The spec (maetok/report/table_specs.yaml) says which metrics JSONs each table reads, so
# `snakemake tables/table1.csv` builds exactly the runs Table 1 needs.
from maetok.report.tables import TABLES, inputs_for

# `snakemake --report report.html TARGETS`: the tables and figures that exist, with the
# captions of workflow/report/ (README: HTML report).
report: "../report/workflow.rst"


rule make_table:
    input:
        lambda wc: inputs_for(wc.table, SCALE, RESULTS, PARAMS),
    output:
        csv=report("tables/{table}.csv", caption="../report/table.rst", category="Tables", subcategory="{table}",
                   labels={"table": "{table}", "format": "CSV"}),
        md=report("tables/{table}.md", caption="../report/table.rst", category="Tables", subcategory="{table}",
                  labels={"table": "{table}", "format": "Markdown"}),
    wildcard_constraints:
        table="|".join(TABLES),
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
