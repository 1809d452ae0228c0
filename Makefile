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

.PHONY: setup run test test-fast lint mlflow-ui combined-table paper-part
setup: $(BIN)/snakemake

run: setup
	$(BIN)/snakemake --cores all

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
	$(MAKE) lint

test-fast: setup  # the unit tests only (no Snakemake runs): ~2.5 min on 2 cores
	$(BIN)/python -m pytest -q -n 2 -m unit

lint: setup
	$(BIN)/ruff check mixlib tests benchmarks workflow_scripts
	$(BIN)/ruff format --check mixlib tests benchmarks workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules

# One part of config/paper.yaml (config/paper_parts.yaml; `python -m mixlib.parts` lists them), on
# the staged files of ../shared/data, as one-thread jobs side by side (the faster layout on 2
# cores: README, "Benchmarks"; the inits too, so that none waits for both cores while one is
# idle):  make paper-part PART=mnist_seed0
PAPER_DATA ?= data_dir=../shared/data download=False
paper-part: setup
	@test -n "$(PART)" || { $(BIN)/python -m mixlib.parts; echo "make paper-part PART=<one of these>"; exit 2; }
	set -f; overrides=$$($(BIN)/python -m mixlib.parts $(PART)) && \
	$(BIN)/snakemake --configfile config/paper.yaml --replace-workflow-config --cores all \
		--keep-going --rerun-incomplete --set-threads train_model=1 pretrain_autoencoder=1 \
		initialize=1 init_features=1 \
		--config $(PAPER_DATA) $$overrides

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# Every measured row of MixMate's Table 1 datasets from the published configs, beside the
# published rows (docs/results/combined; python -m mixlib.combine --help). Nothing is re-run.
COMBINED_TAKES := \
	--take docs/results/table1 \
	--take docs/results/dec_mnist "dec INIT" "dec TRAIN" "idec TRAIN" "dcn TRAIN" \
	--take docs/results/dec_fashion "dec INIT" "dec TRAIN" "idec TRAIN" "dcn TRAIN" \
	--take docs/results/n2d_mnist "n2d TRAIN" \
	--take docs/results/n2d_fashion "n2d TRAIN" \
	--take docs/results/kdae+docs/results/kdae_mnist_seed1+docs/results/kdae_fashion_seed1+docs/results/kdae_fashion_seed2+docs/results/kdae_mnist_seed2 "kdae TRAIN" "damic TRAIN" \
	--take docs/results/dpkm_mnist_pretrain_200 "deep_power_kmeans_pretrain_200 TRAIN" \
	--take docs/results/mixmate_umap "mixmate (umap_scat) TRAIN" \
	--take docs/results/mixmate_umap_fashion "mixmate (umap_scat_j2) TRAIN" \
	--take docs/results/umap_init "init: umap_scat" "init: umap_scat_j2" \
	--take docs/results/umap_ensemble "init: umap_scat_j2_equal_ens5"
combined-table: setup
	$(BIN)/python -m mixlib.combine --out docs/results/combined --datasets mnist fashion_mnist \
		--reference ../shared/reference/published_results.csv $(COMBINED_TAKES)
