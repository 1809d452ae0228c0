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

Names, so that runs can be sorted, filtered and charted in the UI (:func:`run_name`):

- a run is named by what it is: ``gmm · kmeans · blobs · s0`` (model · init · dataset · seed) for
  a training run, ``<rule> · <wildcards> · s<seed>`` for the others;
- params: every wildcard under its own name (``dataset``, ``model``, ``init``, ``seed``, ...),
  ``kind`` / ``method`` for the registry entry behind a model / an init, hyperparameters as
  ``model.<name>`` / ``init.<name>``; the parent run holds the resolved config, flattened;
- metrics: scores ``<stage>_<metric>`` with stage ``init`` (the initial assignment) or ``train``
  (the trained model) and metric ``nmi``, ``ari``, ``acc``; times ``<what>_seconds``; curves
  ``history/<key>`` with the epoch or iteration as step. Evaluation logs its scores onto the
  training run it scores (:meth:`Tracker.onto`), so one run per trained model carries them.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

INVOCATION_ENV = "MIXLIB_INVOCATION_ID"
PARENT_ENV = "MIXLIB_PARENT_RUN_ID"
URI_ENV = "MLFLOW_TRACKING_URI"
COMMIT_ENV = "MIXLIB_GIT_COMMIT"
SETTINGS_ENV = "MIXLIB_TRACKING"
SPOOL_DIR = Path("results") / "mlflow" / "spool"


def export_job_settings(enabled: bool, uri: str | None, experiment: str, defer: bool) -> None:
    """Hand the invocation's tracking settings to its jobs (local or on SLURM, which inherit the
    environment): the workflow calls this once, before any job starts."""
    os.environ[SETTINGS_ENV] = json.dumps(
        {"enabled": enabled, "uri": uri, "experiment": experiment, "defer": defer}
    )


def job_settings() -> dict:
    """The settings :func:`export_job_settings` handed down (keyword arguments of
    :func:`job_run`); tracking is off for a job started outside a workflow invocation."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        return {"enabled": False, "uri": None, "experiment": "", "defer": True}
    return json.loads(raw)


def resolve_uri(uri: str | None, root: str | Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``uri`` from the config, else the
    local store ``sqlite:///<root>/results/mlflow/mlflow.db`` (absolute, so every job agrees)."""
    if os.environ.get(URI_ENV):
        return os.environ[URI_ENV]
    if uri:
        return uri
    db = Path(root).resolve() / "results" / "mlflow" / "mlflow.db"
    return f"sqlite:///{db}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def init_store(uri: str, experiment: str) -> str:
    """Create the store and the experiment once (call before jobs fan out); return its id.

    A local SQLite store keeps its artifacts beside it, in ``artifacts/``, recorded relative to
    the working directory (the workflow directory) when they lie under it: MLflow itself records
    absolute paths, which break when ``results/`` moves; a relative root follows it, read from
    wherever the UI is started in the directory that holds ``results/``."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    root = db.parent / "artifacts" if db is not None else None
    exp_id = client.create_experiment(experiment, artifact_location=root and root.as_uri())
    rel = root and os.path.relpath(root, Path.cwd())
    if rel and not rel.startswith(".."):
        # no MLflow API keeps a relative artifact location (it resolves them): set it in the
        # experiment's row; runs created afterwards inherit it
        with sqlite3.connect(db) as con:
            con.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                (rel, int(exp_id)),
            )
        con.close()
    return exp_id


# The view the runs page opens on (``runs_url``): one row per trained model with its scores.
VIEW_KEY = "mixlib-models"
VIEW_COLUMNS = [
    *(f"params.`{k}`" for k in ("model", "init", "dataset", "seed")),
    *(f"metrics.`{k}`" for k in ("train_acc", "train_nmi", "train_ari", "init_acc")),
]


def setup_experiment(client, exp_id: str) -> None:
    """Make the UI open the experiment on its runs: the kind MLflow 3 reads
    (``mlflow.experimentKind``), a description, and a saved view "Trained models" (the
    experiment tag ``mlflow.sharedViewState.<key>`` the UI's saved views are stored in) that
    lists the training runs with their model, init, dataset, seed and scores as columns."""
    state = {
        "searchFilter": "tags.`mixlib.rule` = 'train_model'",
        "orderByKey": "metrics.`train_acc`",
        "orderByAsc": False,
        "selectedColumns": VIEW_COLUMNS,
    }
    view = {"name": "Trained models", "createdAt": 0, "state": json.dumps(state)}
    tags = {
        "mlflow.experimentKind": "custom_model_development",
        f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(view),
        "mlflow.note.content": (
            "One run per pipeline job, nested under one run per workflow invocation (its config, "
            "commit, command, tables and figures). Training runs are named "
            "`model · init · dataset · s<seed>` and carry their scores `init_*` / `train_*` "
            '(nmi, ari, acc); filter with e.g. `params.model = "gmm"`. The view '
            '"Trained models" lists them.'
        ),
    }
    for k, v in tags.items():
        client.set_experiment_tag(exp_id, k, v)


def runs_url(exp_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The UI page of the experiment's runs in the "Trained models" view (MLflow 3.17 opens an
    experiment on its GenAI overview unless the URL asks for ``workflowType=machine_learning``)."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base}/#/experiments/{exp_id}/runs?{query}"


def start_invocation(
    uri: str, experiment: str, config: dict | None = None, info: dict | None = None
) -> tuple[str, str]:
    """Initialise the store, open the parent run of a workflow invocation; export its ids.

    ``config``: the resolved config, logged as params (flattened) and as ``config/config.yaml``;
    ``info``: :func:`mixlib.provenance.invocation` (command, config files, commit), logged as
    tags and ``config/invocation.json``."""
    import mlflow
    import yaml

    exp_id = init_store(uri, experiment)
    inv = os.environ.get(INVOCATION_ENV) or uuid.uuid4().hex[:12]
    info = info or {}
    client = mlflow.MlflowClient(uri)
    setup_experiment(client, exp_id)
    commit = info.get("commit", "unknown")
    configs = " + ".join(Path(c).name for c in info.get("configs", []))
    tags = {
        "mixlib.invocation": inv,
        "mixlib.rule": "workflow",
        "mixlib.command": info.get("command", ""),
        "mixlib.configs": " ".join(info.get("configs", [])),
        "mixlib.git_commit": commit,
        "mixlib.git_dirty": str(commit.endswith("-dirty")).lower(),
        "mlflow.note.content": (
            f"`{info.get('command', '')}`\n\nconfig: {configs or '-'}, commit {commit}"
        ),
        **_source_tags("workflow", commit),
    }
    name = " · ".join(["workflow", *([configs] if configs else []), inv])
    run = client.create_run(exp_id, run_name=name, tags=tags)
    tracker = MlflowTracker(client, run.info.run_id)
    if config:
        tracker.log_params(config)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config or {}, sort_keys=False))
        (Path(tmp) / "invocation.json").write_text(json.dumps(info, indent=1))
        tracker.log_artifact(tmp, "config")
    os.environ[INVOCATION_ENV] = inv
    os.environ[PARENT_ENV] = run.info.run_id
    os.environ[URI_ENV] = uri
    os.environ[COMMIT_ENV] = commit
    return inv, run.info.run_id


def _source_tags(rule: str, commit: str | None) -> dict:
    """The UI's Source and Version columns: the Snakefile, the rule as entry point, the commit."""
    tags = {
        "mlflow.source.type": "PROJECT",
        "mlflow.source.name": "Snakefile",
        "mlflow.project.entryPoint": rule,
    }
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


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
    def log_progress(self, points: dict[str, list[tuple[int, float]]]) -> None:
        """Curves of a job in progress, ``{name: [(step, value), ...]}``, as ``progress/<name>``
        (live runs only: a deferred run gets the whole curves as its history at the end)."""

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def log_dataset(self, meta: dict, path: str | Path, context: str) -> None:
        """Record the run's dataset (a prepared dataset's ``meta``, read from ``path``) as an
        MLflow dataset input; ``context``: ``training``, ``evaluation``, ..."""

    def onto(self, target: str | None) -> Tracker:
        """A tracker logging into another run: ``"parent"`` (the invocation's run) or the job
        key of another job's run (e.g. evaluation onto the training run it scores)."""
        return NULL_TRACKER


NULL_TRACKER = Tracker()


class MlflowTracker(Tracker):
    """Logs into one MLflow run through a client (live in a job, or replaying a spool)."""

    def __init__(self, client, run_id: str, job_key: str | None = None):
        self._client = client
        self.run_id = run_id
        self.job_key = job_key

    def onto(self, target):
        if target == "parent":
            run_id = self._client.get_run(self.run_id).data.tags.get("mlflow.parentRunId")
        else:
            run_id = target and _find_run(self._client, self.run_id, target)
        return MlflowTracker(self._client, run_id) if run_id else NULL_TRACKER

    def log_dataset(self, meta, path, context):
        self.log_dataset_fields(_dataset(meta, path), context)

    def log_dataset_fields(self, fields: dict, context: str):
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = DatasetInput(Dataset(**fields), [InputTag("mlflow.data.context", context)])
        self._client.log_inputs(self.run_id, datasets=[ds])

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

    def log_progress(self, points):
        from mlflow.entities import Metric

        now = _now_ms()
        vals = [
            Metric(f"progress/{k}", v, now, step)
            for k, pts in points.items()
            for step, v in pts
            if _is_number(v)
        ]
        for i in range(0, len(vals), 1000):
            self._client.log_batch(self.run_id, metrics=vals[i : i + 1000])

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
        self.target = None  # None: this job's run; else see Tracker.onto
        self.run = dict(run, job_key=job_key, start_time=_now_ms(), calls=[])
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)

    def _record(self, call):
        self.run["calls"].append(call if self.target is None else ["on", self.target, call])

    def onto(self, target):
        if not target:
            return NULL_TRACKER
        view = copy.copy(self)  # shares the record: its calls land in this job's run.json
        view.target = target
        return view

    def log_params(self, params):
        self._record(["params", {k: str(v)[:6000] for k, v in _flatten(params).items()}])

    def log_metrics(self, metrics, step=None):
        vals = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        self._record(["metrics", vals, step, _now_ms()])

    def log_history(self, history):
        curves = {
            k: [float(v) if _is_number(v) else None for v in vals]
            for k, vals in (history or {}).items()
        }
        self._record(["history", curves, _now_ms()])

    def log_dataset(self, meta, path, context):
        self._record(["dataset", _dataset(meta, path), context])

    def log_artifact(self, path, subdir=None):
        src = Path(path)
        if not src.exists():
            return
        n = len(list((self.dir / "artifacts").iterdir()))
        dst = self.dir / "artifacts" / str(n) / src.name
        dst.parent.mkdir(parents=True)
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, dst)
        self._record(["artifact", str(dst.relative_to(self.dir)), subdir])

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


def _dataset(meta: dict, path: str | Path) -> dict:
    """The fields of an MLflow dataset entity for a prepared dataset (its content checksum as
    digest, its path as a relative local source, its size as profile)."""
    return {
        "name": meta["name"],
        "digest": str(meta.get("checksum", ""))[:16],
        "source_type": "local",
        "source": json.dumps({"uri": str(path)}),
        "profile": json.dumps(
            {k: meta.get(k) for k in ("n", "d", "n_classes", "n_clusters", "split")}
        ),
    }


def _find_run(client, near_run_id: str, job_key: str) -> str | None:
    """The id of the run tagged ``mixlib.job_key = job_key`` in ``near_run_id``'s experiment."""
    exp_id = client.get_run(near_run_id).info.experiment_id
    runs = client.search_runs([exp_id], f"tags.`mixlib.job_key` = '{job_key}'", max_results=1)
    return runs[0].info.run_id if runs else None


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
    run_ids, onto, done = {}, [], []  # job key -> run id; calls onto other runs; runs to end
    for rec, path in records:
        run = client.create_run(
            exp_id, start_time=rec["start_time"], tags=rec["tags"], run_name=rec["name"]
        )
        run_ids[rec["job_key"]] = run.info.run_id
        tr = MlflowTracker(client, run.info.run_id, rec["job_key"])
        for call in rec["calls"]:
            if call[0] == "on":  # after every run exists: the target may be replayed later
                onto.append((rec, run.info.run_id, call, path.parent))
            else:
                _replay(tr, call, path.parent)
        done.append((rec, run.info.run_id, path))
    for rec, run_id, (_, target, call), base in onto:
        if target == "parent":
            rid = rec["tags"].get("mlflow.parentRunId")
        else:
            rid = run_ids.get(target) or _find_run(client, run_id, target)
        if rid:
            _replay(MlflowTracker(client, rid), call, base)
    for rec, run_id, path in done:
        client.set_terminated(run_id, status=rec["status"], end_time=rec["end_time"])
        shutil.rmtree(path.parent)
    return len(records)


def _replay(tr: MlflowTracker, call: list, base: Path) -> None:
    kind, args = call[0], call[1:]
    if kind == "params":
        tr.log_params(args[0])
    elif kind == "metrics":
        tr.log_metrics(args[0], step=args[1], timestamp=args[2])
    elif kind == "history":
        tr.log_history(args[0], timestamp=args[1])
    elif kind == "dataset":
        tr.log_dataset_fields(args[0], args[1])
    else:
        tr.log_artifact(base / args[0], args[1])


# Order of the wildcards in a run's name: what was trained or made first, the seed last.
_NAME_ORDER = ("model", "init", "method", "param", "dataset", "source", "seed")


def run_name(rule: str, wildcards: dict) -> str:
    """What a job's run is, at a glance: ``gmm · kmeans · blobs · s0`` (model · init · dataset
    · seed) for a training run, the rule then its wildcards for the others
    (``evaluate · gmm · kmeans · blobs · s0``, ``initialize · kmeans · blobs · s0``)."""
    rank = {k: i for i, k in enumerate(_NAME_ORDER)}
    keys = sorted(wildcards, key=lambda k: rank.get(k, len(rank)))
    parts = [f"s{wildcards[k]}" if k == "seed" else str(wildcards[k]) for k in keys]
    return " · ".join(parts if rule == "train_model" and parts else [rule, *parts])


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

    The run is named by :func:`run_name`, tagged ``mixlib.rule``, ``mixlib.<wildcard>``,
    ``mixlib.invocation``, ``mixlib.job_key`` and the invocation's commit, nested under the invocation's parent run when
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
    tags.update(_source_tags(rule, os.environ.get(COMMIT_ENV)))
    name = run_name(rule, wildcards)
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
