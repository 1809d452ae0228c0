"""Gaussian-mixture EM in torch: the shared EM core and :class:`GaussianMixtureEM` (``gmm_em``).

The maths (Dempster, Laird & Rubin 1977; Bishop, PRML section 9.2.2, eqs. 9.23-9.27) lives in
small pure functions on torch tensors, unit-tested one by one and reused by
:mod:`mixlib.models.biglearn`:

- :func:`compute_cholesky`            lower Cholesky factors of the covariances
- :func:`log_gaussian_prob`           log N(x | mu_k, Sigma_k) through triangular solves
                                      (no explicit inverse, no determinant)
- :func:`estimate_log_prob_resp`      E-step: log p(x) and log responsibilities
- :func:`estimate_gaussian_parameters` M-step: N_k, means, covariances (unregularised)
- :func:`regularize_covariances`      ``"ridge"`` (eps added to the diagonal, scikit-learn's
                                      ``reg_covar``) or ``"floor"`` (eigenvalues clipped at eps,
                                      as in the BigLearn-EM reference code)

:class:`GaussianMixtureEM` follows scikit-learn's ``mixture/_base.py``: restarts, convergence on
the change of the mean log-likelihood, a final E-step so ``fit_predict == fit().predict``.  With
``reg="ridge"`` it reproduces ``sklearn.mixture.GaussianMixture`` iteration by iteration from the
same initial parameters.

Speed: the two O(N K D^2) kernels (the triangular solves of the E-step, the weighted scatter
matrices of the M-step) run one component at a time; on CPU tensors they go through
numpy/scipy's BLAS on zero-copy views (``W.T @ W`` becomes a symmetric rank-k update, and
torch's MKL is slow on AMD CPUs), on CUDA they stay in torch.  Small problems
(N K D <= 2^20, e.g. 2-D simulations) are batched over components instead.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from ..utils import resolve_device
from . import register
from .base import Progress, TorchModel, call, check_array_2d, check_init_labels

COVARIANCE_TYPES = ("full", "diag")
REGULARISERS = ("ridge", "floor")
INITS = ("random", "kmeans", "k-means++")
_LOG_2PI = math.log(2.0 * math.pi)
_BATCH_ELEMENTS = 2**20  # below this many N*K*D elements, batch over components (small D)


# --- pure functions (torch) -----------------------------------------------------------------


def floor_eigenvalues(covariances: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip the eigenvalues of symmetric matrices at ``eps``: V diag(max(l, eps)) V^T.

    ``covariances`` (K, D, D).  Matrices whose eigenvalues already exceed ``eps`` (checked with a
    cheap Cholesky of ``Sigma - eps I``) are returned unchanged, so the eigendecomposition is only
    paid where it changes something.
    """
    K, D, _ = covariances.shape
    out = 0.5 * (covariances + covariances.mT)
    if D == 0:
        return out
    eye = torch.eye(D, dtype=out.dtype, device=out.device)
    _, info = torch.linalg.cholesky_ex(out - eps * eye)
    bad = torch.nonzero(info != 0).flatten()
    if bad.numel():
        evals, evecs = torch.linalg.eigh(out[bad])
        fixed = (evecs * evals.clamp_min(eps).unsqueeze(-2)) @ evecs.mT
        out = out.clone()
        out[bad] = 0.5 * (fixed + fixed.mT)
    return out


def regularize_covariances(
    covariances: torch.Tensor, reg: str, reg_covar: float, covariance_type: str
) -> torch.Tensor:
    """Regularise covariances: ``"ridge"`` adds ``reg_covar`` to the diagonal (scikit-learn),
    ``"floor"`` clips eigenvalues (variances for ``diag``) at ``reg_covar`` (BigLearn-EM code).

    ``covariances`` (K, D, D) for ``full``, (K, D) for ``diag``.
    """
    if covariance_type == "diag":
        return covariances + reg_covar if reg == "ridge" else covariances.clamp_min(reg_covar)
    if reg == "ridge":
        D = covariances.shape[-1]
        return covariances + reg_covar * torch.eye(
            D, dtype=covariances.dtype, device=covariances.device
        )
    return floor_eigenvalues(covariances, reg_covar)


def compute_cholesky(covariances: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Lower Cholesky factors (K, D, D) for ``full``; standard deviations (K, D) for ``diag``.

    Raises a ``ValueError`` naming ``reg_covar`` when a covariance is not positive definite.
    """
    if covariance_type == "diag":
        if bool((covariances <= 0).any()):
            raise ValueError(_ILL_DEFINED)
        return covariances.sqrt()
    chol, info = torch.linalg.cholesky_ex(covariances)
    if bool((info != 0).any()):
        raise ValueError(_ILL_DEFINED)
    return chol


_ILL_DEFINED = (
    "Fitting the mixture model failed because some components have ill-defined (singular) "
    "covariances. Increase reg_covar, use reg='floor', or scale the input data."
)


def log_gaussian_prob(
    X: torch.Tensor, means: torch.Tensor, chol: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """log N(x_n | mu_k, Sigma_k), shape (N, K).

    X (N, D); means (K, D); chol (K, D, D) lower factors L_k (Sigma_k = L_k L_k^T) or (K, D)
    standard deviations.  The Mahalanobis term is ||L_k^{-1}(x - mu_k)||^2 by a triangular solve,
    and log det Sigma_k = 2 sum log diag L_k.
    """
    N, D = X.shape
    K = means.shape[0]
    if covariance_type == "diag":
        prec = 1.0 / (chol * chol)  # (K, D)
        maha = (
            (X * X) @ prec.T - 2.0 * X @ (means * prec).T + (means * means * prec).sum(1)
        )  # (N, K)
        log_det = torch.log(chol).sum(1)  # (K,)
    elif K * N * D <= _BATCH_ELEMENTS:  # small problems: one batched solve
        # rows y_n^T = (x_n - mu_k)^T L_k^{-T}  <=>  y_n = L_k^{-1} (x_n - mu_k)
        y = torch.linalg.solve_triangular(
            chol.mT, X[None] - means[:, None], upper=True, left=False
        )  # (K, N, D)
        maha = (y * y).sum(2).T
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(1)  # (K,)
    else:
        maha = torch.empty((N, K), dtype=X.dtype, device=X.device)
        for k in range(K):  # one component at a time: memory O(N D), not O(N K D)
            maha[:, k] = _mahalanobis(X, means[k], chol[k])
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(1)  # (K,)
    return -0.5 * (D * _LOG_2PI + maha) - log_det


@contextmanager
def _torch_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` inside (unchanged for None). On the CPU the
    O(K N D^2) kernels run in numpy's BLAS with its own threads; torch's ops around them are
    O(K N D) at most and its OpenMP pool, spinning beside BLAS's threads, costs more than it gains
    (benchmarks/bench_em.py at 2 threads: 452 ms per iteration with both pools, 388 with
    torch's at 1)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _numpy_blas(X: torch.Tensor) -> bool:
    """Whether the O(N D^2) kernels run through numpy / scipy (CPU tensors) or torch (CUDA)."""
    return X.device.type == "cpu"


def _mahalanobis(X: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """||L^{-1}(x_n - mu)||^2 for every row of X (N, D); chol (D, D) lower.

    On the CPU the triangular solve goes through scipy/numpy's BLAS (zero-copy views): torch's
    CPU BLAS (MKL) is much slower than OpenBLAS on AMD processors; on CUDA it stays in torch.
    """
    if _numpy_blas(X):
        from scipy.linalg import solve_triangular

        diff_t = (X.numpy() - mean.numpy()).T  # (D, N), Fortran order: no copy for LAPACK
        y = solve_triangular(chol.numpy(), diff_t, lower=True, check_finite=False)
        return torch.from_numpy(np.einsum("dn,dn->n", y, y))
    y = torch.linalg.solve_triangular(chol, (X - mean).T, upper=False)  # (D, N)
    return (y * y).sum(0)


def _weighted_scatter(X: torch.Tensor, sqrt_w: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """sum_n w_n (x_n - mu)(x_n - mu)^T (D, D) as W^T W, W = sqrt(w) (X - mu).

    On the CPU numpy computes W^T W as a symmetric rank-k update (syrk, half the flops of a
    general product) in one BLAS library; on CUDA it is a torch matmul.
    """
    if _numpy_blas(X):
        W = sqrt_w.numpy()[:, None] * (X.numpy() - mean.numpy())  # (N, D)
        return torch.from_numpy(W.T @ W)
    W = sqrt_w[:, None] * (X - mean)
    return W.T @ W


def estimate_log_prob_resp(
    X: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    chol: torch.Tensor,
    covariance_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: ``log p(x_n)`` (N,) and log responsibilities (N, K)."""
    weighted = log_gaussian_prob(X, means, chol, covariance_type) + torch.log(weights)
    log_norm = torch.logsumexp(weighted, dim=1)  # (N,)
    return log_norm, weighted - log_norm[:, None]


def estimate_gaussian_parameters(
    X: torch.Tensor, resp: torch.Tensor, covariance_type: str, min_nk: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M-step without regularisation: ``nk`` (K,), means (K, D), covariances (K, D, D) / (K, D).

    X (N, D); resp (N, K).  ``nk = max(sum_n r_nk, min_nk) + 10 eps`` (the ``10 eps`` as in
    scikit-learn, ``min_nk`` is the BigLearn-EM code's guard ``max(1e-5, pi_k) * N``).
    """
    nk = resp.sum(0).clamp_min(min_nk) + 10 * torch.finfo(resp.dtype).eps  # (K,)
    means = (resp.T @ X) / nk[:, None]  # (K, D)
    if covariance_type == "diag":
        covariances = (resp.T @ (X * X)) / nk[:, None] - means * means
    elif resp.numel() * X.shape[1] <= _BATCH_ELEMENTS:
        diff = X[None] - means[:, None]  # (K, N, D)
        covariances = (resp.T[:, :, None] * diff).mT @ diff / nk[:, None, None]
    else:
        K, D = means.shape
        covariances = torch.empty((K, D, D), dtype=X.dtype, device=X.device)
        sqrt_resp = resp.sqrt()
        for k in range(K):
            covariances[k] = _weighted_scatter(X, sqrt_resp[:, k], means[k]) / nk[k]
    return nk, means, covariances


# --- estimator ------------------------------------------------------------------------------


class GaussianMixtureBase(TorchModel):
    """Fitted-state behaviour shared by the torch Gaussian mixtures (prediction, sampling,
    scoring, artifacts).  Subclasses set ``weights_`` (K,), ``means_`` (K, D),
    ``covariances_`` (K, D, D) or (K, D) and call :meth:`_set_state`."""

    covariance_type = "full"

    # device / tensors -----------------------------------------------------------------------
    def _tensor(self, X) -> torch.Tensor:
        return torch.as_tensor(np.asarray(X), dtype=self._dtype_, device=self._device_)

    def _set_state(self, weights, means, covariances) -> None:
        """Store fitted parameters (torch) and their numpy float64 copies."""
        self._weights_t, self._means_t, self._cov_t = weights, means, covariances
        self._chol_t = compute_cholesky(covariances, self.covariance_type)
        self.weights_ = weights.double().cpu().numpy()
        self.means_ = means.double().cpu().numpy()
        self.covariances_ = covariances.double().cpu().numpy()

    def _check_fitted_X(self, X) -> torch.Tensor:
        if not hasattr(self, "_means_t"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit first")
        X = check_array_2d(X)
        if X.shape[1] != self.means_.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                f"{self.means_.shape[1]} features"
            )
        return self._tensor(X)

    def _labels(self, X, params, chol) -> np.ndarray:
        """Most responsible component of the rows of X under ``params`` (weights, means,
        covariances) with Cholesky factors ``chol`` (mid-fit, before the state is set)."""
        Xt = X if isinstance(X, torch.Tensor) else self._tensor(X)
        _, log_resp = estimate_log_prob_resp(Xt, params[0], params[1], chol, self.covariance_type)
        return log_resp.argmax(1).cpu().numpy().astype(np.int64)

    def _estimate(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        return estimate_log_prob_resp(
            self._check_fitted_X(X),
            self._weights_t,
            self._means_t,
            self._chol_t,
            self.covariance_type,
        )

    # public API -------------------------------------------------------------------------------
    def score_samples(self, X) -> np.ndarray:
        """log p(x) of each sample, shape (N,)."""
        return self._estimate(X)[0].double().cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per sample."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities p(k | x), shape (N, K)."""
        return self._estimate(X)[1].exp().double().cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Most responsible component, shape (N,)."""
        return self._estimate(X)[1].argmax(1).cpu().numpy().astype(np.int64)

    def sample(self, n_samples: int = 1, random_state=None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` points: ``(X (n, D) float64, labels (n,))``, grouped by component.

        ``random_state`` (int or None) defaults to the model's ``random_state``.
        """
        if not hasattr(self, "means_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit first")
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        seed = self.random_state if random_state is None else random_state
        rng = np.random.default_rng(seed)
        w = self.weights_ / self.weights_.sum()
        counts = rng.multinomial(int(n_samples), w)
        K, D = self.means_.shape
        out = []
        for k in range(K):
            z = rng.standard_normal((counts[k], D))
            if self.covariance_type == "diag":
                out.append(self.means_[k] + z * np.sqrt(self.covariances_[k]))
            else:
                L = np.linalg.cholesky(self.covariances_[k])
                out.append(self.means_[k] + z @ L.T)
        labels = np.repeat(np.arange(K, dtype=np.int64), counts)
        return np.concatenate(out, axis=0), labels

    def n_parameters(self) -> int:
        K, D = self.means_.shape
        cov = K * D * (D + 1) // 2 if self.covariance_type == "full" else K * D
        return int(cov + K * D + K - 1)

    @classmethod
    def from_parameters(
        cls,
        weights,
        means,
        covariances,
        *,
        covariance_type="full",
        device="cpu",
        dtype="float64",
        random_state=None,
    ):
        """A fitted model from given parameters (e.g. a reference density), without ``fit``."""
        model = cls(n_clusters=len(weights), random_state=random_state, device=device, dtype=dtype)
        if "covariance_type" in model.get_params():
            model.covariance_type = covariance_type
        model._device_ = resolve_device(device)
        model._dtype_ = model._torch_dtype()
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)).to(  # noqa: E731
            model._device_, model._dtype_
        )
        model._set_state(t(weights), t(means), t(covariances))
        return model


def initial_resp(
    X: torch.Tensor, n_clusters: int, init: str, seed: int, init_labels=None
) -> torch.Tensor:
    """Initial responsibilities (N, K) from a named method or an assignment.

    ``random``: uniform random soft responsibilities (as scikit-learn's ``init_params="random"``);
    ``kmeans``: one k-means run (scikit-learn, k-means++ seeding), hard; ``k-means++``: hard
    assignment to the nearest k-means++ seed; ``init_labels``: one-hot rows for the labelled
    points, zero rows for the unlabelled (``-1``) ones.
    """
    N = X.shape[0]
    if init_labels is not None:
        lab = torch.as_tensor(init_labels, device=X.device)
        resp = torch.zeros((N, n_clusters), dtype=X.dtype, device=X.device)
        rows = torch.nonzero(lab >= 0).flatten()
        resp[rows, lab[rows]] = 1.0
        return resp
    if init == "random":
        rng = np.random.default_rng(seed)
        r = rng.uniform(size=(N, n_clusters))
        r /= r.sum(1, keepdims=True)
        return torch.as_tensor(r, dtype=X.dtype, device=X.device)
    Xn = X.double().cpu().numpy()
    if init == "kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit(Xn).labels_
    elif init == "k-means++":
        from sklearn.cluster import kmeans_plusplus

        centers, _ = kmeans_plusplus(Xn, n_clusters, random_state=seed)
        d = (Xn**2).sum(1)[:, None] - 2 * Xn @ centers.T + (centers**2).sum(1)[None, :]
        labels = d.argmin(1)
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    resp = torch.zeros((N, n_clusters), dtype=X.dtype, device=X.device)
    resp[torch.arange(N, device=X.device), torch.as_tensor(labels, device=X.device)] = 1.0
    return resp


def parameters_from_resp(
    X: torch.Tensor,
    resp: torch.Tensor,
    covariance_type: str,
    reg: str,
    reg_covar: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial (weights, means, covariances) from responsibilities, regularised.

    A component with no responsibility (an empty cluster of an assignment) gets a random labelled
    point as mean, the pooled covariance of the labelled points and one point's weight.
    """
    nk, means, cov = estimate_gaussian_parameters(X, resp, covariance_type)
    empty = torch.nonzero(resp.sum(0) <= 0).flatten()
    if empty.numel():
        rng = np.random.default_rng(seed)
        labelled = torch.nonzero(resp.sum(1) > 0).flatten().cpu().numpy()
        Xl = X[torch.as_tensor(labelled, device=X.device)]
        pooled = torch.cov(Xl.T).reshape(X.shape[1], X.shape[1]) if Xl.shape[0] > 1 else None
        if pooled is None:
            pooled = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
        nk = nk.clone()
        for k in empty.tolist():
            means[k] = X[int(rng.choice(labelled))]
            cov[k] = torch.diagonal(pooled) if covariance_type == "diag" else pooled
            nk[k] = 1.0
    weights = nk / nk.sum()
    return weights, means, regularize_covariances(cov, reg, reg_covar, covariance_type)


@register("gmm_em")
class GaussianMixtureEM(GaussianMixtureBase):
    """Gaussian mixture fitted by EM, in torch (CPU float64 by default, CUDA when present).

    Parameters
    ----------
    n_clusters : int, default 10
        Number of components K.
    covariance_type : {"full", "diag"}, default "full"
    reg : {"ridge", "floor"}, default "ridge"
        ``"ridge"`` adds ``reg_covar`` to the covariance diagonals after every M-step (identical
        to scikit-learn's ``reg_covar``); ``"floor"`` clips eigenvalues at ``reg_covar``.
    reg_covar : float, default 1e-6
        The eps of the regulariser.
    tol : float, default 1e-3
        Convergence when the mean log-likelihood per sample changes by less than ``tol``.
    max_iter : int, default 100
    n_init : int, default 1
        Restarts; the one with the highest final log-likelihood is kept (ignored with
        ``init_labels``).
    init : {"random", "kmeans", "k-means++"}, default "kmeans"
        Initial responsibilities when ``fit`` gets no ``init_labels`` (see :func:`initial_resp`).
    weights_init, means_init, covariances_init : array-like or None
        Initial parameters, (K,), (K, D), (K, D, D) / (K, D); override those from ``init``.
    random_state : int or None
    device : str, default "auto"
        ``"auto"`` picks CUDA when present.
    dtype : {"float64", "float32"}, default "float64"

    Attributes
    ----------
    weights_ (K,), means_ (K, D), covariances_ (K, D, D) or (K, D) : numpy float64
    labels_ (N,), init_labels_ (N,)
    history_ : dict with ``"loglik"``: mean log-likelihood per sample at every iteration
        (evaluated at the parameters entering that iteration's M-step, as scikit-learn).
    lower_bounds_ : list[float] (same as ``history_["loglik"]``), lower_bound_ : float
    n_iter_ : int, converged_ : bool
    """

    def __init__(
        self,
        n_clusters=10,
        covariance_type="full",
        reg="ridge",
        reg_covar=1e-6,
        tol=1e-3,
        max_iter=100,
        n_init=1,
        init="kmeans",
        weights_init=None,
        means_init=None,
        covariances_init=None,
        random_state=None,
        device="auto",
        dtype="float64",
    ):
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.reg = reg
        self.reg_covar = reg_covar
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init = init
        self.weights_init = weights_init
        self.means_init = means_init
        self.covariances_init = covariances_init
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    # validation --------------------------------------------------------------------------------
    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "covariance_type": {"full", "diag"},
        "reg": {"ridge", "floor"},
        "reg_covar": "real >= 0",
        "tol": "real >= 0",
        "max_iter": "int >= 1",
        "n_init": "int >= 1",
        "init": {"random", "kmeans", "k-means++"},
        "weights_init": ["array", None],
        "means_init": ["array", None],
        "covariances_init": ["array", None],
        "random_state": ["int >= 0", None],
        "device": "str",
        "dtype": {"float32", "float64"},
    }

    def _check_initial_parameters(self, D: int) -> None:
        """Shapes of the given initial parameters for data with ``D`` features."""
        K = self.n_clusters
        if self.weights_init is not None:
            w = np.asarray(self.weights_init, dtype=np.float64)
            if w.shape != (K,) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
                raise ValueError(
                    f"weights_init must be non-negative, shape ({K},), summing to 1; "
                    f"got shape {w.shape}"
                )
        if self.means_init is not None and np.shape(self.means_init) != (K, D):
            raise ValueError(
                f"means_init must have shape ({K}, {D}), got {np.shape(self.means_init)}"
            )
        if self.covariances_init is not None:
            want = (K, D, D) if self.covariance_type == "full" else (K, D)
            if np.shape(self.covariances_init) != want:
                raise ValueError(
                    f"covariances_init must have shape {want}, "
                    f"got {np.shape(self.covariances_init)}"
                )

    # EM hooks ----------------------------------------------------------------------------------
    def _initialize(self, X, seed, init_labels):
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)).to(X)  # noqa: E731
        if self.weights_init is None or self.means_init is None or self.covariances_init is None:
            resp = initial_resp(X, self.n_clusters, self.init, seed, init_labels)
            weights, means, cov = parameters_from_resp(
                X, resp, self.covariance_type, self.reg, self.reg_covar, seed
            )
        if self.weights_init is not None:
            weights = t(self.weights_init)
        if self.means_init is not None:
            means = t(self.means_init)
        if self.covariances_init is not None:
            cov = t(self.covariances_init)
        return weights, means, cov

    def _m_step(self, X, log_resp):
        nk, means, cov = estimate_gaussian_parameters(X, log_resp.exp(), self.covariance_type)
        cov = regularize_covariances(cov, self.reg, self.reg_covar, self.covariance_type)
        return nk / nk.sum(), means, cov

    # fit -----------------------------------------------------------------------------------------
    def fit(self, X, y=None, init_labels=None, callback=None):
        """Fit by EM.  X (N, D); ``init_labels`` (N,) an initial assignment, -1 = unlabelled;
        ``callback`` gets a :class:`~mixlib.models.base.Progress` after every iteration (of
        every restart, numbered on)."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        self._check_initial_parameters(X.shape[1])
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        self._device_ = self._torch_device()
        self._dtype_ = self._torch_dtype()
        Xt = self._tensor(X)
        with _torch_threads(1 if _numpy_blas(Xt) else None):
            self._fit(Xt, lab, callback)
            # final E-step so that fit_predict(X) == fit(X).predict(X)
            self.labels_ = self.predict(X)
        return self

    def _fit(self, Xt, lab, callback=None):
        rng = np.random.default_rng(self.random_state)
        n_init = 1 if lab is not None else self.n_init
        seeds = rng.integers(2**31 - 1, size=n_init)
        best, step, total = None, 0, n_init * self.max_iter
        for seed in seeds:
            params = self._initialize(Xt, int(seed), lab)
            chol = compute_cholesky(params[2], self.covariance_type)
            if best is None:  # INIT column: labels of the untrained model (first restart)
                _, log_resp = estimate_log_prob_resp(
                    Xt, params[0], params[1], chol, self.covariance_type
                )
                init_labels_ = log_resp.argmax(1).cpu().numpy().astype(np.int64)
            lower_bound, bounds, converged, n_iter = -np.inf, [], False, 0
            for it in range(1, self.max_iter + 1):
                n_iter, prev = it, lower_bound
                log_norm, log_resp = estimate_log_prob_resp(
                    Xt, params[0], params[1], chol, self.covariance_type
                )
                params = self._m_step(Xt, log_resp)
                chol = compute_cholesky(params[2], self.covariance_type)
                lower_bound = float(log_norm.mean())
                bounds.append(lower_bound)
                converged = abs(lower_bound - prev) < self.tol
                step += 1
                if converged or it == self.max_iter:  # the rest of this restart is skipped
                    total -= self.max_iter - it
                call(
                    callback,
                    Progress(
                        step,
                        total,
                        {"loglik": lower_bound},
                        labels=lambda p=params, c=chol: self._labels(Xt, p, c),
                        predict=lambda Z, p=params, c=chol: self._labels(Z, p, c),
                    ),
                )
                if converged:
                    break
            if best is None or lower_bound > best[0]:
                best = (lower_bound, params, bounds, converged, n_iter)
        lower_bound, params, bounds, converged, n_iter = best
        if not converged:
            warnings.warn(
                f"GaussianMixtureEM did not converge in max_iter={self.max_iter} iterations "
                f"(tol={self.tol}); increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._set_state(*params)
        self.init_labels_ = init_labels_
        self.lower_bound_ = lower_bound
        self.lower_bounds_ = bounds
        self.history_ = {"loglik": list(bounds)}
        self.n_iter_ = n_iter
        self.converged_ = converged
