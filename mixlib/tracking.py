"""MLflow tracking: one MLflow run per pipeline job, grouped per workflow invocation.

The store defaults to a local SQLite file under ``results/mlflow/`` (open it with
``mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db``); an ``http://`` tracking
server works the same. The workflow initialises the store and creates one parent run per
invocation *before* any job starts (a fresh SQLite store initialised by several jobs at once
crashes), and exports ``MIXLIB_INVOCATION_ID`` / ``MIXLIB_PARENT_RUN_ID`` to its jobs; every job run
is tagged with its rule, wildcards, the invocation id and a job key (``mixlib.job_key``, also
written into the job's outputs), and nested under the parent.

Two ways to deliver a job's run, one logging code path (:class:`MlflowTracker`):

- ``defer: true`` (default): the job records its params, metrics, curves and artifacts (hard
  links, so later reruns don't change them) into a spool directory
  ``results/mlflow/spool/<job_key>/`` without importing MLflow (whose import and store start-up
  cost ~3 s per job: most of a small job); the workflow's own process replays every finished
  job into MLflow when the invocation ends (:func:`sync_spool`, also at the start of the next
  invocation for the spools of one that was killed). Compute nodes never talk to the store.
- ``defer: false``: the job logs live into its own MLflow run, to watch long runs as they go.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

INVOCATION_ENV = "MIXLIB_INVOCATION_ID"
PARENT_ENV = "MIXLIB_PARENT_RUN_ID"
URI_ENV = "MLFLOW_TRACKING_URI"
SPOOL_DIR = Path("results") / "mlflow" / "spool"


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

    run_id: str | None = None  # the MLflow run's id where it is known in the job (live logging)
    job_key: str | None = None  # tagged mixlib.job_key on the run; written into the outputs

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def log_history(self, history: dict) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...


NULL_TRACKER = Tracker()


class MlflowTracker(Tracker):
    """Logs into one MLflow run through a client (live in a job, or replaying a spool)."""

    def __init__(self, client, run_id: str, job_key: str | None = None):
        self._client = client
        self.run_id = run_id
        self.job_key = job_key

    def log_params(self, params):
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        for i in range(0, len(flat), 100):  # MLflow's limit of params per batch
            self._client.log_batch(self.run_id, params=flat[i : i + 100])

    def log_metrics(self, metrics, step=None, timestamp=None):
        from mlflow.entities import Metric

        now = timestamp or _now_ms()
        vals = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if _is_number(v)]
        if vals:
            self._client.log_batch(self.run_id, metrics=vals)

    def log_history(self, history, timestamp=None):
        """Every curve as step metrics ``history/<key>``, in batches (one call per point costs a
        database transaction each: seconds for a curve of a few hundred iterations)."""
        from mlflow.entities import Metric

        now = timestamp or _now_ms()
        points = [
            Metric(f"history/{key}", float(v), now, step)
            for key, values in (history or {}).items()
            for step, v in enumerate(values)
            if _is_number(v)
        ]
        for i in range(0, len(points), 1000):  # MLflow's limit per batch
            self._client.log_batch(self.run_id, metrics=points[i : i + 1000])

    def log_artifact(self, path, subdir=None):
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path=subdir)
        elif path.exists():
            self._client.log_artifact(self.run_id, str(path), artifact_path=subdir)


class SpoolTracker(Tracker):
    """Records a job's logging calls in ``<spool>/<job_key>/`` (no MLflow import); the
    workflow process replays them with :func:`sync_spool`. Artifacts are hard-linked (copied
    across file systems), so a later rerun that replaces an output leaves the snapshot alone."""

    def __init__(self, spool: Path, job_key: str, run: dict):
        self.dir = Path(spool) / job_key
        self.job_key = job_key
        self.run = dict(run, job_key=job_key, start_time=_now_ms(), calls=[])
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)

    def log_params(self, params):
        self.run["calls"].append(
            ["params", {k: str(v)[:6000] for k, v in _flatten(params).items()}]
        )

    def log_metrics(self, metrics, step=None):
        vals = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        self.run["calls"].append(["metrics", vals, step, _now_ms()])

    def log_history(self, history):
        curves = {
            k: [float(v) if _is_number(v) else None for v in vals]
            for k, vals in (history or {}).items()
        }
        self.run["calls"].append(["history", curves, _now_ms()])

    def log_artifact(self, path, subdir=None):
        src = Path(path)
        if not src.exists():
            return
        n = sum(1 for c in self.run["calls"] if c[0] == "artifact")
        dst = self.dir / "artifacts" / str(n) / src.name
        dst.parent.mkdir(parents=True)
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, dst)
        self.run["calls"].append(["artifact", str(dst.relative_to(self.dir)), subdir])

    def close(self, status: str):
        """Write ``run.json`` (atomically): its presence marks the job's run as complete."""
        self.run.update(status=status, end_time=_now_ms())
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(self.run))
        os.replace(tmp, self.dir / "run.json")


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _now_ms() -> int:
    return int(time.time() * 1000)


def sync_spool(
    uri: str, experiment: str, spool: str | Path = SPOOL_DIR, drop_incomplete: bool = False
) -> int:
    """Replay every complete job record of ``spool`` into MLflow (one run each, its start and
    end times and status kept) and delete it; return the number of runs logged. Records of
    jobs still running (no ``run.json``) are left, or, with ``drop_incomplete`` (at the start
    of an invocation, when Snakemake's lock guarantees no job of this directory runs: they are
    jobs that were killed), deleted."""
    spool = Path(spool)
    if drop_incomplete and spool.is_dir():
        for d in spool.iterdir():
            if d.is_dir() and not (d / "run.json").exists():
                shutil.rmtree(d)
    paths = spool.glob("*/run.json") if spool.is_dir() else []
    records = sorted(
        ((json.loads(p.read_text()), p) for p in paths), key=lambda r: r[0]["start_time"]
    )
    if not records:
        return 0
    import mlflow

    exp_id = init_store(uri, experiment)
    client = mlflow.MlflowClient(uri)
    for rec, path in records:
        run = client.create_run(
            exp_id, start_time=rec["start_time"], tags=rec["tags"], run_name=rec["name"]
        )
        tr = MlflowTracker(client, run.info.run_id, rec["job_key"])
        for call in rec["calls"]:
            kind, args = call[0], call[1:]
            if kind == "params":
                tr.log_params(args[0])
            elif kind == "metrics":
                tr.log_metrics(args[0], step=args[1], timestamp=args[2])
            elif kind == "history":
                tr.log_history(args[0], timestamp=args[1])
            else:
                tr.log_artifact(path.parent / args[0], args[1])
        client.set_terminated(run.info.run_id, status=rec["status"], end_time=rec["end_time"])
        shutil.rmtree(path.parent)
    return len(records)


@contextmanager
def job_run(
    *,
    enabled: bool,
    uri: str | None,
    experiment: str,
    rule: str,
    wildcards: dict,
    defer: bool = True,
    root: str | Path = ".",
):
    """The MLflow run of one pipeline job; yields a :class:`Tracker`.

    The run is named ``rule[wildcard values]``, tagged ``mixlib.rule``, ``mixlib.<wildcard>``,
    ``mixlib.invocation`` and ``mixlib.job_key``, nested under the invocation's parent run when
    there is one, and ends FAILED if the job raises. ``defer``: spooled under
    ``root/results/mlflow/spool`` for :func:`sync_spool`, else logged live.
    """
    if not enabled:
        yield NULL_TRACKER
        return
    job_key = uuid.uuid4().hex
    tags = {"mixlib.rule": rule, **{f"mixlib.{k}": str(v) for k, v in wildcards.items()}}
    tags["mixlib.job_key"] = job_key
    if os.environ.get(INVOCATION_ENV):
        tags["mixlib.invocation"] = os.environ[INVOCATION_ENV]
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm.job_id"] = os.environ["SLURM_JOB_ID"]
    if os.environ.get(PARENT_ENV):
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    name = rule + ("[" + ",".join(f"{v}" for v in wildcards.values()) + "]" if wildcards else "")
    if defer:
        run = {"name": name, "tags": tags}
        tracker = SpoolTracker(Path(root) / SPOOL_DIR, job_key, run)
        try:
            yield tracker
        except BaseException:
            tracker.close("FAILED")
            raise
        tracker.close("FINISHED")
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    resolved = resolve_uri(uri, root)
    exp_id = init_store(resolved, experiment)
    client = mlflow.MlflowClient(resolved)
    run = client.create_run(exp_id, tags=tags, run_name=name)
    try:
        yield MlflowTracker(client, run.info.run_id, job_key)
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")


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
