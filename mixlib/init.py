"""Initialisation methods: the pipeline stage shared by every model (the paper's INIT column).

Each method clusters a random subset (``subset`` points, all when None) of a feature of the data
(raw pixels or PCA) and returns labels for the whole dataset with ``-1`` for the points it did not
see, in the format of :func:`mixlib.models.base.check_init_labels`.

- ``random``   uniform random labels on the subset.
- ``kmeans``   k-means++ / Lloyd (scikit-learn), ``n_init`` restarts.
- ``spectral`` normalised spectral clustering of a symmetric k-nearest-neighbour graph
               (Ng, Jordan & Weiss; scikit-learn's ``SpectralClustering``).
- ``ssc``      sparse subspace clustering by orthogonal matching pursuit (You, Robinson & Vidal,
               CVPR 2016): each point coded by ``n_nonzero`` (5) other points, affinity
               ``|C| + |C|^T``, then normalised spectral clustering.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.decomposition import PCA

METHODS = ("random", "kmeans", "spectral", "ssc")
FEATURES = ("raw", "pca")


def initialize(
    X: np.ndarray,
    n_clusters: int,
    method: str,
    *,
    seed: int,
    subset: int | None = None,
    feature: str = "raw",
    pca_components: int = 50,
    n_init: int = 10,
    n_neighbors: int = 10,
    n_nonzero: int = 5,
) -> tuple[np.ndarray, dict]:
    """Return ``(labels (N,), info)``; ``labels[i] == -1`` where point ``i`` was not in the subset."""
    if method not in METHODS:
        raise ValueError(f"init method {method!r} unknown; choose from {METHODS}")
    if feature not in FEATURES:
        raise ValueError(f"init feature {feature!r} unknown; choose from {FEATURES}")
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    idx = np.arange(n) if subset is None or subset >= n else np.sort(rng.choice(n, subset, False))
    F = np.asarray(X[idx], dtype=np.float64)
    if feature == "pca":
        F = PCA(n_components=min(pca_components, *F.shape), random_state=seed).fit_transform(F)
    rs = int(rng.integers(2**31 - 1))
    if method == "random":
        sub = rng.integers(n_clusters, size=idx.size)
    elif method == "kmeans":
        sub = KMeans(n_clusters, n_init=n_init, random_state=rs).fit_predict(F)
    elif method == "spectral":
        sub = SpectralClustering(
            n_clusters,
            affinity="nearest_neighbors",
            n_neighbors=n_neighbors,
            assign_labels="cluster_qr",
            random_state=rs,
        ).fit_predict(F)
    else:
        W = ssc_omp_affinity(F, n_nonzero=n_nonzero)
        sub = SpectralClustering(
            n_clusters, affinity="precomputed", assign_labels="cluster_qr", random_state=rs
        ).fit_predict(W)
    labels = np.full(n, -1, dtype=np.int64)
    labels[idx] = sub
    return labels, {"n_labelled": int(idx.size), "feature": feature}


def ssc_omp_affinity(F: np.ndarray, n_nonzero: int = 5) -> sparse.csr_matrix:
    """Symmetric SSC-OMP affinity ``|C| + |C|^T`` (N, N).

    Every point (unit-normalised) is greedily coded by at most ``n_nonzero`` *other* points:
    all N pursuits run at once, one (N, N) correlation per step, with a batched least-squares
    refit on the selected support.
    """
    Y = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)  # (N, d)
    n = Y.shape[0]
    G = Y @ Y.T  # (N, N) Gram
    support = np.zeros((n, 0), dtype=np.int64)
    coef = np.zeros((n, 0))
    rows = np.arange(n)
    for _ in range(min(n_nonzero, n - 1)):
        resid = Y - np.einsum("ns,nsd->nd", coef, Y[support])  # (N, d)
        corr = np.abs(resid @ Y.T)  # (N, N)
        corr[rows, rows] = -np.inf  # a point never codes itself
        if support.shape[1]:
            corr[rows[:, None], support] = -np.inf
        new = corr.argmax(1)
        support = np.concatenate([support, new[:, None]], axis=1)  # (N, s)
        Gs = G[support[:, :, None], support[:, None, :]] + 1e-10 * np.eye(support.shape[1])
        b = G[rows[:, None], support]  # (N, s)  <y_i, y_j>
        coef = np.linalg.solve(Gs, b[..., None])[..., 0]  # (N, s) least-squares refit
    C = sparse.csr_matrix(
        (np.abs(coef).ravel(), (np.repeat(rows, support.shape[1]), support.ravel())), shape=(n, n)
    )
    return (C + C.T).tocsr()
