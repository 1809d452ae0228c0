"""Unit tests of power k-means and deep power k-means (mixlib/models/power_kmeans.py): the power
mean and MM weights against direct formulas and autograd, stability at s = -5000, recovery of
blobs, a 20-seed count against Lloyd from a poor start, the estimator contract."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import flushes_subnormals
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from mixlib import plots
from mixlib.metrics import ari, clustering_accuracy
from mixlib.models import build_model
from mixlib.models.power_kmeans import (
    DeepPowerKMeans,
    PowerKMeans,
    log_power_weights,
    mm_update,
    power_mean,
    power_mean_loss,
    power_weights,
    sq_distances,
    torch_log_power_mean,
)


def _D(seed=0, N=30, K=4, d=3):
    rng = np.random.default_rng(seed)
    X, C = rng.standard_normal((N, d)), rng.standard_normal((K, d))
    return X, C, sq_distances(X, C)


def _minmax(X):
    X = X - X.min(0)
    return (X / X.max(0)).astype(np.float32)


# -- pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize("s", [-0.5, -1.0, -3.7])
def test_power_mean_and_weights_match_direct_formulas(s):
    X, C, D = _D()
    K = D.shape[1]
    M = ((D**s).mean(1)) ** (1 / s)
    assert np.allclose(power_mean(D, s), M, rtol=1e-12)
    # eq. (5): the weights are the gradient of M_s
    W = (1 / K) * D ** (s - 1) * ((D**s).mean(1, keepdims=True)) ** (1 / s - 1)
    assert np.allclose(power_weights(D, s), W, rtol=1e-10)
    Dt = torch.tensor(D, requires_grad=True)
    torch.exp(torch_log_power_mean(Dt, s)).sum().backward()
    assert np.allclose(Dt.grad.numpy(), W, rtol=1e-8)
    # Euler (M_s is 1-homogeneous): sum_j w_ij d_ij = M_s(d_i); softmax factor rows sum to 1
    assert np.allclose((W * D).sum(1), M, rtol=1e-10)
    assert np.allclose(np.exp(log_power_weights(D, s)[1]).sum(1), 1.0)
    # centre update = weighted mean
    assert np.allclose(mm_update(X, np.log(W)), (W.T @ X) / W.sum(0)[:, None])


def test_huge_negative_s_and_zero_distance_are_stable():
    X, C, D = _D()
    X = np.vstack([X, C[1]])  # a point exactly on centre 1: d = 0
    D = sq_distances(X, C)
    assert D[-1, 1] == 0.0
    for s in (-5000.0, -50000.0):
        W = power_weights(D, s)
        assert np.isfinite(W).all()
        # s -> -inf: weight rows become the one-hot nearest-centre assignment (sum to 1)
        assert np.allclose(W.sum(1), 1.0, atol=1e-3)
        assert np.array_equal(W.argmax(1), D.argmin(1))
        assert np.allclose(power_mean(D, s), D.min(1), rtol=1e-3, atol=1e-290)
        assert np.isfinite(mm_update(X, log_power_weights(D, s)[0])).all()
        # torch: loss and gradient finite too
        Z = torch.tensor(X, requires_grad=True)
        R = torch.tensor(C, requires_grad=True)
        power_mean_loss(Z, R, s).backward()
        assert torch.isfinite(Z.grad).all() and torch.isfinite(R.grad).all()
    # a whole fit at s = -5000 starting with centres on data points
    Xb, y = make_blobs(300, centers=3, n_features=4, cluster_std=0.5, random_state=1)
    m = PowerKMeans(3, s0=-5000.0, init=Xb[[0, 1, 2]]).fit(Xb)
    assert np.isfinite(m.cluster_centers_).all() and np.isfinite(m.history_["objective"]).all()


def test_mm_step_decreases_objective_at_fixed_s():
    X, _ = make_blobs(400, centers=5, n_features=3, cluster_std=1.5, random_state=2)
    m = PowerKMeans(5, s0=-2.0, eta=1.0, max_iter=40, tol=0.0, random_state=0).fit(X)
    obj = np.array(m.history_["objective"])
    assert len(obj) == 40 and np.all(np.diff(obj) <= 1e-9 * obj[:-1])


# -- PowerKMeans --------------------------------------------------------------------------------


def test_power_kmeans_recovers_blobs():
    X, y = make_blobs(600, centers=5, n_features=5, cluster_std=0.6, random_state=3)
    m = PowerKMeans(5, random_state=0).fit(X)
    assert ari(y, m.labels_) >= 0.95
    assert np.array_equal(m.labels_, m.predict(X))
    assert set(m.history_) == {"objective", "s", "kmeans_objective"}
    assert len(m.history_["s"]) == m.n_iter_ and m.n_parameters() == 5 * 5


def test_power_kmeans_no_worse_than_lloyd_from_poor_init_in_most_seeds():
    wins = 0
    for seed in range(20):
        X, _ = make_blobs(500, centers=8, n_features=2, cluster_std=0.7, random_state=seed)
        rng = np.random.default_rng(seed)
        # poor start: all centres drawn from the 40 points nearest one corner
        corner = np.argsort(X[:, 0] + X[:, 1])[:40]
        C0 = X[rng.choice(corner, 8, replace=False)]
        lloyd = KMeans(8, init=C0, n_init=1).fit(X).inertia_
        pkm = PowerKMeans(8, init=C0, random_state=seed).fit(X).inertia_
        wins += pkm <= lloyd * (1 + 1e-9)
    print(f"power k-means k-means objective <= Lloyd's in {wins} of 20 seeds")
    assert wins > 10


def test_power_kmeans_init_labels_and_determinism():
    X, y = make_blobs(300, centers=3, n_features=2, cluster_std=0.5, random_state=0)
    lab = np.where(np.arange(300) % 3 == 0, y, -1)  # a third labelled
    m = PowerKMeans(3, random_state=0).fit(X, init_labels=lab)
    C0 = np.stack([X[lab == k].mean(0) for k in range(3)])
    assert np.array_equal(m.init_labels_, sq_distances(X, C0).argmin(1))
    assert ari(y, m.labels_) >= 0.95
    a = build_model("power_kmeans", n_clusters=3, random_state=7).fit(X)
    b = clone(a).fit(X)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert b.get_params()["random_state"] == 7 and b.get_params()["eta"] == 1.04


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"s0": 1.0}, "s0"),
        ({"s0": 0.0}, "s0"),
        ({"eta": 0.5}, "eta"),
        ({"anneal_every": 0}, "anneal_every"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        ({"hard_tol": 1.0}, "hard_tol"),
        ({"n_clusters": 0}, "n_clusters"),
        ({"init": "foo"}, "init"),
        ({"init": np.zeros((2, 2))}, "init"),
        ({"random_state": 1.5}, "random_state"),
    ],
)
def test_power_kmeans_bad_params_name_the_parameter(kw, name):
    X, _ = make_blobs(50, centers=3, random_state=0)
    with pytest.raises(ValueError, match=name):
        PowerKMeans(**{"n_clusters": 3, **kw}).fit(X)


# -- DeepPowerKMeans ----------------------------------------------------------------------------

_SMALL = dict(hidden_dims=(64, 64, 128), n_rounds=4, epochs_per_s=3, batch_size=50, device="cpu")


def test_deep_power_kmeans_recovers_blobs(tmp_path):
    X, y = make_blobs(300, centers=4, n_features=10, cluster_std=1.0, random_state=0)
    X = _minmax(X)
    m = DeepPowerKMeans(4, random_state=0, **_SMALL).fit(X)
    assert ari(y, m.labels_) >= 0.95
    assert np.array_equal(m.labels_, m.predict(X))
    h = m.history_
    assert len(h["s"]) == 4 and len(h["loss"]) == 12 and h["s"][1] == pytest.approx(-4.5)
    assert len(h["reconstruction"]) == len(h["power_mean"]) == 4
    ae = sum(p.numel() for p in m.ae_.parameters())
    assert m.n_parameters() == ae + 4 * 10
    paths = plots.model_figures(m, X, tmp_path)
    assert {p.name for p in paths} == {"round_losses.png", "embedding.png"}
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("flush", [True, False])
def test_deep_power_kmeans_trains_with_subnormals_flushed(flush):
    """Training runs with FTZ/DAZ on (the default) or off, as asked, and the process's default
    (off) is back after the fit."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)
    X, _ = make_blobs(120, centers=3, n_features=6, random_state=0)
    seen = []
    kw = dict(_SMALL, n_rounds=1, epochs_per_s=1, pretrain_epochs=1)
    DeepPowerKMeans(3, random_state=0, flush_denormal=flush, **kw).fit(
        _minmax(X), callback=lambda p: seen.append(flushes_subnormals())
    )
    assert seen == [flush, flush]
    assert not flushes_subnormals()


def test_subnormals_flushed_on_every_thread_of_torchs_pool():
    """FTZ/DAZ reach torch's OpenMP workers too, not only the calling thread: a 2-thread product
    of subnormal inputs is 0 everywhere inside the block (with the calling thread's bits alone,
    the worker's half stayed subnormal, and ~100x slower) and subnormal everywhere after it. The
    pool exists before the block (a parallel product first), as in a fit after other work."""
    from mixlib.models.base import subnormals_flushed

    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = torch.full((1 << 20,), 1e-39, dtype=torch.float32)  # 16 grains of torch's 32768
        b = torch.full_like(a, 0.5)
        assert bool(((a * b) != 0).all())  # pool started; subnormal results everywhere
        with subnormals_flushed():
            assert bool(((a * b) == 0).all())
        assert bool(((a * b) != 0).all())
    finally:
        torch.set_num_threads(prev)


def test_jobs_openmp_threads_spin_briefly_unless_the_user_said_how_to_wait():
    """``pipeline.openmp_wait_defaults`` (called by every job before torch loads): a short spin
    for libgomp and no block time for LLVM's runtime when the environment is silent; any of the
    three variables set by the user leaves the environment as it is."""
    from mixlib.pipeline import openmp_wait_defaults

    env = {"PATH": "/bin"}
    openmp_wait_defaults(env)
    assert env == {"PATH": "/bin", "GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "0"}
    for user in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "0"}, {"KMP_BLOCKTIME": "5"}):
        env = dict(user)
        openmp_wait_defaults(env)
        assert env == user


def test_deep_power_kmeans_default_architecture_and_params():
    X, _ = make_blobs(20, centers=2, n_features=6, random_state=0)
    m = DeepPowerKMeans(2, n_rounds=1, epochs_per_s=1, device="cpu", random_state=0)
    m.fit(_minmax(X))
    # 6-500-500-2000-10 and back, plus K x e representatives
    enc = 6 * 500 + 500 + 500 * 500 + 500 + 500 * 2000 + 2000 + 2000 * 10 + 10
    dec = 10 * 2000 + 2000 + 2000 * 500 + 500 + 500 * 500 + 500 + 500 * 6 + 6
    assert m.n_parameters() == enc + dec + 2 * 10
    # the recipe's defaults (mixlib/models/power_kmeans.py's docstring)
    p = m.get_params()
    assert (p["lambda_pk"], p["p_rate"], p["pretrain_epochs"], p["n_init"]) == (0.01, 1.5, 50, 10)
    assert p["normalize"] is True and len(m.history_["pretrain_reconstruction"]) == 50


def test_deep_power_kmeans_same_seed_same_result_and_init_labels():
    X, y = make_blobs(120, centers=3, n_features=5, random_state=1)
    X = _minmax(X)
    kw = dict(_SMALL, n_rounds=2, epochs_per_s=2)
    a = build_model("deep_power_kmeans", n_clusters=3, random_state=3, **kw).fit(X)
    b = clone(a).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    c = DeepPowerKMeans(3, random_state=4, **kw).fit(X)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)
    lab = np.where(np.arange(120) % 2 == 0, y, -1)
    d = DeepPowerKMeans(3, random_state=3, **dict(kw, n_rounds=1, epochs_per_s=1)).fit(
        X, init_labels=lab
    )
    assert d.init_labels_.shape == (120,) and ari(y, d.init_labels_) > 0.9


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"s0": 2.0}, "s0"),
        ({"p_rate": 0.5}, "p_rate"),
        ({"lambda_pk": -1.0}, "lambda_pk"),
        ({"lambda_reg": -1.0}, "lambda_reg"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs_per_s": 0}, "epochs_per_s"),
        ({"n_rounds": 0}, "n_rounds"),
        ({"pretrain_epochs": -1}, "pretrain_epochs"),
        ({"pretrain_restarts": 0}, "pretrain_restarts"),
        ({"hidden_dims": (10, 0)}, "hidden_dims"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_deep_power_kmeans_bad_params_name_the_parameter(kw, name):
    X, _ = make_blobs(30, centers=3, random_state=0)
    with pytest.raises(ValueError, match=name):
        DeepPowerKMeans(**{"n_clusters": 3, **kw}).fit(X)


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _tiny(seed=3, **kw):
    kw = {"pretrain_epochs": 3, "n_rounds": 3, "epochs_per_s": 1, **kw}
    return DeepPowerKMeans(device="cpu", random_state=seed, **kw)


@pytest.mark.slow
@pytest.mark.usefixtures("torch_single_thread")
def test_deep_power_kmeans_recipe_beats_kmeans_on_digits():
    """The recipe (pre-training, k-means seeding, scale-free power mean) with a shortened joint
    phase beats k-means on the pixels (0.792); the full schedule reaches 0.835 +- 0.014."""
    X, y = _digits()
    km = clustering_accuracy(y, KMeans(10, n_init=10, random_state=0).fit_predict(X))
    m = DeepPowerKMeans(n_rounds=2, epochs_per_s=2, device="cpu", random_state=0).fit(X)
    assert clustering_accuracy(y, m.labels_) > km + 0.005, (clustering_accuracy(y, m.labels_), km)
    assert np.array_equal(m.predict(X), m.labels_)


@pytest.mark.usefixtures("torch_single_thread")
@pytest.mark.parametrize("scores, kept", [([0.5, 0.1, 0.2], 0), ([0.1, 0.9, 0.2], 1)])
def test_deep_power_kmeans_keeps_the_pretraining_with_the_best_silhouette(
    monkeypatch, scores, kept
):
    """Three pre-training restarts scored ``scores``: the one with the highest goes on. Keeping
    restart 0 gives the bits of one restart (the recipe); keeping another gives another start.
    Progress counts every restart's epochs."""
    from mixlib.models import power_kmeans

    X = _digits()[0][:400]
    one = _tiny().fit(X)
    calls = iter(scores)
    monkeypatch.setattr(power_kmeans, "embedding_silhouette", lambda Z, lab, rng: next(calls))
    seen = []
    m = _tiny(pretrain_restarts=3).fit(X, callback=seen.append)
    assert m.pretrain_silhouettes_ == scores and m.pretrain_restart_ == kept
    assert [(p.step, p.total) for p in seen] == [(k, 3 * 3 + 3) for k in range(1, 13)]
    # each restart's last epoch reports its score
    scored = [i for i, p in enumerate(seen) if "silhouette" in p.metrics]
    assert scored == [2, 5, 8] and [seen[i].metrics["silhouette"] for i in scored] == scores
    assert [p.metrics["restart"] for p in seen[:9]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(m.history_["pretrain_reconstruction"]) == 3
    same = np.array_equal(m.init_labels_, one.init_labels_) and np.array_equal(
        m.cluster_centers_, one.cluster_centers_
    )
    assert same == (kept == 0)
    assert one.pretrain_restart_ == 0 and one.pretrain_silhouettes_ == []


def test_embedding_silhouette_is_scikit_learns_on_a_sample():
    from sklearn.metrics import silhouette_score

    from mixlib.models.power_kmeans import embedding_silhouette

    X, y = make_blobs(700, centers=4, n_features=6, random_state=0)
    full = embedding_silhouette(X, y, np.random.default_rng(0), sample_size=1000)
    assert full == pytest.approx(silhouette_score(X, y), rel=1e-12)
    a = embedding_silhouette(X, y, np.random.default_rng(1), sample_size=300)
    assert a == embedding_silhouette(X, y, np.random.default_rng(1), sample_size=300)
    rows = np.sort(np.random.default_rng(1).choice(700, 300, replace=False))
    assert a == pytest.approx(silhouette_score(X[rows], y[rows]), rel=1e-12)
    assert embedding_silhouette(X, np.zeros(700, int), np.random.default_rng(0)) == -1.0


@pytest.mark.usefixtures("torch_single_thread")
def test_deep_power_kmeans_last_batch_of_one_point():
    """N = 1 (mod batch_size): the lone point joins the previous batch (its scatter would be 0)."""
    m = _tiny(pretrain_epochs=1, n_rounds=1, batch_size=100).fit(_digits()[0][:201])
    assert np.isfinite(m.history_["loss"]).all()


def test_deep_power_kmeans_same_labels_at_1_and_2_threads():
    """In a fresh process (MKL's strict mode can only be set before its first call): fit at 2
    and at 1 intra-op threads (two pre-training restarts); labels, centres (bitwise), losses and
    the restarts' silhouettes are equal, and the 2-thread
    fit really ran on 2 threads. Digits (64 features) and a 784-feature problem with the thin
    GEMMs that MKL splits across threads."""
    code = textwrap.dedent(
        """
        import numpy as np, torch
        from mixlib.models import power_kmeans as pk
        assert pk.MKL_CNR in ("strict", "no MKL"), pk.MKL_CNR
        from sklearn.datasets import load_digits
        X = (load_digits().data[:600] / 16.0).astype(np.float32)
        rng = np.random.default_rng(0)
        X2 = (rng.random((500, 784)) * (rng.random((500, 784)) < 0.2)).astype(np.float32)
        for data in (X, X2):
            out = []
            for nt in (2, 1):
                torch.set_num_threads(nt)
                m = pk.DeepPowerKMeans(
                    pretrain_epochs=3, n_rounds=3, epochs_per_s=1, pretrain_restarts=2,
                    device="cpu", random_state=3,
                ).fit(data)
                assert m.fit_threads_ == nt, (m.fit_threads_, nt)
                out.append((m.labels_, m.cluster_centers_, m.history_["loss"],
                            m.pretrain_silhouettes_))
            assert np.array_equal(out[0][0], out[1][0])
            assert np.array_equal(out[0][1], out[1][1])
            assert out[0][2] == out[1][2] and out[0][3] == out[1][3]
        print("OK", pk.MKL_CNR)
        """
    )
    # passive OpenMP waits: the same bits, without spinning against other jobs
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_deep_power_kmeans_one_thread_when_mkl_is_not_reproducible(monkeypatch):
    """Without MKL's strict mode, fit runs on one intra-op thread (and says so)."""
    from mixlib.models import power_kmeans

    monkeypatch.setattr(power_kmeans, "MKL_CNR", "refused (-8)")
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.warns(RuntimeWarning, match="one intra-op thread"):
            m = _tiny(pretrain_epochs=1, n_rounds=1).fit(_digits()[0][:300])
        assert m.fit_threads_ == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(prev)


def test_adam_is_fused_for_float_parameters_and_steps_like_torchs_adam():
    """``base.adam`` (the optimiser of deep power k-means, N2D, and DEC/IDEC's Adam phases) is
    fused for float32/float64 parameters on this torch and its steps equal foreach Adam's to
    float32 rounding; groups (deep power k-means' decoder weight decay) are kept."""
    from mixlib.models.base import adam

    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(50, 20, generator=gen)
    grads = [torch.randn(50, 20, generator=gen) for _ in range(5)]
    out = []
    for make in (
        lambda p: adam([{"params": [p], "weight_decay": 0.1}], lr=1e-2, eps=1e-7),
        lambda p: torch.optim.Adam([p], lr=1e-2, eps=1e-7, weight_decay=0.1, foreach=True),
    ):
        p = torch.nn.Parameter(w0.clone())
        opt = make(p)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        out.append((opt, p.detach()))
    assert out[0][0].defaults["fused"] is True
    assert out[0][0].param_groups[0]["weight_decay"] == 0.1
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-6, atol=1e-7)
    assert not torch.equal(out[0][1], w0)
    half = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    assert not adam([half], lr=1e-3).defaults["fused"]  # not fused on CPU: foreach
