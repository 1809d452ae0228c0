"""The contract every clustering model in :mod:`mixlib.models` follows.

Models are scikit-learn estimators (``fit``, ``predict``, ``fit_predict``, ``get_params``):
hyperparameters are stored untouched in ``__init__`` and validated in ``fit``; fitted state
ends in ``_``; randomness enters only through ``random_state`` (an int).

Parameter constraints are declared on each class, scikit-learn style, as
``_parameter_constraints`` (the literal language of :mod:`mixlib.models.params`) and checked by
its one function :func:`~mixlib.models.params.validate_params`, from ``fit``
(:meth:`ClusterModel._validate_params`) and, before any job starts, from the config's plan.

Extra, optional pieces the pipeline uses when a model has them:

``fit(X, y=None, init_labels=None, callback=None)``
    ``init_labels`` is an int array of shape (N,) from the pipeline's initialisation stage:
    a cluster id in ``[0, n_clusters)`` for the points the initialiser labelled, ``-1`` for the
    points it did not see (initialisers may work on a random subset). A model that can start
    from an assignment uses the labelled points; ``None`` means "use your own initialisation".
    ``callback`` is called with a :class:`Progress` after every epoch or iteration of an
    iterative model: the pipeline reports progress and computes metrics through it (models
    never see the true labels).
``fit(..., checkpoint=None)``
    models with long epoch loops (N2D, DEC and IDEC) take a :class:`Checkpoint`: their loop's
    state is saved to it as it goes, and a fit stopped part-way, called again with it, resumes
    where it was saved and ends as the uninterrupted fit (the pipeline's jobs give theirs).
``init_labels_``
    (N,) labels of the untrained model right after initialisation: the paper's INIT column.
``history_``
    ``dict[str, list[float]]`` of per-epoch / per-iteration curves, logged to MLflow as steps.
``n_parameters()``
    number of learned parameters (the paper's "params" row).
``device`` / ``dtype``
    models that use torch take ``device="auto"`` (CUDA when present) as a parameter, never a
    global, and get device, dtype and seed from :class:`TorchModel`.

Figures of fitted models are drawn by :mod:`mixlib.plots`, never here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from .params import validate_params


@dataclass
class Progress:
    """What an iterative model reports to its ``callback`` after each epoch or iteration.

    ``step`` counts from 1 to ``total``; ``metrics`` are the objective values of the step (loss,
    log-likelihood, ...); ``labels()`` computes the current labels of the rows being fitted and
    ``predict(X)`` of other rows (either may cost a pass over the data: call them only when
    needed); ``state()`` returns the model's current parameters where it offers them."""

    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)
    labels: Callable[[], np.ndarray] | None = None
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    state: Callable[[], object] | None = None


class ClusterModel(ClusterMixin, BaseEstimator):
    """Base class: parameter validation from ``_parameter_constraints``; ``fit_predict``
    returns ``fit(X, ...).labels_`` (the labels of the last fit; a model whose ``predict``
    could differ from them says so)."""

    _parameter_constraints: dict = {}

    def _validate_params(self) -> None:
        validate_params(
            self.get_params(deep=False), self._parameter_constraints, type(self).__name__
        )

    def fit_predict(self, X, y=None, **fit_kwargs):
        return self.fit(X, y, **fit_kwargs).labels_

    def n_parameters(self) -> int:  # pragma: no cover - every model overrides
        raise NotImplementedError


class TorchModel(ClusterModel):
    """Device, dtype and seed of the torch models, from their ``device``, ``dtype`` and
    ``random_state`` parameters (``"auto"``: CUDA when present)."""

    def _torch_device(self):
        from ..utils import resolve_device

        return resolve_device(str(self.device))

    def _torch_dtype(self):
        import torch

        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]

    def _seed(self) -> int:
        from ..utils import check_random_state_int

        return check_random_state_int(self.random_state)


@contextmanager
def subnormals_flushed(enabled: bool = True):
    """Subnormal floats flushed to zero on the CPU inside the block (``torch.set_flush_denormal``,
    the FTZ/DAZ bits), restored to the default (off) after it; nothing where the CPU lacks them.
    Arithmetic on subnormals is ~100x slower on x86; flushing changes values below ~1e-38
    (float32) only.

    The bits live in each thread's MXCSR register, and ``torch.set_flush_denormal`` sets the
    calling thread's only: torch's OpenMP workers, created earlier by any parallel operation,
    kept computing on subnormals (a 2-thread N2D epoch on 70k MNIST took 10 s where one thread's
    share flushed gives 6). The thread's floating-point environment is therefore copied to the
    OpenMP team, on entry and on exit (:func:`_share_fp_env`)."""
    import torch

    on = bool(enabled) and torch.set_flush_denormal(True)
    if on:
        _share_fp_env(torch.get_num_threads())
    try:
        yield
    finally:
        if on:
            torch.set_flush_denormal(False)
            _share_fp_env(torch.get_num_threads())


def _share_fp_env(n_threads: int) -> bool:
    """Copy the calling thread's floating-point environment (``fegetenv``: x87 control word and
    MXCSR, where FTZ/DAZ live) to the threads of an OpenMP team of ``n_threads``: one parallel
    region of the OpenMP runtime torch has loaded (``GOMP_parallel``, libgomp's entry point,
    also exported by LLVM's and Intel's runtimes), every thread calling ``fesetenv`` on it. Pool
    threads persist between regions, so torch's later parallel work runs on threads set this
    way; threads created later inherit the environment of the thread that creates them.
    Returns False, changing nothing, where no such runtime is loaded (torch's native thread
    pool, a single thread)."""
    import ctypes

    fns = _omp_fenv_functions() if n_threads >= 2 else None
    if fns is None:
        return False
    parallel, fegetenv, fesetenv = fns
    env = ctypes.create_string_buffer(256)  # fenv_t is 32 bytes on x86-64 glibc
    if fegetenv(env) != 0:
        return False
    # fesetenv(const fenv_t *) as the region's void (*)(void *): the same calling convention
    parallel(fesetenv, env, int(n_threads), 0)
    return True


@functools.cache
def _omp_fenv_functions():
    """``(GOMP_parallel, fegetenv, fesetenv address)`` of the OpenMP runtime already in the
    process and of libm, looked up once (``find_library`` runs a subprocess); None where either
    is missing or the platform has no ``RTLD_NOLOAD`` (Windows)."""
    import ctypes
    import ctypes.util
    import os

    noload = getattr(os, "RTLD_NOLOAD", None)  # POSIX only
    if noload is None:
        return None
    for name in ("libgomp.so.1", "libiomp5.so", "libomp.so"):
        try:  # RTLD_NOLOAD: only a runtime already in the process (torch's)
            parallel = ctypes.CDLL(name, mode=noload | os.RTLD_LAZY).GOMP_parallel
            break
        except (OSError, AttributeError):
            continue
    else:
        return None
    libm_name = ctypes.util.find_library("m")
    if libm_name is None:
        return None
    libm = ctypes.CDLL(libm_name)
    parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None
    return parallel, libm.fegetenv, ctypes.cast(libm.fesetenv, ctypes.c_void_p)


class Checkpoint:
    """A training loop's state saved to ``path`` at most every ``every_s`` seconds (and when
    :meth:`save` is forced), so that a fit stopped part-way (a job killed at a cluster's time
    limit, a machine shut down, Ctrl-C) resumes from its last save when it is called again, and
    ends as the uninterrupted fit would: the saved state is everything the loop reads (the
    module's and the optimiser's state, the random generator's state, the epochs done and the
    curves so far), so on the same device and thread count the resumed fit's numbers are the
    uninterrupted one's, bit for bit.

    ``key`` (a string naming the model, its hyperparameters, data and seed; see
    :func:`checkpoint_key`) is saved beside the state: a file saved under another key (other
    hyperparameters, other data) or unreadable (a machine that died mid-write cannot leave one:
    writes are atomic) is ignored with a warning, and replaced at the next save. The models that
    take one: N2D (``fit``), DEC and IDEC (``pretrain``), DEC, IDEC and DCN (``fit``: the
    pre-training when it runs one, and the clustering phase), K-DAE and DAMIC (``fit``: every
    stage).

    Each save also records the seconds of work it holds (this object's lifetime so far plus
    the earlier attempts' the loaded state held), so that a resumed job can state its whole
    cost: ``resumed_seconds`` is the earlier attempts' (0.0 when nothing was resumed)."""

    def __init__(self, path, every_s: float = 300.0):
        import time
        from pathlib import Path

        self.path, self.every_s = Path(path), float(every_s)
        self._t0 = self._last = time.monotonic()
        self.resumed_seconds = 0.0

    def load(self, key: str, warn: bool = True) -> dict | None:
        """The state saved under ``key``, or None (no file, another key, unreadable; logged
        unless ``warn`` is False: a fit that first looks for a later phase's state)."""
        import logging

        import torch

        if not self.path.exists():
            return None
        log = logging.getLogger(__name__)
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is ignored, with its reason
            if warn:
                log.warning("checkpoint %s is unreadable (%s): starting afresh", self.path, e)
            return None
        if not isinstance(blob, dict) or blob.get("key") != key:
            if warn:
                log.warning(
                    "checkpoint %s is of another model, data or seed: starting afresh", self.path
                )
            return None
        self.resumed_seconds = float(blob.get("seconds", 0.0))
        return blob["state"]

    def save(self, key: str, state: Callable[[], dict], *, force: bool = False) -> bool:
        """Write ``{"key": key, "state": state(), "seconds": ...}`` if ``every_s`` seconds have passed since the
        last write (or since this object was made), or ``force``; returns whether it wrote."""
        import time

        import torch

        from ..utils import atomic_path

        if not force and time.monotonic() - self._last < self.every_s:
            return False
        seconds = self.resumed_seconds + time.monotonic() - self._t0
        with atomic_path(self.path) as tmp:
            torch.save({"key": key, "state": state(), "seconds": seconds}, tmp)
        self._last = time.monotonic()
        return True

    def remove(self) -> None:
        """Delete the file (the fit it served is finished and its outputs written)."""
        self.path.unlink(missing_ok=True)


def checkpoint_key(model: str, params: dict, seed: int, X) -> str:
    """The :class:`Checkpoint` key of a fit: the model's name, the ``params`` its state depends
    on, the seed and a fingerprint of the data (shape, dtype and bytes)."""
    import json

    from . import data_fingerprint

    blob = {"model": model, "params": params, "seed": int(seed), "data": data_fingerprint(X)}
    return json.dumps(blob, sort_keys=True, default=str)


def save_loop(checkpoint, key: str, epoch: int, n_epochs: int, module, opt, gen, history) -> None:
    """After ``epoch`` of an epoch loop's ``n_epochs``: save its state to ``checkpoint`` (if any)
    when a save is due, and always after the last epoch (a fit stopped after the loop, in what
    follows it, then skips the loop). :func:`resume_loop` reads it back."""
    if checkpoint is not None:
        checkpoint.save(
            key,
            lambda: _loop_state(epoch, module, opt, gen, history),
            force=epoch == n_epochs,
        )


def _loop_state(epoch: int, module, opt, gen, history: dict) -> dict:
    """What :class:`Checkpoint` saves of an epoch loop after ``epoch`` epochs: the module's and
    optimiser's state, the CPU generator's state and the per-epoch curves (copies, on the CPU)."""
    return {
        "epoch": int(epoch),
        "module": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
    }


def resume_loop(checkpoint, key: str, module, opt, gen, history: dict) -> int:
    """Load the state ``checkpoint`` holds under ``key`` into ``module``, ``opt``, ``gen`` and
    ``history`` (in place); return the epochs it had done (0: none saved, or no checkpoint)."""
    import logging

    state = None if checkpoint is None else checkpoint.load(key)
    if state is None:
        return 0
    module.load_state_dict(state["module"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    for k in history:
        history[k] = list(state["history"].get(k, []))
    logging.getLogger(__name__).info(
        "resumed from %s after %d epochs", checkpoint.path, state["epoch"]
    )
    return int(state["epoch"])


def adam(params, **kw):
    """``torch.optim.Adam`` over ``params`` (tensors or groups; ``kw``: lr, eps, ...), fused (one
    kernel per tensor for the whole update) where torch has it for the parameters' device
    (CPU since torch 2.4) and dtype, else foreach. Fused on one CPU core: 4.9 ms a step for the
    3.3M parameters of the 784-500-500-2000-10 auto-encoder against 18 (foreach); an N2D
    pre-training step of batch 256 on two cores 21 ms against 28. Elementwise: no dependence
    on the thread count."""
    import torch

    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4) and all(
        t.dtype in (torch.float32, torch.float64) and t.device.type in ("cpu", "cuda")
        for t in tensors
    )
    return torch.optim.Adam(groups, fused=fused or None, foreach=not fused or None, **kw)


def call(callback, progress: Progress) -> None:
    """Call ``callback`` with ``progress`` if there is one."""
    if callback is not None:
        callback(progress)


def check_init_labels(init_labels, n_samples: int, n_clusters: int) -> np.ndarray | None:
    """Validate an initial assignment (see module docstring); return it as int64 or None."""
    if init_labels is None:
        return None
    lab = np.asarray(init_labels)
    if lab.shape != (n_samples,):
        raise ValueError(f"init_labels must have shape ({n_samples},), got {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"init_labels must be integers, got dtype {lab.dtype}")
    if lab.min() < -1 or lab.max() >= n_clusters:
        raise ValueError(
            f"init_labels must lie in [-1, {n_clusters}), got [{lab.min()}, {lab.max()}]"
        )
    if not (lab >= 0).any():
        raise ValueError("init_labels labels no point (all -1)")
    return lab.astype(np.int64)


def check_array_2d(X, *, min_samples: int = 1, name: str = "X") -> np.ndarray:
    """Validate a data matrix: 2-D, finite, at least ``min_samples`` rows."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] < min_samples:
        raise ValueError(f"{name} has {X.shape[0]} samples, fewer than n_clusters={min_samples}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return X


def centers_from_labels(X: np.ndarray, labels: np.ndarray, n_clusters: int, rng) -> np.ndarray:
    """Cluster means of the labelled points; an empty cluster gets a random labelled point."""
    C = np.empty((n_clusters, X.shape[1]), dtype=np.float64)
    labelled = np.flatnonzero(labels >= 0)
    for k in range(n_clusters):
        members = labels == k
        C[k] = X[members].mean(axis=0) if members.any() else X[rng.choice(labelled)]
    return C
