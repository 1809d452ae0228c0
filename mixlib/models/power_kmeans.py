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
Deep k-Means (Moradi Fard, Thonet, Gaussier, 2018). Auto-encoder d-500-500-2000-e with ReLU hidden
layers, cluster representatives as learned parameters (K, e), loss per mini-batch

    mean_i ||x_i - g(f(x_i))||^2 + lambda_pk * mean_i M_s(||f(x_i) - r_j||^2)
        + lambda_reg * sum(decoder parameters^2),

Adam, ``n_rounds`` rounds of ``epochs_per_s`` epochs, ``s <- p_rate * s`` between rounds from
``s0 = -3``. As in the reference, the reconstruction term is the per-sample *sum* of squared
errors (averaged over the batch), not the per-feature mean: ``lambda_pk = 10`` was set against
it; and the L2 term covers all decoder parameters (weights and biases). Deviations from that reference code (which is a research prototype): the power mean
is taken in log space (the reference patches infs by hand); the representatives start at
k-means++ on the initial embeddings (or at the means of embeddings of labelled points) instead
of U(-1, 1); mini-batches are shuffled with a seeded ``torch.Generator`` (the reference uses a
fixed order and drops the last partial batch); optional auto-encoder pre-training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

from . import register
from .base import (
    ClusterModel,
    Progress,
    TorchModel,
    call,
    centers_from_labels,
    check_array_2d,
    check_init_labels,
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


def torch_log_power_mean(D: torch.Tensor, s: float, floor: float = 1e-12) -> torch.Tensor:
    """(B,) ``log M_s`` of the rows of ``D`` (B, K), differentiable, stable for any ``s != 0``.

    Distances are clamped at ``floor`` (the gradient of ``log`` at 0 is infinite).
    """
    logD = torch.log(D.clamp_min(floor))
    return (torch.logsumexp(s * logD, dim=1) - math.log(D.shape[1])) / s


def power_mean_loss(Z: torch.Tensor, R: torch.Tensor, s: float) -> torch.Tensor:
    """Mean over the batch of ``M_s(||z_i - r_j||^2, j = 1..K)``; Z (B, e), R (K, e)."""
    return torch.exp(torch_log_power_mean(_sq_dist_t(Z, R), s)).mean()


def _sq_dist_t(Z: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    # direct differences: exact (no cancellation), and (B, K, e) is small for e = 10
    return ((Z[:, None, :] - R[None, :, :]) ** 2).sum(-1)


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


@register("deep_power_kmeans")
class DeepPowerKMeans(TorchModel):
    """Deep power k-means: an auto-encoder trained jointly with the power k-means loss.

    Parameters
    ----------
    n_clusters : int, default 10
    embedding_size : int, default 10
    hidden_dims : tuple of int, default (500, 500, 2000)
        Encoder hidden widths (the decoder mirrors them).
    lr : float, default 1e-3 (Adam)
    batch_size : int, default 250
    epochs_per_s : int, default 10
        Epochs per value of ``s``.
    n_rounds : int, default 20
        Number of values of ``s`` (``s0 * p_rate**r``, r = 0..n_rounds-1).
    s0 : float < 0, default -3.0
    p_rate : float >= 1, default 1.5
    lambda_pk : float >= 0, default 10.0
        Weight of the power-mean loss.
    lambda_reg : float >= 0, default 0.01
        Weight of the sum of squares of the decoder's parameters.
    pretrain_epochs : int, default 0
        Auto-encoder-only epochs (reconstruction loss) before the representatives are seeded.
    device : str, default "auto" (CUDA when present)
    dtype : {"float32", "float64"}, default "float32"
    random_state : int or None

    Attributes
    ----------
    cluster_centers_ : (K, e) representatives (numpy).
    labels_ : (N,) nearest representative of each embedding after training.
    init_labels_ : (N,) nearest representative at initialisation.
    history_ : per round "reconstruction", "power_mean" (batch means over the round's last
        epoch), "s"; per epoch "loss" (total loss, batch mean).
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
        lambda_pk=10.0,
        lambda_reg=0.01,
        pretrain_epochs=0,
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
        "device": "str",
        "dtype": {"float32", "float64"},
        "random_state": ["int >= 0", None],
    }

    # -- helpers ----------------------------------------------------------------------------
    def _embed(self, Xt: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat(
                [self.ae_.encoder(Xt[i : i + batch]) for i in range(0, len(Xt), batch)]
            )

    def _decoder_sq(self) -> torch.Tensor:
        return sum((p**2).sum() for p in self.ae_.decoder.parameters())

    def _batches(self, N: int, gen: torch.Generator, device):
        perm = torch.randperm(N, generator=gen).to(device)
        return [perm[i : i + self.batch_size] for i in range(0, N, self.batch_size)]

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, X, y=None, init_labels=None, callback=None):
        """Train on ``X`` (N, d); ``init_labels`` (N,) optional, -1 = unlabelled; ``callback``
        gets a :class:`~mixlib.models.base.Progress` after every epoch (pre-training and
        joint), with the epoch's mean losses."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        seed = self._seed()
        dev, dt = self._torch_device(), self._torch_dtype()
        gen = torch.Generator().manual_seed(seed)  # CPU: same init and order on CPU and GPU
        rng = np.random.default_rng(seed)
        Xt = torch.as_tensor(np.asarray(X), dtype=dt).to(dev)  # whole data set, once
        N = Xt.shape[0]

        self.ae_ = _AutoEncoder(
            X.shape[1], tuple(int(h) for h in self.hidden_dims), self.embedding_size
        )
        self.ae_.reset_parameters(gen, dev, dt)
        history = {"reconstruction": [], "power_mean": [], "s": [], "loss": []}

        total = self.pretrain_epochs + self.n_rounds * self.epochs_per_s
        if self.pretrain_epochs:
            opt = torch.optim.Adam(self.ae_.parameters(), lr=self.lr)
            for epoch in range(self.pretrain_epochs):
                rec_sum = 0.0
                batches = self._batches(N, gen, dev)
                for idx in batches:
                    xb = Xt[idx]
                    _, xr = self.ae_(xb)
                    loss = ((xr - xb) ** 2).sum(1).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    rec_sum += float(loss.detach())
                call(
                    callback, Progress(epoch + 1, total, {"reconstruction": rec_sum / len(batches)})
                )

        Z0 = self._embed(Xt).double().cpu().numpy()
        R0 = (
            centers_from_labels(Z0, lab, self.n_clusters, rng)
            if lab is not None
            else (kmeans_plusplus(Z0, self.n_clusters, rng))
        )
        self.init_labels_ = sq_distances(Z0, R0).argmin(1).astype(np.int64)
        self.reps_ = torch.nn.Parameter(torch.as_tensor(R0, dtype=dt, device=dev))

        opt = torch.optim.Adam([*self.ae_.parameters(), self.reps_], lr=self.lr)
        s = float(self.s0)
        step = self.pretrain_epochs
        for _ in range(self.n_rounds):
            for _ in range(self.epochs_per_s):
                tot = rec_sum = pm_sum = 0.0
                batches = self._batches(N, gen, dev)
                for idx in batches:
                    xb = Xt[idx]
                    zb, xr = self.ae_(xb)
                    rec = ((xr - xb) ** 2).sum(1).mean()
                    pm = power_mean_loss(zb, self.reps_, s)
                    loss = rec + self.lambda_pk * pm + self.lambda_reg * self._decoder_sq()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach())
                    rec_sum += float(rec.detach())
                    pm_sum += float(pm.detach())
                nb = len(batches)
                history["loss"].append(tot / nb)
                if not math.isfinite(tot):
                    raise FloatingPointError(f"deep power k-means loss became {tot} at s={s}")
                step += 1
                call(
                    callback,
                    Progress(
                        step,
                        total,
                        {
                            "loss": tot / nb,
                            "reconstruction": rec_sum / nb,
                            "power_mean": pm_sum / nb,
                            "s": s,
                        },
                        labels=lambda: self._assign(Xt),
                        predict=lambda Z: self._assign(self._as_tensor(Z)),
                    ),
                )
            history["reconstruction"].append(rec_sum / nb)
            history["power_mean"].append(pm_sum / nb)
            history["s"].append(s)
            s *= self.p_rate

        self.history_ = history
        self.s_ = s / self.p_rate
        self.cluster_centers_ = self.reps_.detach().double().cpu().numpy()
        self.labels_ = self._assign(Xt)
        return self

    def _assign(self, Xt: torch.Tensor) -> np.ndarray:
        Z = self._embed(Xt)
        with torch.inference_mode():
            return _sq_dist_t(Z, self.reps_.detach()).argmin(1).cpu().numpy().astype(np.int64)

    def _fitted(self):
        if not hasattr(self, "reps_"):
            raise RuntimeError("DeepPowerKMeans is not fitted yet; call fit first")

    def _as_tensor(self, X) -> torch.Tensor:
        return torch.as_tensor(np.asarray(X), dtype=self.reps_.dtype).to(self.reps_.device)

    def _to_tensor(self, X) -> torch.Tensor:
        self._fitted()
        X = check_array_2d(X)
        p = self.ae_.encoder[0].in_features
        if X.shape[1] != p:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {p}")
        return self._as_tensor(X)

    def predict(self, X):
        return self._assign(self._to_tensor(X))

    def transform(self, X) -> np.ndarray:
        """(N, e) embeddings."""
        return self._embed(self._to_tensor(X)).double().cpu().numpy()

    def n_parameters(self) -> int:
        self._fitted()
        return int(sum(p.numel() for p in self.ae_.parameters()) + self.reps_.numel())
