"""Power k-means and deep power k-means.

Power k-means: Xu & Lange, "Power k-Means Clustering", ICML 2019 (PMLR 97). For centres
``theta`` (K, d) and squared distances ``d_ij = ||x_i - theta_j||^2`` the objective is

    f_s(theta) = sum_i M_s(d_i1, ..., d_iK),   M_s(y) = ((1/K) sum_j y_j^s)^(1/s)        (eq. 3)

which tends to the k-means objective ``sum_i min_j d_ij`` as ``s -> -inf``. M_s is concave for
``s <= 1``, so its tangent plane majorises it; minimising the surrogate (MM step) is a weighted
mean of the points with the weights of eq. (5)

    w_ij = dM_s/dd_ij = (1/K) d_ij^(s-1) ((1/K) sum_l d_il^s)^(1/s - 1),
    theta_j <- sum_i w_ij x_i / sum_i w_ij,

and ``s`` is annealed, ``s <- eta * s`` every ``anneal_every`` iterations from ``s0 < 0``
(defaults s0 = -1, eta = 1.04, every 2 iterations).

Numerics: everything is computed in log space. Writing ``pi_ij = softmax_j(s log d_ij)``,

    log M_s(d_i) = (logsumexp_j(s log d_ij) - log K) / s,
    w_ij = pi_ij * M_s(d_i) / d_ij          (so that sum_j w_ij d_ij = M_s(d_i), Euler),

and the centre update normalises ``log w`` over the points with a softmax, so ``|s|`` in the
thousands neither overflows nor underflows. A distance of exactly 0 (a point on a centre) is
floored at ``_D_FLOOR`` so that its log is finite: that point's weight then goes to that centre.
Note that the MM weights do *not* sum to 1 over clusters in general (``pi`` does); they do in the
limit ``s -> -inf``, where ``w_i`` becomes the one-hot nearest-centre assignment of Lloyd.

Deep power k-means: the power-mean loss put on the embedding of an auto-encoder, following the
"Deep Power k-means framework" (github.com/miccooper9/Deep-Power-K-means), itself built on
Deep k-Means (Moradi Fard, Thonet, Gaussier, 2020). Auto-encoder d-500-500-2000-e with ReLU hidden
layers, cluster representatives as learned parameters (K, e). Recipe (defaults):

1. pre-train the auto-encoder alone for ``pretrain_epochs = 50`` epochs (reconstruction only);
2. seed the representatives with k-means on the pre-trained embedding: ``n_init = 10`` restarts
   of k-means++ seeding + Lloyd, keep the lowest k-means objective (an unsupervised choice);
   with ``pretrain_restarts > 1`` (not the recipe) steps 1-2 run that many times and the start
   whose k-means labels have the highest silhouette on its embedding goes on;
3. ``n_rounds = 20`` rounds of ``epochs_per_s = 10`` epochs (``s = s0 * p_rate**r``, s0 = -3,
   p_rate = 1.5) minimising per mini-batch B (batch 250; the pre-training Adam, lr 1e-3, goes
   on with its moment estimates, the representatives added to it: a fresh Adam's first steps
   knock the pre-trained embedding about)

       mean_i ||x_i - g(f(x_i))||^2
         + lambda_pk * d * mean_i M_s(||f(x_i) - r_j||^2) / mean_i ||f(x_i) - mean_B f||^2

   and an L2 penalty ``lambda_reg * sum(decoder parameters^2)`` on the decoder, applied as
   Adam's (coupled, L2-equivalent) ``weight_decay = 2 * lambda_reg`` on the decoder's parameters.

The reconstruction term is the per-sample *sum* of squared errors, as in the reference. The
power mean is divided by the batch's scatter (total sum of squares about the batch mean of the
embedding): without it the loss is not invariant to the scale of the embedding, and the network
lowers it by shrinking the embedding (measured on digits, lambda_pk 0.1: the raw power mean is
112 against a reconstruction of 2.9 at the start of the joint phase, and the accuracy of the
pre-trained embedding, 0.80, drops to 0.51 within 2 epochs). The ratio is the power-mean
analogue of within/total scatter (k-means' 1 - R^2), in [0, 1] as s -> -inf; it is weighted per
input feature (``lambda_pk * d``) so that the same ``lambda_pk`` balances it against the
per-sample reconstruction sum on 64-pixel digits and 784-pixel MNIST. ``normalize=False`` gives
the reference loss ``rec + lambda_pk * mean_i M_s`` (the previous behaviour).

Deviations from the reference code (a research prototype): the power mean is taken in log space
(the reference patches infs by hand); the representatives start at k-means on the pre-trained
embeddings (or at the means of embeddings of labelled points) instead of U(-1, 1); mini-batches
are shuffled with a seeded ``torch.Generator`` (the reference uses a fixed order and drops the
last partial batch); pre-training; the scale-free power-mean term above.

Thread invariance: the same seed gives the same labels whatever the torch/MKL thread count.
Measured: the only thread-dependent operations in a training step are MKL's float32 GEMMs
whose output is small next to their inner dimension (the 2000->10 embedding layer at batch 250,
the weight gradients of the 10-wide layers, whose inner dimension is the batch): MKL splits the
inner dimension across threads, so the partial sums are added in another order (last-bit
differences that training amplifies). Torch's own reductions, the power mean and Adam were
bitwise identical at 1 and 2 threads. The fix is MKL's *strict conditional numerical
reproducibility* mode (``MKL_CBWR=AUTO,STRICT``: ?gemm bitwise reproducible whatever the thread
count, AVX2/AVX-512 code paths), which this module switches on when it is imported
(``mkl_cbwr_set`` through torch's MKL; :data:`MKL_CNR` says whether it took). MKL accepts it only
before its first call in the process; where it could not be set (MKL already used, a torch
without MKL), ``fit`` runs with one intra-op thread (a warning says so) so that the labels still
do not depend on the thread count.

Speed: ~19.2 MFLOP per sample per step (784-500-500-2000-10 and mirror); fused Adam, the decoder
L2 as weight decay and one host sync per epoch bring a step to ~0.6 of a large GEMM's rate on one
core and ~0.58 on two (MNIST 70k: ~6 s an epoch on two quiet cores, benchmarks/bench_dpkm.py).
On cores shared with other jobs, run torch with a short spin (``GOMP_SPINCOUNT=3000``, as the
pipeline's jobs do; read when torch is imported), passive waits or one thread: libgomp's default
spin-waits made a 2-thread epoch 13x slower there.
"""

from __future__ import annotations

import ctypes
import math
import os
import warnings

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

from ..utils import torch_generator
from . import register
from .base import (
    ClusterModel,
    Progress,
    TorchModel,
    adam,
    call,
    centers_from_labels,
    check_array_2d,
    check_init_labels,
    subnormals_flushed,
)

_D_FLOOR = 1e-300  # squared distances below this are treated as this (log stays finite)

# ---------------------------------------------------------------------------------------------
# Pure functions (numpy, float64). Shapes: N points, K centres, d features.
# ---------------------------------------------------------------------------------------------


def sq_distances(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(N, K) squared Euclidean distances, clipped at 0 against round-off."""
    D = (X**2).sum(1)[:, None] - 2.0 * X @ C.T + (C**2).sum(1)[None, :]
    return np.maximum(D, 0.0)


def log_power_mean(D: np.ndarray, s: float) -> np.ndarray:
    """(N,) ``log M_s(d_i1..d_iK)`` of the rows of ``D`` (N, K), stable for any ``s != 0``."""
    logD = np.log(np.maximum(D, _D_FLOOR))
    K = D.shape[1]
    return (logsumexp(s * logD, axis=1) - math.log(K)) / s


def power_mean(D: np.ndarray, s: float) -> np.ndarray:
    """(N,) power means ``M_s`` of the rows of ``D`` (N, K)."""
    return np.exp(log_power_mean(D, s))


def log_power_weights(D: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """MM weights of power k-means in log space.

    Parameters
    ----------
    D : (N, K) squared distances.
    s : power, ``s < 0`` (any value, e.g. -5000).

    Returns
    -------
    log_w : (N, K) ``log w_ij = log dM_s(d_i)/dd_ij``.
    log_pi : (N, K) ``log softmax_j(s log d_ij)``; ``exp(log_pi)`` rows sum to 1.
    """
    logD = np.log(np.maximum(D, _D_FLOOR))
    log_pi = log_softmax(s * logD, axis=1)
    logM = (logsumexp(s * logD, axis=1) - math.log(D.shape[1])) / s
    return log_pi + logM[:, None] - logD, log_pi


def power_weights(D: np.ndarray, s: float) -> np.ndarray:
    """(N, K) MM weights ``w_ij`` (eq. 5 of Xu & Lange); see :func:`log_power_weights`."""
    return np.exp(log_power_weights(D, s)[0])


def mm_update(X: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    """(K, d) weighted means ``sum_i w_ij x_i / sum_i w_ij``, normalised in log space."""
    A = np.exp(log_w - logsumexp(log_w, axis=0, keepdims=True))  # (N, K), columns sum to 1
    return A.T @ X


def kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """(K, d) k-means++ seeding (Arthur & Vassilvitskii 2007), plain (one candidate per step)."""
    N = X.shape[0]
    C = np.empty((n_clusters, X.shape[1]), dtype=np.float64)
    C[0] = X[rng.integers(N)]
    closest = sq_distances(X, C[:1])[:, 0]
    for k in range(1, n_clusters):
        total = closest.sum()
        idx = rng.integers(N) if total <= 0 else rng.choice(N, p=closest / total)
        C[k] = X[idx]
        closest = np.minimum(closest, sq_distances(X, C[k : k + 1])[:, 0])
    return C


def kmeans_objective(X: np.ndarray, C: np.ndarray) -> float:
    """``sum_i min_j ||x_i - c_j||^2``."""
    return float(sq_distances(X, C).min(1).sum())


# ---------------------------------------------------------------------------------------------
# Power k-means
# ---------------------------------------------------------------------------------------------


@register("power_kmeans")
class PowerKMeans(ClusterModel):
    """Power k-means (Xu & Lange, ICML 2019) with annealing of the power ``s``.

    Parameters
    ----------
    n_clusters : int, default 10
    s0 : float < 0, default -1.0
        Initial power.
    eta : float >= 1, default 1.04
        Annealing factor: ``s <- eta * s`` every ``anneal_every`` iterations (1: no annealing).
    anneal_every : int >= 1, default 2
    max_iter : int >= 1, default 1000
    tol : float >= 0, default 1e-6
        Stop when the largest centre move ``max_j ||theta_j_new - theta_j_old||`` is at most
        ``tol * sqrt(mean(var(X, axis=0)))`` (relative to the data scale). Moves caused by the
        annealing of ``s`` count, so the loop runs until the centres sit at a fixed point that
        no longer changes with ``s`` (Lloyd's, in the limit).
    hard_tol : float in [0, 1), default 1e-3
        ... and only once the weights are essentially hard: the mean over points of
        ``max_j pi_ij`` (``pi_i = softmax_j(s log d_ij)``) is at least ``1 - hard_tol``. Without
        it the loop stops on the plateaus where, with small ``|s|`` in high dimension, all
        centres first crowd near the data mean and hardly move (seen on digits and MNIST with
        ``s0 = -1``: stopped at s = -2.2) before the annealing pulls them apart.
    init : {"k-means++", "random"} or array (K, d), default "k-means++"
        Initial centres when ``fit`` gets no ``init_labels``: k-means++ seeding, K distinct
        random points, or given centres.
    random_state : int or None

    Attributes
    ----------
    cluster_centers_ : (K, d) float64
    labels_ : (N,) nearest centre at the end.
    init_labels_ : (N,) nearest centre at initialisation.
    history_ : dict with per-iteration "objective" (sum_i M_s at the iteration's s), "s" and
        "kmeans_objective" (sum_i min_j d_ij), all before that iteration's update.
    n_iter_ : int, s_ : final power, inertia_ : final k-means objective.
    """

    def __init__(
        self,
        n_clusters=10,
        s0=-1.0,
        eta=1.04,
        anneal_every=2,
        max_iter=1000,
        tol=1e-6,
        hard_tol=1e-3,
        init="k-means++",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.s0 = s0
        self.eta = eta
        self.anneal_every = anneal_every
        self.max_iter = max_iter
        self.tol = tol
        self.hard_tol = hard_tol
        self.init = init
        self.random_state = random_state

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "s0": "real < 0",
        "eta": "real >= 1",
        "anneal_every": "int >= 1",
        "max_iter": "int >= 1",
        "tol": "real >= 0",
        "hard_tol": "real in [0, 1)",
        "init": [{"k-means++", "random"}, "array"],
        "random_state": ["int >= 0", None],
    }

    def _initial_centers(self, X, lab, rng) -> np.ndarray:
        K = self.n_clusters
        if lab is not None:
            return centers_from_labels(X, lab, K, rng)
        if isinstance(self.init, str):
            if self.init == "k-means++":
                return kmeans_plusplus(X, K, rng)
            return X[rng.choice(X.shape[0], size=K, replace=False)].copy()
        C = np.asarray(self.init, dtype=np.float64)
        if C.shape != (K, X.shape[1]):
            raise ValueError(f"init must have shape ({K}, {X.shape[1]}), got {C.shape}")
        if not np.isfinite(C).all():
            raise ValueError("init contains NaN or Inf")
        return C.copy()

    def fit(self, X, y=None, init_labels=None, callback=None):
        """Run power k-means on ``X`` (N, d); ``init_labels`` (N,) optional, -1 = unlabelled;
        ``callback`` gets a :class:`~mixlib.models.base.Progress` after every iteration (its
        ``total`` is ``max_iter``; the last step is the iteration that converged)."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters).astype(np.float64)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        rng = np.random.default_rng(self.random_state)
        C = self._initial_centers(X, lab, rng)
        self.init_labels_ = sq_distances(X, C).argmin(1).astype(np.int64)

        tol = self.tol * math.sqrt(float(np.mean(np.var(X, axis=0))))
        s = float(self.s0)
        hist = {"objective": [], "s": [], "kmeans_objective": []}
        it = 0
        for it in range(1, self.max_iter + 1):
            D = sq_distances(X, C)  # (N, K)
            log_w, log_pi = log_power_weights(D, s)
            f_s, f_km = float(np.exp(log_power_mean(D, s)).sum()), float(D.min(1).sum())
            hist["objective"].append(f_s)
            hist["s"].append(s)
            hist["kmeans_objective"].append(f_km)
            C_new = mm_update(X, log_w)
            shift = float(np.sqrt(((C_new - C) ** 2).sum(1)).max())
            C = C_new
            hard = float(np.exp(log_pi.max(1)).mean())
            done = shift <= tol and hard >= 1.0 - self.hard_tol
            call(
                callback,
                Progress(
                    it,
                    it if done else self.max_iter,
                    {"objective": f_s, "kmeans_objective": f_km, "s": s},
                    labels=lambda C=C: sq_distances(X, C).argmin(1).astype(np.int64),
                    predict=lambda Z, C=C: sq_distances(np.asarray(Z, np.float64), C).argmin(1),
                ),
            )
            if done:
                break
            if it % self.anneal_every == 0:
                s *= self.eta
        self.cluster_centers_ = C
        self.labels_ = sq_distances(X, C).argmin(1).astype(np.int64)
        self.inertia_ = kmeans_objective(X, C)
        self.n_iter_ = it
        self.s_ = s
        self.history_ = hist
        return self

    def _fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("PowerKMeans is not fitted yet; call fit first")
        return self.cluster_centers_

    def predict(self, X):
        C = self._fitted()
        X = check_array_2d(X).astype(np.float64)
        if X.shape[1] != C.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {C.shape[1]}")
        return sq_distances(X, C).argmin(1).astype(np.int64)

    def n_parameters(self) -> int:
        return int(self._fitted().size)


# ---------------------------------------------------------------------------------------------
# Deep power k-means (torch)
# ---------------------------------------------------------------------------------------------

# MKL "conditional numerical reproducibility" (mkl_service.h): code branch AUTO, STRICT flag
_MKL_CBWR_ALL, _MKL_CBWR_AUTO, _MKL_CBWR_STRICT = -1, 2, 0x10000


def enable_mkl_strict_cnr() -> str:
    """Put torch's MKL in strict CNR mode (GEMMs bitwise identical whatever the thread count).

    Returns ``"strict"`` when the mode is on (set now, or already set, e.g. by
    ``MKL_CBWR=AUTO,STRICT`` in the environment), else why not: ``"no MKL"``, ``"unreachable"``
    (no ``mkl_serv_cbwr_*`` symbol in torch's library) or ``"refused (code)"`` (MKL accepts the
    change only before its first call in the process: code -8).
    """
    if not torch.backends.mkl.is_available():
        return "no MKL"
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get, set_ = lib.mkl_serv_cbwr_get, lib.mkl_serv_cbwr_set
    except (OSError, AttributeError):
        return "unreachable"
    get.argtypes = set_.argtypes = [ctypes.c_int]
    get.restype = set_.restype = ctypes.c_int
    if get(_MKL_CBWR_ALL) & _MKL_CBWR_STRICT:
        return "strict"
    code = set_(_MKL_CBWR_AUTO | _MKL_CBWR_STRICT)
    return "strict" if code == 0 else f"refused ({code})"


#: state of MKL's strict CNR mode, set on import (see the module docstring)
MKL_CNR = enable_mkl_strict_cnr()


def torch_log_power_mean(D: torch.Tensor, s: float, floor: float = 1e-12) -> torch.Tensor:
    """(B,) ``log M_s`` of the rows of ``D`` (B, K), differentiable, stable for any ``s != 0``.

    Distances are clamped at ``floor`` (the gradient of ``log`` at 0 is infinite).
    """
    logD = torch.log(D.clamp_min(floor))
    return (torch.logsumexp(s * logD, dim=1) - math.log(D.shape[1])) / s


def power_mean_loss(Z: torch.Tensor, R: torch.Tensor, s: float) -> torch.Tensor:
    """Mean over the batch of ``M_s(||z_i - r_j||^2, j = 1..K)``; Z (B, e), R (K, e)."""
    return torch.exp(torch_log_power_mean(_sq_dist_t(Z, R), s)).mean()


def scatter(Z: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """``mean_i ||z_i - mean(Z)||^2`` of a batch Z (B, e): the scale the power mean is divided by
    (floored: a batch of identical embeddings would divide by 0)."""
    return ((Z - Z.mean(0)) ** 2).sum(1).mean().clamp_min(floor)


def _sq_dist_t(Z: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    # direct differences: exact (no cancellation), and (B, K, e) is small for e = 10
    return ((Z[:, None, :] - R[None, :, :]) ** 2).sum(-1)


def _sq_dist_direct(Z: np.ndarray, C: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """(N, K) squared distances by direct differences (no GEMM: same bits whatever the BLAS)."""
    D = np.empty((Z.shape[0], C.shape[0]))
    for i in range(0, Z.shape[0], chunk):
        D[i : i + chunk] = ((Z[i : i + chunk, None, :] - C[None]) ** 2).sum(-1)
    return D


def embedding_silhouette(
    Z: np.ndarray, labels: np.ndarray, rng: np.random.Generator, sample_size: int = 5000
) -> float:
    """Mean silhouette of ``labels`` on ``Z`` (N, e), on ``sample_size`` rows drawn without
    replacement by ``rng`` when N is larger (all rows otherwise): scikit-learn's
    ``silhouette_score`` on Euclidean distances taken by direct differences, so the value does
    not depend on any thread count. -1 (the worst) where the rows hold fewer than two labels.

    Deep power k-means keeps the pre-training restart with the highest value. On mnist5k (10
    pre-trainings, seeds 0-9; a scratch measurement) it ranked the k-means labels' accuracy with
    Spearman 0.70, against 0.05 for the reconstruction loss, 0.01 for Calinski-Harabasz and
    -0.01 for k-means' within/total scatter; yet the best of 5 by it did not raise the trained
    model's accuracy (docs/results/dpkm)."""
    from sklearn.metrics import silhouette_score

    N = Z.shape[0]
    rows = np.sort(rng.choice(N, sample_size, replace=False)) if N > sample_size else slice(None)
    Zs, ls = Z[rows], labels[rows]
    if np.unique(ls).size < 2:
        return -1.0
    D = np.sqrt(_sq_dist_direct(Zs, Zs, chunk=256))
    return float(silhouette_score(D, ls, metric="precomputed"))


def cluster_sums(Z: np.ndarray, lab: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts (K,), sums (K, e)) of the rows of ``Z`` by label, by ``np.bincount``
    (sequential: the same bits whatever the thread count)."""
    cnt = np.bincount(lab, minlength=n_clusters)
    S = np.stack(
        [np.bincount(lab, weights=Z[:, j], minlength=n_clusters) for j in range(Z.shape[1])], 1
    )
    return cnt, S


def lloyd(Z: np.ndarray, C: np.ndarray, max_iter: int = 300) -> np.ndarray:
    """Lloyd's iterations on ``Z`` (N, e) from the centres ``C`` (K, e) until the centres stop
    changing or ``max_iter``; an emptied cluster keeps its centre. Thread-invariant."""
    for _ in range(max_iter):
        cnt, S = cluster_sums(Z, _sq_dist_direct(Z, C).argmin(1), C.shape[0])
        C_new = np.where(cnt[:, None] > 0, S / np.maximum(cnt, 1)[:, None], C)
        if np.array_equal(C_new, C):
            break
        C = C_new
    return C


def kmeans_restarts(
    Z: np.ndarray, n_clusters: int, rng: np.random.Generator, n_init: int = 10, max_iter: int = 300
) -> tuple[np.ndarray, float]:
    """k-means on ``Z`` (N, e): ``n_init`` runs of k-means++ seeding + Lloyd (until the centres
    stop changing or ``max_iter``); returns the centres (K, e) of the lowest objective and it.

    Distances by direct differences and sums by ``np.bincount`` (sequential): the result does not
    depend on any thread count. An emptied cluster keeps its centre.
    """
    N, e = Z.shape
    best_C, best_obj = None, math.inf
    for _ in range(n_init):
        C = np.empty((n_clusters, e))
        C[0] = Z[rng.integers(N)]
        closest = _sq_dist_direct(Z, C[:1])[:, 0]
        for k in range(1, n_clusters):
            total = closest.sum()
            C[k] = Z[rng.integers(N) if total <= 0 else rng.choice(N, p=closest / total)]
            closest = np.minimum(closest, _sq_dist_direct(Z, C[k : k + 1])[:, 0])
        C = lloyd(Z, C, max_iter)
        obj = float(_sq_dist_direct(Z, C).min(1).sum())
        if obj < best_obj:
            best_C, best_obj = C, obj
    return best_C, best_obj


class _AutoEncoder(torch.nn.Module):
    """MLP auto-encoder in_dim-h1-...-e-...-h1-in_dim, ReLU hidden, linear embedding/output."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], emb: int):
        super().__init__()
        dims = [in_dim, *hidden, emb]
        enc, dec = [], []
        for i in range(len(dims) - 1):
            enc.append(torch.nn.Linear(dims[i], dims[i + 1], device="meta"))
            if i < len(dims) - 2:
                enc.append(torch.nn.ReLU())
        rdims = dims[::-1]
        for i in range(len(rdims) - 1):
            dec.append(torch.nn.Linear(rdims[i], rdims[i + 1], device="meta"))
            if i < len(rdims) - 2:
                dec.append(torch.nn.ReLU())
        self.encoder = torch.nn.Sequential(*enc)
        self.decoder = torch.nn.Sequential(*dec)

    def reset_parameters(self, gen: torch.Generator, device, dtype) -> None:
        """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from ``gen``."""
        self.to_empty(device=device)
        self.to(dtype)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, torch.nn.Linear):
                    b = 1.0 / math.sqrt(m.in_features)
                    for p in (m.weight, m.bias):
                        v = torch.empty(p.shape, dtype=torch.float64).uniform_(-b, b, generator=gen)
                        p.copy_(v.to(device=device, dtype=dtype))

    def forward(self, x):
        z = self.encoder(x)
        return z, self.decoder(z)

    def embed(self, Xt: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """The encoder's output for the rows of ``Xt``, in batches, without autograd."""
        return batched(self.encoder, Xt, batch)

    def as_input(self, X) -> torch.Tensor:
        """``X`` checked (2-D, the feature count the encoder takes) as a tensor of the weights'
        dtype on their device."""
        return as_input(X, self.encoder[0].weight)


def batched(f, Xt: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """``f`` of the rows of ``Xt`` in batches of ``batch``, concatenated, without autograd."""
    with torch.inference_mode():
        return torch.cat([f(Xt[i : i + batch]) for i in range(0, len(Xt), batch)])


def as_input(X, w: torch.Tensor) -> torch.Tensor:
    """``X`` checked (2-D, the feature count of the first layer's weight ``w``, out x in) as a
    tensor of ``w``'s dtype on its device."""
    X = check_array_2d(X)
    if X.shape[1] != w.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {w.shape[1]}")
    return torch.as_tensor(np.asarray(X), dtype=w.dtype).to(w.device)


class _IntraOpThreads:
    """Run a block with ``n`` torch intra-op threads, then restore the previous count."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.prev = torch.get_num_threads()
        if self.n is not None and self.n != self.prev:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.prev:
            torch.set_num_threads(self.prev)


def thread_invariant(device: torch.device, owner: str) -> _IntraOpThreads:
    """The intra-op threads a torch fit on ``device`` runs with so that its result does not
    depend on the thread count: torch's as they are on a GPU or with MKL's strict CNR mode on,
    else one (with a warning naming ``owner`` and the remedy). Use as a context manager."""
    if device.type == "cpu" and MKL_CNR != "strict" and torch.get_num_threads() > 1:
        warnings.warn(
            f"MKL strict CNR mode is not on ({MKL_CNR}): {owner} runs with one intra-op thread "
            "so that its labels do not depend on the thread count (set MKL_CBWR=AUTO,STRICT, or "
            "import mixlib.models.power_kmeans before any torch computation, to use more)",
            RuntimeWarning,
            stacklevel=3,
        )
        return _IntraOpThreads(1)
    return _IntraOpThreads(None)


@register("deep_power_kmeans")
class DeepPowerKMeans(TorchModel):
    """Deep power k-means: an auto-encoder trained jointly with the power k-means loss.

    Defaults are the recipe of the module docstring (measured on digits, mnist5k and MNIST).

    Parameters
    ----------
    n_clusters : int, default 10
    embedding_size : int, default 10
    hidden_dims : tuple of int, default (500, 500, 2000)
        Encoder hidden widths (the decoder mirrors them).
    lr : float, default 1e-3 (Adam, both phases)
    batch_size : int, default 250
    epochs_per_s : int, default 10
        Epochs per value of ``s``.
    n_rounds : int, default 20
        Number of values of ``s`` (``s0 * p_rate**r``, r = 0..n_rounds-1).
    s0 : float < 0, default -3.0
    p_rate : float >= 1, default 1.5
    lambda_pk : float >= 0, default 0.01
        Weight of the power-mean term: per input feature of the scale-free ratio
        (``normalize=True``), or of the raw power mean (``normalize=False``).
    lambda_reg : float >= 0, default 0.01
        L2 penalty ``lambda_reg * sum(decoder parameters^2)``, as Adam weight decay
        ``2 * lambda_reg`` on the decoder (both phases).
    pretrain_epochs : int, default 50
        Auto-encoder-only epochs (reconstruction loss) before the representatives are seeded.
    n_init : int >= 1, default 10
        k-means restarts on the pre-trained embedding (lowest k-means objective kept) that seed
        the representatives; 1 = a single k-means run.
    pretrain_restarts : int >= 1, default 1
        Pre-train this many auto-encoders (each from its own seeded initialisation and batch
        order) and go on with the one whose k-means labels have the highest silhouette on its
        embedding (:func:`embedding_silhouette`, an unsupervised choice); 1 = the recipe (one
        pre-training, the same bits as before the option existed). Restart 0 is the one the
        recipe trains, so more restarts can only swap it for a better-separated start. Costs
        ``pretrain_epochs`` epochs per restart. Measured (docs/results/dpkm, 5 restarts, 3
        seeds): no gain, mnist5k ACC 0.689 +- 0.046 against the recipe's 0.695 +- 0.040,
        digits 0.825 +- 0.014 against 0.835 +- 0.013.
    normalize : bool, default True
        Divide the power mean by the batch's embedding scatter (see the module docstring).
    flush_denormal : bool, default True
        Train with subnormal floats flushed to zero on the CPU (FTZ/DAZ). Adam's moments of
        weights whose gradients have died out decay geometrically into the subnormal range,
        which the CPU handles ~100x slower: without flushing, a joint-phase epoch on mnist5k
        grows from 2.7 s to 12.8 s by epoch 100 (one thread, same start). Flushing changes
        values below ~1e-38 only, but training is chaotic: the labels differ from those of the
        exact arithmetic as they would for any 1-ulp change.
    device : str, default "auto" (CUDA when present)
    dtype : {"float32", "float64"}, default "float32"
    random_state : int or None

    Attributes
    ----------
    cluster_centers_ : (K, e) representatives (numpy).
    labels_ : (N,) nearest representative of each embedding after training.
    init_labels_ : (N,) nearest representative at initialisation (k-means on the pre-trained
        embedding).
    pretrain_restart_ : the pre-training restart kept (0 with one restart);
        ``pretrain_silhouettes_``: each restart's silhouette (empty with one restart).
    history_ : per pre-training epoch (of the restart kept) "pretrain_reconstruction"; per round
        "reconstruction", "power_mean" (the weighted term without lambda: ratio or raw power
        mean; batch means over the round's last epoch), "s"; per joint epoch "loss" (batch mean
        of the total loss, decoder L2 excluded).
    mkl_cnr_ : state of MKL's strict CNR mode during ``fit`` ("strict": thread-invariant GEMMs);
        ``fit_threads_``: the intra-op thread count ``fit`` ran with.
    """

    def __init__(
        self,
        n_clusters=10,
        embedding_size=10,
        hidden_dims=(500, 500, 2000),
        lr=1e-3,
        batch_size=250,
        epochs_per_s=10,
        n_rounds=20,
        s0=-3.0,
        p_rate=1.5,
        lambda_pk=0.01,
        lambda_reg=0.01,
        pretrain_epochs=50,
        n_init=10,
        pretrain_restarts=1,
        normalize=True,
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.embedding_size = embedding_size
        self.hidden_dims = hidden_dims
        self.lr = lr
        self.batch_size = batch_size
        self.epochs_per_s = epochs_per_s
        self.n_rounds = n_rounds
        self.s0 = s0
        self.p_rate = p_rate
        self.lambda_pk = lambda_pk
        self.lambda_reg = lambda_reg
        self.pretrain_epochs = pretrain_epochs
        self.n_init = n_init
        self.pretrain_restarts = pretrain_restarts
        self.normalize = normalize
        self.flush_denormal = flush_denormal
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "embedding_size": "int >= 1",
        "hidden_dims": "ints >= 1",
        "lr": "real > 0",
        "batch_size": "int >= 1",
        "epochs_per_s": "int >= 1",
        "n_rounds": "int >= 1",
        "s0": "real < 0",
        "p_rate": "real >= 1",
        "lambda_pk": "real >= 0",
        "lambda_reg": "real >= 0",
        "pretrain_epochs": "int >= 0",
        "n_init": "int >= 1",
        "pretrain_restarts": "int >= 1",
        "normalize": "bool",
        "flush_denormal": "bool",
        "device": "str",
        "dtype": {"float32", "float64"},
        "random_state": ["int >= 0", None],
    }

    # -- helpers ----------------------------------------------------------------------------
    def _batches(self, N: int, gen: torch.Generator, device):
        perm = torch.randperm(N, generator=gen).to(device)
        batches = [perm[i : i + self.batch_size] for i in range(0, N, self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:  # a batch of one point has no scatter
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def _adam(self, ae):
        """Adam over the encoder and the decoder, the decoder's L2 penalty as (coupled) weight
        decay: the gradient of ``lambda_reg * sum(p^2)`` is ``2 lambda_reg p``."""
        groups = [
            {"params": list(ae.encoder.parameters())},
            {"params": list(ae.decoder.parameters()), "weight_decay": 2.0 * self.lambda_reg},
        ]
        return adam(groups, lr=self.lr)

    def _pretrain(self, Xt, gen, rng, lab, restart, total, callback) -> dict:
        """1. pre-train a fresh auto-encoder (reconstruction only); 2. seed the representatives
        by k-means (best of ``n_init``) on its embedding, or from ``lab``; with several restarts,
        score the start (:func:`embedding_silhouette`; reported with the last epoch's
        progress). Returns the auto-encoder, its Adam (which the joint phase goes on with), the
        representatives ``R0``, their labels, the score and the epochs' reconstruction
        losses."""
        N, d = Xt.shape
        dt, dev = Xt.dtype, Xt.device
        ae = _AutoEncoder(d, tuple(int(h) for h in self.hidden_dims), self.embedding_size)
        ae.reset_parameters(gen, dev, dt)
        opt = self._adam(ae)
        recs = []
        for epoch in range(self.pretrain_epochs):
            rec_sum = torch.zeros((), dtype=dt, device=dev)  # on the device: no per-step sync
            batches = self._batches(N, gen, dev)
            for idx in batches:
                xb = Xt[idx]
                _, xr = ae(xb)
                loss = ((xr - xb) ** 2).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                rec_sum += loss.detach()
            recs.append(float(rec_sum) / len(batches))
            progress = Progress(
                restart * self.pretrain_epochs + epoch + 1, total, {"reconstruction": recs[-1]}
            )
            if self.pretrain_restarts > 1:
                progress.metrics["restart"] = restart
            if epoch + 1 < self.pretrain_epochs:
                call(callback, progress)
        Z0 = ae.embed(Xt).double().cpu().numpy()
        if lab is not None:
            R0 = centers_from_labels(Z0, lab, self.n_clusters, rng)
        else:
            R0, _ = kmeans_restarts(Z0, self.n_clusters, rng, self.n_init)
        labels = _sq_dist_direct(Z0, R0).argmin(1).astype(np.int64)
        score = None
        if self.pretrain_restarts > 1:
            score = embedding_silhouette(Z0, labels, rng)
        if self.pretrain_epochs:
            if score is not None:
                progress.metrics["silhouette"] = score
            call(callback, progress)
        return dict(ae=ae, opt=opt, R0=R0, labels=labels, silhouette=score, reconstruction=recs)

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, X, y=None, init_labels=None, callback=None):
        """Train on ``X`` (N, d); ``init_labels`` (N,) optional, -1 = unlabelled; ``callback``
        gets a :class:`~mixlib.models.base.Progress` after every epoch (pre-training and joint),
        with the epoch's mean losses."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        dev = self._torch_device()
        self.mkl_cnr_ = MKL_CNR
        with thread_invariant(dev, type(self).__name__), subnormals_flushed(self.flush_denormal):
            self.fit_threads_ = torch.get_num_threads()
            return self._fit(X, lab, dev, callback)

    def _fit(self, X, lab, dev, callback):
        seed = self._seed()
        dt = self._torch_dtype()
        gen = torch_generator(seed)  # CPU: same init and order on CPU and GPU
        rng = np.random.default_rng(seed)
        Xt = torch.as_tensor(np.asarray(X), dtype=dt).to(dev)  # whole data set, once
        N, d = Xt.shape

        history = {
            "pretrain_reconstruction": [],
            "reconstruction": [],
            "power_mean": [],
            "s": [],
            "loss": [],
        }
        R = self.pretrain_restarts
        total = R * self.pretrain_epochs + self.n_rounds * self.epochs_per_s
        best = None
        self.pretrain_silhouettes_ = []
        for r in range(R):
            # restart 0 draws from the recipe's generators: one restart is the recipe's bits
            if r:
                ss = np.random.SeedSequence([seed, r])
                gen = torch_generator(int(ss.generate_state(1, np.uint64)[0] >> 1))
                rng = np.random.default_rng(ss)
            start = dict(self._pretrain(Xt, gen, rng, lab, r, total, callback), gen=gen, restart=r)
            if R > 1:
                self.pretrain_silhouettes_.append(start["silhouette"])
            if best is None or start["silhouette"] > best["silhouette"]:
                best = start
        self.pretrain_restart_ = best["restart"]
        self.ae_, opt, gen = best["ae"], best["opt"], best["gen"]
        history["pretrain_reconstruction"] = best["reconstruction"]
        self.init_labels_ = best["labels"]
        self.reps_ = torch.nn.Parameter(torch.as_tensor(best["R0"], dtype=dt, device=dev))
        del best, start

        # 3. joint training with the annealed power mean. The pre-training Adam goes on (its
        # moment estimates kept; the representatives join as a new group): a fresh Adam's first
        # steps, ~lr * sign(grad) on every weight, knock the pre-trained embedding about (digits:
        # ACC 0.80 -> 0.73 after one epoch, back after ~20)
        opt.add_param_group({"params": [self.reps_], "weight_decay": 0.0})
        lam = self.lambda_pk * (d if self.normalize else 1.0)
        s = float(self.s0)
        step = R * self.pretrain_epochs
        for _ in range(self.n_rounds):
            for _ in range(self.epochs_per_s):
                tot = torch.zeros((), dtype=dt, device=dev)
                rec_sum = torch.zeros((), dtype=dt, device=dev)
                pm_sum = torch.zeros((), dtype=dt, device=dev)
                batches = self._batches(N, gen, dev)
                for idx in batches:
                    xb = Xt[idx]
                    zb, xr = self.ae_(xb)
                    rec = ((xr - xb) ** 2).sum(1).mean()
                    pm = power_mean_loss(zb, self.reps_, s)
                    if self.normalize:
                        pm = pm / scatter(zb)
                    loss = rec + lam * pm
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += loss.detach()
                    rec_sum += rec.detach()
                    pm_sum += pm.detach()
                nb = len(batches)
                tot = float(tot)  # one host sync per epoch
                history["loss"].append(tot / nb)
                if not math.isfinite(tot):
                    raise FloatingPointError(f"deep power k-means loss became {tot} at s={s}")
                step += 1
                call(
                    callback,
                    Progress(
                        step,
                        total,
                        {"loss": tot / nb, "s": s},
                        labels=lambda: self._assign(Xt),
                        predict=lambda Z: self._assign(self.ae_.as_input(Z)),
                    ),
                )
            history["reconstruction"].append(float(rec_sum) / nb)
            history["power_mean"].append(float(pm_sum) / nb)
            history["s"].append(s)
            s *= self.p_rate

        self.history_ = history
        self.s_ = s / self.p_rate
        self.cluster_centers_ = self.reps_.detach().double().cpu().numpy()
        self.labels_ = self._assign(Xt)
        return self

    def _assign(self, Xt: torch.Tensor) -> np.ndarray:
        Z = self.ae_.embed(Xt)
        with torch.inference_mode():
            return _sq_dist_t(Z, self.reps_.detach()).argmin(1).cpu().numpy().astype(np.int64)

    def _fitted(self):
        if not hasattr(self, "reps_"):
            raise RuntimeError("DeepPowerKMeans is not fitted yet; call fit first")

    def _to_tensor(self, X) -> torch.Tensor:
        self._fitted()
        return self.ae_.as_input(X)

    def predict(self, X):
        return self._assign(self._to_tensor(X))

    def transform(self, X) -> np.ndarray:
        """(N, e) embeddings."""
        return self.ae_.embed(self._to_tensor(X)).double().cpu().numpy()

    def n_parameters(self) -> int:
        self._fitted()
        return int(sum(p.numel() for p in self.ae_.parameters()) + self.reps_.numel())
