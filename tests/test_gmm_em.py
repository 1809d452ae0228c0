"""Unit tests of the EM core and GaussianMixtureEM against scikit-learn / scipy (CPU, float64)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from mixlib import plots
from mixlib.models import build_model, gmm_em
from mixlib.models.gmm_em import (
    GaussianMixtureEM,
    compute_cholesky,
    estimate_gaussian_parameters,
    floor_eigenvalues,
    log_gaussian_prob,
    regularize_covariances,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def blobs(seed=0, n=150, d=4, k=3, sep=4.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(k, d))
    y = np.repeat(np.arange(k), n)
    A = rng.normal(size=(k, d, d)) * 0.4 + np.eye(d)
    X = np.concatenate([rng.normal(size=(n, d)) @ A[j] + centers[j] for j in range(k)])
    return X, y


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


# --- pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_log_density_matches_scipy(covariance_type):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    means = rng.normal(size=(2, 3))
    B = rng.normal(size=(2, 3, 3))
    full = B @ B.transpose(0, 2, 1) + 0.5 * np.eye(3)
    cov = full if covariance_type == "full" else np.diagonal(full, axis1=1, axis2=2).copy()
    chol = compute_cholesky(torch.as_tensor(cov), covariance_type)
    ours = log_gaussian_prob(torch.as_tensor(X), torch.as_tensor(means), chol, covariance_type)
    for k in range(2):
        c = cov[k] if covariance_type == "full" else np.diag(cov[k])
        ref = multivariate_normal(means[k], c).logpdf(X)
        np.testing.assert_allclose(ours[:, k].numpy(), ref, rtol=1e-10, atol=1e-10)


def test_m_step_matches_weighted_moments():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3))
    resp = rng.dirichlet(np.ones(2), size=40)
    nk, means, cov = estimate_gaussian_parameters(torch.as_tensor(X), torch.as_tensor(resp), "full")
    for k in range(2):
        w = resp[:, k]
        np.testing.assert_allclose(nk[k].item(), w.sum(), rtol=1e-12)
        mu = (w[:, None] * X).sum(0) / w.sum()
        np.testing.assert_allclose(means[k].numpy(), mu, rtol=1e-10)
        np.testing.assert_allclose(
            cov[k].numpy(), np.cov(X.T, aweights=w, bias=True), rtol=1e-10, atol=1e-12
        )


def test_floor_clips_eigenvalues_only_where_needed():
    rng = np.random.default_rng(3)
    V, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    low = V @ np.diag([1e-9, 0.5, 1.0, 2.0]) @ V.T
    ok = V @ np.diag([0.3, 0.5, 1.0, 2.0]) @ V.T
    out = floor_eigenvalues(torch.as_tensor(np.stack([low, ok])), 1e-2).numpy()
    np.testing.assert_allclose(np.linalg.eigvalsh(out[0]), [1e-2, 0.5, 1.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(out[1], ok, atol=1e-14)
    ridge = regularize_covariances(torch.as_tensor(ok[None]), "ridge", 0.1, "full").numpy()
    np.testing.assert_allclose(ridge[0], ok + 0.1 * np.eye(4))


def test_floor_redoes_a_failed_float32_eigendecomposition_in_float64(monkeypatch):
    """LAPACK's float32 eigensolver can fail to converge (it stopped a BigLearn-EM fit on
    Pendigits once): the floor then decomposes in float64 and returns float32."""
    rng = np.random.default_rng(3)
    V, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    low = torch.as_tensor(V @ np.diag([1e-9, 0.5, 1.0, 2.0]) @ V.T, dtype=torch.float32)[None]
    eigh = torch.linalg.eigh

    def failing_in_float32(A):
        if A.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: failed to converge")
        return eigh(A)

    monkeypatch.setattr(torch.linalg, "eigh", failing_in_float32)
    out = floor_eigenvalues(low, 1e-2)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(
        np.linalg.eigvalsh(out[0].double().numpy()), [1e-2, 0.5, 1.0, 2.0], atol=1e-6
    )


def test_floor_of_a_collapsed_float32_covariance_is_finite():
    """A component that lost every point in a block leaves a covariance of zeros and subnormal
    cross terms; LAPACK's float32 eigensolver returns NaN for it without raising (it stopped
    BigLearn-EM on Pendigits, seed 5, at iteration 32). The floor must give eps * I there."""
    C = torch.zeros(1, 16, 16, dtype=torch.float32)
    C[0, 3, 3] = C[0, 9, 9] = 1e-2
    C[0, 0, 1] = C[0, 1, 0] = 1e-44  # subnormal in float32
    assert torch.isnan(torch.linalg.eigh(C)[0]).any()  # the failure this guards against
    out = floor_eigenvalues(C, 1e-2)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), 1e-2 * np.eye(16), atol=1e-9)


# --- equivalence with scikit-learn ------------------------------------------------------------


@pytest.mark.parametrize("path", ["batched", "per_component_numpy", "per_component_torch"])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_matches_sklearn_every_iteration(covariance_type, path, monkeypatch):
    if path != "batched":  # the per-component (large-data) code paths: CPU and CUDA kernels
        monkeypatch.setattr(gmm_em, "_BATCH_ELEMENTS", 0)
    if path == "per_component_torch":
        monkeypatch.setattr(gmm_em, "_numpy_blas", lambda X: False)
    X, _ = blobs(seed=4)
    init = quiet(
        GaussianMixture(
            3, covariance_type=covariance_type, max_iter=1, init_params="random", random_state=0
        ).fit,
        X,
    )
    w, m, c = init.weights_, init.means_, init.covariances_
    prec = np.linalg.inv(c) if covariance_type == "full" else 1.0 / c
    sk = GaussianMixture(
        3,
        covariance_type=covariance_type,
        reg_covar=1e-4,
        max_iter=25,
        tol=0,
        weights_init=w,
        means_init=m,
        precisions_init=prec,
    )
    quiet(sk.fit, X)
    ours = GaussianMixtureEM(
        3,
        covariance_type=covariance_type,
        reg="ridge",
        reg_covar=1e-4,
        max_iter=25,
        tol=0,
        weights_init=w,
        means_init=m,
        covariances_init=c,
        device="cpu",
    )
    quiet(ours.fit, X)
    assert len(ours.lower_bounds_) == len(sk.lower_bounds_) == 25
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.means_, sk.means_, atol=1e-6)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, atol=1e-6)
    np.testing.assert_array_equal(ours.labels_, sk.predict(X))


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_loglik_never_decreases(seed, covariance_type):
    X, _ = blobs(seed=seed, sep=1.5)  # overlapping: many iterations
    model = GaussianMixtureEM(
        4,
        covariance_type=covariance_type,
        reg_covar=1e-10,
        max_iter=60,
        tol=0,
        init="random",
        random_state=seed,
        device="cpu",
    )
    hist = np.asarray(quiet(model.fit, X).history_["loglik"])
    assert np.all(np.diff(hist) >= -1e-9), np.diff(hist).min()


@pytest.mark.parametrize("reg", ["ridge", "floor"])
def test_singular_covariance_is_regularised(reg):
    X, _ = blobs(seed=5)
    X = np.hstack([X, np.full((len(X), 3), 0.5)])  # constant columns: singular covariances
    with pytest.raises(ValueError, match="reg_covar"):
        quiet(GaussianMixtureEM(3, reg_covar=0.0, device="cpu", random_state=0).fit, X)
    model = quiet(
        GaussianMixtureEM(3, reg=reg, reg_covar=1e-3, device="cpu", random_state=0).fit, X
    )
    assert np.isfinite(model.history_["loglik"]).all()
    assert np.linalg.eigvalsh(model.covariances_).min() >= 1e-3 - 1e-9


def test_singular_image_borders_mnist_like():
    # 12x12 "images" with a constant border of zeros, as 16x16 MNIST
    rng = np.random.default_rng(6)
    imgs = np.zeros((200, 12, 12))
    imgs[:, 3:9, 3:9] = rng.uniform(size=(200, 6, 6))
    X = imgs.reshape(200, -1)
    for reg in ("ridge", "floor"):
        model = quiet(
            GaussianMixtureEM(
                2, reg=reg, reg_covar=1e-3, max_iter=5, device="cpu", random_state=0
            ).fit,
            X,
        )
        assert np.isfinite(model.score(X))


def test_fit_predict_equals_fit_then_predict_and_proba():
    X, _ = blobs(seed=7)
    a = quiet(GaussianMixtureEM(3, max_iter=3, device="cpu", random_state=1).fit_predict, X)
    model = quiet(GaussianMixtureEM(3, max_iter=3, device="cpu", random_state=1).fit, X)
    np.testing.assert_array_equal(a, model.predict(X))
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(proba.argmax(1), a)
    np.testing.assert_allclose(model.weights_.sum(), 1.0)


@pytest.mark.parametrize("init", ["random", "kmeans", "k-means++"])
def test_same_seed_same_result(init):
    X, _ = blobs(seed=8)

    def fit(s):
        model = GaussianMixtureEM(3, init=init, max_iter=10, device="cpu", random_state=s)
        return quiet(model.fit, X)

    a, b, c = fit(3), fit(3), fit(4)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.history_ == b.history_
    if init == "random":
        assert a.history_ != c.history_


def test_init_labels_with_unlabelled_and_empty_cluster():
    X, y = blobs(seed=9)
    lab = y.copy()
    lab[::3] = -1
    lab[lab == 2] = 1  # cluster 2 empty
    model = quiet(
        GaussianMixtureEM(3, max_iter=5, device="cpu", random_state=0).fit, X, init_labels=lab
    )
    assert model.init_labels_.shape == (len(X),)
    assert np.isfinite(model.means_).all()


def test_recovers_blobs():
    from sklearn.metrics import adjusted_rand_score

    X, y = blobs(seed=10, sep=6.0)
    model = GaussianMixtureEM(3, n_init=2, device="cpu", random_state=0).fit(X)
    assert adjusted_rand_score(y, model.labels_) > 0.95
    assert model.converged_


def test_sample_statistics():
    weights = np.array([0.3, 0.7])
    means = np.array([[0.0, 0.0], [5.0, -2.0]])
    covs = np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.2]]])
    model = GaussianMixtureEM.from_parameters(weights, means, covs, random_state=0)
    Xs, lab = model.sample(40000)
    assert Xs.shape == (40000, 2) and lab.shape == (40000,)
    np.testing.assert_allclose(np.bincount(lab) / 40000, weights, atol=0.01)
    for k in range(2):
        np.testing.assert_allclose(Xs[lab == k].mean(0), means[k], atol=0.05)
        np.testing.assert_allclose(np.cov(Xs[lab == k].T), covs[k], atol=0.06)
    again, _ = model.sample(40000)
    np.testing.assert_array_equal(Xs, again)
    other, _ = model.sample(40000, random_state=1)
    assert not np.array_equal(Xs, other)


def test_n_parameters_matches_sklearn():
    X, _ = blobs(seed=11)
    for ct in ("full", "diag"):
        ours = quiet(
            GaussianMixtureEM(3, covariance_type=ct, max_iter=2, device="cpu", random_state=0).fit,
            X,
        )
        sk = quiet(GaussianMixture(3, covariance_type=ct, max_iter=2, random_state=0).fit, X)
        assert ours.n_parameters() == sk._n_parameters()


def test_registry_and_artifacts(tmp_path):
    X, _ = blobs(seed=12, d=4)
    model = build_model("gmm_em", n_clusters=3, random_state=0, max_iter=3, device="cpu")
    quiet(model.fit, X)
    paths = plots.model_figures(model, X, tmp_path, image_shape=(2, 2))
    assert {p.name for p in paths} == {"loglik.png", "means.png", "samples.png"}
    assert all(p.stat().st_size > 0 for p in paths)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, name",
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"n_clusters": 2.5}, "n_clusters"),
        ({"covariance_type": "tied"}, "covariance_type"),
        ({"reg": "lasso"}, "reg"),
        ({"reg_covar": -1.0}, "reg_covar"),
        ({"tol": -1}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"n_init": 0}, "n_init"),
        ({"init": "spectral"}, "init"),
        ({"dtype": "float16"}, "dtype"),
        ({"means_init": np.zeros((2, 4))}, "means_init"),
        ({"weights_init": np.array([0.5, 0.6, -0.1])}, "weights_init"),
        ({"covariances_init": np.ones((3, 4))}, "covariances_init"),
    ],
)
def test_bad_params_name_the_parameter(params, name):
    X, _ = blobs(seed=13)
    kw = {"n_clusters": 3, "device": "cpu", **params}
    with pytest.raises(ValueError, match=name):
        GaussianMixtureEM(**kw).fit(X)


def test_bad_X_shapes():
    model = GaussianMixtureEM(3, device="cpu")
    with pytest.raises(ValueError, match="2-D"):
        model.fit(np.zeros(10))
    with pytest.raises(ValueError, match="fewer than n_clusters"):
        model.fit(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.full((10, 2), np.nan))
    X, _ = blobs(seed=14)
    quiet(model.set_params(max_iter=2).fit, X)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :2])
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixtureEM(3).predict(X)
    with pytest.raises(ValueError, match="init_labels"):
        model.fit(X, init_labels=np.zeros(5, dtype=int))


def test_experiment_figures_smoke(tmp_path):
    from mixlib.em_experiments import (
        fit_naive_gmm,
        fit_single_gaussian,
        loglik_curves,
        sample_rows,
    )
    from mixlib.plots import image_rows, plot_kl_history, plot_loglik_curves

    X, y = blobs(seed=15, d=4)
    X = (X - X.min()) / (X.max() - X.min())
    df = quiet(loglik_curves, X, seeds=(0, 1), n_clusters=3, max_iter=4, device="cpu")
    assert set(df.columns) == {"init", "seed", "iteration", "loglik"}
    assert set(df["init"]) == {"random", "kmeans"}
    single = fit_single_gaussian(X, 1e-3, reg="ridge")
    naive = fit_naive_gmm(X, y, 1e-3, reg="ridge")
    assert naive.score(X) > single.score(X)
    np.testing.assert_allclose(naive.weights_, np.bincount(y) / len(y))
    fitted = quiet(GaussianMixtureEM(3, max_iter=4, device="cpu", random_state=0).fit, X)
    recs = [{"method": "m", "seed": s, "kl_history": [0.3, 0.2, 0.1]} for s in (0, 1)]
    paths = [
        plot_loglik_curves(df, tmp_path / "ll.png"),
        image_rows(
            sample_rows(X, y, fitted, n_samples=4, reg_covar=1e-3, reg="ridge", seed=0),
            (2, 2),
            tmp_path / "grid.png",
            lo=0.0,
            hi=1.0,
        ),
        plot_kl_history(recs, tmp_path / "kl.png"),
    ]
    assert all(p.stat().st_size > 0 for p in paths)


def test_cpu_fit_runs_torch_single_threaded_and_restores_its_thread_count():
    """On the CPU the heavy kernels are numpy BLAS: fit sets torch's pool to 1 thread inside
    (the two pools contend) and gives the caller's setting back."""
    X = np.random.default_rng(0).normal(size=(60, 3))
    seen = []
    orig = gmm_em.estimate_log_prob_resp

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return orig(*a, **k)

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gmm_em.estimate_log_prob_resp = spy
        GaussianMixtureEM(2, max_iter=50, random_state=0, device="cpu").fit(X)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        gmm_em.estimate_log_prob_resp = orig
        torch.set_num_threads(old)
