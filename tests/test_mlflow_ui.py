"""Comparing runs in MLflow after a tiny run (issue 15): one scored run per trained model and
seed, named by what it is; the invocation's run with its config, commit, command, tables and
figures; artifacts that survive moving the run directory; and the UI, opened by headless
Chromium, showing a run name and a score.

The browser check needs Chromium (``.ci/run`` installs Debian's ``chromium``): skipped without
it, failed without it when ``CI=true``.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import run_snakemake

from mixlib import tracking

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]
# what the tiny config trains: model -> its inits
TRAINED = {"kmeans": ["none"], "gmm": ["kmeans", "random"]}


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """A finished tiny run (deferred logging, the default), then its whole directory moved."""
    base = tmp_path_factory.mktemp("ui")
    run_snakemake(base / "made", "--cores", "2")
    shutil.move(base / "made", base / "moved")
    return base / "moved"


def _client(wd):
    return mlflow.MlflowClient(f"sqlite:///{wd}/results/mlflow/mlflow.db")


def _runs(client):
    exp = client.get_experiment_by_name("tiny")
    return exp, client.search_runs([exp.experiment_id], max_results=1000)


def test_one_scored_run_per_trained_model_and_seed(moved_run):
    exp, runs = _runs(_client(moved_run))
    train = {r.info.run_name: r for r in runs if r.data.tags["mixlib.rule"] == "train_model"}
    expected = {
        f"{m} · {i} · blobs · s{s}" for m, inits in TRAINED.items() for i in inits for s in (0, 1)
    }
    assert set(train) == expected
    for name, run in train.items():
        model, init, _, seed = name.split(" · ")
        p, m = run.data.params, run.data.metrics
        assert (p["model"], p["init"], p["dataset"], p["seed"]) == (model, init, "blobs", seed[1:])
        assert p["kind"] in ("kmeans", "sklearn_gmm") and "random_state" not in p
        assert {"train_nmi", "train_ari", "train_acc", "fit_seconds"} <= set(m)
        assert model == "kmeans" or {"init_nmi", "init_ari", "init_acc"} <= set(m)
        assert 0.9 < m["train_acc"] <= 1.0  # well separated blobs
        (ds,) = run.inputs.dataset_inputs
        assert ds.dataset.name == "blobs" and ds.tags[0].value == "training"
        assert run.data.tags["mlflow.source.git.commit"]
    # the same names on every rule: filter by model across training and evaluation runs
    gmm = _client(moved_run).search_runs([exp.experiment_id], "params.model = 'gmm'")
    assert {r.data.tags["mixlib.rule"] for r in gmm} == {"train_model", "evaluate"}
    evals = [r for r in runs if r.data.tags["mixlib.rule"] == "evaluate"]
    assert all(
        "train_run_id" not in r.data.params and not r.data.metrics.keys() - {"job_seconds"}
        for r in evals
    )
    inits = [r for r in runs if r.data.tags["mixlib.rule"] == "initialize"]
    assert inits and all("init_acc" in r.data.metrics for r in inits)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert f"mlflow.sharedViewState.{tracking.VIEW_KEY}" in exp.tags


def test_parent_run_holds_config_commit_command_tables_and_figures(moved_run, monkeypatch):
    client = _client(moved_run)
    _, runs = _runs(client)
    (parent,) = [r for r in runs if r.data.tags["mixlib.rule"] == "workflow"]
    assert parent.data.params["seeds"] == "[0, 1]"
    assert parent.data.params["models.gmm.kind"] == "sklearn_gmm"
    tags = parent.data.tags
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["mixlib.git_commit"])
    assert tags["mixlib.git_dirty"] in ("true", "false")
    assert "--configfile" in tags["mixlib.command"]
    # artifacts are found after the move, from the directory that holds results/
    monkeypatch.chdir(moved_run)
    arts = lambda d: {a.path for a in client.list_artifacts(parent.info.run_id, d)}  # noqa: E731
    assert {"config/config.yaml", "config/invocation.json"} <= arts("config")
    assert {"tables/paper.md", "tables/blobs.csv"} <= arts("tables")
    assert "figures/blobs_metrics.png" in arts("figures")
    dst = Path(tempfile.mkdtemp())
    local = client.download_artifacts(parent.info.run_id, "config/config.yaml", str(dst))
    assert yaml.safe_load(Path(local).read_text())["tracking"]["experiment"] == "tiny"
    local = client.download_artifacts(parent.info.run_id, "tables/paper.md", str(dst))
    assert Path(local).read_text() == (moved_run / "results/tables/paper.md").read_text()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_shows_run_names_and_scores_in_a_browser(moved_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if IN_CI:
            pytest.fail("CI=true but no chromium: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium (apt-get install chromium)")
    exp, runs = _runs(_client(moved_run))
    run = next(r for r in runs if r.info.run_name == "gmm · random · blobs · s1")
    (parent,) = [r for r in runs if r.data.tags["mixlib.rule"] == "workflow"]
    port = _free_port()
    log = (tmp_path / "ui.log").open("w")
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
         "sqlite:///results/mlflow/mlflow.db", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=moved_run, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "no /health after 300 s"
                time.sleep(0.5)
        # the moved run's artifacts, as the UI fetches them
        url = f"{base}/get-artifact?path=tables/paper.md&run_uuid={parent.info.run_id}"
        body = urllib.request.urlopen(url, timeout=30).read().decode()
        assert body == (moved_run / "results/tables/paper.md").read_text()
        page = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=30000", "--dump-dom", tracking.runs_url(exp.experiment_id, base)],
            capture_output=True, text=True, timeout=180,
        ).stdout  # fmt: skip
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
        log.close()
    text = re.sub(
        r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", "", page, flags=re.S))
    )
    assert "Trained models" in text, text[:3000]  # the experiment's saved view
    assert run.info.run_name in text, text[:3000]
    assert str(run.data.metrics["train_acc"]) in text, text[:3000]
