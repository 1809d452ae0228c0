"""MLflow tracking: one MLflow run per pipeline job, grouped per workflow invocation.

The store defaults to a local SQLite file under ``results/mlflow/`` (open it with
``mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db``); an ``http://`` tracking
server works the same. The workflow initialises the store and creates one parent run per
invocation *before* any job starts (a fresh SQLite store initialised by several jobs at once
crashes), and exports ``MIXLIB_INVOCATION_ID`` / ``MIXLIB_PARENT_RUN_ID`` to its jobs; every job run
is tagged with its rule, wildcards and the invocation id, and nested under the parent.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path

INVOCATION_ENV = "MIXLIB_INVOCATION_ID"
PARENT_ENV = "MIXLIB_PARENT_RUN_ID"
URI_ENV = "MLFLOW_TRACKING_URI"


def resolve_uri(uri: str | None, root: str | Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``uri`` from the config, else the
    local store ``sqlite:///<root>/results/mlflow/mlflow.db`` (absolute, so every job agrees)."""
    if os.environ.get(URI_ENV):
        return os.environ[URI_ENV]
    if uri:
        return uri
    db = Path(root).resolve() / "results" / "mlflow" / "mlflow.db"
    return f"sqlite:///{db}"


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None  # a server decides where artifacts go


def init_store(uri: str, experiment: str) -> str:
    """Create the store and the experiment once (call before jobs fan out); return its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(experiment, artifact_location=_artifact_root(uri))


def start_invocation(uri: str, experiment: str, description: str = "") -> tuple[str, str]:
    """Initialise the store, open the parent run of a workflow invocation; export its ids."""
    import mlflow

    exp_id = init_store(uri, experiment)
    inv = os.environ.get(INVOCATION_ENV) or uuid.uuid4().hex[:12]
    client = mlflow.MlflowClient(uri)
    run = client.create_run(
        exp_id,
        run_name=f"workflow {inv}",
        tags={
            "mixlib.invocation": inv,
            "mixlib.rule": "workflow",
            "mlflow.note.content": description,
        },
    )
    os.environ[INVOCATION_ENV] = inv
    os.environ[PARENT_ENV] = run.info.run_id
    os.environ[URI_ENV] = uri
    return inv, run.info.run_id


def end_invocation(status: str = "FINISHED") -> None:
    import mlflow

    run_id = os.environ.get(PARENT_ENV)
    if run_id:
        mlflow.MlflowClient(os.environ.get(URI_ENV)).set_terminated(run_id, status=status)


class Tracker:
    """What a stage function logs through; a disabled tracker does nothing (tests, no MLflow)."""

    run_id: str | None = None

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def log_history(self, history: dict) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...


NULL_TRACKER = Tracker()


class MlflowTracker(Tracker):
    def __init__(self, run):
        import mlflow

        self._mlflow = mlflow
        self.run_id = run.info.run_id

    def log_params(self, params):
        flat = _flatten(params)
        self._mlflow.log_params({k: str(v)[:6000] for k, v in flat.items()})

    def log_metrics(self, metrics, step=None):
        vals = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        if vals:
            self._mlflow.log_metrics(vals, step=step)

    def log_history(self, history):
        """Every curve as step metrics ``history/<key>``, in batches (one call per point costs a
        database transaction each: seconds for a curve of a few hundred iterations)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [
            Metric(f"history/{key}", float(v), now, step)
            for key, values in (history or {}).items()
            for step, v in enumerate(values)
            if _is_number(v)
        ]
        client = self._mlflow.MlflowClient()
        for i in range(0, len(points), 1000):  # MLflow's limit per batch
            client.log_batch(self.run_id, metrics=points[i : i + 1000])

    def log_artifact(self, path, subdir=None):
        if Path(path).exists():
            self._mlflow.log_artifact(str(path), artifact_path=subdir)


@contextmanager
def job_run(
    *,
    enabled: bool,
    uri: str | None,
    experiment: str,
    rule: str,
    wildcards: dict,
    root: str | Path = ".",
):
    """Open an MLflow run for one pipeline job; yields a :class:`Tracker`.

    The run is named ``rule[wildcard values]``, tagged ``mixlib.rule``, ``mixlib.<wildcard>`` and
    ``mixlib.invocation``, nested under the invocation's parent run when there is one, and ends
    FAILED if the job raises.
    """
    if not enabled:
        yield NULL_TRACKER
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(resolve_uri(uri, root))
    mlflow.set_experiment(experiment)
    tags = {"mixlib.rule": rule, **{f"mixlib.{k}": str(v) for k, v in wildcards.items()}}
    inv = os.environ.get(INVOCATION_ENV)
    if inv:
        tags["mixlib.invocation"] = inv
    parent = os.environ.get(PARENT_ENV)
    name = rule + ("[" + ",".join(f"{v}" for v in wildcards.values()) + "]" if wildcards else "")
    with mlflow.start_run(run_name=name, tags=tags, parent_run_id=parent) as run:
        tracker = MlflowTracker(run)
        if os.environ.get("SLURM_JOB_ID"):
            mlflow.set_tag("slurm.job_id", os.environ["SLURM_JOB_ID"])
        yield tracker


def _is_number(v) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
