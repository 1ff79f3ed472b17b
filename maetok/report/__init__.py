"""Reporting: rebuild the paper's tables with our metrics beside the paper's (rule make_table).

`table_specs.yaml` says which run sits beside which paper row; `paper_tables/` holds the
paper's numbers; `tables.make_table` writes tables/<name>.csv and .md.
"""
