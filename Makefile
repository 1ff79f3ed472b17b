# Two entry points for a fresh machine (see README):
#   make reproduce   bootstrap the environment, then run the whole pipeline at the active scale
#   make test        bootstrap the environment, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: reproduce test bootstrap dataset lint dry-run mlflow-ui clean-venv

$(BIN)/maetok: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

bootstrap: $(BIN)/maetok

# Tiny-scale data: the Debian package when we can install it; otherwise the pipeline
# looks in params.yaml / $$MAETOK_FASHION_MNIST or downloads (and says how if it cannot).
dataset:
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) || true; fi

reproduce: bootstrap dataset
	$(BIN)/snakemake --cores $(CORES)

test: bootstrap dataset
	$(BIN)/python -m pytest

dry-run: bootstrap
	$(BIN)/snakemake -n

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

mlflow-ui: bootstrap
	$(BIN)/mlflow server --backend-store-uri sqlite:///results/mlflow.db --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)
