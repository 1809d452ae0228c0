"""BigLearn-EM (Cong & Li, "Big Learning Expectation Maximization", AAAI 2024), ``biglearn_em``.

Each outer iteration draws one matching task (Algorithm 1 of the paper, as in the reference code
github.com/YulaiCong/Big-Learning-Expectation-Maximization, ``method.py::bl_EM``):

- with probability ``p1``        joint matching: EM on all D dimensions;
- with probability ``p2 - p1``   marginal matching: EM on the marginal of a random subset of
                                 m = floor(D f) dimensions, f ~ Beta(beta_a, beta_b);
- otherwise                      the same marginal matching after a random orthogonal transform
                                 y = A x (A Haar-distributed: QR of a Gaussian with sign fix).

``n_inner`` EM steps then update only the selected block of the means and covariances (the cross
blocks keep their values; in the transformed case in the A-space, mapped back with
mu = mu_bar A, Sigma = A^T Sigma_bar A (floored) after the last step: the reference maps back
after every step, but the next step reads mu_bar, Sigma_bar), eigenvalues are floored at
``reg_covar`` after every step, and the weights are smoothed, pi = (pi' + alpha) / sum(pi' + alpha),
alpha = 1/K (the MAP estimate of the reference).  With ``p1 = 1`` and ``alpha_pi = 0`` this is
plain EM with an eigenvalue floor (``GaussianMixtureEM(reg="floor")``).

The E- and M-step maths is the shared core of :mod:`mixlib.models.gmm_em`.  For small D the
block steps run batched over components on the block's moment features
(:class:`~mixlib.models.gmm_em.MomentFeatures`), built once per task and shared by its
``n_inner`` steps; the features of X serve the joint tasks and the per-iteration
log-likelihood.
"""

from __future__ import annotations

import numpy as np
import torch

from ..utils import torch_generator
from . import register
from .base import Progress, call, check_array_2d, check_init_labels
from .gmm_em import (
    GaussianMixtureBase,
    MomentFeatures,
    _blas_threads,
    _exp_resp_,
    _numpy_blas,
    _torch_threads,
    compute_cholesky,
    estimate_gaussian_parameters,
    estimate_log_prob_resp,
    floor_eigenvalues,
    initial_resp,
    parameters_from_resp,
    use_moments,
)

BL_INITS = ("reference", "random", "kmeans", "k-means++")
TASKS = ("joint", "marginal", "transformed")
_PI_GUARD = 1e-5  # the reference's bl_epsilon: M-step divides by max(1e-5, pi_k)


def haar_orthogonal(D: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A Haar-distributed random orthogonal matrix (D, D): QR of a Gaussian, signs fixed by
    diag(R) (Mezzadri 2007), on the CPU generator."""
    G = torch.randn((D, D), generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)
    Q = Q * torch.sign(torch.diagonal(R)).masked_fill(torch.diagonal(R) == 0, 1.0)
    return Q.to(dtype)


def block_em_step(
    Z: torch.Tensor,
    idx: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    covariances: torch.Tensor,
    features: MomentFeatures | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EM step on the marginal of the dimensions ``idx`` (the block update of BigLearn-EM).

    Z (N, D) data (possibly transformed); idx (m,) selected dimensions; weights (K,);
    means (K, D); covariances (K, D, D).  Returns ``(pi', means, covariances)``, the raw
    (unsmoothed) weights pi' = mean_n r_nk and copies of means / covariances whose rows ``idx``
    and block ``[idx, idx]`` are updated; all other entries (cross blocks included) are copied
    unchanged.  No regularisation is applied here.  ``features``: the
    :class:`~mixlib.models.gmm_em.MomentFeatures` of ``Z[:, idx]`` when the caller has them
    (they serve every step of a task); built here when the block is small enough
    (:func:`~mixlib.models.gmm_em.use_moments`), else the per-component kernels run.
    """
    N = Z.shape[0]
    means, covariances = means.clone(), covariances.clone()
    m = idx.numel()
    if m == 0:  # an empty marginal carries no information: r_nk = pi_k
        return weights.clone(), means, covariances
    ii = idx[:, None]
    chol = compute_cholesky(covariances[:, ii, idx], "full")  # (K, m, m)
    if features is None and use_moments(N, m):
        features = MomentFeatures(Z[:, idx])
    if features is not None:
        _, resp_t = features.e_step(weights, means[:, idx], chol)
        _, mu_t, cov_t, n = features.gaussian_parameters(resp_t, min_nk=_PI_GUARD * N)
        pi_raw = n / N
    else:
        Zt = Z[:, idx]  # (N, m)
        _, log_resp = estimate_log_prob_resp(Zt, weights, means[:, idx], chol, "full")
        resp = _exp_resp_(log_resp)  # (N, K); tiny responsibilities 0, see _resp_floor
        _, mu_t, cov_t = estimate_gaussian_parameters(Zt, resp, "full", min_nk=_PI_GUARD * N)
        pi_raw = resp.mean(0)
    means[:, idx] = mu_t
    covariances[:, ii, idx] = cov_t
    return pi_raw, means, covariances


@register("biglearn_em")
class BigLearnEM(GaussianMixtureBase):
    """BigLearn-EM for a full-covariance Gaussian mixture (torch; CUDA when present).

    Parameters
    ----------
    n_clusters : int, default 10
    n_iter : int, default 200
        Outer iterations (task draws), the reference's ``Niter``.
    n_inner : int, default 5
        EM steps per task, the reference's ``NITnei``.
    p1 : float, default 0.4
        Probability of joint matching.
    p2 : float, default 0.5
        Cumulative threshold: marginal matching with probability ``p2 - p1``, transformed
        marginal matching with probability ``1 - p2``.
    beta_a, beta_b : float, default 5, 1
        f ~ Beta(beta_a, beta_b), m = floor(D f) selected dimensions.
    reg_covar : float, default 1e-2
        Eigenvalue floor eps (the reference's ``eps``; 1e-2 for real data there).
    alpha_pi : float or None, default None
        Weight smoothing alpha; None means 1 / n_clusters.
    init : {"reference", "random", "kmeans", "k-means++"}, default "reference"
        ``"reference"``: pi uniform, mu ~ N(0, I), Sigma = I (the reference code); the others
        estimate the initial parameters from responsibilities as :class:`GaussianMixtureEM`.
        ``fit(..., init_labels=...)`` overrides ``init``.
    random_state : int or None
    device : str, default "auto"
    dtype : {"float64", "float32"}, default "float64"

    Attributes
    ----------
    weights_, means_, covariances_ : numpy float64 parameters of the last iterate
    labels_ : argmax responsibility at the last iterate (not a maximum over iterations)
    history_ : dict of per-outer-iteration lists: ``"loglik"`` (mean train log-likelihood after
        the iteration), ``"task"`` (0 joint, 1 marginal, 2 transformed), ``"n_dims"`` (m), plus
        whatever the ``monitor`` passed to :meth:`fit` returns.
    n_iter_ : int
    """

    covariance_type = "full"

    def __init__(
        self,
        n_clusters=10,
        n_iter=200,
        n_inner=5,
        p1=0.4,
        p2=0.5,
        beta_a=5.0,
        beta_b=1.0,
        reg_covar=1e-2,
        alpha_pi=None,
        init="reference",
        random_state=None,
        device="auto",
        dtype="float64",
    ):
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.n_inner = n_inner
        self.p1 = p1
        self.p2 = p2
        self.beta_a = beta_a
        self.beta_b = beta_b
        self.reg_covar = reg_covar
        self.alpha_pi = alpha_pi
        self.init = init
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "n_iter": "int >= 1",
        "n_inner": "int >= 1",
        "p1": "real in [0, 1]",
        "p2": "real in [0, 1]",
        "beta_a": "real > 0",
        "beta_b": "real > 0",
        "reg_covar": "real > 0",
        "alpha_pi": ["real >= 0", None],
        "init": {"reference", "random", "kmeans", "k-means++"},
        "random_state": ["int >= 0", None],
        "device": "str",
        "dtype": {"float32", "float64"},
    }

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.p2 < self.p1:
            raise ValueError(f"p2 must be >= p1, got p1={self.p1!r}, p2={self.p2!r}")

    def _initialize(self, X, seed, gen, lab):
        K, D = self.n_clusters, X.shape[1]
        if lab is None and self.init == "reference":
            weights = torch.full((K,), 1.0 / K, dtype=X.dtype, device=X.device)
            means = torch.randn((K, D), generator=gen, dtype=torch.float64).to(X)
            cov = torch.eye(D, dtype=X.dtype, device=X.device).expand(K, D, D).clone()
            return weights, means, cov
        resp = initial_resp(X, K, self.init, seed, lab)
        return parameters_from_resp(X, resp, "full", "floor", self.reg_covar, seed)

    def fit(self, X, y=None, init_labels=None, callback=None):
        """Run BigLearn-EM.

        Parameters
        ----------
        X : array (N, D)
        init_labels : int array (N,) or None
            Initial assignment (-1 = unlabelled); overrides ``init``.
        callback : callable or None
            Called after every outer iteration with a :class:`~mixlib.models.base.Progress`:
            the mean train log-likelihood, ``labels()`` / ``predict(X)`` of the current
            parameters and ``state()``, the current ``(weights (K,), means (K, D), covariances
            (K, D, D))`` as torch tensors (e.g. for a test KL divergence).
        """
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        self._device_ = self._torch_device()
        self._dtype_ = self._torch_dtype()
        Xt = self._tensor(X)
        # on the CPU the heavy kernels run in numpy's BLAS: torch's pool to 1 thread, as
        # GaussianMixtureEM.fit (two spinning pools on 2 cores cost more than they gain)
        cpu = _numpy_blas(Xt)
        with _torch_threads(1 if cpu else None):
            # the batched path's GEMMs are too small for a second BLAS thread (_blas_threads)
            with _blas_threads(1 if cpu and use_moments(*Xt.shape) else None):
                self._fit(Xt, lab, callback)
            self.labels_ = self.predict(X)  # last iterate, never a maximum over iterations
        return self

    def _fit(self, Xt, lab, callback):
        N, D = Xt.shape
        K = self.n_clusters
        alpha = 1.0 / K if self.alpha_pi is None else float(self.alpha_pi)
        eps = self.reg_covar
        rng = np.random.default_rng(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        gen = torch_generator(seed)  # CPU generator: same draws on every device

        weights, means, cov = self._initialize(Xt, seed, gen, lab)
        cov = floor_eigenvalues(cov, eps)
        _, log_resp = estimate_log_prob_resp(
            Xt, weights, means, compute_cholesky(cov, "full"), "full"
        )
        self.init_labels_ = log_resp.argmax(1).cpu().numpy().astype(np.int64)

        # small D: moment features of X, built once (joint tasks, the log-likelihood), and of
        # each task's block, built once per task and reused by its n_inner steps
        features = MomentFeatures(Xt) if use_moments(N, D) else None
        history: dict[str, list[float]] = {"loglik": [], "task": [], "n_dims": []}
        all_dims = torch.arange(D, device=Xt.device)
        for step in range(1, self.n_iter + 1):
            u = rng.uniform()
            task = 0 if u < self.p1 else (1 if u < self.p2 else 2)
            if task == 0:
                idx = all_dims
            else:
                m = int(D * rng.beta(self.beta_a, self.beta_b))
                idx = torch.as_tensor(np.sort(rng.permutation(D)[:m]), device=Xt.device)
            if task < 2:
                block = features if task == 0 else _block_features(Xt, idx)
                for _ in range(self.n_inner):
                    pi_raw, means, cov = block_em_step(Xt, idx, weights, means, cov, block)
                    cov = floor_eigenvalues(cov, eps)
                    weights = _smooth(pi_raw, alpha)
            else:
                A = haar_orthogonal(D, gen).to(Xt)
                Y = Xt @ A.T  # (N, D)
                block = _block_features(Y, idx)
                mu_bar, cov_bar = means @ A.T, A @ cov @ A.T
                for _ in range(self.n_inner):
                    pi_raw, mu_bar, cov_bar = block_em_step(Y, idx, weights, mu_bar, cov_bar, block)
                    cov_bar = floor_eigenvalues(cov_bar, eps)
                    weights = _smooth(pi_raw, alpha)
                # the inner steps run on (mu_bar, cov_bar): map back once, after the last
                means, cov = mu_bar @ A, floor_eigenvalues(A.T @ cov_bar @ A, eps)
            chol = compute_cholesky(cov, "full")
            if features is not None:
                log_norm = features.log_likelihood(weights, means, chol)
            else:
                log_norm, _ = estimate_log_prob_resp(Xt, weights, means, chol, "full")
            history["loglik"].append(float(log_norm.mean()))
            history["task"].append(float(task))
            history["n_dims"].append(float(idx.numel()))
            params = (weights, means, cov)
            call(
                callback,
                Progress(
                    step,
                    self.n_iter,
                    {"loglik": history["loglik"][-1]},
                    labels=lambda p=params, c=chol: self._labels(Xt, p, c),
                    predict=lambda Z, p=params, c=chol: self._labels(Z, p, c),
                    state=lambda p=params: p,
                ),
            )
        self._set_state(weights, means, cov)
        self.history_ = history
        self.n_iter_ = self.n_iter


def _block_features(Z: torch.Tensor, idx: torch.Tensor) -> MomentFeatures | None:
    """The moment features of the block ``Z[:, idx]`` when its kernels run batched, else None."""
    if idx.numel() and use_moments(Z.shape[0], idx.numel()):
        return MomentFeatures(Z[:, idx])
    return None


def _smooth(pi_raw: torch.Tensor, alpha: float) -> torch.Tensor:
    w = pi_raw + alpha
    return w / w.sum()
