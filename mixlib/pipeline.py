"""The stage functions behind the workflow's rules (one per rule), and the job wrapper.

Each stage reads its inputs, calls the maths in :mod:`mixlib`, writes its declared outputs
atomically and logs params, metrics and artifacts through a :class:`~mixlib.tracking.Tracker`.
They take plain arguments, so they run (and are tested) without Snakemake; ``run_job`` adapts a
Snakemake ``snakemake`` script object (duck-typed: this module never imports snakemake).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

from . import data as datalib
from . import init as initlib
from . import metrics as metriclib
from . import plots, tables, tracking
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


def run_job(smk, stage, *, torch_threads: bool = False, **kwargs):
    """Run ``stage(tracker=..., **kwargs)`` as the job ``smk`` (a Snakemake script object):
    output to its log file, one MLflow run tagged with its rule and wildcards, BLAS (and, with
    ``torch_threads``, torch) limited to the job's ``threads`` so parallel jobs don't oversubscribe."""
    from threadpoolctl import threadpool_limits

    threads = max(1, int(smk.threads))
    if torch_threads:
        import torch

        torch.set_num_threads(threads)
    cfg = smk.config.get("tracking", {})
    wildcards = {k: v for k, v in smk.wildcards.items()}
    log_path = smk.log[0] if len(smk.log) else None
    with _logging_to(log_path), threadpool_limits(limits=threads):
        with tracking.job_run(
            enabled=cfg.get("enabled", True),
            uri=cfg.get("uri"),
            experiment=cfg.get("experiment", "mixlib"),
            rule=smk.rule,
            wildcards=wildcards,
        ) as tracker:
            tracker.log_params({"wildcards": wildcards, "threads": threads})
            t0 = time.perf_counter()
            out = stage(tracker=tracker, **kwargs)
            tracker.log_metrics({"job_seconds": time.perf_counter() - t0})
            log.info("done in %.1f s", time.perf_counter() - t0)
            return out


# --- stages ---------------------------------------------------------------------------------


def prepare_dataset(
    *, name: str, spec: dict, out_data: str, out_meta: str, tracker=tracking.NULL_TRACKER
):
    """Load, validate, preprocess; write the prepared ``.npz`` and its metadata JSON."""
    ds = datalib.prepare(name, spec)
    datalib.save_prepared(ds, out_data)
    write_json(out_meta, ds.meta)
    tracker.log_params({"dataset": ds.meta})
    tracker.log_metrics({"n": ds.meta["n"], "d": ds.meta["d"], "n_classes": ds.meta["n_classes"]})
    tracker.log_artifact(out_meta)
    log.info(
        "%s: n=%d d=%d classes=%d checksum=%s",
        name,
        ds.meta["n"],
        ds.meta["d"],
        ds.meta["n_classes"],
        ds.meta["checksum"][:16],
    )


def initialize(
    *,
    data_path: str,
    dataset: str,
    init: str,
    spec: dict,
    seed: int,
    out_labels: str,
    out_record: str,
    tracker=tracking.NULL_TRACKER,
):
    """Run an initialisation method; write its labels (-1 = unseen) and its metrics record."""
    ds = datalib.load_prepared(data_path)
    spec = dict(spec)
    method = spec.pop("method")
    t0 = time.perf_counter()
    labels, info = initlib.initialize(ds.X, ds.meta["n_clusters"], method, seed=seed, **spec)
    seconds = time.perf_counter() - t0
    save_npy(out_labels, labels)
    seen = labels >= 0
    m = metriclib.cluster_metrics(ds.y[seen], labels[seen])
    record = dict(
        dataset=dataset,
        model="init",
        init=init,
        stage="init",
        seed=seed,
        params=np.nan,
        n=int(seen.sum()),
        seconds=seconds,
        run_id=tracker.run_id,
        method=method,
        **m,
    )
    write_json(out_record, [record])
    tracker.log_params({"method": method, "seed": seed, **spec})
    tracker.log_metrics({**m, "seconds": seconds, "n_labelled": info["n_labelled"]})
    tracker.log_artifact(out_labels)
    log.info("init %s on %s seed %d: %s", init, dataset, seed, m)


def train_model(
    *,
    data_path: str,
    init_path: str | None,
    kind: str,
    params: dict,
    seed: int,
    out_labels: str,
    out_info: str,
    artifact_dir: str | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Fit model ``kind`` (from the registry) from an initial assignment; write its labels
    (``labels``, and ``init_labels`` for the untrained model where it has them) and an info JSON
    (parameter count, curves, timings)."""
    ds = datalib.load_prepared(data_path)
    init_labels = np.load(init_path) if init_path else None
    model = build_model(kind, n_clusters=ds.meta["n_clusters"], random_state=seed, **params)
    tracker.log_params({"kind": kind, "seed": seed, **model.get_params()})
    t0 = time.perf_counter()
    fit_kw = {"init_labels": init_labels} if init_labels is not None else {}
    # y is passed only so that models can record per-epoch metrics in their history; no model
    # fits on it (the estimators' fit(X, y=None) contract)
    model.fit(ds.X, ds.y, **fit_kw)
    seconds = time.perf_counter() - t0
    arrays = {"labels": np.asarray(model.labels_, dtype=np.int64)}
    if getattr(model, "init_labels_", None) is not None:
        arrays["init_labels"] = np.asarray(model.init_labels_, dtype=np.int64)
    with atomic_path(out_labels) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    history = {k: [float(v) for v in vals] for k, vals in getattr(model, "history_", {}).items()}
    info = {
        "kind": kind,
        "seed": seed,
        "params": model.get_params(),
        "n_parameters": int(model.n_parameters()),
        "fit_seconds": seconds,
        "history": history,
        "run_id": tracker.run_id,
    }
    write_json(out_info, info)
    tracker.log_metrics({"fit_seconds": seconds, "n_parameters": info["n_parameters"]})
    tracker.log_history(history)
    tracker.log_artifact(out_labels)
    if artifact_dir is not None:
        out = Path(artifact_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [plots.curves(history, out / "curves.png", title=f"{kind} seed {seed}")]
        if hasattr(model, "save_artifacts"):
            paths += model.save_artifacts(ds.X, out, image_shape=ds.image_shape)
        for p in paths:
            if p is not None:
                tracker.log_artifact(p, "figures")
    log.info("%s seed %d fitted in %.1f s", kind, seed, seconds)


def evaluate(
    *,
    data_path: str,
    labels_path: str,
    info_path: str,
    dataset: str,
    model: str,
    init: str,
    seed: int,
    out_record: str,
    tracker=tracking.NULL_TRACKER,
):
    """Score a trained model's labels (TRAIN) and, where present, its untrained labels (INIT)."""
    ds = datalib.load_prepared(data_path)
    info = read_json(info_path)
    records = []
    with np.load(labels_path) as f:
        stages = [("train", f["labels"])] + (
            [("init", f["init_labels"])] if "init_labels" in f.files else []
        )
        for stage, lab in stages:
            m = metriclib.cluster_metrics(ds.y, lab)
            records.append(
                dict(
                    dataset=dataset,
                    model=model,
                    init=init,
                    stage=stage,
                    seed=seed,
                    params=info["n_parameters"],
                    n=int(lab.size),
                    kind=info["kind"],
                    seconds=info["fit_seconds"],
                    run_id=info["run_id"],
                    **m,
                )
            )
            tracker.log_metrics({f"{stage}_{k}": v for k, v in m.items()})
    write_json(out_record, records)
    tracker.log_params(
        {
            "dataset": dataset,
            "model": model,
            "init": init,
            "seed": seed,
            "train_run_id": info["run_id"],
        }
    )
    log.info("%s", records)


def aggregate(
    *,
    records: list[str],
    datasets: dict,
    out_long: str,
    out_summary: str,
    table_dir: str,
    figure_dir: str,
    reference_csv: str | None = None,
    tracker=tracking.NULL_TRACKER,
):
    """Concatenate every record into the long CSV, then a paper-style table (md/tex/csv) and a
    figure per dataset."""
    recs = [dict(r, source=str(p)) for p in records for r in read_json(p)]
    long = tables.long_table(recs)
    summary = tables.summarise(long)
    for path, df in [(out_long, long), (out_summary, summary)]:
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        tracker.log_artifact(path, "tables")
    for name in datasets:
        pub = tables.published_for(reference_csv, datasets[name].get("published_as", name))
        cells, best = tables.paper_table(summary, name, pub)
        title = f"{name}: mean ± std over seeds (n runs)"
        for p in tables.write_tables(cells, best, Path(table_dir) / name, title):
            tracker.log_artifact(p, "tables")
        fig = plots.metrics_by_method(long, name, Path(figure_dir) / f"{name}_metrics.png")
        tracker.log_artifact(fig, "figures")
    tracker.log_metrics({"n_records": len(long)})
