"""The stage functions behind the workflow's rules (one per rule), and the job wrapper.

Each stage reads its inputs, calls the maths in :mod:`mixlib`, writes its declared outputs
atomically and logs params, metrics and artifacts through a :class:`~mixlib.tracking.Tracker`.
They take plain arguments, so they run (and are tested) without Snakemake; ``run_job`` adapts a
Snakemake ``snakemake`` script object (duck-typed: this module never imports snakemake).
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

from . import data as datalib
from . import tracking
from .models import build_model
from .utils import atomic_path, read_json, save_npy, write_json

log = logging.getLogger("mixlib")


# --- the job wrapper ------------------------------------------------------------------------


@contextmanager
def _logging_to(path):
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f, redirect_stdout(f), redirect_stderr(f):
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        except BaseException:
            logging.exception("job failed")
            raise
        finally:
            root.removeHandler(handler)


#: the variables that say how OpenMP threads wait (libgomp's, LLVM's/Intel's)
OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def openmp_wait_defaults(environ) -> None:
    """Make OpenMP threads spin briefly, then sleep, when they wait (read when torch starts),
    unless ``environ`` already says how: ``GOMP_SPINCOUNT=3000`` (libgomp, torch's runtime on
    Linux) and ``KMP_BLOCKTIME=0`` (LLVM's and Intel's). libgomp's default spin (300,000 turns)
    makes a waiting thread burn a core that other work needs; passive waits
    (``OMP_WAIT_POLICY=PASSIVE``, the jobs' setting before) pay a wake-up at every small parallel
    region. benchmarks/bench_omp_wait.py on 2 threads (docs/results/benchmarks/bench_omp_wait.txt):
    an auto-encoder step quiet takes 30.7 ms by default, 42.8 passive, 35.5 with 3,000 turns;
    beside a busy core 300, 73.6 and 75.2."""
    if not set(OPENMP_WAIT_VARIABLES) & set(environ):
        environ["GOMP_SPINCOUNT"] = "3000"
        environ["KMP_BLOCKTIME"] = "0"


def run_job(smk, stage, *, torch_threads: bool = False, **kwargs):
    """Run ``stage(tracker=..., **kwargs)`` as the job ``smk`` (a Snakemake script object):
    output to its log file, one MLflow run tagged with its rule and wildcards (with the settings
    the workflow handed down, :func:`mixlib.tracking.job_settings`), BLAS (and, with
    ``torch_threads``, torch) limited to the job's ``threads`` so parallel jobs don't
    oversubscribe."""
    from threadpoolctl import threadpool_limits

    threads = max(1, int(smk.threads))
    openmp_wait_defaults(os.environ)
    if torch_threads:
        # torch takes its thread count from OMP_NUM_THREADS when a model first imports it; not
        # importing torch here spares the jobs of the models that never use it seconds each
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    wildcards = {k: v for k, v in smk.wildcards.items()}
    log_path = smk.log[0] if len(smk.log) else None
    with _logging_to(log_path), threadpool_limits(limits=threads):
        with tracking.job_run(
            **tracking.job_settings(), rule=smk.rule, wildcards=wildcards
        ) as tracker:
            tracker.log_params({**wildcards, "threads": threads})
            t0 = time.perf_counter()
            out = stage(tracker=tracker, **kwargs)
            tracker.log_metrics({"job_seconds": time.perf_counter() - t0})
            log.info("done in %.1f s", time.perf_counter() - t0)
            return out


# --- stages ---------------------------------------------------------------------------------


def download_dataset(
    *,
    source: str,
    out_dir: str,
    staged_dir: str | None = None,
    download: bool = True,
    file_sha256: dict | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Put the verified raw files of ``source`` in ``out_dir/<source>/``: copied from
    ``staged_dir`` where staged, else downloaded (:func:`mixlib.download.stage_or_download`)."""
    from . import download as downloadlib

    paths = downloadlib.stage_or_download(
        source, out_dir, staged_dir=staged_dir, download=download, file_sha256=file_sha256
    )
    tracker.log_params({"source": source, "staged_dir": staged_dir, "download": download})
    for p in paths:
        log.info("%s: %s (%d bytes)", source, p, p.stat().st_size)


def prepare_dataset(
    *,
    name: str,
    spec: dict,
    out_data: str,
    out_meta: str,
    raw_dir: str | None = None,
    file_sha256: dict | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Load, validate, preprocess; write the prepared ``.npz`` and its metadata JSON.
    Downloadable sources are read, verified, from ``raw_dir/<source>/``."""
    ds = datalib.prepare(name, spec, raw_dir=raw_dir, file_sha256=file_sha256)
    datalib.save_prepared(ds, out_data)
    write_json(out_meta, ds.meta)
    tracker.log_params({"dataset": ds.meta})
    tracker.log_metrics({"n": ds.meta["n"], "d": ds.meta["d"], "n_classes": ds.meta["n_classes"]})
    tracker.log_dataset(ds.meta, out_data, "preparation")
    tracker.log_artifact(out_meta)
    log.info(
        "%s: n=%d d=%d classes=%d checksum=%s",
        name,
        ds.meta["n"],
        ds.meta["d"],
        ds.meta["n_classes"],
        ds.meta["checksum"][:16],
    )


def init_features(
    *,
    data_path: str,
    dataset: str,
    recipe: str,
    spec: dict,
    out_features: str,
    out_record: str,
    tracker=tracking.NULL_TRACKER,
):
    """Compute the feature ``recipe`` (``spec``: its :func:`mixlib.init.feature_keys`) of the
    rows every seed's initialisations are fitted on, once for all of them; write it (float32
    ``.npy``) and a record of its shape and the seconds of each step."""
    from . import init as initlib

    ds = datalib.load_prepared(data_path)
    fit = datalib.fit_rows(ds)  # seed-independent: the plan shares no holdout split's feature
    X = ds.X if fit.all() else ds.X[fit]
    timer = initlib.StepTimer()
    try:
        F = initlib.init_features(X, image_shape=ds.image_shape or None, timer=timer, **spec)
    except ValueError as e:
        raise ValueError(f"feature {recipe!r}: {e} (dataset {dataset!r})") from e
    save_npy(out_features, np.ascontiguousarray(F, dtype=np.float32))
    record = dict(
        dataset=dataset,
        recipe=recipe,
        **spec,
        n=int(F.shape[0]),
        n_features=int(F.shape[1]),
        data_checksum=ds.meta["checksum"],
        **timer.seconds,
    )
    write_json(out_record, record)
    tracker.log_params({"recipe": recipe, "feature": spec})
    tracker.log_metrics(
        {f"{k.removeprefix('seconds_')}_seconds": v for k, v in timer.seconds.items()}
    )
    tracker.log_dataset(ds.meta, data_path, "features")
    log.info("feature %s of %s: %s, %s", recipe, dataset, F.shape, timer.seconds)


def initialize(
    *,
    data_path: str,
    dataset: str,
    init: str,
    spec: dict,
    seed: int,
    out_labels: str,
    out_record: str,
    features_path: str | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Run an initialisation method; write its labels (-1 = unseen) and its metrics record.

    ``spec`` is the init's entry as it runs on this dataset (``method`` and its keys,
    :meth:`mixlib.plan.Plan.init_for`). With a train/test split the method sees the training
    rows only (test rows get -1), and, having no way to label unseen rows, it is scored on the
    rows it labelled (``rows: train``). ``features_path``: the feature :func:`init_features`
    computed for every seed (its record beside it must be of the same data and keys).
    """
    from . import init as initlib
    from . import metrics as metriclib

    ds = datalib.load_prepared(data_path)
    spec = dict(spec)
    method = spec.pop("method")
    split = datalib.train_rows(ds, seed) is not None
    fit = datalib.fit_rows(ds, seed)
    spec["image_shape"] = ds.image_shape or None
    t0 = time.perf_counter()
    if features_path:
        spec["features"] = _shared_features(features_path, ds, spec, int(fit.sum()))
    labels = np.full(ds.y.shape[0], -1, dtype=np.int64)
    X = ds.X if fit.all() else ds.X[fit]  # no copy of a 70,000-image data set
    try:
        labels[fit], info = initlib.initialize(X, ds.meta["n_clusters"], method, seed=seed, **spec)
    except ValueError as e:  # name the init and the dataset the maths knows nothing of
        raise ValueError(f"init {init!r}: {e} (dataset {dataset!r})") from e
    seconds = time.perf_counter() - t0
    steps = {k: v for k, v in info.items() if k.startswith("seconds_")}
    save_npy(out_labels, labels)
    seen = labels >= 0
    m = metriclib.cluster_metrics(ds.y[seen], labels[seen])
    members = _ensemble_scores(info, ds.y[fit][seen[fit]])
    record = dict(
        dataset=dataset,
        model="init",
        init=init,
        stage="init",
        seed=seed,
        params=np.nan,
        n=int(seen.sum()),
        rows="train" if split else "all",
        seconds=seconds,
        run_id=tracker.run_id,
        job_key=tracker.job_key,
        method=method,
        **steps,
        **members,
        **m,
    )
    write_json(out_record, [record])
    tracker.log_params({"method": method, "seed": seed, "init": spec})  # init.<hyperparameter>
    tracker.log_metrics(
        {
            **{f"init_{k}": v for k, v in m.items()},
            "fit_seconds": seconds,
            "n_labelled": info["n_labelled"],
            **members,
            **{f"{k.removeprefix('seconds_')}_seconds": v for k, v in steps.items()},
        }
    )
    tracker.log_dataset(ds.meta, data_path, "training")
    tracker.log_artifact(out_labels)
    log.info("init %s on %s seed %d: %s", init, dataset, seed, m)


def _ensemble_scores(info: dict, y: np.ndarray) -> dict:
    """For an ensemble init (``info["members"]``: each member's labels of the clustered points,
    whose classes are ``y``): its size and the members' mean NMI, ARI and ACC
    (``member_<metric>``), which the vote is read against; each member's scores go to the job
    log. {} for a single run."""
    from . import metrics as metriclib

    if "members" not in info:
        return {}
    scores = [metriclib.cluster_metrics(y, labels) for labels in info["members"]]
    for i, sc in enumerate(scores):
        log.info("ensemble member %d: %s", i, {k: round(v, 4) for k, v in sc.items()})
    mean = {f"member_{k}": float(np.mean([sc[k] for sc in scores])) for k in scores[0]}
    return {"ensemble": int(info["ensemble"]), **mean}


def _shared_features(path: str, ds, spec: dict, n_rows: int) -> np.ndarray:
    """The feature at ``path``, checked against its record: computed from this data (checksum),
    with this init's feature keys, for its ``n_rows`` fitted rows."""
    from . import init as initlib

    rec = read_json(Path(path).with_name("record.json"))
    want = initlib.feature_keys(spec)
    got = {k: rec.get(k) for k in want}
    if rec.get("data_checksum") != ds.meta["checksum"] or got != want or rec["n"] != n_rows:
        raise ValueError(
            f"shared feature {path} was computed with {got} on data {rec.get('data_checksum')} "
            f"({rec.get('n')} rows); this init needs {want} on {ds.meta['checksum']} ({n_rows})"
        )
    return np.load(path)


def pretrain_autoencoder(
    *,
    data_path: str,
    kind: str,
    params: dict,
    seed: int,
    out_state: str,
    tracker=tracking.NULL_TRACKER,
):
    """Pre-train the auto-encoder of model ``kind`` (DEC, IDEC: its ``pretrain``) on the rows
    its training will see and save the state (``torch.save``) that the train stage hands to
    ``fit(pretrained=...)`` of every model of this dataset and seed with the same recipe. The
    epochs are checkpointed (:func:`job_checkpoint`): a job stopped part-way resumes when run
    again."""
    import torch

    ds = datalib.load_prepared(data_path)
    fit = datalib.fit_rows(ds, seed)
    model = build_model(kind, n_clusters=ds.meta["n_clusters"], random_state=seed, **params)
    tracker.log_params({"kind": kind, "seed": seed, "model": model.get_params()})
    tracker.log_dataset(ds.meta, data_path, "training")
    monitor = TrainingMonitor(tracker)
    checkpoint = job_checkpoint(out_state)
    t0 = time.perf_counter()
    state = model.pretrain(ds.X[fit], callback=monitor, checkpoint=checkpoint)
    seconds = time.perf_counter() - t0
    # the earlier attempts' saved work, which this job's benchmark misses: the training jobs
    # that load this state copy it into their info.json for the tables' wall time
    state["resumed_seconds"] = checkpoint.resumed_seconds
    with atomic_path(out_state) as tmp:
        torch.save(state, tmp)
    checkpoint.remove()
    _log_resumed(tracker, checkpoint)
    tracker.log_metrics({"pretrain_seconds": seconds})
    tracker.log_history({"pretrain_reconstruction": state["history"]})
    log.info("%s auto-encoder pre-trained in %.1f s (seed %d)", kind, seconds, seed)


def train_model(
    *,
    data_path: str,
    init_path: str | None,
    kind: str,
    params: dict,
    seed: int,
    eval_every: int | None,
    out_labels: str,
    out_info: str,
    artifact_dir: str | None = None,
    pretrained_path: str | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Fit model ``kind`` (from the registry) from an initial assignment (and, with
    ``pretrained_path``, from the auto-encoder :func:`pretrain_autoencoder` saved); write its labels
    (``labels``, and ``init_labels`` for the untrained model where it has them) and an info JSON
    (parameter count, curves, timings), and its figures (:func:`mixlib.plots.model_figures`)
    into ``artifact_dir``.

    A model whose ``fit`` takes a ``checkpoint`` (N2D, DEC, IDEC, DCN, K-DAE, DAMIC) gets
    the job's (:func:`job_checkpoint`): a job stopped part-way resumes when run again.

    While it fits, a :class:`TrainingMonitor` reports its progress to the job log (and, logging
    live, to its MLflow run) and scores it on the evaluation rows every ``eval_every`` steps
    (None: never; the final labels are scored by the evaluate stage). With a train/test split
    the model is fitted on the training rows and ``labels`` are its predictions for every row;
    ``init_labels`` exist for the training rows only (-1 elsewhere).
    """
    from . import plots

    ds = datalib.load_prepared(data_path)
    split = datalib.train_rows(ds, seed) is not None
    fit = datalib.fit_rows(ds, seed)
    init_labels = np.load(init_path)[fit] if init_path else None
    model = build_model(kind, n_clusters=ds.meta["n_clusters"], random_state=seed, **params)
    hyper = {k: v for k, v in model.get_params().items() if k != "random_state"}  # = seed
    tracker.log_params({"kind": kind, "seed": seed, "model": hyper})  # model.<hyperparameter>
    tracker.log_dataset(ds.meta, data_path, "training")
    extra = {}
    if pretrained_path:
        import torch

        extra["pretrained"] = torch.load(pretrained_path)  # weights_only: tensors and plain data
    checkpoint = None
    if "checkpoint" in inspect.signature(model.fit).parameters:
        extra["checkpoint"] = checkpoint = job_checkpoint(out_labels)
    rows = datalib.eval_rows(ds, seed)
    monitor = TrainingMonitor(
        tracker,
        y_eval=ds.y[rows],
        X_eval=ds.X[rows] if split else None,
        eval_every=eval_every,
        store=None if checkpoint is None else f"{checkpoint.path}.scores.json",
    )
    t0 = time.perf_counter()
    model.fit(ds.X[fit], init_labels=init_labels, callback=monitor, **extra)
    seconds = time.perf_counter() - t0
    if not split:
        labels = model.labels_
    else:
        labels = model.predict(ds.X)
    arrays = {"labels": np.asarray(labels, dtype=np.int64)}
    if getattr(model, "init_labels_", None) is not None:
        arrays["init_labels"] = np.full(ds.y.shape[0], -1, dtype=np.int64)
        arrays["init_labels"][fit] = model.init_labels_
    with atomic_path(out_labels) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    history = {k: [float(v) for v in vals] for k, vals in getattr(model, "history_", {}).items()}
    history.update(monitor.curves())
    info = {
        "kind": kind,
        "seed": seed,
        "params": model.get_params(),
        "n_parameters": int(model.n_parameters()),
        "fit_seconds": seconds,
        "history": history,
        "run_id": tracker.run_id,
        "job_key": tracker.job_key,
        "missing_frac": _missing_frac(model),
        "resumed_seconds": 0.0 if checkpoint is None else checkpoint.resumed_seconds,
    }
    if pretrained_path:  # shared by the models of one recipe: counted once by the tables
        resumed = float(extra["pretrained"].get("resumed_seconds", 0.0))
        info["pretrained"] = {"path": str(pretrained_path), "resumed_seconds": resumed}
    write_json(out_info, info)
    tracker.log_metrics({"fit_seconds": seconds, "n_parameters": info["n_parameters"]})
    tracker.log_history(history)
    tracker.log_artifact(out_labels)
    if artifact_dir is not None:
        paths = plots.model_figures(model, ds.X[fit], artifact_dir, image_shape=ds.image_shape)
        for p in paths:
            tracker.log_artifact(p, "figures")
    if checkpoint is not None:
        checkpoint.remove()
        monitor.store.unlink(missing_ok=True)
        _log_resumed(tracker, checkpoint)
    # the run directory names the dataset, model (not only its kind), init and seed
    log.info("%s fitted in %.1f s (%s)", kind, seconds, Path(out_labels).parent)


def _log_resumed(tracker, checkpoint) -> None:
    """State the work of earlier attempts a resumed job built on (its own time excludes it)."""
    if checkpoint.resumed_seconds > 0:
        log.info(
            "resumed: the earlier attempts' saved work took %.1f s (not in this job's time)",
            checkpoint.resumed_seconds,
        )
        tracker.log_metrics({"resumed_seconds": checkpoint.resumed_seconds})


CHECKPOINT_EVERY_S = 300.0  # at most 5 minutes of a killed job's work lost; ~40 MB a write


def job_checkpoint(out_path: str):
    """The :class:`~mixlib.models.base.Checkpoint` of the job whose first output is
    ``out_path``: ``<out_path>.checkpoint``, beside it but not an output of the rule, so that
    Snakemake keeps it when the job fails or is killed (a cluster's time limit, Ctrl-C) and the
    job run again resumes from it; saved every ``CHECKPOINT_EVERY_S`` seconds and removed once
    the job's outputs are written."""
    from .models.base import Checkpoint

    return Checkpoint(f"{out_path}.checkpoint", every_s=CHECKPOINT_EVERY_S)


class TrainingMonitor:
    """The callback the train stage gives a model's ``fit`` (models never see the labels).

    For every :class:`~mixlib.models.base.Progress` it gets, it writes a line to the job log and
    sends the step's objective values to the MLflow run (``progress/<name>``, when the job logs
    live), at most every ``interval`` seconds and always at the first and last step and where the
    step's objective values change names (a new phase, or a value reported once, like a
    pre-training restart's score); every
    ``eval_every`` steps (and at the last) it scores the model's current labels of the
    evaluation rows (``X_eval``, the test rows, through ``predict``; None: the rows being
    fitted, through ``labels``) against ``y_eval``: NMI, ARI and ACC curves in the history.

    ``store``: a JSON file the scores are written to as they are made, for a checkpointed fit
    (:func:`job_checkpoint`): when the job is killed and run again, the scores of the steps
    before the one the resumed fit reports first are read back from it (those at or after it are
    made again), so the curves are the uninterrupted job's; the caller removes it with the
    checkpoint.
    """

    def __init__(
        self, tracker, *, y_eval=None, X_eval=None, eval_every=None, interval=10.0, store=None
    ):
        self.tracker, self.y_eval, self.X_eval = tracker, y_eval, X_eval
        self.eval_every, self.interval = eval_every, interval
        self.scores: dict[int, dict[str, float]] = {}  # step -> nmi, ari, acc
        self.store = None if store is None else Path(store)
        # an earlier attempt's scores, kept until the fit's first report
        self._stored: dict[int, dict[str, float]] = {}
        if self.store is not None and self.store.exists():
            self._stored = {int(k): v for k, v in read_json(self.store).items()}
        self.n_steps = 0
        self._pending: dict[str, list[tuple[int, float]]] = {}
        self._last = -np.inf
        self._names: set[str] = set()

    def __call__(self, p) -> None:
        if self._stored is not None:  # the fit's first report: where a resumed fit continues
            self.scores.update({s: v for s, v in self._stored.items() if s < p.step})
            self._stored = None
        last = p.step == p.total
        self.n_steps = max(self.n_steps, p.step)
        score = p.labels if self.X_eval is None else p.predict
        scoring = self.eval_every and self.y_eval is not None and score is not None
        if scoring and (p.step % self.eval_every == 0 or last):
            from . import metrics as metriclib

            lab = score() if self.X_eval is None else score(self.X_eval)
            self.scores[p.step] = metriclib.cluster_metrics(self.y_eval, lab)
            if self.store is not None:
                write_json(self.store, {str(s): v for s, v in self.scores.items()})
        for k, v in {**p.metrics, **self.scores.get(p.step, {})}.items():
            self._pending.setdefault(k, []).append((p.step, float(v)))
        now = time.monotonic()
        renamed, self._names = set(p.metrics) != self._names, set(p.metrics)
        if p.step == 1 or last or renamed or now - self._last >= self.interval:
            shown = ", ".join(
                f"{k}={v[-1][1]:.6g}" for k, v in self._pending.items() if v[-1][0] == p.step
            )
            log.info("step %d/%d: %s", p.step, p.total, shown)
            self.tracker.log_progress(self._pending)
            self._pending, self._last = {}, now

    def curves(self) -> dict[str, list[float]]:
        """The scores as curves over every step reported (NaN where not scored), like the
        model's own ``history_`` curves; none when nothing was scored."""
        if not self.scores:
            return {}
        steps = range(1, max(self.n_steps, *self.scores) + 1)
        return {
            k: [self.scores[s][k] if s in self.scores else float("nan") for s in steps]
            for k in ("acc", "nmi", "ari")
        }


def _missing_frac(model) -> float | None:
    """Fraction of the training entries a model with missing-data support (a ``mask_``
    attribute, e.g. MixMate's erased pixels) did not see; None for models without one."""
    if not hasattr(model, "mask_"):
        return None
    return 0.0 if model.mask_ is None else float(1.0 - np.mean(model.mask_))


def evaluate(
    *,
    data_path: str,
    labels_path: str,
    info_path: str,
    dataset: str,
    model: str,
    init: str,
    seed: int,
    mean_of_last: int | None,
    out_record: str,
    tracker=tracking.NULL_TRACKER,
):
    """Score a trained model's labels (TRAIN) and, where present, its untrained labels (INIT),
    on :func:`mixlib.data.eval_rows`: the test rows with a train/test split, else every row. A
    stage without labels for those rows (INIT with a split: the untrained model saw only the
    training rows) is left out, and the log says so.

    ``mean_of_last``: TRAIN is instead the mean of the scores of the last ``mean_of_last``
    evaluations made while the model trained (its ``eval_every`` curves, on the same rows): the
    statistic the BigLearn-EM reference reports. The record's ``statistic`` says which."""
    from . import metrics as metriclib

    ds = datalib.load_prepared(data_path)
    info = read_json(info_path)
    rows = datalib.eval_rows(ds, seed)
    rows_name = "all" if datalib.train_rows(ds, seed) is None else "test"
    key = info.get("job_key")
    trained = tracker.onto(key)
    records = []
    with np.load(labels_path) as f:
        stages = [("train", f["labels"])] + (
            [("init", f["init_labels"])] if "init_labels" in f.files else []
        )
        for stage, lab in stages:
            lab = lab[rows]
            if (lab < 0).any():
                log.info("%s: no %s labels for the %s rows; not scored", model, stage, rows_name)
                continue
            m, statistic = metriclib.cluster_metrics(ds.y[rows], lab), "final labels"
            if stage == "train" and mean_of_last:
                m = _mean_of_last(info["history"], mean_of_last)
                statistic = f"mean of last {mean_of_last} evaluations"
            records.append(
                dict(
                    dataset=dataset,
                    model=model,
                    init=init,
                    stage=stage,
                    seed=seed,
                    params=info["n_parameters"],
                    n=int(lab.size),
                    rows=rows_name,
                    kind=info["kind"],
                    # the fit's whole cost: a resumed job's earlier attempts' kept work too
                    seconds=info["fit_seconds"] + info.get("resumed_seconds", 0.0),
                    run_id=info["run_id"],
                    job_key=info.get("job_key"),
                    missing_frac=info.get("missing_frac"),
                    statistic=statistic,
                    **m,
                )
            )
            # the scores go onto the run that trained the labels: one run per trained model
            trained.log_metrics({f"{stage}_{k}": v for k, v in m.items()})
    write_json(out_record, records)
    tracker.log_params(
        {"dataset": dataset, "model": model, "init": init, "seed": seed, "train_job_key": key}
    )
    tracker.log_dataset(ds.meta, data_path, "evaluation")
    log.info("%s", records)


def _mean_of_last(history: dict, n: int) -> dict[str, float]:
    """Mean of the last ``n`` scores of each metric curve recorded in training (NaN where a step
    was not scored)."""
    out = {}
    for k in ("nmi", "ari", "acc"):
        v = np.asarray(history.get(k, []), dtype=float)
        v = v[np.isfinite(v)]
        if v.size < n:
            raise ValueError(
                f"{n} evaluations asked for (score_mean_of_last), the training recorded "
                f"{v.size} of {k}; set the model's eval_every so that it scores often enough"
            )
        out[k] = float(v[-n:].mean())
    return out


def aggregate(
    *,
    records: list[str],
    datasets: dict,
    out_long: str,
    out_summary: str,
    tables_out: dict,
    figures_out: dict,
    paper_out: tuple[str, str, str],
    reference_csv: str | None = None,
    provenance: dict | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Concatenate every record into the long CSV; write a table (md/tex/csv) and a figure per
    dataset, and the cross-dataset table ``paper_out`` (MixMate's Table 1 layout) with its
    provenance lines.

    ``tables_out`` maps each dataset to its ``(md, tex, csv)`` paths and ``figures_out`` to its
    figure path, as the rule declares them; ``provenance`` (:func:`mixlib.provenance.describe`)
    is printed under the cross-dataset table's title."""
    from . import plots, tables

    parent = tracker.onto("parent")  # the invocation's run holds its tables and figures too

    def publish(path, subdir):
        tracker.log_artifact(path, subdir)
        parent.log_artifact(path, subdir)

    recs = [dict(r, source=str(p)) for p in records for r in read_json(p)]
    long = tables.long_table(recs)
    summary = tables.summarise(long)
    for path, df in [(out_long, long), (out_summary, summary)]:
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        publish(path, "tables")
    published = {
        name: tables.published_for(reference_csv, datasets[name].get("published_as", name))
        for name in datasets
    }
    for name in datasets:
        cells, best = tables.paper_table(summary, name, published[name])
        title = dataset_title(name, datasets[name])
        for p in tables.write_tables(cells, best, *tables_out[name], title):
            publish(p, "tables")
        fig = plots.metrics_by_method(long, name, figures_out[name])
        publish(fig, "figures")
    cells, best = tables.cross_table(summary, published)
    title = f"{', '.join(datasets)}: mean ± std over seeds (n runs)"
    notes = table_notes(provenance, long)
    notes[1:1] = [f"{name}: {spec['note']}" for name, spec in datasets.items() if spec.get("note")]
    notes[1:1] = _missing_reference(reference_csv, "[published] rows")
    for p in tables.write_tables(cells, best, *paper_out, title, notes):
        publish(p, "tables")
    tracker.log_metrics({"n_records": len(long)})


def dataset_title(name: str, spec: dict) -> str:
    """The title of dataset ``name``'s table (its config ``spec``'s note, where it has one)."""
    note = f"; {spec['note']}" if spec.get("note") else ""
    return f"{name}: mean ± std over seeds (n runs){note}"


def publish(*, sources: list[str], targets: list[str], tracker=tracking.NULL_TRACKER):
    """Copy each of ``sources`` to the matching path of ``targets`` (the rule publish_tables:
    the run's tables and figures into the config's publish_dir), atomically."""
    import shutil

    for src, dst in zip(sources, targets, strict=True):
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        log.info("published %s -> %s", src, dst)


def _missing_reference(reference_csv: str | None, rows: str) -> list[str]:
    """A note line (also logged) for a table whose configured ``reference_csv`` is not there
    (a relative path read from another working directory): the table then lacks the ``rows``
    it would give, and says so instead of dropping them silently; none otherwise."""
    if not reference_csv or Path(reference_csv).is_file():
        return []
    missing = f"reference_csv `{reference_csv}` not found from the working directory: no {rows}."
    log.warning(missing)
    return [missing]


def table_notes(provenance: dict | None, long) -> list[str]:
    """Lines naming what made a table: the command, configs, commit and the jobs' wall time."""
    notes = [
        "INIT = the untrained model right after its initialisation; `init: X` = the labels of "
        "initialisation X itself (no model); [published] = the paper's number.",
        f"Runs: {len(long)} records of {long.seed.nunique()} seed(s).",
    ]
    if "statistic" in long:  # models scored otherwise than by their final labels
        other = long[long.statistic.notna() & (long.statistic != "final labels")]
        for (model, statistic), g in other.groupby(["model", "statistic"]):
            notes.append(
                f"{model} TRAIN = the {statistic} made while training ({', '.join(sorted(set(g.dataset)))})."
            )
    if not provenance:
        return notes
    return notes + [f"{k}: {v}" for k, v in provenance.items()]


def sweep_table(
    *,
    records: list[str],
    dataset: str,
    model: str,
    param: str,
    values: dict,
    params: dict,
    out_md: str,
    out_tex: str,
    out_csv: str,
    out_figure: str,
    provenance: dict | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Table (md/tex/csv) and figure of one sweep (``sweep`` in the config) on one dataset:
    the metrics of ``model`` against the values of ``param``, with the ``provenance`` lines
    (:func:`mixlib.provenance.describe`) under the Markdown table's title.

    ``values`` maps each trained model name (the model and its variants) to its value of
    ``param``; ``params`` are the model's own, stated in the title. Where a model trained on data
    with missing entries the table has a ``missing %`` column and the title says that
    init stage clustered the complete data (only fully observed points' labels seed the model).
    """
    from . import plots, tables

    recs = [dict(r, source=str(p)) for p in records for r in read_json(p)]
    long = tables.long_table(recs)
    summary = tables.sweep_summary(long, values, model)
    fixed = ", ".join(f"{k}={v}" for k, v in params.items() if k != param)
    title = f"{dataset}: {model} against {param}; mean ± std over seeds (n runs)"
    if fixed:
        title += f"; other params: {fixed}"
    if "missing_frac" in summary and (summary["missing_frac"] > 0).any():
        title += (
            "; missing % = pixels the model did not see (erased per image, masks fixed by the "
            "seed); the init stage clustered the complete images, and only the labels of "
            "fully observed images built the initial dictionaries"
        )
    notes = [f"{k}: {v}" for k, v in (provenance or {}).items()]
    for p in tables.write_sweep_tables(summary, param, title, out_md, out_tex, out_csv, notes):
        tracker.log_artifact(p, "tables")
    long = long[long.model.isin(list(values))].copy()
    long["value"] = long.model.map(values).astype(float)
    long["method"] = [tables.method_label(model, i, s) for i, s in zip(long.init, long.stage)]
    fig = plots.metrics_vs_value(long, param, out_figure, title=f"{dataset}: {model}")
    tracker.log_artifact(fig, "figures")
    tracker.log_params({"dataset": dataset, "model": model, "param": param})
    log.info("sweep of %s on %s:\n%s", param, dataset, summary.to_string())


# --- Gaussian-mixture experiments (issue 4): mixlib.em_experiments behind the rules of em.smk


def gmm_exercise(
    *,
    data_path: str,
    dataset: str,
    inits: list[str],
    seeds: list[int],
    params: dict,
    n_samples: int,
    out_curves: str,
    out_final: str,
    out_loglik_figure: str,
    out_samples_figure: str,
    out_summary: str,
    invocation: str | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """GMM-on-images exercise: EM (:class:`~mixlib.models.GaussianMixtureEM`, ``params``: every
    hyperparameter but K, which is the dataset's) from every init and seed on the dataset's
    fitting rows; writes the log-likelihood curves (CSV and figure), the final mean
    log-likelihoods beside the single-Gaussian and naive-GMM references (CSV, and as a Markdown
    summary with the provenance of the ``invocation`` record, read when the summary is written,
    and this job's wall time), and sample grids of the three models beside the best fit's
    component means."""
    import pandas as pd

    from . import em_experiments as em
    from . import plots, tables
    from .provenance import describe

    ds = datalib.load_prepared(data_path)
    if not ds.image_shape:
        raise ValueError(f"gmm_exercise needs an image dataset; {dataset!r} has no image_shape")
    fit = datalib.fit_rows(ds)
    X, y = ds.X[fit].astype(np.float64), ds.y[fit]
    params = {"n_clusters": ds.meta["n_clusters"], **params}
    reg, reg_covar = params["reg"], params["reg_covar"]
    tracker.log_params({"dataset": dataset, "inits": inits, "seeds": seeds, **params})
    t0 = time.perf_counter()
    progress = TrainingMonitor(tracker)  # each fit's progress in the log (and MLflow, live)
    curves, final, models = em.fit_loglik_runs(X, inits, seeds, callback=progress, **params)
    refs = [
        ("single_gaussian", em.fit_single_gaussian(X, reg_covar, reg=reg)),
        ("naive_gmm", em.fit_naive_gmm(X, y, reg_covar, reg=reg)),
    ]
    final.insert(0, "model", "gmm_em")
    ref_rows = [{"model": name, "loglik": m.score(X)} for name, m in refs]
    final = pd.concat([final, pd.DataFrame(ref_rows)], ignore_index=True)
    final.insert(0, "dataset", dataset)
    final = final.astype({"seed": "Int64", "n_iter": "Int64"})  # blank for the references
    for path, df in [(out_curves, curves), (out_final, final)]:
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        tracker.log_artifact(path, "tables")
    best = final[final.model == "gmm_em"].sort_values("loglik").iloc[-1]
    fitted = models[(best["init"], int(best["seed"]))]
    rows = em.sample_rows(
        X, y, fitted, n_samples=n_samples, reg_covar=reg_covar, reg=reg, seed=int(best["seed"])
    )
    figs = [
        plots.plot_loglik_curves(curves, out_loglik_figure),
        plots.image_rows(
            rows, ds.image_shape, out_samples_figure, lo=float(X.min()), hi=float(X.max())
        ),
    ]
    for fig in figs:
        tracker.log_artifact(fig, "figures")
    notes = [
        f"{X.shape[0]} images of {X.shape[1]} pixels, K={params['n_clusters']}; EM: "
        + ", ".join(f"{k}={v}" for k, v in params.items() if k != "n_clusters"),
        *(f"{k}: {v}" for k, v in describe(invocation).items()),
        f"this job: {(time.perf_counter() - t0) / 60:.1f} min",
    ]
    cells, best = em.exercise_table(final)
    title = f"{dataset}: final mean log-likelihood per image (mean ± std over seeds)"
    summary = tables.to_markdown(cells, best, title, notes)
    with atomic_path(out_summary) as tmp:
        tmp.write_text(summary)
    tracker.log_artifact(out_summary, "tables")
    for r in final.itertuples():  # MLflow keys: no "+" (k-means++)
        key = r.model if r.model != "gmm_em" else f"{r.init}_seed{int(r.seed)}"
        tracker.log_metrics({f"loglik_{key}".replace("+", "p"): r.loglik})
    log.info("final mean log-likelihoods:\n%s", final.to_string(index=False))


def gmm25_simulation(
    *,
    seed: int,
    method: str,
    n_iter: int,
    n_inner: int,
    reg_covar: float,
    n_train: int,
    n_test: int,
    n_threads: int,
    out_record: str,
    tracker=tracking.NULL_TRACKER,
):
    """One seed of one method of the BigLearn-EM 25-component simulation
    (:func:`mixlib.em_experiments.run_gmm25_simulation`); writes its record (KL history, final
    and minimum test joint KL) as JSON."""
    from . import em_experiments as em

    kw = dict(n_iter=n_iter, n_inner=n_inner, reg_covar=reg_covar, n_train=n_train, n_test=n_test)
    tracker.log_params({"seed": seed, "method": method, **kw})
    t0 = time.perf_counter()
    progress = TrainingMonitor(tracker)
    rec = em.run_gmm25_simulation(
        seed, method, device="cpu", n_threads=n_threads, callback=progress, **kw
    )
    rec["seconds"] = time.perf_counter() - t0
    rec["run_id"] = tracker.run_id
    rec["job_key"] = tracker.job_key
    write_json(out_record, rec)
    tracker.log_history({"test_kl": rec["kl_history"], "loglik": rec["loglik_history"]})
    tracker.log_metrics({k: rec[k] for k in ("final_kl", "min_kl", "seconds")})
    log.info("%s seed %d: final KL %.4f, min KL %.4f", method, seed, rec["final_kl"], rec["min_kl"])


def gmm25_aggregate(
    *,
    records: list[str],
    out_runs: str,
    out_md: str,
    out_tex: str,
    out_csv: str,
    out_figure: str,
    reference_csv: str | None = None,
    published_as: str | None = "gmm25_simulation",
    provenance: dict | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Per-seed CSV, the table (Markdown, LaTeX, CSV: mean ± std over seeds of the final and
    minimum test KL, the reference code's numbers beside them) and the KL-per-iteration figure."""
    from . import em_experiments as em
    from . import plots, tables

    recs = [read_json(p) for p in records]
    runs = em.simulation_frame(recs)
    with atomic_path(out_runs) as tmp:
        runs.to_csv(tmp, index=False)
    cells, best = em.gmm25_table(runs, em.gmm25_reference(reference_csv, published_as))
    title = (
        "25-component simulation: test joint KL(q || p), mean ± std over seeds; final = last "
        "iterate, min = minimum over iterations (the reference code's statistic)"
    )
    notes = [f"{k}: {v}" for k, v in (provenance or {}).items()]
    notes += _missing_reference(reference_csv, "reference-code rows")
    paths = [out_runs, *tables.write_tables(cells, best, out_md, out_tex, out_csv, title, notes)]
    for p in paths:
        tracker.log_artifact(p, "tables")
    tracker.log_artifact(plots.plot_kl_history(recs, out_figure), "figures")
    for method, g in runs.groupby("method"):
        tracker.log_metrics({f"final_kl_mean_{method}": g.final_kl.mean()})
    log.info("\n%s", tables.to_markdown(cells, best, title))
