# Two entry points for a fresh machine (README: Quickstart):
#   make reproduce   bootstrap the environment, then run the whole pipeline at the active scale
#   make test        bootstrap the environment, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: reproduce test bootstrap dataset lint dry-run mlflow-ui readme-results clean-venv

# The Slurm executor plugin (extra `slurm`) only where Slurm's `sacct` or `squeue` is on
# PATH: installed elsewhere, it stops snakemake from starting (pyproject.toml).
COMMA := ,
EXTRAS := dev$(if $(shell command -v sacct || command -v squeue),$(COMMA)slurm)

$(BIN)/maetok: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

bootstrap: $(BIN)/maetok

# Tiny-scale data: the Debian package when we can install it; otherwise the pipeline
# looks in params.yaml / $$MAETOK_FASHION_MNIST or downloads (and says how if it cannot).
dataset:
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) || true; fi

# profiles/laptop: one thread a job, jobs side by side (more done on a wide DAG than
# two-thread jobs one at a time).
reproduce: bootstrap dataset
	$(BIN)/snakemake --profile profiles/laptop --cores $(CORES)

test: bootstrap dataset
	$(BIN)/python -m pytest

dry-run: bootstrap
	$(BIN)/snakemake -n

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

# MLflow 3 opens an experiment on its GenAI (traces) view unless the address asks for the
# model-training view: open the printed address (docs/tracking.md).
mlflow-ui: bootstrap
	@echo "maetok runs: $$($(BIN)/python -m maetok.utils.mlflow_ui --store results/mlflow.db --base http://127.0.0.1:5000)"
	$(BIN)/mlflow server --backend-store-uri sqlite:///results/mlflow.db --host 127.0.0.1 --port 5000

# The README's results section (between its results:begin/end lines) from tables/table1.csv and
# Table 1's sample grid, with the commit and date they come from (maetok/report/readme.py).
readme-results: bootstrap
	$(BIN)/python -m maetok.report.readme

clean-venv:
	rm -rf $(VENV)

# ---- DVC: version the results, and go back to those of an earlier commit (docs/tracking.md: DVC) ----
# The default remote is ../maetok-dvc-remote (a directory beside the checkout; .dvc/config).
# SCALE: the results tree to version (default: params.yaml's scale). CONFIGFILES: the
# Snakemake config files of the results (restored from REV together with the data).
DVC := DVC_NO_ANALYTICS=1 $(BIN)/dvc
SCALE ?= $(shell sed -n 's/^scale: *\([a-z]*\).*/\1/p' params.yaml)
CONFIGFILES ?= params.yaml
.PHONY: dvc-add dvc-commit dvc-push dvc-status restore

# The prepared dataset and the stand-in networks: `dvc add`ed, not stage outs (dvc.yaml).
dvc-add:
	$(DVC) add -q --no-relink $(wildcard results/$(SCALE)/data results/$(SCALE)/aux_models)

# Record the current outputs of every stage whose outputs all exist (nothing reruns).
dvc-commit: dvc-add
	@stages=$$($(DVC) stage list | sed 's/ *Outputs /|/; s/, / /g' | while IFS='|' read -r name outs; do \
	  ok=1; for o in $$outs; do [ -e "$$o" ] || ok=0; done; [ $$ok = 1 ] && echo "$$name"; done); \
	echo "dvc commit: $${stages:-nothing to commit}"; [ -z "$$stages" ] || $(DVC) commit -f -q --no-relink $$stages

dvc-push:
	$(DVC) push -q

dvc-status:
	$(DVC) status

# make restore REV=<git rev> [TARGETS="tables/table4.csv ..."]: the .dvc files, dvc.lock and
# config files of REV, the data they record (stages REV committed) from the cache, else the
# remote, then `snakemake --touch`
# (DVC does not keep mtimes, and .snakemake/metadata holds the params of the newer run) so
# that `snakemake -n` has nothing to do. TARGETS default: the tables and figures present.
restore:
	@test -n "$(REV)" || { echo "usage: make restore REV=<git rev> [TARGETS=...]" >&2; exit 2; }
	git checkout $(REV) -- dvc.lock $(CONFIGFILES) $$(git ls-tree -r --name-only $(REV) | grep '\.dvc$$')
	@recorded="$$($(BIN)/python -c 'import yaml; print(*yaml.safe_load(open("dvc.lock"))["stages"])') \
	  $$(git ls-tree -r --name-only $(REV) | grep '\.dvc$$')"; echo "dvc checkout $$recorded"; \
	$(DVC) checkout -q $$recorded || $(DVC) pull -q $$recorded
	@targets="$(TARGETS)"; [ -n "$$targets" ] || \
	  targets=$$(ls tables/table*.csv tables/table*.md figures/fig*.png figures/fig*.pdf 2>/dev/null); \
	echo "snakemake --touch $$targets"; $(BIN)/snakemake --touch --cores 1 $$targets --configfile $(CONFIGFILES) -q all

# ---- HTML report (docs/pipeline.md: HTML report) ----
# make report [TARGETS="tables/table4.csv ..."] [REPORT=report.zip]: the tables and figures
# (default: those present) with their captions (workflow/report/) in one self-contained
# HTML file, or a zip archive when REPORT ends in .zip.
REPORT ?= report.html
.PHONY: report
report: bootstrap
	@targets="$(TARGETS)"; [ -n "$$targets" ] || targets=$$(ls tables/table*.csv figures/fig*.png 2>/dev/null); \
	test -n "$$targets" || { echo "make report: no table or figure yet (build one first, e.g." \
	  "snakemake --cores all tables/table4.csv)" >&2; exit 2; }; \
	echo "snakemake --report $(REPORT) $$targets"; $(BIN)/snakemake --report $(REPORT) $$targets
