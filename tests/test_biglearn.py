"""Unit tests of BigLearn-EM (CPU, float64, small data)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from mixlib.em_experiments import gmm25_parameters, make_gmm25_data, monte_carlo_kl
from mixlib.models import build_model
from mixlib.models.biglearn import BigLearnEM, block_em_step, haar_orthogonal
from mixlib.models.gmm_em import GaussianMixtureEM

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def blobs(seed=0, n=100, d=3, k=3, sep=8.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(k, d))
    y = np.repeat(np.arange(k), n)
    return np.concatenate([rng.normal(size=(n, d)) + centers[j] for j in range(k)]), y


def test_block_step_leaves_cross_blocks_untouched():
    rng = np.random.default_rng(0)
    D, K = 5, 2
    Z = torch.as_tensor(rng.normal(size=(60, D)))
    B = rng.normal(size=(K, D, D))
    cov = torch.as_tensor(B @ B.transpose(0, 2, 1) + np.eye(D))
    means = torch.as_tensor(rng.normal(size=(K, D)))
    weights = torch.tensor([0.4, 0.6], dtype=torch.float64)
    idx = torch.tensor([1, 3])
    pi, new_means, new_cov = block_em_step(Z, idx, weights, means, cov)
    rest = torch.tensor([0, 2, 4])
    assert torch.equal(new_means[:, rest], means[:, rest])
    assert torch.equal(new_cov[:, rest][:, :, rest], cov[:, rest][:, :, rest])
    assert torch.equal(new_cov[:, idx][:, :, rest], cov[:, idx][:, :, rest])  # cross blocks
    assert torch.equal(new_cov[:, rest][:, :, idx], cov[:, rest][:, :, idx])
    assert not torch.allclose(new_cov[:, idx][:, :, idx], cov[:, idx][:, :, idx])
    assert not torch.allclose(new_means[:, idx], means[:, idx])
    np.testing.assert_allclose(pi.sum().item(), 1.0)


def test_block_step_on_all_dims_is_an_em_step():
    # the block of all dimensions is the ordinary joint E+M step
    from mixlib.models.gmm_em import compute_cholesky, estimate_log_prob_resp

    rng = np.random.default_rng(1)
    Z = torch.as_tensor(rng.normal(size=(50, 3)))
    means = torch.as_tensor(rng.normal(size=(2, 3)))
    cov = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    pi, m, c = block_em_step(Z, torch.arange(3), w, means, cov)
    _, lr = estimate_log_prob_resp(Z, w, means, compute_cholesky(cov, "full"), "full")
    r = lr.exp().numpy()
    X = Z.numpy()
    for k in range(2):
        np.testing.assert_allclose(m[k].numpy(), (r[:, k, None] * X).sum(0) / r[:, k].sum())
        np.testing.assert_allclose(
            c[k].numpy(), np.cov(X.T, aweights=r[:, k], bias=True), atol=1e-12
        )


def test_haar_is_orthogonal_and_seeded():
    g = torch.Generator().manual_seed(0)
    A = haar_orthogonal(6, g)
    np.testing.assert_allclose((A @ A.T).numpy(), np.eye(6), atol=1e-12)
    B = haar_orthogonal(6, torch.Generator().manual_seed(0))
    assert torch.equal(A, B)


def test_p1_one_reduces_to_joint_em_with_floor():
    X, y = blobs(seed=2, sep=3.0)
    lab = y.copy()
    bl = BigLearnEM(
        3,
        n_iter=15,
        n_inner=1,
        p1=1.0,
        p2=1.0,
        alpha_pi=0.0,
        reg_covar=1e-3,
        device="cpu",
        random_state=0,
    ).fit(X, init_labels=lab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        em = GaussianMixtureEM(
            3, reg="floor", reg_covar=1e-3, max_iter=15, tol=0, device="cpu", random_state=0
        ).fit(X, init_labels=lab)
    np.testing.assert_allclose(bl.means_, em.means_, atol=1e-9)
    np.testing.assert_allclose(bl.covariances_, em.covariances_, atol=1e-9)
    np.testing.assert_allclose(bl.weights_, em.weights_, atol=1e-9)
    # and BigLearn's per-iteration loglik is EM's, shifted by one iteration
    np.testing.assert_allclose(bl.history_["loglik"][:-1], em.history_["loglik"][1:], atol=1e-9)


def test_recovers_well_separated_blobs():
    X, y = blobs(seed=3)
    model = BigLearnEM(
        3, n_iter=40, reg_covar=1e-3, init="k-means++", device="cpu", random_state=0
    ).fit(X)
    assert adjusted_rand_score(y, model.labels_) > 0.95
    np.testing.assert_array_equal(model.labels_, model.predict(X))


def test_weights_normalised_and_smoothed():
    X, _ = blobs(seed=4)
    model = BigLearnEM(4, n_iter=20, device="cpu", random_state=1).fit(X)
    np.testing.assert_allclose(model.weights_.sum(), 1.0)
    # pi = (pi' + 1/K) / 2 is at least 1/(2K) for every component
    assert model.weights_.min() >= 1 / 8 - 1e-12
    assert np.linalg.eigvalsh(model.covariances_).min() >= model.reg_covar * (1 - 1e-9)
    assert set(model.history_["task"]) <= {0.0, 1.0, 2.0}


def test_deterministic_per_seed():
    X, _ = blobs(seed=5)

    def fit(s):
        return BigLearnEM(3, n_iter=15, device="cpu", random_state=s).fit(X)

    a, b, c = fit(7), fit(7), fit(8)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.history_ == b.history_
    assert a.history_["task"] != c.history_["task"] or not np.array_equal(a.means_, c.means_)


def test_all_task_kinds_run_and_the_callback_sees_every_iteration():
    X, _ = blobs(seed=6, d=4)
    seen = []
    model = BigLearnEM(3, n_iter=30, p1=0.2, p2=0.5, device="cpu", random_state=0).fit(
        X, callback=lambda p: seen.append((p.step, p.total, len(p.state())))
    )
    assert {0.0, 1.0, 2.0} <= set(model.history_["task"])
    assert seen == [(i, 30, 3) for i in range(1, 31)]
    assert np.isfinite(model.history_["loglik"]).all()


def test_registry_and_bad_params():
    model = build_model("biglearn_em", n_clusters=2, random_state=0, n_iter=2, device="cpu")
    assert isinstance(model, BigLearnEM)
    X, _ = blobs(seed=7)
    for params, name in [
        ({"p1": 1.5}, "p1"),
        ({"p1": 0.6, "p2": 0.5}, "p2"),
        ({"n_inner": 0}, "n_inner"),
        ({"reg_covar": 0.0}, "reg_covar"),
        ({"beta_a": 0}, "beta_a"),
        ({"init": "pca"}, "init"),
        ({"n_iter": 0}, "n_iter"),
    ]:
        with pytest.raises(ValueError, match=name):
            BigLearnEM(3, device="cpu", **params).fit(X)


def test_gmm25_kl_is_zero_at_truth_and_positive_elsewhere():
    data = make_gmm25_data(0, n_train=10, n_test=3000)
    w, m, c = gmm25_parameters()
    assert data["X_test"].shape == (3000, 2)
    assert monte_carlo_kl(data["X_test"], (w, m, c), w, m, c) == 0.0
    assert monte_carlo_kl(data["X_test"], (w, m, c), w, m + 0.3, c) > 0.05


def test_run_gmm25_simulation_smoke():
    from mixlib.em_experiments import run_gmm25_simulation

    out = run_gmm25_simulation(0, "biglearn_em", n_iter=3, n_train=300, n_test=500)
    assert len(out["kl_history"]) == 3 and out["final_kl"] == out["kl_history"][-1]
    assert out["min_kl"] <= out["final_kl"] and out["final_kl"] > 0
    again = run_gmm25_simulation(0, "biglearn_em", n_iter=3, n_train=300, n_test=500)
    assert again["kl_history"] == out["kl_history"]
    with pytest.raises(ValueError, match="method"):
        run_gmm25_simulation(0, "vbem", n_iter=1)
