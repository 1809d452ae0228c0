"""The ``scattering`` init feature: wavelet scattering of the images (kymatio), then PCA."""

import numpy as np
import pytest

from mixlib import data as datalib
from mixlib import init
from mixlib.metrics import clustering_accuracy

pytest.importorskip("kymatio")


@pytest.fixture
def mnist(mnist5k):
    return mnist5k


def test_scattering_features_shape_and_determinism():
    X = np.random.default_rng(0).random((7, 28 * 28))
    F = init.scattering_features(X, (28, 28), J=3, batch_size=3, device="cpu")
    assert F.shape == (7, 217 * 3 * 3) and F.dtype == np.float32 and np.isfinite(F).all()
    np.testing.assert_array_equal(F, init.scattering_features(X, (28, 28), J=3, device="cpu"))
    # a row's features do not depend on the batch it is computed in
    np.testing.assert_allclose(F[4], init.scattering_features(X[4:5], (28, 28))[0], rtol=1e-5)
    assert init.scattering_features(X[:2], (28, 28), J=2).shape == (2, 81 * 7 * 7)
    with pytest.raises(ValueError, match="scattering_J=5 too large"):
        init.scattering_features(X, (28, 28), J=5)


def test_initialize_scattering_labels_subset_deterministically():
    X = np.random.default_rng(1).random((60, 16 * 16))
    kw = dict(seed=3, subset=40, feature="scattering", image_shape=(16, 16), pca_components=10)
    lab, info = init.initialize(X, 3, "kmeans", **kw)
    assert (lab >= 0).sum() == 40 and set(lab[lab >= 0]) <= {0, 1, 2}
    assert info["feature"] == "scattering" and info["n_features"] == 10
    np.testing.assert_array_equal(lab, init.initialize(X, 3, "kmeans", **kw)[0])
    _, info = init.initialize(X, 3, "kmeans", **dict(kw, pca_components=None, scattering_J=2))
    assert info["n_features"] == 81 * 4 * 4
    lab_std, _ = init.initialize(X, 3, "kmeans", **dict(kw, standardize=True))
    assert (lab_std >= 0).sum() == 40


@pytest.mark.parametrize("shape", [None, (), (256,), (4, 8, 8)])
def test_scattering_needs_an_image_shape(shape):
    X = np.random.default_rng(0).random((20, 256))
    with pytest.raises(ValueError, match="'scattering' needs images"):
        init.initialize(X, 2, "kmeans", seed=0, feature="scattering", image_shape=shape)


def test_pipeline_names_init_and_dataset_without_image_shape(tmp_path):
    from mixlib import pipeline

    ds = datalib.prepare("blobs", {"source": "synthetic"})
    assert ds.image_shape == ()
    datalib.save_prepared(ds, tmp_path / "blobs.npz")
    with pytest.raises(ValueError, match=r"init 'scat'.*'scattering'.*dataset 'blobs'"):
        pipeline.initialize(
            data_path=str(tmp_path / "blobs.npz"),
            dataset="blobs",
            init="scat",
            spec={"method": "kmeans", "feature": "scattering"},
            seed=0,
            out_labels=str(tmp_path / "labels.npy"),
            out_record=str(tmp_path / "record.json"),
        )


@pytest.mark.slow  # real images, tens of seconds: not a unit test
def test_scattering_beats_raw_pixels_on_mnist5k(mnist):
    """Spectral clustering of 1,000 real MNIST images is more accurate on the scattering feature
    (+PCA 100) than on the raw pixels."""
    X, y, shape = mnist
    acc = {}
    for feature, pca in (("raw", None), ("scattering", 100)):
        lab, _ = init.initialize(
            X, 10, "spectral", seed=0, subset=1000, feature=feature, pca_components=pca,
            image_shape=shape,
        )  # fmt: skip
        seen = lab >= 0
        acc[feature] = clustering_accuracy(y[seen], lab[seen])
    assert acc["scattering"] > acc["raw"] + 0.03, acc
