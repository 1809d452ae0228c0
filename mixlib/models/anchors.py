"""The anchors of every table: k-means (Lloyd) and scikit-learn's ``GaussianMixture``.

Both can start from the pipeline's initial assignment (centres / responsibilities computed from
the labelled points) or from their own scikit-learn initialisation.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans as _SkKMeans
from sklearn.mixture import GaussianMixture as _SkGMM

from . import register
from .base import (
    ClusterModel,
    Progress,
    call,
    centers_from_labels,
    check_array_2d,
    check_init_labels,
)


@register("kmeans")
class KMeans(ClusterModel):
    """Lloyd's k-means (scikit-learn), optionally started from an initial assignment.

    Parameters
    ----------
    n_clusters : int
    n_init : int
        Restarts when the model initialises itself (k-means++); 1 when started from labels.
    max_iter, tol : Lloyd's stopping rule.
    random_state : int or None
    """

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "n_init": "int >= 1",
        "max_iter": "int >= 1",
        "tol": "real >= 0",
        "random_state": ["int >= 0", None],
    }

    def __init__(self, n_clusters=10, n_init=10, max_iter=300, tol=1e-4, random_state=None):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X, y=None, init_labels=None, callback=None):
        """``callback`` (a :class:`~mixlib.models.base.Progress`) is called once, at the end:
        scikit-learn's Lloyd loop reports nothing while it runs."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        rng = np.random.default_rng(self.random_state)
        if lab is not None:
            init, n_init = centers_from_labels(X, lab, self.n_clusters, rng), 1
            self.init_labels_ = _nearest(X, init)
        else:
            init, n_init = "k-means++", self.n_init
        self.km_ = _SkKMeans(
            n_clusters=self.n_clusters,
            init=init,
            n_init=n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        ).fit(X)
        self.cluster_centers_ = self.km_.cluster_centers_
        self.labels_ = self.km_.labels_.astype(np.int64)
        self.inertia_ = float(self.km_.inertia_)
        self.n_iter_ = int(self.km_.n_iter_)
        call(
            callback, Progress(1, 1, {"inertia": self.inertia_}, lambda: self.labels_, self.predict)
        )
        return self

    def predict(self, X):
        return self.km_.predict(np.asarray(X)).astype(np.int64)

    def n_parameters(self) -> int:
        return int(self.cluster_centers_.size)


@register("sklearn_gmm")
class SklearnGMM(ClusterModel):
    """scikit-learn's ``GaussianMixture`` (EM), started from an assignment or from k-means.

    Parameters are those of :class:`sklearn.mixture.GaussianMixture` that matter here.
    """

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "covariance_type": {"full", "tied", "diag", "spherical"},
        "reg_covar": "real >= 0",
        "max_iter": "int >= 1",
        "tol": "real >= 0",
        "n_init": "int >= 1",
        "random_state": ["int >= 0", None],
    }

    def __init__(
        self,
        n_clusters=10,
        covariance_type="diag",
        reg_covar=1e-3,
        max_iter=100,
        tol=1e-3,
        n_init=1,
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X, y=None, init_labels=None, callback=None):
        """``callback`` is called once, at the end, as for :class:`KMeans`."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters).astype(np.float64)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        kw = dict(
            n_components=self.n_clusters,
            covariance_type=self.covariance_type,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            tol=self.tol,
            n_init=self.n_init,
            random_state=self.random_state,
        )
        if lab is not None:
            rng = np.random.default_rng(self.random_state)
            means = centers_from_labels(X, lab, self.n_clusters, rng)
            counts = np.bincount(lab[lab >= 0], minlength=self.n_clusters) + 1.0
            kw.update(means_init=means, weights_init=counts / counts.sum(), n_init=1)
            self.init_labels_ = _nearest(X, means)
        self.gmm_ = _SkGMM(**kw).fit(X)
        self.labels_ = self.gmm_.predict(X).astype(np.int64)
        self.converged_ = bool(self.gmm_.converged_)
        self.n_iter_ = int(self.gmm_.n_iter_)
        self.lower_bound_ = float(self.gmm_.lower_bound_)
        call(
            callback,
            Progress(1, 1, {"lower_bound": self.lower_bound_}, lambda: self.labels_, self.predict),
        )
        return self

    def predict(self, X):
        return self.gmm_.predict(np.asarray(X, dtype=np.float64)).astype(np.int64)

    def n_parameters(self) -> int:
        return int(self.gmm_._n_parameters())


def _nearest(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d = (X**2).sum(1)[:, None] - 2 * X @ centers.T + (centers**2).sum(1)[None, :]
    return d.argmin(1).astype(np.int64)
