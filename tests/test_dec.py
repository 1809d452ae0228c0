"""Unit tests of DEC, IDEC and DCN (mixlib/models/dec.py): the loss and target against their
definitions, the stopping rule, the progress callback, the estimator contract, same seed same
labels (also across thread counts, in a fresh process), on digits that DEC and IDEC improve on
the k-means clustering of the embedding they start from (what the methods claim), and DCN's
online k-means against its definition."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import scaled_blobs as _blobs
from sklearn.datasets import load_digits

from mixlib.metrics import clustering_accuracy
from mixlib.models import build_model, model_spec
from mixlib.models.dec import DCN, DEC, IDEC, keras_kld, soft_assignment, target_distribution

pytestmark = pytest.mark.usefixtures("torch_single_thread")

_TINY = dict(hidden_dims=(32, 32, 64), pretrain_epochs=3, batch_size=64, device="cpu")


def test_soft_assignment_target_and_kld_follow_their_definitions():
    rng = np.random.default_rng(0)
    Z, mu = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    for alpha in (1.0, 2.5):
        q = soft_assignment(torch.as_tensor(Z), torch.as_tensor(mu), alpha).numpy()
        d2 = ((Z[:, None] - mu[None]) ** 2).sum(-1)
        ref = (1 + d2 / alpha) ** (-(alpha + 1) / 2)
        np.testing.assert_allclose(q, ref / ref.sum(1, keepdims=True), rtol=1e-12)
    p = target_distribution(q)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    f = q.sum(0)
    ref = q**2 / f
    np.testing.assert_allclose(p, ref / ref.sum(1, keepdims=True), rtol=1e-12)
    assert np.all(p.max(1) >= q.max(1) - 1e-12)  # P sharpens Q
    # Keras' kld: both clipped to [1e-7, 1], summed over clusters, mean over the batch
    q_t = torch.as_tensor(q)
    q_t[0, 0] = 0.0
    kl = keras_kld(torch.as_tensor(p), q_t).item()
    pc, qc = np.clip(p, 1e-7, 1), np.clip(q_t.numpy(), 1e-7, 1)
    assert kl == pytest.approx(float(np.mean(np.sum(pc * np.log(pc / qc), 1))), rel=1e-12)


@pytest.mark.parametrize("kind", ["dec", "idec"])
def test_fit_contract_progress_and_same_seed_same_labels(kind):
    X, y = _blobs()
    seen = []
    kw = dict(_TINY, max_iter=60, update_interval=10, tol=0.0)
    m = build_model(kind, n_clusters=3, random_state=1, **kw).fit(X, callback=seen.append)
    assert m.labels_.shape == (300,) and m.labels_.dtype == np.int64
    assert m.init_labels_.shape == (300,) and clustering_accuracy(y, m.init_labels_) > 0.9
    assert np.array_equal(m.predict(X), m.labels_)
    np.testing.assert_allclose(m.predict_proba(X).sum(1), 1.0, rtol=1e-12)
    assert m.transform(X[:5]).shape == (5, 10) and m.cluster_centers_.shape == (3, 10)
    # tol = 0 never stops early: every mini-batch runs, P is updated every 10
    assert m.n_iter_ == 60 and len(m.history_["delta_label"]) == 6
    assert len(m.history_["pretrain_reconstruction"]) == 3
    assert [p.step for p in seen] == list(range(1, 10)) and {p.total for p in seen} == {9}
    assert all(p.labels is None for p in seen[:3]) and "reconstruction" in seen[0].metrics
    upd = seen[3:]
    assert all("delta_label" in p.metrics for p in upd) and "kl" not in upd[0].metrics
    assert all(p.metrics["kl"] >= 0 for p in upd[1:])
    assert ("reconstruction" in upd[1].metrics) == (kind == "idec")
    enc = sum(p.numel() for p in m.ae_.encoder.parameters())
    net = enc if kind == "dec" else sum(p.numel() for p in m.ae_.parameters())
    assert m.n_parameters() == net + 3 * 10
    again = build_model(kind, n_clusters=3, random_state=1, **kw).fit(X)
    assert np.array_equal(again.labels_, m.labels_)
    assert np.array_equal(again.cluster_centers_, m.cluster_centers_)
    # labelled points seed the centres at their embeddings' means
    lab = np.full(300, -1)
    lab[:30] = y[:30]
    seeded = build_model(kind, n_clusters=3, random_state=1, **kw).fit(X, init_labels=lab)
    assert clustering_accuracy(y, seeded.init_labels_) > 0.9


def test_a_shared_pretraining_gives_what_pretraining_itself_gives(tmp_path):
    """``fit(X, pretrained=m.pretrain(X))`` (through torch.save/load, as the workflow's
    pretrain_autoencoder job hands it on) is bit for bit ``fit(X)``, for DEC and for IDEC from
    the same state; a state from other hyperparameters, another seed or other data is refused
    with a message naming what differs."""
    X, _ = _blobs()
    kw = dict(_TINY, max_iter=40, update_interval=10, tol=0.0, random_state=3)
    state = DEC(3, **kw).pretrain(X)
    assert len(state["history"]) == _TINY["pretrain_epochs"]
    torch.save(state, tmp_path / "ae.pt")
    state = torch.load(tmp_path / "ae.pt")
    dcn = dict(_TINY, n_epochs=3, random_state=3)
    for cls, ckw in ((DEC, kw), (IDEC, kw), (DCN, dcn)):
        own, shared = cls(3, **ckw).fit(X), cls(3, **ckw).fit(X, pretrained=state)
        np.testing.assert_array_equal(own.labels_, shared.labels_)
        np.testing.assert_array_equal(own.init_labels_, shared.init_labels_)
        np.testing.assert_array_equal(own.cluster_centers_, shared.cluster_centers_)
        assert own.history_ == shared.history_
    with pytest.raises(ValueError, match=r"other hyperparameters \(pretrain_lr: 1.0 != 0.5\)"):
        IDEC(3, **{**kw, "pretrain_lr": 0.5}).fit(X, pretrained=state)
    with pytest.raises(ValueError, match="from seed 3, random_state is 4"):
        DEC(3, **{**kw, "random_state": 4}).fit(X, pretrained=state)
    with pytest.raises(ValueError, match="other data"):
        DEC(3, **kw).fit(X[:-1], pretrained=state)
    with pytest.raises(ValueError, match=r"lacks \['data'"):
        DEC(3, **kw).fit(X, pretrained={k: v for k, v in state.items() if k != "data"})


def test_dcn_contract_progress_and_its_online_kmeans():
    """DCN: the estimator contract, a progress report per epoch, same seed same labels; the
    final labels and centres are a fixed point of Lloyd's iterations on the final embedding
    (the refresh after the last epoch); the clustering term falls as the embedding is pulled
    to the centres; and the online centre update is the running mean of its counts."""
    X, y = _blobs()
    seen = []
    kw = dict(_TINY, n_epochs=6, refresh_every=4, random_state=1)
    m = DCN(3, **kw).fit(X, callback=seen.append)
    assert m.labels_.shape == (300,) and m.labels_.dtype == np.int64
    assert clustering_accuracy(y, m.labels_) > 0.9 and m.n_iter_ == 6
    assert [p.step for p in seen] == list(range(1, 10)) and {p.total for p in seen} == {9}
    assert all({"loss", "reconstruction", "clustering", "delta_label"} <= set(p.metrics)
               for p in seen[3:])  # fmt: skip
    np.testing.assert_array_equal(seen[-1].labels(), m.labels_)
    Z = m.transform(X)
    for k in range(3):  # the refresh's centres are the means of their rows
        np.testing.assert_allclose(m.cluster_centers_[k], Z[m.labels_ == k].mean(0), atol=1e-6)
    assert np.array_equal(m.predict(X), m.labels_)
    assert np.array_equal(m.predict_proba(X).argmax(1), m.labels_)
    assert m.history_["clustering"][-1] < m.history_["clustering"][0]
    assert m.n_parameters() == sum(p.numel() for p in m.ae_.parameters()) + 3 * 10
    assert np.array_equal(DCN(3, **kw).fit(X).labels_, m.labels_)
    # the update of one batch equals the authors' per-row loop
    rng = np.random.default_rng(0)
    C, z, count = rng.normal(size=(3, 4)), rng.normal(size=(9, 4)), np.array([100.0, 3.0, 7.0])
    lab = ((z[:, None] - C[None]) ** 2).sum(-1).argmin(1)
    ref, n = C.copy(), count.copy()
    for i, c in enumerate(lab):
        n[c] += 1
        ref[c] = (1 - 1 / n[c]) * ref[c] + z[i] / n[c]
    from mixlib.models.power_kmeans import cluster_sums

    cnt, S = cluster_sums(z, lab, 3)
    np.testing.assert_allclose((count[:, None] * C + S) / (count + cnt)[:, None], ref, rtol=1e-12)
    d = DCN()
    assert (d.lam, d.beta, d.lr, d.n_epochs, d.refresh_every, d.count_init, d.n_init) == (
        1.0, 1.0, 1e-4, 50, 10, 100.0, 10)  # fmt: skip
    with pytest.raises(ValueError, match="refresh_every"):
        DCN(3, refresh_every=0).fit(X)


def test_stops_when_few_labels_change():
    """The first update (iteration 0) never stops; with tol = 1 the second one does."""
    X, _ = _blobs()
    m = DEC(3, random_state=0, **dict(_TINY, max_iter=500, update_interval=7, tol=1.0)).fit(X)
    assert m.n_iter_ == 8 and len(m.history_["delta_label"]) == 2


def test_defaults_are_the_reference_recipe_and_errors_name_the_problem():
    d, i = DEC(), IDEC()
    assert (d.hidden_dims, d.embedding_size, d.batch_size) == ((500, 500, 2000), 10, 256)
    assert (d.pretrain_epochs, d.pretrain_optimizer, d.pretrain_lr) == (300, "sgd", 1.0)
    assert (d.optimizer, d.lr, d.max_iter, d.update_interval, d.tol) == (
        "sgd",
        0.01,
        20000,
        140,
        1e-3,
    )
    assert (i.optimizer, i.lr, i.gamma, d.n_init) == ("adam", 1e-3, 0.1, 20)
    assert model_spec("idec").constraints["gamma"] == "real > 0"  # read without importing
    with pytest.raises(RuntimeError, match="not fitted"):
        DEC().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="gamma"):
        IDEC(gamma=-1.0).fit(_blobs()[0])
    m = DEC(3, random_state=0, **dict(_TINY, max_iter=5)).fit(_blobs()[0])
    with pytest.raises(ValueError, match="12"):
        m.predict(np.zeros((2, 5), dtype=np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dec", "idec"])
def test_improves_on_kmeans_of_its_embedding_on_digits(kind):
    """What DEC and IDEC claim: self-training moves the clustering beyond the k-means one of the
    pre-trained embedding it starts from (digits, a narrower net, a short schedule)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    kw = dict(hidden_dims=(256, 256, 1000), pretrain_epochs=40, max_iter=1500)
    m = build_model(
        kind, n_clusters=10, random_state=0, update_interval=70, n_init=5, device="cpu", **kw
    ).fit(X)
    init, final = clustering_accuracy(y, m.init_labels_), clustering_accuracy(y, m.labels_)
    assert final >= init + 0.02, (init, final)


@pytest.mark.slow
def test_same_labels_at_1_and_2_threads():
    """In a fresh process (MKL's strict mode is set on import, before MKL's first call): DEC,
    IDEC and DCN at 2 and at 1 intra-op threads give bitwise equal labels and centres."""
    code = textwrap.dedent(
        """
        import numpy as np, torch
        from mixlib.models import dec
        from mixlib.models import power_kmeans as pk
        assert pk.MKL_CNR in ("strict", "no MKL"), pk.MKL_CNR
        rng = np.random.default_rng(0)
        X = (rng.random((400, 784)) * (rng.random((400, 784)) < 0.2)).astype(np.float32)
        for cls, kw in ((dec.DEC, dict(max_iter=40, update_interval=10, tol=0.0)),
                        (dec.IDEC, dict(max_iter=40, update_interval=10, tol=0.0)),
                        (dec.DCN, dict(n_epochs=2, refresh_every=1))):
            out = []
            for nt in (2, 1):
                torch.set_num_threads(nt)
                m = cls(5, pretrain_epochs=2, device="cpu", random_state=3, **kw).fit(X)
                assert m.fit_threads_ == nt, (m.fit_threads_, nt)
                out.append((m.labels_, m.cluster_centers_))
            assert np.array_equal(out[0][0], out[1][0])
            assert np.array_equal(out[0][1], out[1][1])
        print("OK", pk.MKL_CNR)
        """
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_figures(tmp_path):
    from mixlib import plots

    X, _ = _blobs()
    m = IDEC(3, random_state=0, **dict(_TINY, max_iter=30, update_interval=10, tol=0.0)).fit(X)
    dcn = DCN(3, random_state=0, n_epochs=2, **_TINY).fit(X)
    for model in (m, dcn):
        paths = plots.model_figures(model, X, tmp_path / model.kind)
        assert {p.name for p in paths} == {"curves.png", "embedding.png"}
        assert all(p.stat().st_size > 0 for p in paths)


def test_train_and_evaluate_stages_record_init_and_train_rows(tmp_path):
    """Through the pipeline's stages: the INIT record is the k-means clustering of the
    pre-trained embedding, TRAIN the self-trained one; parameter count and figures written."""
    import json

    from mixlib import data, pipeline

    X, y = _blobs(240, 3, 12, seed=2)
    meta = {"name": "b", "n_clusters": 3}
    data.save_prepared(data.Dataset(X, y, "b", (), meta, None), tmp_path / "b.npz")
    pipeline.train_model(
        data_path=str(tmp_path / "b.npz"),
        init_path=None,
        kind="idec",
        params=dict(_TINY, max_iter=40, update_interval=10),
        seed=0,
        eval_every=1,
        out_labels=str(tmp_path / "labels.npz"),
        out_info=str(tmp_path / "info.json"),
        artifact_dir=str(tmp_path / "fig"),
    )
    pipeline.evaluate(
        data_path=str(tmp_path / "b.npz"),
        labels_path=str(tmp_path / "labels.npz"),
        info_path=str(tmp_path / "info.json"),
        dataset="b",
        model="idec",
        init="none",
        seed=0,
        mean_of_last=None,
        out_record=str(tmp_path / "eval.json"),
    )
    records = {r["stage"]: r for r in json.loads((tmp_path / "eval.json").read_text())}
    assert set(records) == {"init", "train"} and records["train"]["acc"] > 0.9
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["n_parameters"] == records["train"]["params"] > 0
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"curves.png", "embedding.png"}


@pytest.mark.workflow
def test_workflow_pretrains_once_for_dec_and_idec(tmp_path):
    """The real Snakefile: DEC, IDEC and DCN of one dataset and seed share one pretrain_autoencoder
    job (one saved auto-encoder), and each trains to the labels of a fit that pre-trains
    itself; a different pre-training recipe gets a job of its own."""
    from helpers import run_snakemake

    from mixlib import data

    p = dict(hidden_dims=[32, 32, 64], pretrain_epochs=2, batch_size=64, device="cpu")
    q = dict(p)  # DCN's own: the pre-training keys only
    p.update(max_iter=30, update_interval=10, tol=0.0)
    config = {
        "seeds": [0],
        "datasets": {"digits": {"source": "digits"}},
        "models": {
            "dec": {"kind": "dec", "params": p},
            "idec": {"kind": "idec", "params": p},
            "idec_lr": {"kind": "idec", "params": {**p, "pretrain_lr": 0.5}},
            "dcn": {"kind": "dcn", "params": {**q, "n_epochs": 2}},
        },
        "tracking": {"enabled": False},
    }
    out = [f"results/train/digits/{m}/none/seed0/labels.npz" for m in config["models"]]
    run_snakemake(tmp_path, "--cores", "2", *out, config=config)
    states = sorted((tmp_path / "results/pretrain/digits").glob("*/seed0/autoencoder.pt"))
    assert len(states) == 2  # dec, idec and dcn share one; idec_lr has its own
    ds = data.load_prepared(tmp_path / "results/data/digits.npz")
    for name, cls, kw in (("dec", DEC, p), ("idec", IDEC, p), ("dcn", DCN, {**q, "n_epochs": 2})):
        got = np.load(tmp_path / f"results/train/digits/{name}/none/seed0/labels.npz")["labels"]
        own = cls(10, **kw, random_state=0).fit(ds.X)
        np.testing.assert_array_equal(got, own.labels_)
