# Two commands on a fresh machine:  `make run` (the main job)  and  `make test` (the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/snakemake: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[workflow,dev]"
	touch $@

.PHONY: setup run test test-fast lint mlflow-ui
setup: $(BIN)/snakemake

run: setup
	$(BIN)/snakemake --cores all

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
	$(MAKE) lint

test-fast: setup  # the unit tests only (no Snakemake runs): ~90 s on 2 cores
	$(BIN)/python -m pytest -q -n 2 -m unit

lint: setup
	$(BIN)/ruff check mixlib tests benchmarks workflow_scripts
	$(BIN)/ruff format --check mixlib tests benchmarks workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db --host 127.0.0.1 --port 5000
