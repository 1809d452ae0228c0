"""The MLflow tracker on a local sqlite store: runs, params, metrics and per-step curves."""

import os

import mlflow
import numpy as np
import pytest

from mixlib import tracking


def test_job_run_logs_params_metrics_and_batched_history(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.init_store(uri, "t")
    curve = np.cos(np.arange(2500) / 100.0)  # more points than one MLflow batch holds
    with tracking.job_run(
        enabled=True,
        uri=uri,
        experiment="t",
        rule="train_model",
        wildcards={"seed": 3},
        defer=False,
    ) as tr:
        tr.log_params({"kind": "kmeans", "nested": {"a": 1}})
        tr.log_metrics({"acc": 0.5, "bad": float("nan")})
        tr.log_history({"loss": list(curve), "skipped": ["x"]})
        run_id = tr.run_id
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["kind"] == "kmeans" and run.data.params["nested.a"] == "1"
    assert run.data.metrics["acc"] == 0.5 and "bad" not in run.data.metrics
    assert run.data.tags["mixlib.rule"] == "train_model" and run.data.tags["mixlib.seed"] == "3"
    hist = sorted(client.get_metric_history(run_id, "history/loss"), key=lambda m: m.step)
    assert [m.step for m in hist] == list(range(2500))
    np.testing.assert_allclose([m.value for m in hist], curve)
    assert not client.get_metric_history(run_id, "history/skipped")


def _log_everything(tr, artifact):
    tr.log_params({"kind": "kmeans", "nested": {"a": 1}})
    tr.log_metrics({"acc": 0.5})
    tr.log_metrics({"loss": 2.0}, step=3)
    tr.log_history({"loss": [3.0, 2.0, float("nan"), 1.0]})
    tr.log_artifact(artifact, "figures")


def _run_data(client, run_id):
    run = client.get_run(run_id)
    tags = {
        k: v for k, v in run.data.tags.items() if k.startswith("mixlib.") or k == "mlflow.runName"
    }
    hist = [(m.step, m.value) for m in client.get_metric_history(run_id, "history/loss")]
    loss = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    arts = [f.path for f in client.list_artifacts(run_id, "figures")]
    return run.info.status, run.data.params, run.data.metrics, tags, sorted(hist), loss, arts


def test_spooled_run_replays_to_the_same_mlflow_run_as_live(tmp_path, monkeypatch):
    """defer=True records without MLflow; sync_spool logs what live logging would have, with
    the artifact as it was when the job logged it (a rerun replacing the file doesn't change it)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.init_store(uri, "t")
    art = tmp_path / "fig.png"
    art.write_text("first")
    kw = dict(enabled=True, uri=uri, experiment="t", rule="train_model", wildcards={"seed": 3})
    with tracking.job_run(defer=False, root=tmp_path, **kw) as live:
        _log_everything(live, art)
    with tracking.job_run(defer=True, root=tmp_path, **kw) as spooled:
        _log_everything(spooled, art)
    assert spooled.run_id is None and len(spooled.job_key) == 32
    (tmp_path / "new.png").write_text("replaced by a rerun")  # as the pipeline writes: a new
    os.replace(tmp_path / "new.png", art)  # file moved over the old (Snakemake also deletes first)
    spool = tmp_path / tracking.SPOOL_DIR
    assert tracking.sync_spool(uri, "t", spool) == 1
    assert not list(spool.iterdir())
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("t").experiment_id], order_by=["attributes.start_time"]
    )
    assert len(runs) == 2
    a, b = (_run_data(client, r.info.run_id) for r in runs)
    assert a[0] == b[0] == "FINISHED"
    assert a[1] == b[1] and a[2] == b[2] and a[4] == b[4] == [(0, 3.0), (1, 2.0), (3, 1.0)]
    assert a[5] == b[5] == [(3, 2.0)] and a[6] == b[6] == ["figures/fig.png"]
    key = lambda t: {k: v for k, v in t.items() if k != "mixlib.job_key"}  # noqa: E731
    assert key(a[3]) == key(b[3]) and a[3]["mixlib.rule"] == "train_model"
    assert b[3]["mixlib.job_key"] == spooled.job_key
    local = mlflow.artifacts.download_artifacts(
        run_id=runs[1].info.run_id, artifact_path="figures/fig.png", dst_path=str(tmp_path / "dl")
    )
    assert open(local).read() == "first"


def test_spooled_failed_job_and_killed_job(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    kw = dict(enabled=True, uri=uri, experiment="t", rule="evaluate", wildcards={}, root=tmp_path)
    with pytest.raises(RuntimeError):
        with tracking.job_run(**kw) as tr:
            tr.log_metrics({"acc": 1.0})
            raise RuntimeError("job failed")
    killed = tmp_path / tracking.SPOOL_DIR / "deadbeef"  # a job killed before it ended
    (killed / "artifacts").mkdir(parents=True)
    spool = tmp_path / tracking.SPOOL_DIR
    assert tracking.sync_spool(uri, "t", spool) == 1 and killed.exists()  # left: may be running
    assert tracking.sync_spool(uri, "t", spool, drop_incomplete=True) == 0
    assert not killed.exists()
    (run,) = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("t").experiment_id]
    )
    assert run.info.status == "FAILED" and run.data.metrics["acc"] == 1.0


def test_run_names_say_what_a_run_is():
    wc = {"dataset": "mnist5k", "model": "mixmate", "init": "spectral_scat", "seed": "0"}
    assert tracking.run_name("train_model", wc) == "mixmate · spectral_scat · mnist5k · s0"
    assert tracking.run_name("evaluate", wc) == "evaluate · mixmate · spectral_scat · mnist5k · s0"
    assert tracking.run_name("aggregate", {}) == "aggregate"


@pytest.mark.parametrize("defer", [True, False])
def test_scores_dataset_and_parent_artifacts_land_on_their_runs(tmp_path, monkeypatch, defer):
    """Evaluation logs its scores onto the training run (by its job key), the aggregate job its
    tables onto the invocation's run, each run its dataset as an MLflow dataset input: live,
    or replayed from the spool."""
    env = (tracking.URI_ENV, tracking.INVOCATION_ENV, tracking.PARENT_ENV, tracking.COMMIT_ENV)
    for k in env:  # start_invocation exports them: setenv first so that they are undone
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, parent = tracking.start_invocation(uri, "t", config={"seeds": [0]}, info={"commit": "ab"})
    art = tmp_path / "paper.md"
    art.write_text("| table |")
    meta = {"name": "blobs", "checksum": "c0ffee", "n": 3, "d": 2}
    kw = dict(enabled=True, uri=uri, experiment="t", defer=defer, root=tmp_path)
    wc = {"dataset": "blobs", "model": "gmm", "init": "kmeans", "seed": "0"}
    with tracking.job_run(rule="train_model", wildcards=wc, **kw) as train:
        train.log_dataset(meta, "results/data/blobs.npz", "training")
    with tracking.job_run(rule="evaluate", wildcards=wc, **kw) as ev:
        ev.onto(train.job_key).log_metrics({"train_acc": 0.9})
        ev.onto(None).log_metrics({"lost": 1.0})  # a model trained without tracking
    with tracking.job_run(rule="aggregate", wildcards={}, **kw) as agg:
        agg.onto("parent").log_artifact(art, "tables")
    tracking.sync_spool(uri, "t", tmp_path / tracking.SPOOL_DIR)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("t")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    trained = runs["gmm · kmeans · blobs · s0"]
    assert trained.data.metrics == {"train_acc": 0.9}
    assert not runs["evaluate · gmm · kmeans · blobs · s0"].data.metrics
    (ds,) = trained.inputs.dataset_inputs
    assert (ds.dataset.name, ds.dataset.digest, ds.tags[0].value) == ("blobs", "c0ffee", "training")
    assert [a.path for a in client.list_artifacts(parent, "tables")] == ["tables/paper.md"]
    assert client.get_run(parent).data.params == {"seeds": "[0]"}
    assert trained.data.tags["mlflow.parentRunId"] == parent
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
