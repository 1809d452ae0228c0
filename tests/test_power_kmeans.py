import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from mixlib.metrics import ari
from mixlib.models import build_model
from mixlib.models.power_kmeans import PowerKMeans, log_distances, mm_weights, power_mean_objective


def test_recovers_blobs():
    X, y = make_blobs(600, centers=5, n_features=5, cluster_std=0.6, random_state=3)
    m = PowerKMeans(5, random_state=0).fit(X)
    assert ari(y, m.labels_) >= 0.95
    assert np.array_equal(m.labels_, m.predict(X))


def test_weights_match_direct_formula_and_survive_huge_s():
    rng = np.random.default_rng(0)
    X, C = rng.standard_normal((30, 3)), rng.standard_normal((4, 3))
    logd = log_distances(X, C)
    d, s = np.exp(logd), -1.5
    w = d ** (s - 1) * ((d**s).sum(1, keepdims=True)) ** (1 / s - 1)
    assert np.allclose(mm_weights(logd, s), w / w.sum(0))
    assert power_mean_objective(logd, s) == pytest.approx(((d**s).mean(1) ** (1 / s)).sum())
    for s in (-5000.0, -50000.0):
        W = mm_weights(logd, s)
        assert np.isfinite(W).all() and np.allclose(W.sum(0), 1)
        # s -> -inf: power mean -> min distance (the k-means objective)
        assert power_mean_objective(logd, s) == pytest.approx(d.min(1).sum(), rel=1e-3)
    X2 = np.vstack([X, C[:1]])  # a point exactly on a centre
    assert np.isfinite(mm_weights(log_distances(X2, C), -5000.0)).all()


def test_beats_lloyd_from_poor_init_in_most_seeds():
    wins = 0
    for seed in range(20):
        X, _ = make_blobs(500, centers=8, n_features=2, cluster_std=0.7, random_state=seed)
        rng = np.random.default_rng(seed)
        # poor start: all centres drawn from the points nearest one corner
        corner = np.argsort(X[:, 0] + X[:, 1])[:40]
        C0 = X[rng.choice(corner, 8, replace=False)]
        lloyd = KMeans(8, init=C0, n_init=1).fit(X).inertia_
        pkm = PowerKMeans(8, s0=-3.0, random_state=seed).fit(X, init_centers=C0).inertia_
        wins += pkm <= lloyd * (1 + 1e-9)
    print(f"power k-means no worse than Lloyd in {wins} of 20 seeds")
    assert wins > 10


def test_deterministic_registry_and_errors():
    X, _ = make_blobs(200, centers=3, random_state=0)
    a = build_model("power_kmeans", n_clusters=3, random_state=7).fit(X)
    b = clone(a).fit(X)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.n_parameters() == 3 * 2 and len(a.history_["s"]) == a.n_iter_
    with pytest.raises(ValueError, match="s0 must be negative"):
        PowerKMeans(3, s0=1.0).fit(X)
    with pytest.raises(ValueError, match="eta"):
        PowerKMeans(3, eta=0.5).fit(X)
