# Config validation, wildcard constraints and every input/param function. No rules here.
import os

from snakemake.utils import validate

from mixlib.config import check_config, model_runs


validate(config, "../config/schema.yaml")
check_config(config)


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    init="[A-Za-z0-9_.-]+",
    seed=r"\d+",


DATASETS = list(config["datasets"])
SEEDS = config["seeds"]


def reference_csv():
    path = config.get("reference_csv")
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(workflow.basedir, path)


def init_records():
    return [
        f"results/init/{d}/{i}/seed{s}/record.json"
        for d in DATASETS
        for i in config["inits"]
        for s in SEEDS
    ]


def eval_records():
    return [
        f"results/eval/{d}/{m}/{i}/seed{s}.json" for d, m, i, s in model_runs(config)
    ]


def table_outputs():
    return [
        f"results/tables/{d}.{ext}" for d in DATASETS for ext in ("md", "tex", "csv")
    ]


def figure_outputs():
    return [f"results/figures/{d}_metrics.png" for d in DATASETS]


def all_outputs():
    return [
        "results/tables/long.csv",
        "results/tables/summary.csv",
        *table_outputs(),
        *figure_outputs(),
    ]


def init_input(wildcards):
    if wildcards.init == "none":
        return {}
    return {
        "init": f"results/init/{wildcards.dataset}/{wildcards.init}/seed{wildcards.seed}/labels.npy"
    }


def model_params(wildcards):
    return config["models"][wildcards.model].get("params", {})


def model_kind(wildcards):
    return config["models"][wildcards.model]["kind"]
