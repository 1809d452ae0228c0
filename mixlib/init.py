"""Initialisation methods: the pipeline stage shared by every model (the paper's INIT column).

Each method clusters a random subset (``subset`` points, all when None) of a feature of the data
and returns labels for the whole dataset with ``-1`` for the points it did not see, in the format
of :func:`mixlib.models.base.check_init_labels`.

Features (``feature``), as in MixMate's reference ``trainv2.py`` (Lin, Song & Ba 2022):

- ``raw``        the data as given (pixels).
- ``pca``        PCA of the data to ``pca_components`` dimensions.
- ``scattering`` the reference's scattering feature: each image minus its own mean, the 2D
                 wavelet scattering transform (Bruna & Mallat; kymatio's ``Scattering2D``,
                 ``scattering_J`` scales, 8 angles, order 2: for 28x28 images and J=3, 217
                 channels on a 3x3 grid), every channel of an image divided by its largest
                 absolute value over the spatial positions (without it the order-0/1 channels
                 hold ~90% of the energy and SSC collapses), flattened, then PCA to
                 ``pca_components`` (none when it is None). Needs ``image_shape`` (h, w).

The feature of every point (``subset`` None) does not depend on the seed: the workflow computes
it once per dataset and feature recipe (:func:`feature_recipe`, the ``init_features`` rule) and
every seed's and method's job reads it (``initialize(features=...)``).

PCA is *uncentred* by default (``pca_center=False``): the projection on the top eigenvectors of
``F^T F``, the reference's ``dim_reduction``. ``standardize`` (False) z-scores each column of the
feature before the PCA.

Methods (``method``):

- ``random``   uniform random labels on the subset.
- ``kmeans``   k-means++ / Lloyd (scikit-learn), ``n_init`` restarts.
- ``spectral`` normalised spectral clustering (Ng, Jordan & Weiss 2002) of the symmetrised
               exact k-nearest-neighbour graph (cosine similarity, ``n_neighbors``), built by
               batched matrix products in bounded memory: it scales to all 70,000 MNIST images
               (a sparse graph and a sparse eigensolver; no dense N x N matrix).
- ``ssc``      sparse subspace clustering by orthogonal matching pursuit (You, Robinson & Vidal,
               CVPR 2016), the reference's ``SparseSubspaceClusteringOMP(n_nonzero=5,
               thr=1e-5)``: each point coded by at most ``n_nonzero`` other points, the rows of
               the coefficients C scaled to unit norm, affinity ``(|C| + |C|^T) / 2``, then the
               same normalised spectral step.
- ``umap``     N2D's clustering step (McConville et al., ICPR 2020) on this feature instead of
               an auto-encoder's embedding: UMAP (McInnes et al.; ``n_neighbors``,
               ``min_dist`` 0, Euclidean) to ``n_clusters`` dimensions, then a full-covariance
               Gaussian mixture fitted by EM from k-means starts (``n_init`` of them, the best
               lower bound kept, where N2D runs one: on Fashion-MNIST one start can stop in a
               local optimum 0.08 ACC lower); the labels are its most probable components
               (:func:`umap_model`, :func:`fit_mixture`, which N2D uses too). With
               ``equal_sizes`` the mixture is then refined by EM under the constraint that
               every cluster holds N/K points in expectation (:func:`equal_size_mixture`).

``ensemble`` (1: off) runs every method but ``random`` that many times on the same feature, each
run with its own seed (the first run's is the single run's: member 0 gives the labels of the init
without ``ensemble``), and keeps their consensus by majority vote after matching each run's
cluster numbers to the vote's (:func:`consensus_labels`). Only the random steps are repeated: the
feature, and the kNN or SSC graph of ``spectral``/``ssc``, are computed once; for ``umap`` each
member has its own embedding, which is where its runs differ.

The spectral step (:func:`spectral_labels`) row-normalises the spectral embedding before k-means,
as Ng-Jordan-Weiss and the reference do; scikit-learn's ``SpectralClustering`` does not, and then
spends clusters on tiny outlier groups.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np
import scipy.linalg
from scipy import sparse
from scipy.sparse.linalg import eigsh

METHODS = ("random", "kmeans", "spectral", "ssc", "umap")
FEATURES = ("raw", "pca", "scattering")
# the keys of an init entry the feature depends on (init_features' arguments)
FEATURE_KEYS = ("feature", "scattering_J", "standardize", "pca_components", "pca_center")

log = logging.getLogger("mixlib")


def initialize(
    X: np.ndarray,
    n_clusters: int,
    method: str,
    *,
    seed: int,
    subset: int | None = None,
    feature: str = "raw",
    pca_components: int | None = 50,
    pca_center: bool = False,
    n_init: int = 10,
    n_neighbors: int = 10,
    n_nonzero: int = 5,
    scattering_J: int = 3,
    standardize: bool = False,
    image_shape: tuple[int, ...] | None = None,
    features: np.ndarray | None = None,
    equal_sizes: bool = False,
    ensemble: int = 1,
) -> tuple[np.ndarray, dict]:
    """Return ``(labels (N,), info)``; ``labels[i] == -1`` where point ``i`` was not in the subset.

    ``image_shape``: (h, w) of the rows of ``X`` (flattened images), needed by the feature
    ``scattering``. ``features``: the feature of every row of ``X``, computed beforehand by
    :func:`init_features` with this init's :func:`feature_keys` (the labels of computing it here
    with as many threads); only without a ``subset``. ``info`` holds the number of labelled points, the
    feature's dimension and the seconds spent in each step (``seconds_<step>``, summed over an
    ensemble's members); with ``ensemble`` > 1 also ``ensemble`` and ``members``, the members'
    labels of the clustered points (ensemble, n_labelled).
    """
    if method not in METHODS:
        raise ValueError(f"init method {method!r} unknown; choose from {METHODS}")
    if feature not in FEATURES:
        raise ValueError(f"init feature {feature!r} unknown; choose from {FEATURES}")
    if feature == "scattering":
        _check_image_shape(image_shape, X.shape[1])
    if feature == "pca" and pca_components is None:
        raise ValueError("init feature 'pca' needs pca_components (an integer)")
    if equal_sizes and method != "umap":
        raise ValueError(f"init key equal_sizes is for the method 'umap', not {method!r}")
    if not isinstance(ensemble, (int, np.integer)) or ensemble < 1:
        raise ValueError(f"init key ensemble must be an integer >= 1, got {ensemble!r}")
    if ensemble > 1 and method == "random":
        raise ValueError("init key ensemble is not for the method 'random' (a vote of noise)")
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    idx = np.arange(n) if subset is None or subset >= n else np.sort(rng.choice(n, subset, False))
    timer = StepTimer()
    if features is not None:
        if subset is not None or features.ndim != 2 or features.shape[0] != n:
            raise ValueError(
                f"precomputed features of shape {features.shape} for {n} rows"
                + (f" and subset {subset}: they are for inits without a subset" if subset else "")
            )
        F = features
    else:
        F = init_features(
            X if idx.size == n else X[idx],  # no copy of the whole data set
            feature,
            image_shape=image_shape,
            scattering_J=scattering_J,
            standardize=standardize,
            pca_components=pca_components,
            pca_center=pca_center,
            timer=timer,
        )
    rs = int(rng.integers(2**31 - 1))
    seeds = [rs] + [int(rng.integers(2**31 - 1)) for _ in range(ensemble - 1)]
    if method == "random":
        members = [rng.integers(n_clusters, size=idx.size)]
    elif method == "kmeans":
        from sklearn.cluster import KMeans

        members = []
        for s in seeds:
            members.append(KMeans(n_clusters, n_init=n_init, random_state=s).fit_predict(F))
            timer.lap("kmeans")
    elif method == "umap":
        members = [
            umap_labels(
                F,
                n_clusters,
                n_neighbors=n_neighbors,
                n_init=n_init,
                seed=s,
                equal_sizes=equal_sizes,
                timer=timer,
            )
            for s in seeds
        ]
    else:
        if method == "spectral":
            W = knn_graph(F, n_neighbors)
            timer.lap("knn_graph")
        else:
            W = ssc_affinity(ssc_omp(F, n_nonzero=n_nonzero))
            timer.lap("ssc_omp")
        members = []
        for s in seeds:
            members.append(spectral_labels(W, n_clusters, seed=s, n_init=n_init))
            timer.lap("spectral")
    info = {"n_labelled": int(idx.size), "feature": feature, "n_features": int(F.shape[1])}
    if ensemble == 1:
        sub = members[0]
    else:
        sub = consensus_labels(members, n_clusters)
        timer.lap("consensus")
        info.update(ensemble=ensemble, members=np.stack(members).astype(np.int64))
    labels = np.full(n, -1, dtype=np.int64)
    labels[idx] = sub
    return labels, {**info, **timer.seconds}


class StepTimer:
    """Seconds of each step of an init (``seconds_<step>``), logged as each step ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        t = time.perf_counter()
        key = f"seconds_{name}"
        self.seconds[key] = self.seconds.get(key, 0.0) + t - self._t  # summed over repeats
        log.info("init step %s: %.1f s", name, t - self._t)
        self._t = t


def init_features(
    X: np.ndarray,
    feature: str,
    *,
    image_shape=None,
    scattering_J: int = 3,
    standardize: bool = False,
    pca_components: int | None = 50,
    pca_center: bool = False,
    timer: StepTimer | None = None,
) -> np.ndarray:
    """The feature an init clusters (module docstring): (n, d) -> (n, d') float32."""
    timer = timer or StepTimer()
    if feature == "scattering":
        F = scattering_features(X, image_shape, J=scattering_J)
        timer.lap("scattering")
    else:
        F = np.asarray(X, dtype=np.float32)
    if standardize:
        mu = F.mean(0, dtype=np.float64)
        sd = F.std(0, dtype=np.float64)
        F = ((F - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    if feature in ("pca", "scattering") and pca_components is not None:
        F = pca_project(F, pca_components, center=pca_center)
        timer.lap("pca")
    return F


def feature_recipe(spec: dict) -> str | None:
    """The ``{recipe}`` of the shared feature an init entry ``spec`` (every key explicit, as
    :meth:`mixlib.plan.Plan.init_for` gives it) clusters: the feature's name and a hash of its
    :data:`FEATURE_KEYS`, equal for the inits that cluster the same feature; None for the
    ``raw`` feature (nothing worth sharing) and where the feature depends on the seed (a
    ``subset``)."""
    if spec["subset"] is not None or spec["feature"] == "raw":
        return None
    keys = feature_keys(spec)
    blob = json.dumps(keys, sort_keys=True).encode()
    return f"{keys['feature']}-{hashlib.sha1(blob).hexdigest()[:10]}"


def feature_keys(spec: dict) -> dict:
    """The keys of an init entry ``spec`` its feature depends on: :data:`FEATURE_KEYS`, but
    ``scattering_J`` only for the scattering feature."""
    keys = {k: spec[k] for k in FEATURE_KEYS}
    if keys["feature"] != "scattering":
        keys.pop("scattering_J")
    return keys


def _check_image_shape(image_shape, d: int) -> None:
    if image_shape is None or len(image_shape) != 2:
        raise ValueError(
            "init feature 'scattering' needs images of shape (h, w); "
            f"this data has image shape {tuple(image_shape or ())}"
        )
    if int(np.prod(image_shape)) != d:
        raise ValueError(f"image shape {tuple(image_shape)} does not match {d} features per row")


def scattering_features(
    X: np.ndarray,
    image_shape,
    *,
    J: int = 3,
    batch_size: int | None = None,
    device: str = "auto",
    normalize: bool = True,
) -> np.ndarray:
    """The reference's scattering feature of flattened images (module docstring).

    ``X`` (N, h*w) -> (N, C * (h // 2^J) * (w // 2^J)) float32, C = 1 + 8J + 32J(J-1):
    each image minus its mean, scattering (order 2, 8 angles, ``J`` scales), and, with
    ``normalize``, every channel divided by its largest absolute value over the positions.
    Computed in batches of ``batch_size`` images, on CUDA when present (``device="auto"``);
    by default 256 on the CPU and 4096 on CUDA, where batches of 256 leave the GPU idle
    (all 70,000 MNIST images on an H200: 25.0 s at 256, 2.4 s at 4096, the features equal;
    docs/results/benchmarks/bench_gpu.txt). Each image's feature is computed alone: the batch
    size changes no value.
    """
    import torch

    # Not ``kymatio.torch``: that package also imports the 3D frontend, which needs
    # scipy.special.sph_harm (removed in recent SciPy); the 2D frontend alone imports fine.
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    from .utils import resolve_device

    _check_image_shape(image_shape, X.shape[1])
    h, w = (int(s) for s in image_shape)
    if 2**J > min(h, w):
        raise ValueError(f"scattering_J={J} too large for {h}x{w} images (need 2^J <= {min(h, w)})")
    dev = resolve_device(device)
    if batch_size is None:
        batch_size = 4096 if dev.type == "cuda" else 256
    S = ScatteringTorch2D(J=J, shape=(h, w)).to(dev)
    out = None
    with torch.no_grad():
        for i in range(0, X.shape[0], batch_size):
            xb = torch.as_tensor(np.asarray(X[i : i + batch_size], dtype=np.float32), device=dev)
            xb = xb.reshape(-1, h, w)
            xb = xb - xb.mean(dim=(1, 2), keepdim=True)  # (B, h, w), each image centred
            s = S(xb)  # (B, C, h / 2^J, w / 2^J)
            s = s.reshape(s.shape[0], s.shape[-3], -1)  # (B, C, positions)
            if normalize:  # each channel of each image to [-1, 1]
                s = s / s.abs().amax(dim=2, keepdim=True).clamp_min(1e-12)
            s = s.reshape(xb.shape[0], -1).cpu().numpy()
            if out is None:
                out = np.empty((X.shape[0], s.shape[1]), dtype=np.float32)
            out[i : i + s.shape[0]] = s
    return out


def pca_project(F: np.ndarray, n_components: int, *, center: bool = False, chunk: int = 4096):
    """(n, d) -> (n, min(n_components, d)) float32: projection on the leading eigenvectors of
    ``F^T F`` (uncentred, the reference's ``dim_reduction``) or of the covariance
    (``center``), largest first. ``F^T F`` is accumulated in float64 by chunks of rows, so the
    extra memory is O(d^2 + chunk d)."""
    n, d = F.shape
    k = min(int(n_components), d, n)
    S = np.zeros((d, d))
    s1 = np.zeros(d)
    for i in range(0, n, chunk):
        c = np.asarray(F[i : i + chunk], dtype=np.float64)
        S += c.T @ c
        s1 += c.sum(0)
    mu = s1 / n
    if center:
        S -= n * np.outer(mu, mu)
    _, V = np.linalg.eigh(S)
    V = V[:, ::-1][:, :k]  # (d, k), leading first
    # a deterministic sign per component (eigh's signs are arbitrary)
    V *= np.where(V[np.abs(V).argmax(0), np.arange(k)] < 0, -1.0, 1.0)
    V32 = np.ascontiguousarray(V, dtype=np.float32)
    shift = (mu @ V).astype(np.float32) if center else np.float32(0)
    P = np.empty((n, k), dtype=np.float32)
    for i in range(0, n, chunk):
        P[i : i + chunk] = np.asarray(F[i : i + chunk], dtype=np.float32) @ V32 - shift
    return P


def knn_graph(
    F: np.ndarray, n_neighbors: int = 10, *, batch_size: int = 512, device: str = "auto"
) -> sparse.csr_matrix:
    """Symmetric exact k-nearest-neighbour graph ``(A + A^T) / 2`` (N, N), cosine similarity.

    ``A[i, j] = 1`` when j is among the ``n_neighbors`` points most similar to i (i itself
    excluded). The similarities of ``batch_size`` rows at a time against all points are one
    matrix product (torch, all threads), so memory is O(batch_size N), never N^2; on CUDA when
    present (``device="auto"``), like :func:`scattering_features`.
    """
    import torch

    from .utils import resolve_device

    n = F.shape[0]
    k = min(int(n_neighbors), n - 1)
    if k < 1:
        raise ValueError(f"knn_graph needs at least 2 points, got {n}")
    dev = resolve_device(device)
    Y = torch.as_tensor(np.asarray(F, dtype=np.float32), device=dev)
    Y = Y / Y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cols = np.empty((n, k), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            S = Y[s : s + batch_size] @ Y.T  # (b, N)
            r = torch.arange(S.shape[0], device=dev)
            S[r, r + s] = -float("inf")  # a point is not its own neighbour
            cols[s : s + S.shape[0]] = S.topk(k, dim=1).indices.cpu().numpy()
    A = sparse.csr_matrix(
        (np.ones(n * k), (np.repeat(np.arange(n), k), cols.ravel())), shape=(n, n)
    )
    return ((A + A.T) * 0.5).tocsr()


def umap_model(
    n_components: int,
    n_neighbors: int,
    seed: int,
    *,
    min_dist: float = 0.0,
    metric: str = "euclidean",
    n_epochs: int | None = None,
):
    """N2D's UMAP (unfitted): umap-learn's defaults but for these arguments; one thread, as a
    ``random_state`` implies (umap-learn's rule for reproducible layouts)."""
    import umap  # numba compiles on first use: imported only when fitting

    return umap.UMAP(
        n_components=n_components,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        n_epochs=n_epochs,
        random_state=seed,
        n_jobs=1,  # what a random_state implies anyway; said here to silence its warning
    )


def fit_mixture(
    E: np.ndarray, n_clusters: int, covariance_type: str, seed: int, *, n_init: int = 1
):
    """N2D's mixture of ``E`` (N, e), fitted: scikit-learn's ``GaussianMixture`` with its
    defaults (k-means start, 100 iterations; ``n_init`` runs, the best lower bound kept)."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(
        n_components=n_clusters, covariance_type=covariance_type, random_state=seed, n_init=n_init
    ).fit(E)


def umap_labels(
    F: np.ndarray,
    n_clusters: int,
    *,
    n_neighbors: int,
    seed: int,
    n_init: int = 10,
    equal_sizes: bool = False,
    timer: StepTimer | None = None,
) -> np.ndarray:
    """The method ``umap`` (module docstring) on a feature ``F`` (n, d): labels (n,)."""
    timer = timer or StepTimer()
    k = int(min(n_neighbors, F.shape[0] - 1))
    if k < 2:
        raise ValueError(f"init method 'umap' needs n_neighbors >= 2 and 3 points, got {k}")
    E = umap_model(n_clusters, k, seed).fit_transform(F)
    timer.lap("umap")
    E = np.asarray(E, dtype=np.float64)
    gmm = fit_mixture(E, n_clusters, "full", seed, n_init=n_init)
    timer.lap("mixture")
    if not equal_sizes:
        return gmm.predict(E).astype(np.int64)
    labels, n_iter = equal_size_mixture(E, gmm.means_, gmm.covariances_)
    log.info("equal-size EM: %d iterations", n_iter)
    timer.lap("equal_size_em")
    return labels


def log_gaussians(E: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """``log N(E_i | means_k, covariances_k)`` (N, K) of points ``E`` (N, d), through the
    Cholesky factor of each covariance (K, d, d). numpy, for the init stage, which imports no
    model (mixlib.models.gmm_em.log_gaussian_prob is the torch one the EM models use)."""
    N, d = E.shape
    out = np.empty((N, len(means)))
    for k, (mu, C) in enumerate(zip(means, covariances)):
        Lc = scipy.linalg.cholesky(C, lower=True)
        Z = scipy.linalg.solve_triangular(Lc, (E - mu).T, lower=True)  # (d, N)
        out[:, k] = -0.5 * np.einsum("ij,ij->j", Z, Z) - np.log(np.diag(Lc)).sum()
    return out - 0.5 * d * np.log(2 * np.pi)


def equal_size_weights(L: np.ndarray, v0: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Log-weights ``v`` (K,) under which the posterior ``softmax(L_i + v)`` of log-densities
    ``L`` (N, K) gives every cluster N/K points in expectation, and the objective's value there.

    ``v`` minimises the convex ``F(v) = sum_i logsumexp(L_i + v) - (N/K) sum_k v_k``, whose
    gradient is the expected cluster sizes minus N/K; the minimum is the entropic optimal
    transport of the points onto equal-sized clusters (the E-step of SeLa, Asano, Rupprecht &
    Vedaldi 2020, and SwAV), found here by L-BFGS: Sinkhorn's fixed-point iteration, the usual
    solver, stalls when the posteriors are nearly hard (on a UMAP embedding of Fashion-MNIST
    its largest size error stayed above a factor 2 after 2,000 iterations; L-BFGS meets a
    1e-3 tolerance in ~60 iterations). ``v`` is shifted so its largest entry is 0."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    N, K = L.shape
    c = N / K

    def f(v):
        T = L + v
        lse = logsumexp(T, axis=1)
        return lse.sum() - c * v.sum(), np.exp(T - lse[:, None]).sum(0) - c

    v0 = np.zeros(K) if v0 is None else np.asarray(v0, dtype=np.float64)
    r = minimize(f, v0, jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-3 * c})
    return r.x - r.x.max(), float(r.fun)


def equal_size_mixture(
    E: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    *,
    max_iter: int = 200,
    tol: float = 1e-6,
    reg_covar: float = 1e-6,
) -> tuple[np.ndarray, int]:
    """EM for a full-covariance Gaussian mixture of ``E`` (N, d) whose clusters hold N/K points
    each in expectation, from ``means`` (K, d) and ``covariances`` (K, d, d) (a fitted
    mixture's): labels (N,) and the number of iterations.

    The mixture weights are not free: each E-step sets them (:func:`equal_size_weights`) so
    that the posterior's expected cluster sizes are equal; the M-step is the usual weighted
    Gaussian fit (``reg_covar`` added to each diagonal, scikit-learn's default). Each step
    raises ``sum_i sum_k Q_ik log N(E_i | k) + H(Q)`` over the posteriors ``Q`` with equal
    column sums, so the iteration stops when that objective's relative change falls below
    ``tol``. Why: a plain mixture on the UMAP embedding of Fashion-MNIST spends two clusters on
    the two kinds of bag and merges pullover, coat and shirt into one of 17,000 points, where
    the classes hold 7,000 each. The constraint is a prior: on Fashion-MNIST (classes of
    exactly 7,000) it raised the ACC from 0.679 to 0.695 over 3 seeds and lowered the NMI; on
    MNIST (6,313 to 7,877 per digit) it cost 0.04 ACC (docs/results/umap_equal)."""
    E = np.asarray(E, dtype=np.float64)
    d = E.shape[1]
    mu = np.array(means, dtype=np.float64)
    cov = np.array(covariances, dtype=np.float64)
    v, prev, n_iter = None, None, 0
    while n_iter < max_iter:
        n_iter += 1
        L = log_gaussians(E, mu, cov)
        v, obj = equal_size_weights(L, v)
        T = L + v
        Q = np.exp(T - T.max(1, keepdims=True))
        Q /= Q.sum(1, keepdims=True)
        if prev is not None and abs(obj - prev) <= tol * abs(prev):
            break
        prev = obj
        w = Q.sum(0)
        mu = (Q.T @ E) / w[:, None]
        for k in range(len(mu)):
            D = E - mu[k]
            cov[k] = (D * Q[:, k : k + 1]).T @ D / w[k] + reg_covar * np.eye(d)
    return Q.argmax(1).astype(np.int64), n_iter


def match_labels(labels: np.ndarray, reference: np.ndarray, n_clusters: int) -> np.ndarray:
    """``labels`` (n,) in 0..n_clusters-1 renumbered to agree most with ``reference`` (n,): the
    matching of cluster numbers with the largest overlap (Hungarian, on their contingency)."""
    from scipy.optimize import linear_sum_assignment

    C = np.zeros((n_clusters, n_clusters), dtype=np.int64)
    np.add.at(C, (labels, reference), 1)
    rows, cols = linear_sum_assignment(C, maximize=True)
    perm = np.empty(n_clusters, dtype=np.int64)
    perm[rows] = cols
    return perm[labels]


def consensus_labels(members, n_clusters: int, *, max_iter: int = 20) -> np.ndarray:
    """The majority vote of several clusterings ``members`` (M of them, each (n,) in
    0..n_clusters-1) of the same points: labels (n,).

    Cluster numbers are arbitrary, so each member is first renumbered to agree most with a
    reference (:func:`match_labels`), then every point takes the label most members give it
    (a tie goes to the first member's); the reference starts as the first member and becomes
    the vote, until the vote no longer changes (at most ``max_iter`` rounds). This is the
    voting consensus of bagged clustering (Dudoit & Fridlyand, Bioinformatics 2003), without
    the n x n co-association matrix that does not fit for 70,000 points.

    Why: the three seeds of the equal-size UMAP init of Fashion-MNIST (ACC 0.712 / 0.668 /
    0.705) err on different points; their vote scored ACC 0.746 (a scratch check of the
    published run's labels, docs/results/umap_equal). Measured as ``ensemble: 5``
    (docs/results/umap_ensemble): ACC 0.740 +- 0.020 over 3 seeds, where the 15 runs average
    0.726."""
    members = [np.asarray(m, dtype=np.int64) for m in members]
    if not members or any(m.shape != members[0].shape for m in members):
        raise ValueError(f"consensus of {len(members)} clusterings of unequal or no points")
    if any(m.min(initial=0) < 0 or m.max(initial=0) >= n_clusters for m in members):
        raise ValueError(f"consensus: labels outside 0..{n_clusters - 1}")
    rows = np.arange(members[0].size)
    ref = members[0]
    for _ in range(max_iter):
        aligned = [match_labels(m, ref, n_clusters) for m in members]
        votes = np.zeros((rows.size, n_clusters), dtype=np.int64)
        for a in aligned:
            votes[rows, a] += 1
        vote = votes.argmax(1)
        vote = np.where(votes[rows, aligned[0]] == votes[rows, vote], aligned[0], vote)
        if np.array_equal(vote, ref):
            break
        ref = vote
    return ref


def spectral_labels(
    W: sparse.spmatrix, n_clusters: int, *, seed: int, n_init: int = 10, dense_max: int = 4000
) -> np.ndarray:
    """Normalised spectral clustering (Ng, Jordan & Weiss) of a symmetric affinity ``W`` (N, N).

    The ``n_clusters`` leading eigenvectors of ``D^-1/2 W D^-1/2``, each row scaled to unit
    norm, then k-means (``n_init`` restarts). An isolated point (zero degree) keeps a zero row.
    Up to ``dense_max`` points the eigenvectors come from a dense solver; above, from ARPACK
    (sparse) with a wide Krylov space: a single-vector Lanczos run with the default width finds
    only one copy of a repeated eigenvalue, and a graph of c components has eigenvalue 1 c
    times (a union of 3 subspaces came out as ARI 0.57 instead of 1). Deterministic for a given
    ``seed`` (ARPACK's start vector is drawn from it).
    """
    W = sparse.csr_matrix(W, dtype=np.float64)
    n = W.shape[0]
    deg = np.asarray(W.sum(1)).ravel()
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    M = sparse.diags(dinv) @ W @ sparse.diags(dinv)
    rng = np.random.default_rng(seed)
    k = min(n_clusters, n - 1)
    if n <= dense_max:
        _, U = scipy.linalg.eigh(M.toarray(), subset_by_index=[n - k, n - 1])
    else:
        ncv = min(n - 1, max(4 * k + 1, 64))
        _, U = eigsh(M, k=k, which="LA", v0=rng.uniform(-1, 1, n), tol=1e-8, ncv=ncv)
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    rs = int(rng.integers(2**31 - 1))
    from sklearn.cluster import KMeans  # imported when used: the plan reads this module

    return KMeans(n_clusters, n_init=n_init, random_state=rs).fit_predict(U).astype(np.int64)


def ssc_omp(
    F: np.ndarray, n_nonzero: int = 5, thr: float = 1e-5, *, batch_size: int = 2048
) -> sparse.csr_matrix:
    """SSC-OMP self-representation C (N, N) (You, Robinson & Vidal 2016; the reference's
    ``sparse_subspace_clustering_orthogonal_matching_pursuit``).

    Row i codes point i (as given, not normalised) by at most ``n_nonzero`` *other* points,
    picked greedily by the largest ``|<residual, x_j>|`` and refitted by least squares on the
    support every step; a point stops early once ``||residual||^2 < thr ||x_i||``. The pursuits
    of ``batch_size`` points run at once (one (b, N) correlation per step), so memory is
    O(batch_size N).
    """
    Y = np.asarray(F, dtype=np.float64)  # (N, d)
    n = Y.shape[0]
    steps = min(int(n_nonzero), n - 1)
    rows_all, cols_all, vals_all = [], [], []
    for s in range(0, n, batch_size):
        rows = np.arange(s, min(s + batch_size, n))
        b = rows.size
        loc = np.arange(b)
        y = Y[rows]  # (b, d)
        stop = np.linalg.norm(y, axis=1) * thr  # (b,) the reference's test, as written
        support = np.zeros((b, 0), dtype=np.int64)
        used = np.zeros((b, 0), dtype=bool)  # slot in use (False once a pursuit stopped)
        coef = np.zeros((b, 0))
        active = np.ones(b, dtype=bool)
        for _ in range(steps):
            resid = y - np.einsum("bs,bsd->bd", coef, Y[support])  # (b, d)
            done = np.sum(resid * resid, 1) < stop
            active &= ~done
            if not active.any():
                break
            corr = np.abs(resid @ Y.T)  # (b, N)
            corr[loc, rows] = -np.inf  # a point never codes itself
            if support.shape[1]:
                corr[loc[:, None], support] = -np.inf
            support = np.concatenate([support, corr.argmax(1)[:, None]], axis=1)  # (b, t)
            used = np.concatenate([used, active[:, None]], axis=1)
            Xs = Y[support]  # (b, t, d)
            G = np.einsum("btd,bsd->bts", Xs, Xs)
            mm = used[:, :, None] & used[:, None, :]
            G = np.where(mm, G, 0.0) + np.eye(support.shape[1]) * ((~used)[:, :, None] + 1e-10)
            rhs = np.einsum("btd,bd->bt", Xs, y) * used
            coef = np.linalg.solve(G, rhs[..., None])[..., 0]  # (b, t) least squares
        keep = used & (coef != 0)
        rows_all.append(np.broadcast_to(rows[:, None], support.shape)[keep])
        cols_all.append(support[keep])
        vals_all.append(coef[keep])
    return sparse.csr_matrix(
        (np.concatenate(vals_all), (np.concatenate(rows_all), np.concatenate(cols_all))),
        shape=(n, n),
    )


def ssc_affinity(C: sparse.spmatrix) -> sparse.csr_matrix:
    """The reference's ``symmetrize`` affinity: rows of C scaled to unit l2 norm, then
    ``(|C| + |C|^T) / 2``."""
    C = sparse.csr_matrix(C, dtype=np.float64)
    norms = np.sqrt(np.asarray(C.multiply(C).sum(1)).ravel())
    C = sparse.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)) @ C
    A = abs(C)
    return ((A + A.T) * 0.5).tocsr()
