"""Gaussian-mixture EM in torch: the shared EM core and :class:`GaussianMixtureEM` (``gmm_em``).

The maths (Dempster, Laird & Rubin 1977; Bishop, PRML section 9.2.2, eqs. 9.23-9.27) lives in
small pure functions on torch tensors, unit-tested one by one and reused by
:mod:`mixlib.models.biglearn`:

- :func:`compute_cholesky`            lower Cholesky factors of the covariances
- :func:`log_gaussian_prob`           log N(x | mu_k, Sigma_k) from the inverse Cholesky factors
                                      (log det Sigma_k = 2 sum log diag L_k)
- :func:`estimate_log_prob_resp`      E-step: log p(x) and log responsibilities
- :func:`estimate_gaussian_parameters` M-step: N_k, means, covariances (unregularised)
- :func:`regularize_covariances`      ``"ridge"`` (eps added to the diagonal, scikit-learn's
                                      ``reg_covar``) or ``"floor"`` (eigenvalues clipped at eps,
                                      as in the BigLearn-EM reference code)

:class:`GaussianMixtureEM` follows scikit-learn's ``mixture/_base.py``: restarts, convergence on
the change of the mean log-likelihood, a final E-step so ``fit_predict == fit().predict``.  With
``reg="ridge"`` it reproduces ``sklearn.mixture.GaussianMixture`` iteration by iteration from the
same initial parameters.

Speed: the two O(N K D^2) kernels of full covariances (the Mahalanobis terms of the E-step,
the weighted scatter matrices of the M-step) run one of two ways, chosen by :func:`use_moments`,
a size rule measured on a 2-core Xeon (``benchmarks/bench_em_iterations.py --crossover``: one
E+M step with K = 10, N = 4,000-10,000 is 2.4-4.4x faster batched at D = 16, 1.5x at D = 48,
even at D = 64 and 0.5-0.8x from D = 80 on):

- small D (D <= 64, at most 2^25 feature entries): batched over the K components on moment
  features of the data (:class:`MomentFeatures`: the products y_i y_j, y_i and 1 of the centred
  data, built once per fit, or once per BigLearn-EM task): the E-step is one GEMM
  (K, P) @ (P, N) and the M-step one GEMM (K, N) @ (N, P), P = D (D + 1) / 2 + D + 1, with no
  loop over components and no (N, K, D) intermediate;
- large D (e.g. MNIST at 16x16, D = 256): one component at a time in O(N D) memory, the
  Mahalanobis terms by a triangular matrix product with L_k^{-1} (BLAS trmm, 2.5x the rate of the
  triangular solve it replaces), the scatter matrices by a symmetric rank-N update (syrk).

On CPU tensors the BLAS calls go through numpy/scipy on zero-copy views (torch's MKL is slow on
AMD CPUs), with torch's own pool at one thread during a fit, and BLAS's at one too on the
batched path, whose GEMMs are too small to share (:func:`_blas_threads`); on CUDA everything
stays in torch.  Responsibilities below sqrt(tiny) are set to 0 (:func:`_resp_floor`):
exponentials that underflow and subnormal products take slow paths in exp and in BLAS (50x and
more).

Measured by ``benchmarks/bench_em_iterations.py`` on a 2-core Xeon shared with other jobs,
against the code of commit 779661a in the same run, one thread: a BigLearn-EM outer iteration
5x faster on Pendigits (7,494 x 16, K = 12) and 10x on Letter (20,000 x 16, K = 26), a
Joint-EM iteration 7x and 9x, a GMM iteration on MNIST at 16x16 (70,000 x 256, K = 10) 1.7x;
log-likelihood trajectories (200 BigLearn-EM outer iterations) equal to 4e-14 relative.
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
# Full covariances: the kernels run batched over components on moment features
# (:class:`MomentFeatures`) when D <= _MOMENTS_MAX_D and the feature matrix has at most
# _BATCH_ELEMENTS entries (N * P, P = D (D + 1) / 2 + D + 1), else one component at a time.
# _MOMENTS_MAX_D is the crossover measured on a 2-core Xeon (N = 4,000, K = 10) by
# ``benchmarks/bench_em_iterations.py --crossover``; _BATCH_ELEMENTS = 0 forces the
# per-component path.
_MOMENTS_MAX_D = 64
_BATCH_ELEMENTS = 2**25  # 256 MiB of float64 features


# --- pure functions (torch) -----------------------------------------------------------------


def _resp_floor(dtype: torch.dtype) -> float:
    """Responsibilities below sqrt(tiny) (1.5e-154 in float64, 1.1e-19 in float32) are set to 0.

    Far-off components have responsibilities that underflow, and two things are slow there:
    torch's vectorised exp leaves its fast path when its result underflows (50-200 times
    slower), and BLAS kernels whose products are subnormal numbers run 20-50 times slower (the
    subnormal means and scatter sums that tiny responsibilities produce made a D=256 triangular
    solve take 2-3 s instead of 0.06 s).  Flooring the argument of exp at
    log(sqrt(tiny)) - 1 and zeroing what falls below sqrt(tiny) keeps every product of a
    responsibility with data of magnitude above sqrt(tiny) a normal number; what it changes is
    below 1e-154 relative to the sums it enters, far below float64's resolution.
    """
    return math.sqrt(torch.finfo(dtype).tiny)


def _exp_resp_(L: torch.Tensor) -> torch.Tensor:
    """exp of log responsibilities (<= 0) in place, with the floor of :func:`_resp_floor`."""
    rmin = _resp_floor(L.dtype)
    return torch.nn.functional.threshold_(L.clamp_min_(math.log(rmin) - 1.0).exp_(), rmin, 0.0)


def _normalize_exp(W: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log-sum-exp of W along ``dim`` and the normalised exponentials exp(W - lse), the latter
    computed in place in W (exponentials below :func:`_resp_floor` relative to the largest are
    0: they change the sum by less than 1e-154 relative in float64)."""
    mx = W.amax(dim, keepdim=True)
    E = _exp_resp_(W.sub_(mx))
    total = E.sum(dim, keepdim=True)
    log_norm = (mx + total.log()).squeeze(dim)
    return log_norm, E.div_(total)


def _logsumexp(W: torch.Tensor, dim: int) -> torch.Tensor:
    """log-sum-exp of W along ``dim``, as :func:`_normalize_exp` (W left unchanged)."""
    return _normalize_exp(W.clone(), dim)[0]


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
        # LAPACK's float32 solver can fail on a collapsed component: raise that it did not
        # converge (seen once in 160 BigLearn-EM fits), or return NaN without a word (a zero
        # matrix with subnormal off-diagonal entries, a component that lost every point in a
        # block: Pendigits, seed 5). Either way, redo those matrices in float64.
        try:
            evals, evecs = torch.linalg.eigh(out[bad])
            failed = not bool(torch.isfinite(evals).all() and torch.isfinite(evecs).all())
        except torch.linalg.LinAlgError:
            failed = True
        if failed:
            evals, evecs = (t.to(out.dtype) for t in torch.linalg.eigh(out[bad].double()))
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


def use_moments(N: int, D: int) -> bool:
    """Whether the full-covariance kernels for N x D data run batched over the components on
    moment features (:class:`MomentFeatures`) rather than one component at a time: small D
    (``_MOMENTS_MAX_D``) and a feature matrix of at most ``_BATCH_ELEMENTS`` entries."""
    return D <= _MOMENTS_MAX_D and N * n_moment_features(D) <= _BATCH_ELEMENTS


def n_moment_features(D: int) -> int:
    """P = D (D + 1) / 2 + D + 1: the products y_i y_j (i <= j), the y_i and the constant 1."""
    return D * (D + 1) // 2 + D + 1


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b, through numpy's BLAS on the CPU (zero-copy views, see :func:`_numpy_blas`)."""
    if _numpy_blas(a):
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return a @ b


class MomentFeatures:
    """Moment features of data X (N, D) for the batched full-covariance kernels (small D).

    With y = x - c (c the data mean, so that the uncentred moments below lose no accuracy to a
    far-off origin), the rows of ``F`` (P, N) are y_i y_j for i <= j (row-major upper
    triangle), y_i, and 1.  Both full-covariance kernels are then one GEMM over all K
    components, with no (N, K, D) intermediate:

    - E-step: log w_k + log N(x_n | mu_k, Sigma_k) = (C F)_{kn}, C (K, P) holding
      -Lambda_kii / 2 and -Lambda_kij (i < j) of the precision Lambda_k = Sigma_k^{-1},
      Lambda_k m_k (m_k = mu_k - c), and log w_k - (D log 2 pi + m_k^T Lambda_k m_k) / 2
      - log det L_k;
    - M-step: G = R F^T (K, P) for responsibilities R (K, N) holds n_k = sum_n r_nk, the
      first moments s_k = sum_n r_nk y_n and the second moments S_k = sum_n r_nk y_n y_n^T, so
      that mu_k = c + s_k / n_k and
      sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T = S_k - s_k m_k^T - m_k s_k^T + n_k m_k m_k^T.

    Each step costs 2 K N P ~ K N D^2 multiply-adds in BLAS-3, against K triangular solves and
    K rank-N updates of a D x D matrix per component; built once per data set and reused at
    every EM step.  The expanded forms cancel: they lose about eps * max ||y||^2 / lambda_min
    (Sigma) absolute in the Mahalanobis terms, ~1e-11 in float64 on min-max scaled data with an
    eigenvalue floor of 1e-5, but ~0.1 in float32; so the features and both GEMMs are float64
    whatever the dtype of X, and the parameters are returned in X's dtype (float32 fits then
    match float64 ones better than the float32 per-component kernels do).
    """

    def __init__(self, X: torch.Tensor):
        N, D = X.shape
        self.N, self.D, self.n_pairs = N, D, D * (D + 1) // 2
        self.dtype = X.dtype  # of the parameters returned; the computation is float64
        X = X.double()
        self.center = X.mean(0)
        Yt = (X - self.center).T.contiguous()  # (D, N)
        F = torch.empty((n_moment_features(D), N), dtype=X.dtype, device=X.device)
        row = 0
        for i in range(D):  # rows (i, i), (i, i+1), ..., (i, D-1)
            torch.mul(Yt[i:], Yt[i], out=F[row : row + D - i])
            row += D - i
        F[row : row + D] = Yt
        F[-1] = 1.0
        self.F = F
        iu = torch.triu_indices(D, D, device=X.device)
        self._rows, self._cols = iu[0], iu[1]
        self._quad_scale = torch.where(self._rows == self._cols, -0.5, -1.0).to(X.dtype)

    def coefficients(
        self, log_weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
    ) -> torch.Tensor:
        """C (K, P) such that C F = log w_k + log N(x_n | mu_k, L_k L_k^T), shape (K, N)
        (float64)."""
        log_weights, means, chol = log_weights.double(), means.double(), chol.double()
        K, D = means.shape
        eye = torch.eye(D, dtype=chol.dtype, device=chol.device).expand(K, D, D)
        Linv = torch.linalg.solve_triangular(chol, eye, upper=False)  # (K, D, D) L_k^{-1}
        v = (Linv @ (means - self.center)[:, :, None])[:, :, 0]  # L_k^{-1} m_k
        lin = (Linv.mT @ v[:, :, None])[:, :, 0]  # Lambda_k m_k
        quad = (Linv.mT @ Linv)[:, self._rows, self._cols] * self._quad_scale
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(1)
        const = log_weights - 0.5 * (D * _LOG_2PI + (v * v).sum(1)) - log_det
        return torch.cat([quad, lin, const[:, None]], dim=1)

    def weighted_log_prob(
        self, log_weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
    ) -> torch.Tensor:
        """log w_k + log N(x_n | mu_k, Sigma_k), shape (K, N) (components along rows),
        float64."""
        return _mm(self.coefficients(log_weights, means, chol), self.F)

    def log_likelihood(
        self, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
    ) -> torch.Tensor:
        """``log p(x_n)`` (N,) under the mixture, in X's dtype."""
        W = self.weighted_log_prob(torch.log(weights), means, chol)
        return _normalize_exp(W, 0)[0].to(self.dtype)

    def e_step(
        self, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log p(x_n)`` (N,) in X's dtype and the responsibilities r_nk as (K, N), float64
        (for :meth:`gaussian_parameters`)."""
        log_norm, resp_t = _normalize_exp(
            self.weighted_log_prob(torch.log(weights), means, chol), 0
        )
        return log_norm.to(self.dtype), resp_t

    def gaussian_parameters(
        self, resp_t: torch.Tensor, min_nk: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """M-step from responsibilities (K, N): ``nk``, means, covariances (unregularised) as
        :func:`estimate_gaussian_parameters`, and the raw sums n_k = sum_n r_nk (K,), all in
        X's dtype."""
        G = _mm(resp_t.double(), self.F.T)  # (K, P)
        P, D, c = G.shape[1], self.D, self.center
        n, s1 = G[:, P - 1], G[:, self.n_pairs : self.n_pairs + D]
        nk = n.clamp_min(min_nk) + 10 * torch.finfo(self.dtype).eps
        means = (s1 + n[:, None] * c) / nk[:, None]
        m = means - c
        S = torch.empty((G.shape[0], D, D), dtype=G.dtype, device=G.device)
        S[:, self._rows, self._cols] = G[:, : self.n_pairs]
        S[:, self._cols, self._rows] = G[:, : self.n_pairs]
        sm = s1[:, :, None] * m[:, None, :]
        S -= sm + sm.mT
        S += n[:, None, None] * (m[:, :, None] * m[:, None, :])
        out = nk, means, S / nk[:, None, None], n
        return tuple(t.to(self.dtype) for t in out)


def log_gaussian_prob(
    X: torch.Tensor, means: torch.Tensor, chol: torch.Tensor, covariance_type: str
) -> torch.Tensor:
    """log N(x_n | mu_k, Sigma_k), shape (N, K).

    X (N, D); means (K, D); chol (K, D, D) lower factors L_k (Sigma_k = L_k L_k^T) or (K, D)
    standard deviations.  The Mahalanobis term is ||L_k^{-1}(x - mu_k)||^2, by a triangular
    product per component (:func:`_per_component_mahalanobis`) or, for small D
    (:func:`use_moments`), one GEMM for all components on moment features
    (:class:`MomentFeatures`); log det Sigma_k = 2 sum log diag L_k.
    """
    N, D = X.shape
    K = means.shape[0]
    if covariance_type == "diag":
        prec = 1.0 / (chol * chol)  # (K, D)
        maha = (
            (X * X) @ prec.T - 2.0 * X @ (means * prec).T + (means * means * prec).sum(1)
        )  # (N, K)
        log_det = torch.log(chol).sum(1)  # (K,)
    elif use_moments(N, D):  # small D: batched over components, two GEMMs
        zeros = torch.zeros(K, dtype=X.dtype, device=X.device)
        return MomentFeatures(X).weighted_log_prob(zeros, means, chol).T.to(X.dtype)
    else:
        maha = _per_component_mahalanobis(X, means, chol)  # memory O(N D), not O(N K D)
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(1)  # (K,)
    return -0.5 * (D * _LOG_2PI + maha) - log_det


@contextmanager
def _torch_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` inside (unchanged for None). On the CPU the
    O(K N D^2) kernels run in numpy's BLAS with its own threads; torch's ops around them are
    O(K N D) at most and its OpenMP pool, spinning beside BLAS's threads, costs more than it gains
    (benchmarks/bench_em.py at 2 threads: 452 ms per iteration with both pools, 388 with
    torch's at 1; BigLearn-EM of commit 779661a, which ran without it, on Pendigits on a 2-core
    machine loaded by other jobs: 2.0 s per outer iteration with torch's pool at 2 threads,
    0.16 s at 1)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def _blas_threads(n: int | None):
    """numpy/scipy's BLAS pools at ``n`` threads inside (unchanged for None).

    The batched small-D path (:class:`MomentFeatures`) runs with one: its GEMMs are 0.1-5 ms
    each, and a second BLAS thread that has to be woken for every call is a loss even on an
    idle machine and a disaster on a busy one (measured on a 2-core machine loaded by other
    jobs, ``benchmarks/bench_em_iterations.py --threads 2``: Joint-EM on Letter 670 ms per
    iteration with two BLAS threads, 15 ms with one; BigLearn-EM on Pendigits 594 against 17 ms
    per outer iteration).  The per-component path of large D keeps the caller's setting.
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _numpy_blas(X: torch.Tensor) -> bool:
    """Whether the O(N D^2) kernels run through numpy / scipy (CPU tensors) or torch (CUDA)."""
    return X.device.type == "cpu"


def _per_component_mahalanobis(
    X: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
) -> torch.Tensor:
    """||L_k^{-1}(x_n - mu_k)||^2 (N, K), one component at a time (memory O(N D)).

    The rows y_n^T = (x_n - mu_k)^T L_k^{-T} are a triangular matrix product by the inverse
    factor (BLAS trmm, in place in one reused (N, D) buffer, on the CPU; a GEMM in torch on
    CUDA) rather than a triangular solve: BLAS's trsm with N right-hand sides runs at a
    fraction of the rate of trmm (10 against 50 GFLOP/s at D=256, N=70,000 on one core).
    """
    N, D = X.shape
    K = means.shape[0]
    eye = torch.eye(D, dtype=X.dtype, device=X.device).expand(K, D, D)
    Linv = torch.linalg.solve_triangular(chol, eye, upper=False)  # (K, D, D) L_k^{-1}
    maha = torch.empty((N, K), dtype=X.dtype, device=X.device)
    if _numpy_blas(X):
        from scipy.linalg.blas import get_blas_funcs

        # subnormal means (e.g. from an initialisation) would make X - mu and trmm crawl
        mu = means.masked_fill(means.abs() < torch.finfo(means.dtype).tiny, 0.0).numpy()
        Xn, out = X.numpy(), maha.numpy()
        Y = np.empty((N, D), dtype=Xn.dtype)  # row-major: Y.T is a column-major (D, N) matrix
        trmm = get_blas_funcs("trmm", (Y,))
        for k in range(K):
            np.subtract(Xn, mu[k], out=Y)
            # (D, N) := L_k^{-1} (X - mu_k)^T in place: columns L_k^{-1} (x_n - mu_k)
            Yt = trmm(1.0, Linv[k].numpy(), Y.T, side=0, lower=1, overwrite_b=1)
            out[:, k] = np.einsum("dn,dn->n", Yt, Yt)
    else:
        for k in range(K):
            Y = (X - means[k]) @ Linv[k].mT
            maha[:, k] = (Y * Y).sum(1)
    return maha


def _per_component_covariances(
    X: torch.Tensor, resp: torch.Tensor, nk: torch.Tensor, means: torch.Tensor
) -> torch.Tensor:
    """sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / nk_k (K, D, D), one component at a time.

    S_k = W^T W with W = sqrt(r_k) (X - c), c the data mean (a symmetric rank-N update, syrk,
    through numpy's BLAS on the CPU into one reused (N, D) buffer; a torch matmul on CUDA), then
    moved to the component mean as in :class:`MomentFeatures`:
    S_k - s_k m_k^T - m_k s_k^T + n_k m_k m_k^T with s_k = sum_n r_nk (x_n - c), m_k = mu_k - c.
    One pass over the data per component instead of two, and no subnormal products where a
    component mean is tiny but not zero (x_n - mu_k = -mu_k on all-zero pixels).
    """
    N, D = X.shape
    K = resp.shape[1]
    c = X.mean(0)
    Xc = X - c
    n, s1, m = resp.sum(0), _mm(resp.T, Xc), means - c
    S = torch.empty((K, D, D), dtype=X.dtype, device=X.device)
    sqrt_resp = resp.sqrt()
    if _numpy_blas(X):
        Xc_n, sr, S_n = Xc.numpy(), sqrt_resp.numpy(), S.numpy()
        W = np.empty_like(Xc_n)
        for k in range(K):
            np.multiply(sr[:, k, None], Xc_n, out=W)
            S_n[k] = W.T @ W  # numpy: syrk
    else:
        for k in range(K):
            W = sqrt_resp[:, k, None] * Xc
            S[k] = W.T @ W
    sm = s1[:, :, None] * m[:, None, :]
    S -= sm + sm.mT
    S += n[:, None, None] * (m[:, :, None] * m[:, None, :])
    return S / nk[:, None, None]


def estimate_log_prob_resp(
    X: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    chol: torch.Tensor,
    covariance_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: ``log p(x_n)`` (N,) and log responsibilities (N, K)."""
    weighted = log_gaussian_prob(X, means, chol, covariance_type) + torch.log(weights)
    log_norm = _logsumexp(weighted, dim=1)  # (N,)
    return log_norm, weighted - log_norm[:, None]


def estimate_gaussian_parameters(
    X: torch.Tensor, resp: torch.Tensor, covariance_type: str, min_nk: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M-step without regularisation: ``nk`` (K,), means (K, D), covariances (K, D, D) / (K, D).

    X (N, D); resp (N, K).  ``nk = max(sum_n r_nk, min_nk) + 10 eps`` (the ``10 eps`` as in
    scikit-learn, ``min_nk`` is the BigLearn-EM code's guard ``max(1e-5, pi_k) * N``).
    Full covariances of small D (:func:`use_moments`) come from one GEMM on moment features
    (:meth:`MomentFeatures.gaussian_parameters`), else from one scatter matrix per component.
    """
    if covariance_type == "full" and use_moments(*X.shape):
        return MomentFeatures(X).gaussian_parameters(resp.T, min_nk)[:3]
    nk = resp.sum(0).clamp_min(min_nk) + 10 * torch.finfo(resp.dtype).eps  # (K,)
    means = (resp.T @ X) / nk[:, None]  # (K, D)
    if covariance_type == "diag":
        covariances = (resp.T @ (X * X)) / nk[:, None] - means * means
    else:
        covariances = _per_component_covariances(X, resp, nk, means)
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

    def _em_step(self, X, features, params, chol):
        """The E-step at ``params`` and the M-step after it: ``(log p(x_n) (N,), params)``.
        ``features``: X's :class:`MomentFeatures` (small D, full covariances) or None."""
        if features is not None:
            log_norm, resp_t = features.e_step(params[0], params[1], chol)
            nk, means, cov, _ = features.gaussian_parameters(resp_t)
        else:
            log_norm, log_resp = estimate_log_prob_resp(
                X, params[0], params[1], chol, self.covariance_type
            )
            resp = _exp_resp_(log_resp)  # tiny responsibilities 0, see _resp_floor
            nk, means, cov = estimate_gaussian_parameters(X, resp, self.covariance_type)
        cov = regularize_covariances(cov, self.reg, self.reg_covar, self.covariance_type)
        return log_norm, (nk / nk.sum(), means, cov)

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
        features = None  # built once, reused by every EM step of every restart
        if self.covariance_type == "full" and use_moments(*Xt.shape):
            features = MomentFeatures(Xt)
        with _blas_threads(1 if features is not None and _numpy_blas(Xt) else None):
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
                    log_norm, params = self._em_step(Xt, features, params, chol)
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
