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


def _spec(**kw):
    spec = dict(method="spectral", subset=None, feature="scattering", scattering_J=2)
    spec.update(standardize=False, pca_components=20, pca_center=False, n_neighbors=10)
    return {**spec, **kw}


def test_feature_recipe_is_shared_by_inits_of_the_same_feature_only():
    r = init.feature_recipe(_spec())
    assert r.startswith("scattering-")
    # the method and its own keys do not change the feature; its keys do
    assert init.feature_recipe(_spec(method="kmeans", n_neighbors=5)) == r
    for k, v in [("scattering_J", 3), ("pca_components", 50), ("pca_center", True)]:
        assert init.feature_recipe(_spec(**{k: v})) != r, k
    assert init.feature_recipe(_spec(subset=2000)) is None  # a seeded subset: not shareable
    assert init.feature_recipe(_spec(feature="raw")) is None
    pca = init.feature_recipe(_spec(feature="pca"))
    assert pca.startswith("pca-") and pca == init.feature_recipe(
        _spec(feature="pca", scattering_J=3)
    )


def test_pipeline_init_from_the_shared_feature_gives_the_same_labels(tmp_path):
    """The init_features stage computes the feature once; an init reading it gives the labels
    of the init that computes the feature itself, for every seed; a feature of other keys or
    other data is refused, naming both. (The spectral method: the workflow test below.)"""
    method = "kmeans"
    from mixlib import pipeline
    from mixlib.utils import read_json

    ds = datalib.prepare("digits", {"source": "digits", "preprocess": {"scale": "minmax"}})
    data = str(tmp_path / "digits.npz")
    datalib.save_prepared(ds, data)
    spec = _spec(method=method)
    keys = init.feature_keys(spec)
    feat = tmp_path / "features" / "features.npy"
    pipeline.init_features(
        data_path=data,
        dataset="digits",
        recipe=init.feature_recipe(spec),
        spec=keys,
        out_features=str(feat),
        out_record=str(feat.with_name("record.json")),
    )
    rec = read_json(feat.with_name("record.json"))
    assert np.load(feat).shape == (1797, 20) == (rec["n"], rec["n_features"])
    assert rec["seconds_scattering"] > 0 and rec["seconds_pca"] > 0

    def run(seed, path, out):
        pipeline.initialize(
            data_path=data,
            dataset="digits",
            init="scat",
            spec=spec,
            seed=seed,
            out_labels=str(tmp_path / f"{out}.npy"),
            out_record=str(tmp_path / f"{out}.json"),
            features_path=path,
        )
        return np.load(tmp_path / f"{out}.npy")

    for seed in (0, 1):
        np.testing.assert_array_equal(run(seed, str(feat), "shared"), run(seed, None, "own"))
    assert "seconds_scattering" not in read_json(tmp_path / "shared.json")[0]
    spec = _spec(method=method, pca_components=10)
    with pytest.raises(ValueError, match=r"shared feature .*'pca_components': 20.*needs.*10"):
        run(0, str(feat), "wrong")


def test_precomputed_features_are_for_every_row_and_no_subset():
    X = np.random.default_rng(0).random((30, 64))
    F = np.random.default_rng(1).random((30, 5)).astype(np.float32)
    lab, info = init.initialize(X, 2, "kmeans", seed=0, feature="pca", features=F)
    assert info["n_features"] == 5 and "seconds_pca" not in info
    np.testing.assert_array_equal(lab, init.initialize(F, 2, "kmeans", seed=0)[0])
    with pytest.raises(ValueError, match=r"features of shape \(29, 5\) for 30 rows"):
        init.initialize(X, 2, "kmeans", seed=0, feature="pca", features=F[:29])
    with pytest.raises(ValueError, match="subset 10: they are for inits without a subset"):
        init.initialize(X, 2, "kmeans", seed=0, feature="pca", subset=10, features=F)


@pytest.mark.workflow
def test_workflow_computes_a_shared_feature_once_for_every_seed_and_init(tmp_path):
    """The real Snakefile: two inits of the same scattering feature, two seeds: one
    init_features job, four initialize jobs reading it, the labels of inits that compute the
    feature themselves; an init with a seeded subset and a holdout dataset get no shared
    feature."""
    from helpers import run_snakemake

    from mixlib.plan import load_plan

    feat = dict(feature="scattering", scattering_J=2, pca_components=20)
    config = {
        "seeds": [0, 1],
        "datasets": {
            "digits": {"source": "digits", "preprocess": {"scale": "minmax"}},
            "digits_holdout": {"source": "digits", "split": "holdout", "test_size": 0.2},
        },
        "inits": {
            "spec": {"method": "spectral", "n_neighbors": 10, **feat},
            "km": {"method": "kmeans", **feat},
            "km_sub": {"method": "kmeans", "subset": 500, **feat},
        },
        "models": {"kmeans": {"kind": "kmeans", "inits": ["spec", "km", "km_sub"]}},
        "tracking": {"enabled": False},
    }
    plan = load_plan(config)
    recipe = plan.feature_recipe("spec", "digits")
    assert plan.feature_runs() == [("digits", recipe)]
    assert plan.feature_recipe("km_sub", "digits") is None
    assert plan.feature_recipe("spec", "digits_holdout") is None
    out = [f"results/init/digits/{i}/seed{s}/labels.npy" for i in ("spec", "km") for s in (0, 1)]
    p = run_snakemake(tmp_path, "--cores", "2", *out, config=config)
    assert p.stderr.count("rule init_features:") == 1, p.stderr[-3000:]
    assert [
        f.parent.name for f in (tmp_path / "results/features/digits").glob("*/features.npy")
    ] == [recipe]
    ds = datalib.load_prepared(tmp_path / "results/data/digits.npz")
    for name, method in (("spec", "spectral"), ("km", "kmeans")):
        spec = {k: v for k, v in plan.init_for(name, "digits").items() if k != "method"}
        for s in (0, 1):
            own, _ = init.initialize(ds.X, 10, method, seed=s, image_shape=ds.image_shape, **spec)
            got = np.load(tmp_path / f"results/init/digits/{name}/seed{s}/labels.npy")
            np.testing.assert_array_equal(got, own)


def test_a_shared_pca_feature_ignores_the_scattering_scale(tmp_path):
    """Two pca-feature inits differing only in the (unused) scattering_J share one feature and
    both read it."""
    from mixlib import pipeline

    ds = datalib.prepare("digits", {"source": "digits", "preprocess": {"scale": "minmax"}})
    data = str(tmp_path / "digits.npz")
    datalib.save_prepared(ds, data)
    a, b = _spec(feature="pca", scattering_J=2), _spec(feature="pca", scattering_J=3)
    assert init.feature_recipe(a) == init.feature_recipe(b)
    assert init.feature_keys(a) == init.feature_keys(b) and "scattering_J" not in init.feature_keys(
        a
    )
    feat = tmp_path / "f" / "features.npy"
    pipeline.init_features(
        data_path=data,
        dataset="digits",
        recipe=init.feature_recipe(a),
        spec=init.feature_keys(a),
        out_features=str(feat),
        out_record=str(feat.with_name("record.json")),
    )
    for i, spec in enumerate((a, b)):
        pipeline.initialize(
            data_path=data,
            dataset="digits",
            init="pca",
            spec=spec,
            seed=0,
            out_labels=str(tmp_path / f"{i}.npy"),
            out_record=str(tmp_path / f"{i}.json"),
            features_path=str(feat),
        )
    np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy"))
