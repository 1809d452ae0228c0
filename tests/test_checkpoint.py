"""Checkpointed training loops (mixlib.models.base.Checkpoint): N2D's auto-encoder epochs,
DEC/IDEC's pre-training and DEC's, IDEC's and DCN's clustering phase, stopped part-way and run
again, end bit for bit as the uninterrupted fit; a checkpoint of other hyperparameters or an unreadable one is ignored with a warning; the
pipeline's jobs resume from theirs and remove it once their outputs are written."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from helpers import assert_same_weights, scaled_blobs

from mixlib import data, pipeline, provenance
from mixlib.models.base import Checkpoint
from mixlib.models.dec import DCN, DEC, IDEC
from mixlib.models.n2d import N2D

pytestmark = pytest.mark.usefixtures("torch_single_thread")

_N2D = dict(hidden_dims=(32, 32, 64), pretrain_epochs=6, batch_size=50, device="cpu")
_DEC = dict(hidden_dims=(32, 32, 64), pretrain_epochs=6, batch_size=64, device="cpu")


class _Stop(Exception):
    """Stands for the job being killed."""


def _blobs(n=200, k=3, d=10, seed=1):
    return scaled_blobs(n, k, d, seed)


def _stop_after(step):
    def callback(p):
        if p.step == step:
            raise _Stop

    return callback


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_n2d_stopped_part_way_resumes_to_the_uninterrupted_fit(tmp_path):
    X, _ = _blobs()
    ref = N2D(3, random_state=2, **_N2D).fit(X)
    ck = Checkpoint(tmp_path / "n2d.checkpoint", every_s=0)
    with pytest.raises(_Stop):
        N2D(3, random_state=2, **_N2D).fit(X, callback=_stop_after(3), checkpoint=ck)
    state = torch.load(ck.path, weights_only=True)["state"]
    assert state["epoch"] == 3 and len(state["history"]["reconstruction"]) == 3

    steps = []
    m = N2D(3, random_state=2, **_N2D).fit(
        X, callback=lambda p: steps.append(p.step), checkpoint=ck
    )
    assert steps == [4, 5, 6, 7]  # epochs 4-6, then the mixture
    assert m.history_ == ref.history_
    assert_same_weights(_weights(m.ae_), _weights(ref.ae_))
    np.testing.assert_array_equal(m.embedding_, ref.embedding_)
    np.testing.assert_array_equal(m.labels_, ref.labels_)
    # the end of the pre-training is saved too: a fit stopped in UMAP or the mixture skips it
    assert torch.load(ck.path, weights_only=True)["state"]["epoch"] == 6
    steps.clear()
    again = N2D(3, random_state=2, **_N2D).fit(
        X, callback=lambda p: steps.append(p.step), checkpoint=ck
    )
    assert steps == [7]
    np.testing.assert_array_equal(again.labels_, ref.labels_)


def test_a_checkpoint_of_other_hyperparameters_or_unreadable_is_ignored(tmp_path, caplog):
    X, _ = _blobs()
    ck = Checkpoint(tmp_path / "n2d.checkpoint", every_s=0)
    with pytest.raises(_Stop):
        N2D(3, random_state=2, **_N2D).fit(X, callback=_stop_after(2), checkpoint=ck)
    other = dict(_N2D, lr=5e-4)
    ref = N2D(3, random_state=2, **other).fit(X)
    steps = []
    with caplog.at_level(logging.WARNING, logger="mixlib.models.base"):
        m = N2D(3, random_state=2, **other).fit(
            X, callback=lambda p: steps.append(p.step), checkpoint=ck
        )
    assert steps[0] == 1 and "another model, data or seed" in caplog.text
    np.testing.assert_array_equal(m.labels_, ref.labels_)
    # other data, other seed: the same
    with caplog.at_level(logging.WARNING, logger="mixlib.models.base"):
        caplog.clear()
        assert ck.load("x") is None and "another model" in caplog.text
    ck.path.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="mixlib.models.base"):
        caplog.clear()
        steps.clear()
        m = N2D(3, random_state=2, **other).fit(
            X, callback=lambda p: steps.append(p.step), checkpoint=ck
        )
    assert steps[0] == 1 and "unreadable" in caplog.text
    np.testing.assert_array_equal(m.labels_, ref.labels_)


def test_checkpoint_saves_at_most_every_every_s_unless_forced(tmp_path):
    ck = Checkpoint(tmp_path / "c", every_s=3600)
    assert not ck.save("k", lambda: {"epoch": 1}) and not ck.path.exists()
    assert ck.save("k", lambda: {"epoch": 2}, force=True)
    assert ck.resumed_seconds == 0.0
    again = Checkpoint(ck.path)
    assert again.load("k") == {"epoch": 2}
    held = again.resumed_seconds  # the work the file holds: the first object's lifetime
    assert 0.0 < held == torch.load(ck.path, weights_only=True)["seconds"]
    again.save("k", lambda: {"epoch": 3}, force=True)  # adds its own time to what it resumed
    assert torch.load(ck.path, weights_only=True)["seconds"] > held
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # written atomically, no leftovers
    ck.remove()
    assert not ck.path.exists() and ck.load("k") is None
    ck.remove()  # removing what is not there is fine


def test_dec_pretraining_resumes_and_is_shared_with_idec(tmp_path, caplog):
    """DEC's pre-training stopped part-way, then finished by IDEC's (same recipe, seed and data:
    the workflow shares one pre-training between them), is IDEC's uninterrupted one; DEC's fit
    that pre-trains itself resumes from the same checkpoint."""
    X, _ = _blobs(240, 3, 12, seed=2)
    kw = dict(_DEC, random_state=3)
    ref = IDEC(3, **kw).pretrain(X)
    ck = Checkpoint(tmp_path / "ae.checkpoint", every_s=0)
    with pytest.raises(_Stop):
        DEC(3, **kw).pretrain(X, callback=_stop_after(4), checkpoint=ck)
    steps = []
    got = IDEC(3, **kw).pretrain(X, callback=lambda p: steps.append(p.step), checkpoint=ck)
    assert steps == [5, 6]
    assert got["history"] == ref["history"]
    assert_same_weights(got["state_dict"], ref["state_dict"])

    fit_kw = dict(kw, max_iter=20, update_interval=10, tol=0.0)
    own = DEC(3, **fit_kw).fit(X)
    ck2 = Checkpoint(tmp_path / "fit.checkpoint", every_s=0)
    with pytest.raises(_Stop):
        DEC(3, **fit_kw).fit(X, callback=_stop_after(2), checkpoint=ck2)
    with caplog.at_level(logging.INFO):
        resumed = DEC(3, **fit_kw).fit(X, checkpoint=ck2)
    # the clustering phase's state is looked for first, quietly: the file holds the pre-training's
    assert "after 2 epochs" in caplog.text and "another model" not in caplog.text
    np.testing.assert_array_equal(resumed.labels_, own.labels_)
    assert resumed.history_ == own.history_


@pytest.mark.parametrize("kind", ["dec", "idec", "dcn"])
def test_clustering_phase_stopped_anywhere_resumes_to_the_uninterrupted_fit(tmp_path, kind):
    """The clustering phase of DEC, IDEC and DCN (after a shared pre-training, as the workflow
    runs them), stopped at its first, a middle and its last progress step and run again, ends
    as the uninterrupted fit: labels, start labels, curves, centres and weights. DEC and IDEC
    save just before an update of the target and redo that update; DCN saves after each epoch.
    A fit that pre-trains itself, stopped in its clustering phase, resumes there without
    pre-training or running k-means again."""
    X, _ = _blobs(240, 3, 12, seed=2)
    cls = {"dec": DEC, "idec": IDEC, "dcn": DCN}[kind]
    if kind == "dcn":
        extra = dict(n_epochs=5, refresh_every=2)
    else:
        extra = dict(max_iter=40, update_interval=5, tol=0.0)
    kw = dict(_DEC, random_state=3, **extra)
    pre = kw["pretrain_epochs"]
    state = cls(3, **kw).pretrain(X)
    ref = cls(3, **kw).fit(X, pretrained=state)
    n = len(ref.history_["delta_label"])
    assert n == (5 if kind == "dcn" else 8)

    def check(got):
        np.testing.assert_array_equal(got.labels_, ref.labels_)
        np.testing.assert_array_equal(got.init_labels_, ref.init_labels_)
        assert got.history_ == ref.history_
        np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
        assert_same_weights(_weights(got.ae_), _weights(ref.ae_))

    redo = 0 if kind == "dcn" else 1  # DEC/IDEC redo the update they stopped in
    for stop in (1, n // 2, n):
        ck = Checkpoint(tmp_path / f"{kind}{stop}.checkpoint", every_s=0)
        with pytest.raises(_Stop):
            cls(3, **kw).fit(X, pretrained=state, callback=_stop_after(pre + stop), checkpoint=ck)
        seen = []
        got = cls(3, **kw).fit(X, pretrained=state, callback=seen.append, checkpoint=ck)
        assert [p.step for p in seen] == list(range(pre + stop + 1 - redo, pre + n + 1))
        check(got)

    # a fit that pre-trains itself: stopped in the clustering phase, it resumes there
    ck = Checkpoint(tmp_path / f"{kind}-own.checkpoint", every_s=0)
    with pytest.raises(_Stop):
        cls(3, **kw).fit(X, callback=_stop_after(pre + 2), checkpoint=ck)
    steps = []
    got = cls(3, **kw).fit(X, callback=lambda p: steps.append(p.step), checkpoint=ck)
    assert steps == list(range(pre + 3 - redo, pre + n + 1))
    check(got)


def test_a_resumed_train_job_keeps_the_scores_its_earlier_attempt_made(tmp_path, monkeypatch):
    """The per-step ACC/NMI/ARI curves (``eval_every``) of a train job killed in DEC's
    clustering phase and run again are the uninterrupted job's: the scores made before the
    resumed fit's first step are read back from ``labels.npz.checkpoint.scores.json`` (removed
    with the checkpoint); without it those steps would be NaN."""
    data_path = _prepared(tmp_path)
    params = dict(_DEC, max_iter=40, update_interval=5, tol=0.0)

    def train(out):
        return _train(data_path, out, "dec", params, eval_every=1)[1]["history"]

    ref = train(tmp_path / "ref")
    pre = params["pretrain_epochs"]
    assert np.isnan(ref["acc"][pre - 1]) and not np.isnan(ref["acc"][pre:]).any()
    monkeypatch.setattr(pipeline, "CHECKPOINT_EVERY_S", 0.0)
    real_call = pipeline.TrainingMonitor.__call__

    def killed_after_scoring(self, p):
        real_call(self, p)
        if p.step == pre + 4:
            raise _Stop

    monkeypatch.setattr(pipeline.TrainingMonitor, "__call__", killed_after_scoring)
    with pytest.raises(_Stop):
        train(tmp_path / "job")
    store = tmp_path / "job" / "labels.npz.checkpoint.scores.json"
    assert len(json.loads(store.read_text())) == 4
    monkeypatch.setattr(pipeline.TrainingMonitor, "__call__", real_call)
    got = train(tmp_path / "job")
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert not store.exists() and not (tmp_path / "job" / "labels.npz.checkpoint").exists()


def _prepared(tmp_path):
    X, y = _blobs(240, 3, 12, seed=2)
    path = tmp_path / "b.npz"
    data.save_prepared(data.Dataset(X, y, "b", (), {"name": "b", "n_clusters": 3}, None), path)
    return str(path)


def _train(data_path, out, kind="n2d", params=_N2D, eval_every=None):
    """The train_model job of ``kind`` on ``data_path`` into ``out``: its labels and info."""
    out.mkdir(exist_ok=True)
    pipeline.train_model(
        data_path=data_path,
        init_path=None,
        kind=kind,
        params=params,
        seed=0,
        eval_every=eval_every,
        out_labels=str(out / "labels.npz"),
        out_info=str(out / "info.json"),
    )
    return np.load(out / "labels.npz")["labels"], json.loads((out / "info.json").read_text())


def test_train_job_killed_part_way_resumes_and_removes_its_checkpoint(
    tmp_path, monkeypatch, caplog
):
    """pipeline.train_model (the train_model job) stopped after 3 of N2D's 6 epochs leaves
    ``labels.npz.checkpoint``; run again it resumes there, writes the uninterrupted job's labels
    and curves, and removes the checkpoint. Same for the pretrain_autoencoder job."""
    data_path = _prepared(tmp_path)
    ref_labels, ref_info = _train(data_path, tmp_path / "ref")
    assert not (tmp_path / "ref" / "labels.npz.checkpoint").exists()

    monkeypatch.setattr(pipeline, "CHECKPOINT_EVERY_S", 0.0)
    real_call = pipeline.TrainingMonitor.__call__

    def killed_at_step_3(self, p):
        if p.step == 3:
            raise _Stop
        real_call(self, p)

    monkeypatch.setattr(pipeline.TrainingMonitor, "__call__", killed_at_step_3)
    with pytest.raises(_Stop):
        _train(data_path, tmp_path / "job")
    ck = tmp_path / "job" / "labels.npz.checkpoint"
    assert ck.exists() and not (tmp_path / "job" / "labels.npz").exists()
    monkeypatch.setattr(pipeline.TrainingMonitor, "__call__", real_call)
    with caplog.at_level(logging.INFO):
        labels, info = _train(data_path, tmp_path / "job")
    assert "after 3 epochs" in caplog.text
    np.testing.assert_array_equal(labels, ref_labels)
    assert info["history"]["reconstruction"] == ref_info["history"]["reconstruction"]
    assert not ck.exists()
    assert info["resumed_seconds"] > 0.0 == ref_info["resumed_seconds"]
    assert "the earlier attempts' saved work took" in caplog.text
    # what a table's "jobs wall time" adds to the benchmark files (the resumed job only)
    infos = [tmp_path / "ref" / "info.json", tmp_path / "job" / "info.json"]
    assert provenance.resumed_seconds(infos) == (info["resumed_seconds"], 1)
    pipeline.evaluate(
        data_path=data_path,
        labels_path=str(tmp_path / "job" / "labels.npz"),
        info_path=str(tmp_path / "job" / "info.json"),
        dataset="b",
        model="n2d",
        init="none",
        seed=0,
        mean_of_last=None,
        out_record=str(tmp_path / "eval.json"),
    )
    records = json.loads((tmp_path / "eval.json").read_text())
    assert {r["stage"] for r in records} == {"init", "train"}
    for r in records:  # the fit's whole cost
        assert r["seconds"] == info["fit_seconds"] + info["resumed_seconds"]

    # the pretrain_autoencoder job: killed, run again, checkpoint removed, same state
    def pretrain(out):
        pipeline.pretrain_autoencoder(
            data_path=data_path, kind="dec", params=_DEC, seed=0, out_state=str(out)
        )
        return torch.load(out, weights_only=True)

    ref = pretrain(tmp_path / "ref_ae.pt")
    monkeypatch.setattr(pipeline.TrainingMonitor, "__call__", killed_at_step_3)
    with pytest.raises(_Stop):
        pretrain(tmp_path / "ae.pt")
    assert (tmp_path / "ae.pt.checkpoint").exists()
    monkeypatch.setattr(pipeline.TrainingMonitor, "__call__", real_call)
    got = pretrain(tmp_path / "ae.pt")
    assert got["history"] == ref["history"] and not (tmp_path / "ae.pt.checkpoint").exists()
    assert_same_weights(got["state_dict"], ref["state_dict"])
    # its earlier attempts' work reaches the tables through the info of a model that loads it
    assert got["resumed_seconds"] > 0.0 == ref["resumed_seconds"]
    pipeline.train_model(
        data_path=data_path,
        init_path=None,
        kind="dec",
        params=dict(_DEC, max_iter=2),
        seed=0,
        eval_every=None,
        out_labels=str(tmp_path / "dec.npz"),
        out_info=str(tmp_path / "dec.json"),
        pretrained_path=str(tmp_path / "ae.pt"),
    )
    dec_info = json.loads((tmp_path / "dec.json").read_text())
    assert dec_info["pretrained"] == {
        "path": str(tmp_path / "ae.pt"),
        "resumed_seconds": got["resumed_seconds"],
    }
    assert provenance.resumed_seconds([tmp_path / "dec.json"]) == (got["resumed_seconds"], 1)
