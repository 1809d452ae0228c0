"""Helpers shared by the test modules: the repository root, the shipped configs, running the
real Snakefile in a temporary directory, reading MLflow runs, small blob data in [0, 1].
Fixtures are in conftest.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(workdir, *args, config=None, env=None, check=True):
    Path(workdir).mkdir(parents=True, exist_ok=True)
    cfg = Path(workdir) / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(config or yaml.safe_load((ROOT / "config/tiny.yaml").read_text()))
    )
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(cfg),
        "--replace-workflow-config",
        *args,
    ]
    # Never pass on an inherited tracking URI (the workflow prefers it to the config's):
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI into this process, so any earlier
    # test of the same pytest worker would otherwise redirect this run's MLflow runs.
    e = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    e.update(env or {})
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
            + job_logs(workdir)
        )
    return p


def planned_priorities(stdout: str) -> dict[str, set[int]]:
    """The Snakemake priorities a dry run's job list gives the training jobs, per ``model``
    wildcard (pre-training jobs under ``"pretrain"``, init jobs under ``"init:<init>"``); a
    job printed without one has 0."""
    seen = {}
    for block in stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        if rule == "pretrain_autoencoder":
            key = "pretrain"
        elif rule == "train_model":
            key = re.search(r"model=([^,\s]+)", block)[1]
        elif rule == "initialize":
            key = "init:" + re.search(r"init=([^,\s]+)", block)[1]
        else:
            continue
        m = re.search(r"priority: (\d+)", block)
        seen.setdefault(key, set()).add(int(m[1]) if m else 0)
    return seen


def job_logs(workdir, tail=1500):
    """The end of every job log of a run, for failure messages."""
    logs = sorted((Path(workdir) / "results/logs").rglob("*.log"))
    return "".join(f"\n--- {p}:\n{p.read_text(errors='replace')[-tail:]}" for p in logs)


def mlflow_runs(uri, experiment="tiny"):
    import mlflow

    old = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # also sets os.environ["MLFLOW_TRACKING_URI"]: undo below
    try:
        return mlflow.search_runs(experiment_names=[experiment], max_results=10000)
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def load_config(name: str = "tiny") -> dict:
    """A fresh copy of ``config/<name>.yaml``."""
    return yaml.safe_load((ROOT / f"config/{name}.yaml").read_text())


def flushes_subnormals() -> bool:
    """Whether the CPU flushes subnormal float32 results to zero right now (FTZ/DAZ on)."""
    import torch

    return bool(torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0)


def split_dataset(workdir):
    """A prepared dataset ``<workdir>/s.npz`` of 90 points in 3 separated 2-D blobs, the first
    60 its training rows: ``(X, y, is_train)``."""
    import numpy as np

    from mixlib import data

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    y = np.arange(90) % 3
    X = (centres[y] + rng.normal(0, 0.5, (90, 2))).astype(np.float32)
    is_train = np.arange(90) < 60
    meta = {"name": "s", "n_clusters": 3}
    data.save_prepared(data.Dataset(X, y, "s", (), meta, is_train), Path(workdir) / "s.npz")
    return X, y, is_train


def scaled_blobs(n=300, k=3, d=12, seed=0):
    """``(X, y)``: ``k`` Gaussian blobs (unit spread) of ``n`` points in ``d`` dimensions, each
    feature min-max scaled to [0, 1], float32 (the torch models' small test data)."""
    import numpy as np
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n, centers=k, n_features=d, cluster_std=1.0, random_state=seed)
    X = X - X.min(0)
    return (X / X.max(0)).astype(np.float32), y


def assert_same_weights(a, b):
    """Two state dicts (or saved weights) hold the same names and bitwise equal tensors."""
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
