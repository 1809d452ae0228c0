"""The MLflow tracker on a local sqlite store: runs, params, metrics and per-step curves."""

import mlflow
import numpy as np

from mixlib import tracking


def test_job_run_logs_params_metrics_and_batched_history(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.init_store(uri, "t")
    curve = np.cos(np.arange(2500) / 100.0)  # more points than one MLflow batch holds
    with tracking.job_run(
        enabled=True, uri=uri, experiment="t", rule="train_model", wildcards={"seed": 3}
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
