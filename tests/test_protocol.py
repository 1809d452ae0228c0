"""The BigLearn-EM reference protocol as the pipeline runs it: the stratified holdout drawn per
seed, scaling each part of an official split by its own statistics, and TRAIN as the mean of the
last evaluations made while training."""

import json

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler
from test_download_rules import pendigits_sums, write_pendigits

from mixlib import data, pipeline
from mixlib.errors import ConfigError
from mixlib.plan import load_plan


def test_holdout_is_the_references_stratified_split_per_seed():
    y = np.repeat(np.arange(4), [30, 20, 40, 10])
    for seed in (0, 42):
        is_train = data.holdout(y, 0.2, seed)
        train, test = train_test_split(np.arange(100), test_size=0.2, stratify=y, random_state=seed)
        assert set(np.flatnonzero(is_train)) == set(train) and not is_train[test].any()
        # stratified: each class keeps 80% of its rows
        assert [int(is_train[y == c].sum()) for c in range(4)] == [24, 16, 32, 8]
    assert not np.array_equal(data.holdout(y, 0.2, 0), data.holdout(y, 0.2, 1))


def test_holdout_dataset_rows_per_seed():
    ds = data.prepare("b", {"source": "synthetic", "split": "holdout", "test_size": 0.25})
    assert ds.is_train is None and ds.meta["split"] == "holdout" and ds.meta["test_size"] == 0.25
    fit0, ev0 = data.fit_rows(ds, 0), data.eval_rows(ds, 0)
    assert (fit0 == ~ev0).all() and ev0.sum() == 250
    assert not np.array_equal(fit0, data.fit_rows(ds, 1))
    with pytest.raises(ValueError, match="drawn per seed"):
        data.fit_rows(ds)
    # the scaler saw every row (as the reference's, fitted before its split)
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0


def test_a_downloadable_source_held_out(tmp_path):
    raw = write_pendigits(tmp_path)
    spec = {"source": "pendigits", "split": "holdout", "preprocess": {"scale": "minmax_feature"}}
    ds = data.prepare("p", spec, raw_dir=tmp_path, file_sha256=pendigits_sums(tmp_path))
    n = sum(len(y) for _, y in raw.values())
    assert ds.is_train is None and ds.X.shape[0] == n and data.eval_rows(ds, 3).sum() == n // 5


def test_parts_scaled_by_their_own_statistics(tmp_path):
    raw = write_pendigits(tmp_path)
    spec = {
        "source": "pendigits",
        "split": "train_test",
        "preprocess": {"scale": "minmax_feature", "fit_on": "parts"},
    }
    ds = data.prepare("p", spec, raw_dir=tmp_path, file_sha256=pendigits_sums(tmp_path))
    for part, rows in (("pendigits.tra", ds.is_train), ("pendigits.tes", ~ds.is_train)):
        expected = MinMaxScaler().fit_transform(raw[part][0])  # the reference's fit_transform
        np.testing.assert_allclose(ds.X[rows], expected, atol=1e-6)
    assert ds.meta["preprocess"]["fit_on"] == "parts"


def _record(tmp_path, history, mean_of_last):
    y = np.array([0, 0, 1, 1])
    data.save_prepared(
        data.Dataset(np.zeros((4, 1)), y, "d", (), {"name": "d"}), tmp_path / "d.npz"
    )
    np.savez(tmp_path / "labels.npz", labels=np.array([0, 0, 1, 0]))
    info = dict(n_parameters=3, kind="k", fit_seconds=1.0, run_id=None, history=history)
    (tmp_path / "info.json").write_text(json.dumps(info))
    pipeline.evaluate(
        data_path=str(tmp_path / "d.npz"),
        labels_path=str(tmp_path / "labels.npz"),
        info_path=str(tmp_path / "info.json"),
        dataset="d",
        model="m",
        init="none",
        seed=0,
        mean_of_last=mean_of_last,
        out_record=str(tmp_path / "r.json"),
    )
    [r] = json.loads((tmp_path / "r.json").read_text())
    return r


def test_train_score_as_the_mean_of_the_last_evaluations(tmp_path):
    nan = float("nan")
    curve = [nan, 0.2, nan, 0.4, nan, 0.8]  # scored every second step
    history = {"loss": [1.0] * 6, "nmi": curve, "ari": curve, "acc": curve}
    r = _record(tmp_path, history, 2)
    assert r["statistic"] == "mean of last 2 evaluations"
    assert r["nmi"] == pytest.approx(0.6) and r["acc"] == pytest.approx(0.6)
    final = _record(tmp_path, history, None)
    assert final["statistic"] == "final labels" and final["acc"] == 0.75  # 3 of 4 rows
    with pytest.raises(ValueError, match="4 evaluations asked for .* recorded 3"):
        _record(tmp_path, history, 4)


def test_protocol_config_errors():
    cfg = {
        "datasets": {"p": {"source": "glass", "preprocess": {"fit_on": "parts"}}},
        "models": {"m": {"kind": "kmeans"}},
    }
    with pytest.raises(ConfigError, match=r"datasets\.p\.preprocess\.fit_on: 'parts'"):
        load_plan(cfg)
    cfg["datasets"]["p"] = {"source": "glass", "split": "holdout"}
    load_plan(cfg)  # any source can be held out
    cfg["models"]["m"]["score_mean_of_last"] = 10
    with pytest.raises(ConfigError, match=r"models\.m\.score_mean_of_last: .*eval_every"):
        load_plan(cfg)


@pytest.mark.workflow
def test_protocol_end_to_end(tmp_path):
    """A held-out synthetic set, BigLearn-EM scored every 5 of 20 iterations and reported as the
    mean of its last 2 evaluations; the note and the statistic land under the table; the job
    log shows the fit's progress."""
    from helpers import run_snakemake

    cfg = {
        "seeds": [0, 1],
        "datasets": {
            "blobs": {
                "source": "synthetic",
                "synthetic": {"n_samples": 300, "n_features": 3, "n_components": 3},
                "split": "holdout",
                "note": "synthetic, 3 components",
            }
        },
        "models": {
            "bl": {
                "kind": "biglearn_em",
                "params": {"n_iter": 20, "reg_covar": 0.01, "device": "cpu"},
                "eval_every": 5,
                "score_mean_of_last": 2,
            },
            "km": {"kind": "kmeans", "params": {"n_init": 2}},
        },
        "tracking": {"enabled": False},
        "reference_csv": None,
    }
    run_snakemake(tmp_path, "--cores", "2", config=cfg)
    rec = json.loads((tmp_path / "results/eval/blobs/bl/none/seed1.json").read_text())
    [r] = rec
    assert r["rows"] == "test" and r["n"] == 60 and r["statistic"] == "mean of last 2 evaluations"
    info = json.loads((tmp_path / "results/train/blobs/bl/none/seed1/info.json").read_text())
    acc = np.asarray(info["history"]["acc"])
    assert np.isfinite(acc).sum() == 4 and r["acc"] == pytest.approx(acc[[14, 19]].mean())
    paper = (tmp_path / "results/tables/paper.md").read_text()
    assert "blobs: synthetic, 3 components" in paper
    assert "bl TRAIN = the mean of last 2 evaluations made while training (blobs)" in paper
    log = (tmp_path / "results/logs/train_model/blobs/bl/none/seed1.log").read_text()
    assert "step 1/20: loglik=" in log and "step 20/20: loglik=" in log
