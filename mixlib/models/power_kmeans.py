"""Power k-means (Xu & Lange, ICML 2019).

Minimises ``f_s(Θ) = Σ_i M_s(d_i1, …, d_iK)`` with ``d_ij = ‖x_i − θ_j‖²`` and the power mean
``M_s(y) = ((1/K) Σ_j y_j^s)^{1/s}``, annealing ``s → −∞`` (where ``M_s → min``, the k-means
objective). Each majorisation-minimisation step takes the weights
``w_ij ∝ d_ij^{s−1} (Σ_l d_il^s)^{1/s−1}`` (their eq. 5) and moves every centre to the
``w``-weighted mean. Everything is done with log-sum-exp in log space, so ``|s|`` in the
thousands neither overflows nor underflows, and a point sitting on a centre (``d_ij = 0``) gives
no NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from . import register
from .base import ClusterModel, centers_from_labels, check_array_2d, check_init_labels

_TINY = 1e-300


def log_distances(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``log ‖x_i − θ_j‖²`` (N, K), floored at log(1e-300)."""
    d = (X**2).sum(1)[:, None] - 2.0 * X @ C.T + (C**2).sum(1)[None, :]
    return np.log(np.maximum(d, _TINY))


def power_mean_objective(logd: np.ndarray, s: float) -> float:
    """``Σ_i M_s(d_i·)`` computed from log distances."""
    K = logd.shape[1]
    return float(np.exp((logsumexp(s * logd, axis=1) - np.log(K)) / s).sum())


def mm_weights(logd: np.ndarray, s: float) -> np.ndarray:
    """MM weights ``w_ij`` (N, K), each column normalised to sum to 1 over the points."""
    row = logsumexp(s * logd, axis=1, keepdims=True)  # log Σ_l d_il^s   (N, 1)
    logw = (s - 1.0) * logd + (1.0 / s - 1.0) * row
    return np.exp(logw - logsumexp(logw, axis=0, keepdims=True))


@register("power_kmeans")
class PowerKMeans(ClusterModel):
    """Power k-means with annealing ``s ← eta·s`` every ``anneal_every`` iterations.

    Parameters
    ----------
    n_clusters : int
    s0 : float < 0, initial power (default −1, as the authors' code)
    eta : float > 1, annealing factor (1.04)
    anneal_every : int, iterations between annealing steps (2)
    max_iter : int; tol : float, stop when the largest centre move is below ``tol`` times the
        data's scale
    random_state : int or None (k-means++ seeding when no initial assignment is given)
    """

    def __init__(
        self,
        n_clusters=10,
        s0=-1.0,
        eta=1.04,
        anneal_every=2,
        max_iter=1000,
        tol=1e-6,
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.s0 = s0
        self.eta = eta
        self.anneal_every = anneal_every
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _validate(self):
        if not self.s0 < 0:
            raise ValueError(f"s0 must be negative, got {self.s0}")
        if not self.eta >= 1:
            raise ValueError(f"eta must be >= 1, got {self.eta}")
        for name in ("anneal_every", "max_iter", "n_clusters"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")

    def fit(self, X, y=None, init_labels=None, init_centers=None):
        self._validate()
        X = check_array_2d(X, min_samples=self.n_clusters).astype(np.float64)
        rng = np.random.default_rng(self.random_state)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        if init_centers is not None:
            C = np.array(init_centers, dtype=np.float64)
        elif lab is not None:
            C = centers_from_labels(X, lab, self.n_clusters, rng)
        else:
            C = _kmeanspp(X, self.n_clusters, rng)
        self.init_labels_ = log_distances(X, C).argmin(1)
        scale = np.sqrt(X.var(0).sum()) or 1.0
        s = float(self.s0)
        hist = {"objective": [], "s": [], "kmeans_objective": []}
        for it in range(1, self.max_iter + 1):
            logd = log_distances(X, C)
            W = mm_weights(logd, s)  # (N, K)
            C_new = W.T @ X
            hist["objective"].append(power_mean_objective(logd, s))
            hist["s"].append(s)
            hist["kmeans_objective"].append(float(np.exp(logd.min(1)).sum()))
            move = np.sqrt(((C_new - C) ** 2).sum(1)).max()
            C = C_new
            if it % self.anneal_every == 0:
                s *= self.eta
            if move < self.tol * scale:
                break
        self.cluster_centers_ = C
        self.n_iter_ = it
        self.s_ = s
        self.history_ = hist
        logd = log_distances(X, C)
        self.labels_ = logd.argmin(1).astype(np.int64)
        self.inertia_ = float(np.exp(logd.min(1)).sum())
        return self

    def predict(self, X):
        return log_distances(np.asarray(X, dtype=np.float64), self.cluster_centers_).argmin(1)

    def n_parameters(self) -> int:
        return int(self.cluster_centers_.size)


def _kmeanspp(X, k, rng):
    C = [X[rng.integers(X.shape[0])]]
    d = ((X - C[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d / d.sum() if d.sum() > 0 else None
        C.append(X[rng.choice(X.shape[0], p=p)])
        d = np.minimum(d, ((X - C[-1]) ** 2).sum(1))
    return np.array(C)
