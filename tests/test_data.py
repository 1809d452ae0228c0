import numpy as np
import pytest

from mixlib import data


def test_embedded_datasets_and_checksums():
    ds = data.prepare("digits", {"source": "digits", "preprocess": {"scale": "minmax"}})
    assert ds.X.shape == (1797, 64) and ds.n_classes == 10
    assert ds.meta["raw_checksum"] == data.EMBEDDED_CHECKSUMS["digits"]
    assert 0.0 <= ds.X.min() and ds.X.max() == 1.0
    with pytest.raises(data.DatasetError, match="checksum"):
        data.prepare("digits", {"source": "digits", "checksum": "0" * 64})


def test_mnist5k_and_resize():
    ds = data.prepare("m", {"source": "mnist5k", "preprocess": {"resize": [16, 16]}})
    assert ds.X.shape == (5000, 256) and ds.image_shape == (16, 16)
    assert ds.meta["raw_checksum"] == data.EMBEDDED_CHECKSUMS["mnist5k"]


def test_synthetic_is_seeded():
    spec = {"source": "synthetic", "synthetic": {"n_samples": 50, "n_components": 3, "seed": 4}}
    a, b = data.prepare("s", spec), data.prepare("s", spec)
    assert a.meta["checksum"] == b.meta["checksum"] and a.X.shape == (50, 2)


def test_standardise_keeps_constant_features_finite():
    X = np.c_[np.ones(5), np.arange(5.0)]
    Xs, _ = data.preprocess(X, (), scale="standard")
    assert np.isfinite(Xs).all() and np.allclose(Xs[:, 1].std(), 1)


def _npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def test_npz_roundtrip_and_prepared_file(tmp_path):
    p = _npz(tmp_path, feature=np.random.default_rng(0).random((20, 3)), target=np.arange(20) % 2)
    ds = data.prepare("own", {"source": "npz", "path": str(p)})
    data.save_prepared(ds, tmp_path / "out.npz")
    back = data.load_prepared(tmp_path / "out.npz")
    assert back.meta == ds.meta and np.array_equal(back.X, ds.X)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"feature": np.zeros((4, 2))}, "missing key.*'target'"),
        ({"feature": np.zeros((4, 2)), "target": np.zeros(3)}, r"'target' must have shape \(4,\)"),
        ({"feature": np.zeros(4), "target": np.zeros(4)}, r"'feature' must have shape \(N, d\)"),
        ({"feature": np.array([[0.0, np.nan], [1, 1]]), "target": np.zeros(2)}, "NaN or Inf"),
    ],
)
def test_bad_npz_files(tmp_path, arrays, match):
    p = _npz(tmp_path, **arrays)
    with pytest.raises(data.DatasetError, match=match) as e:
        data.prepare("own", {"source": "npz", "path": str(p)})
    assert str(p) in str(e.value)


def test_npz_fewer_samples_than_clusters(tmp_path):
    p = _npz(tmp_path, feature=np.zeros((3, 2)), target=np.arange(3))
    with pytest.raises(data.DatasetError, match="fewer than the 5 clusters"):
        data.prepare("own", {"source": "npz", "path": str(p), "n_clusters": 5})


def test_npz_missing_file(tmp_path):
    with pytest.raises(data.DatasetError, match="file not found"):
        data.load_npz(tmp_path / "nope.npz")
