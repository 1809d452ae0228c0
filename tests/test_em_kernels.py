"""The batched EM kernels (moment features) and the per-component kernels against each other and
against the plain formulation (triangular solves, centred weighted scatter matrices) in float64;
the fit loops of GaussianMixtureEM and BigLearnEM on either path; float32 (CPU, synthetic data)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.linalg import solve_triangular

from mixlib.models import gmm_em
from mixlib.models.biglearn import BigLearnEM, _smooth, block_em_step, haar_orthogonal
from mixlib.models.gmm_em import (
    GaussianMixtureEM,
    MomentFeatures,
    compute_cholesky,
    estimate_gaussian_parameters,
    estimate_log_prob_resp,
    floor_eigenvalues,
    log_gaussian_prob,
    use_moments,
)
from mixlib.utils import torch_generator


@pytest.fixture(autouse=True)
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def problem(N, D, K, seed=0, offset=5.0, scale=3.0):
    """Data far from the origin, random means, SPD covariances of spread-out spectra, soft
    responsibilities."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) * scale + offset
    means = rng.normal(size=(K, D)) * scale + offset
    B = rng.normal(size=(K, D, D))
    cov = B @ B.transpose(0, 2, 1) / D + np.diag(rng.uniform(0.05, 2.0, size=D))
    resp = rng.dirichlet(np.full(K, 0.5), size=N)
    t = torch.as_tensor
    return t(X), t(means), t(cov), t(resp)


def plain_log_prob(X, means, cov):
    """log N(x | mu_k, Sigma_k) by one triangular solve per component (the former kernel)."""
    X, means, cov = X.numpy(), means.numpy(), cov.numpy()
    out = np.empty((X.shape[0], means.shape[0]))
    for k in range(means.shape[0]):
        L = np.linalg.cholesky(cov[k])
        y = solve_triangular(L, (X - means[k]).T, lower=True)
        out[:, k] = (
            -0.5 * (X.shape[1] * math.log(2 * math.pi) + (y * y).sum(0)) - np.log(np.diag(L)).sum()
        )
    return out


def plain_m_step(X, resp, min_nk=0.0):
    """nk, means, centred weighted scatter / nk per component (the former kernel)."""
    X, resp = X.numpy(), resp.numpy()
    nk = np.maximum(resp.sum(0), min_nk) + 10 * np.finfo(np.float64).eps
    means = resp.T @ X / nk[:, None]
    cov = np.stack(
        [(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) / nk[k] for k in range(len(nk))]
    )
    return nk, means, cov


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


# the CPU kernels (numpy/scipy BLAS) and the torch ones that run on CUDA, here on the CPU
PATHS = ["moments", "moments_torch", "per_component_numpy", "per_component_torch"]


def set_path(path, monkeypatch):
    if path.startswith("per_component"):
        monkeypatch.setattr(gmm_em, "_BATCH_ELEMENTS", 0)
    if path.endswith("torch"):
        monkeypatch.setattr(gmm_em, "_numpy_blas", lambda X: False)


@pytest.fixture
def per_component(monkeypatch):
    monkeypatch.setattr(gmm_em, "_BATCH_ELEMENTS", 0)


# --- the kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("D", [1, 3, 16, 40])
@pytest.mark.parametrize("path", PATHS)
def test_log_prob_equals_triangular_solves(D, path, monkeypatch):
    X, means, cov, _ = problem(300, D, 4, seed=D)
    set_path(path, monkeypatch)
    assert use_moments(*X.shape) == path.startswith("moments")
    ours = log_gaussian_prob(X, means, compute_cholesky(cov, "full"), "full")
    assert rel(ours, plain_log_prob(X, means, cov)) < 1e-10


@pytest.mark.parametrize("D", [1, 3, 16, 40])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("min_nk", [0.0, 40.0])
def test_m_step_equals_centred_scatter(D, path, min_nk, monkeypatch):
    X, _, _, resp = problem(300, D, 4, seed=10 + D)
    resp[:, 0] *= 1e-3  # a component under the min_nk guard
    set_path(path, monkeypatch)
    nk, means, cov = estimate_gaussian_parameters(X, resp, "full", min_nk=min_nk)
    ref = plain_m_step(X, resp, min_nk)
    for ours, want in zip((nk, means, cov), ref, strict=True):
        assert rel(ours, want) < 1e-10


@pytest.mark.parametrize("D", [2, 16])
def test_large_D_rule_and_memory_rule(D, monkeypatch):
    assert use_moments(1000, 16) and not use_moments(1000, gmm_em._MOMENTS_MAX_D + 1)
    P = gmm_em.n_moment_features(D)
    assert P == D * (D + 1) // 2 + D + 1
    monkeypatch.setattr(gmm_em, "_BATCH_ELEMENTS", 1000 * P)
    assert use_moments(1000, D) and not use_moments(1001, D)


@pytest.mark.parametrize("D", [2, 16])
def test_diag_equals_full_with_diagonal_covariances(D):
    X, means, cov, resp = problem(200, D, 3, seed=3)
    var = torch.diagonal(cov, dim1=-2, dim2=-1).contiguous()
    diag = log_gaussian_prob(X, means, compute_cholesky(var, "diag"), "diag")
    full = log_gaussian_prob(X, means, compute_cholesky(torch.diag_embed(var), "full"), "full")
    assert rel(diag, full) < 1e-10
    _, mu_d, var_d = estimate_gaussian_parameters(X, resp, "diag")
    _, mu_f, cov_f = estimate_gaussian_parameters(X, resp, "full")
    assert rel(mu_d, mu_f) < 1e-12
    assert rel(var_d, torch.diagonal(cov_f, dim1=-2, dim2=-1)) < 1e-10


def test_moment_e_and_m_step_equal_the_public_functions(per_component):
    X, means, cov, _ = problem(500, 5, 3, seed=4)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    chol = compute_cholesky(cov, "full")
    feats = MomentFeatures(X)
    log_norm, resp_t = feats.e_step(w, means, chol)
    ref_norm, ref_log_resp = estimate_log_prob_resp(X, w, means, chol, "full")
    assert rel(log_norm, ref_norm) < 1e-12
    assert rel(resp_t.T, ref_log_resp.exp()) < 1e-10
    assert rel(feats.log_likelihood(w, means, chol), ref_norm) < 1e-12
    nk, mu, c, n = feats.gaussian_parameters(resp_t, min_nk=1.0)
    ref = estimate_gaussian_parameters(X, ref_log_resp.exp(), "full", min_nk=1.0)
    for ours, want in zip((nk, mu, c), ref, strict=True):
        assert rel(ours, want) < 1e-10
    assert rel(n, ref_log_resp.exp().sum(0)) < 1e-12


def test_far_components_and_zero_weights():
    """Responsibilities that underflow are exactly 0 (and never subnormal); log p(x) stays
    exact; a component of weight 0 gets responsibility 0."""
    X, means, cov, _ = problem(400, 4, 3, seed=5, scale=1.0)
    means[2] += 1e3  # far from every point
    w = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    chol = compute_cholesky(cov, "full")
    log_norm, resp_t = MomentFeatures(X).e_step(w, means, chol)
    ref = torch.logsumexp(torch.as_tensor(plain_log_prob(X, means, cov)) + torch.log(w), dim=1)
    assert rel(log_norm, ref) < 1e-12
    assert torch.all(resp_t[2] == 0)
    tiny = torch.finfo(torch.float64).tiny
    assert not torch.any((resp_t > 0) & (resp_t < tiny))
    np.testing.assert_allclose(resp_t.sum(0).sum().item(), X.shape[0], rtol=1e-12)


def test_subnormal_means_give_the_same_result():
    X, means, cov, _ = problem(300, 6, 3, seed=6)
    chol = compute_cholesky(cov, "full")
    sub = means.clone()
    sub[:, 0] = 1e-310
    zero = means.clone()
    zero[:, 0] = 0.0
    a = gmm_em._per_component_mahalanobis(X, sub, chol)
    b = gmm_em._per_component_mahalanobis(X, zero, chol)
    assert rel(a, b) < 1e-14


# --- the fit loops ------------------------------------------------------------------------------


def blobs(seed=0, n=200, d=4, k=3, sep=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(k, d))
    A = rng.normal(size=(k, d, d)) * 0.4 + np.eye(d)
    return np.concatenate([rng.normal(size=(n, d)) @ A[j] + centers[j] for j in range(k)])


def fit_gmm(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixtureEM(device="cpu", tol=0, random_state=0, **kw).fit(X)


@pytest.mark.parametrize("reg", ["ridge", "floor"])
def test_gmm_fit_is_the_same_on_both_paths(reg, monkeypatch):
    X = blobs(seed=1)
    kw = dict(n_clusters=4, reg=reg, reg_covar=1e-4, max_iter=30, init="random")
    a = fit_gmm(X, **kw)
    monkeypatch.setattr(gmm_em, "_BATCH_ELEMENTS", 0)
    b = fit_gmm(X, **kw)
    assert rel(a.history_["loglik"], b.history_["loglik"]) < 1e-10
    assert rel(a.covariances_, b.covariances_) < 1e-8
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_biglearn_fit_is_the_same_on_both_paths(monkeypatch):
    X = blobs(seed=2, d=6)
    kw = dict(n_clusters=4, n_iter=30, reg_covar=1e-3, random_state=3, device="cpu")
    a = BigLearnEM(**kw).fit(X)
    assert set(a.history_["task"]) == {0.0, 1.0, 2.0}
    monkeypatch.setattr(gmm_em, "_BATCH_ELEMENTS", 0)
    b = BigLearnEM(**kw).fit(X)
    assert rel(a.history_["loglik"], b.history_["loglik"]) < 1e-9
    assert rel(a.covariances_, b.covariances_) < 1e-7


def reference_biglearn(X, K, n_iter, n_inner, p1, p2, eps, random_state):
    """BigLearn-EM as written before the batched kernels (commit 779661a): block steps through
    the public functions, the transformed parameters mapped back after every inner step."""
    Xt = torch.as_tensor(X)
    N, D = Xt.shape
    alpha = 1.0 / K
    rng = np.random.default_rng(random_state)
    gen = torch_generator(int(rng.integers(2**31 - 1)))
    weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
    means = torch.randn((K, D), generator=gen, dtype=torch.float64)
    cov = floor_eigenvalues(torch.eye(D, dtype=torch.float64).expand(K, D, D).clone(), eps)
    hist = []
    for _ in range(n_iter):
        u = rng.uniform()
        task = 0 if u < p1 else (1 if u < p2 else 2)
        if task == 0:
            idx = torch.arange(D)
        else:
            m = int(D * rng.beta(5.0, 1.0))
            idx = torch.as_tensor(np.sort(rng.permutation(D)[:m]))
        if task < 2:
            for _ in range(n_inner):
                pi_raw, means, cov = block_em_step(Xt, idx, weights, means, cov)
                cov = floor_eigenvalues(cov, eps)
                weights = _smooth(pi_raw, alpha)
        else:
            A = haar_orthogonal(D, gen)
            Y = Xt @ A.T
            mu_bar, cov_bar = means @ A.T, A @ cov @ A.T
            for _ in range(n_inner):
                pi_raw, mu_bar, cov_bar = block_em_step(Y, idx, weights, mu_bar, cov_bar)
                cov_bar = floor_eigenvalues(cov_bar, eps)
                means, cov = mu_bar @ A, floor_eigenvalues(A.T @ cov_bar @ A, eps)
                weights = _smooth(pi_raw, alpha)
        log_norm, _ = estimate_log_prob_resp(
            Xt, weights, means, compute_cholesky(cov, "full"), "full"
        )
        hist.append(float(log_norm.mean()))
    return hist, weights, means, cov


@pytest.mark.parametrize("p1, p2", [(0.4, 0.5), (0.0, 0.0), (0.0, 1.0)])
def test_biglearn_fit_loop_equals_the_reference_loop(p1, p2):
    X = blobs(seed=4, d=5) / 4 + 0.5
    hist, w, m, c = reference_biglearn(X, 3, 12, 3, p1, p2, 1e-2, random_state=7)
    model = BigLearnEM(
        3, n_iter=12, n_inner=3, p1=p1, p2=p2, reg_covar=1e-2, random_state=7, device="cpu"
    ).fit(X)
    assert rel(model.history_["loglik"], hist) < 1e-9
    assert rel(model.means_, m.numpy()) < 1e-8
    assert rel(model.covariances_, c.numpy()) < 1e-8
    assert rel(model.weights_, w.numpy()) < 1e-9


def test_block_step_with_prebuilt_features(per_component):
    X, means, cov, _ = problem(200, 6, 3, seed=8, scale=1.0)
    w = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
    idx = torch.tensor([0, 2, 5])
    plain = block_em_step(X, idx, w, means, cov)
    fast = block_em_step(X, idx, w, means, cov, MomentFeatures(X[:, idx]))
    for a, b in zip(fast, plain, strict=True):
        assert rel(a, b) < 1e-10


# --- float32 ------------------------------------------------------------------------------------


def test_float32_kernels_compute_in_float64_and_return_float32():
    """The expanded moments cancel (eps ||y||^2 / lambda_min absolute): on thin components the
    batched path would lose 1e-4 relative in float32; it computes in float64 whatever the dtype
    and returns the dtype it was given."""
    rng = np.random.default_rng(9)
    K, D, N = 3, 8, 600
    means = rng.uniform(size=(K, D))
    B = rng.normal(size=(K, D, D))
    cov = 1e-5 * (B @ B.transpose(0, 2, 1) / D + 0.1 * np.eye(D))
    y = rng.integers(K, size=N)
    X = np.stack([rng.multivariate_normal(means[k], cov[k]) for k in y])
    t64, t32 = torch.as_tensor, lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    ref = log_gaussian_prob(t64(X), t64(means), compute_cholesky(t64(cov), "full"), "full")
    lp = log_gaussian_prob(t32(X), t32(means), compute_cholesky(t32(cov), "full"), "full")
    assert lp.dtype == torch.float32
    own = torch.arange(N), torch.as_tensor(y)  # each point under its own component: ~ +40
    assert rel(lp[own].double(), ref[own]) < 1e-5
    resp = torch.as_tensor(rng.dirichlet(np.ones(K), size=N))
    feats = MomentFeatures(t32(X))
    assert feats.F.dtype == torch.float64
    out = feats.gaussian_parameters(resp.T.float())
    ref = estimate_gaussian_parameters(t64(X), resp, "full")
    for ours, want in zip(out[:3], ref, strict=True):
        assert ours.dtype == torch.float32
        assert rel(ours.double(), want) < 1e-5


def test_float32_fits_run_and_stay_close_to_float64():
    X = blobs(seed=5) / 4 + 0.5
    kw = dict(n_clusters=3, reg="floor", reg_covar=1e-3, max_iter=15, init="random")
    g64 = fit_gmm(X, dtype="float64", **kw)
    g32 = fit_gmm(X, dtype="float32", **kw)
    assert np.isfinite(g32.history_["loglik"]).all()
    np.testing.assert_allclose(g32.history_["loglik"], g64.history_["loglik"], rtol=1e-5)
    b64 = BigLearnEM(3, n_iter=10, random_state=0, device="cpu").fit(X)
    b32 = BigLearnEM(3, n_iter=10, random_state=0, device="cpu", dtype="float32").fit(X)
    assert b32._means_t.dtype == torch.float32
    np.testing.assert_allclose(b32.history_["loglik"], b64.history_["loglik"], rtol=1e-5)


# --- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gmm_em", "biglearn_em"])
def test_batched_path_runs_blas_single_threaded_and_restores(model, monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen = []
    orig = MomentFeatures.e_step

    def spy(self, *a, **k):
        seen.append(blas_threads())
        return orig(self, *a, **k)

    monkeypatch.setattr(MomentFeatures, "e_step", spy)
    X = blobs(seed=6)
    with threadpool_limits(limits=2, user_api="blas"):
        if model == "gmm_em":
            fit_gmm(X, n_clusters=3, max_iter=3)
        else:
            BigLearnEM(3, n_iter=3, random_state=0, device="cpu").fit(X)
        assert blas_threads() == {2}
    assert seen and all(s == {1} for s in seen)
