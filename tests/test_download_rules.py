"""The download stage of the workflow: staging, checksum overrides, the offline message, the
train/test protocol of datasets that keep their official split, and end-to-end Snakemake runs
on small files in the real formats (tracking disabled, no network)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, load_config, run_snakemake, split_dataset
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from mixlib import data, download, metrics, pipeline
from mixlib.errors import ConfigError, DatasetError
from mixlib.plan import load_plan

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pendigits(root: Path, n_train=45, n_test=15, seed=0) -> dict:
    """``root/pendigits/pendigits.tra|.tes`` in the UCI format (16 integers 0..100 padded to
    width 3, then the digit): three well separated digits 0, 1, 2. Returns the raw arrays."""
    rng = np.random.default_rng(seed)
    centres = np.array([[15] * 16, [50] * 16, [85] * 16])
    d = root / "pendigits"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("pendigits.tra", n_train), ("pendigits.tes", n_test)):
        y = np.arange(n) % 3
        X = np.clip(centres[y] + rng.integers(-8, 9, (n, 16)), 0, 100)
        with open(d / name, "w") as f:
            for row, label in zip(X, y, strict=True):
                f.write(",".join(f"{v:3d}" for v in [*row, label]) + "\n")
        out[name] = (X.astype(float), y)
    return out


def pendigits_sums(staged: Path) -> dict:
    return {n: sha256(staged / "pendigits" / n) for n in ("pendigits.tra", "pendigits.tes")}


# --- checksum overrides -------------------------------------------------------------------------


def test_file_sha256_replaces_the_published_checksum(tmp_path):
    write_pendigits(tmp_path)
    with pytest.raises(DatasetError, match="pendigits.tra: sha256 checksum mismatch"):
        download.fetch("pendigits", tmp_path, download=False)
    paths = download.fetch(
        "pendigits", tmp_path, download=False, file_sha256=pendigits_sums(tmp_path)
    )
    assert [p.name for p in paths] == ["pendigits.tra", "pendigits.tes"]
    # the override is a checksum like the published one: a changed file still fails
    other = {**pendigits_sums(tmp_path), "pendigits.tes": "0" * 64}
    with pytest.raises(DatasetError, match=f"pendigits.tes: sha256 .*expected {'0' * 64}"):
        download.fetch("pendigits", tmp_path, download=False, file_sha256=other)


def test_file_sha256_rejects_unknown_files_and_bad_digests():
    src = download.SOURCES["glass"]
    with pytest.raises(DatasetError, match=r"file_sha256.glass: \['nope.data'\] not file"):
        download.with_file_sha256(src, {"nope.data": "0" * 64})
    with pytest.raises(DatasetError, match="not a sha256 hex digest"):
        download.with_file_sha256(src, {"glass.data": "abc"})
    assert download.with_file_sha256(src, {}) is src
    # the registry itself is untouched
    assert download.SOURCES["glass"].files[0].checksum.startswith("dd67373f")


# --- stage_or_download: the download_dataset job ------------------------------------------------


def test_staged_files_are_verified_and_copied(tmp_path):
    staged, out = tmp_path / "staged", tmp_path / "results" / "raw"
    write_pendigits(staged)
    sums = pendigits_sums(staged)
    paths = download.stage_or_download(
        "pendigits", out, staged_dir=staged, download=False, file_sha256=sums
    )
    assert paths == [out / "pendigits" / n for n in ("pendigits.tra", "pendigits.tes")]
    for p in paths:
        assert p.read_bytes() == (staged / "pendigits" / p.name).read_bytes()
    assert not list((out / "pendigits").glob(".*"))  # no temporary files left


def test_corrupt_staged_file_is_named_and_not_copied(tmp_path):
    staged, out = tmp_path / "staged", tmp_path / "raw"
    write_pendigits(staged)
    sums = pendigits_sums(staged)
    bad = staged / "pendigits" / "pendigits.tes"
    bad.write_text(bad.read_text().replace("  1\n", "  2\n", 1))
    with pytest.raises(DatasetError) as e:
        download.stage_or_download(
            "pendigits", out, staged_dir=staged, download=False, file_sha256=sums
        )
    msg = str(e.value)
    assert str(bad) in msg and sums["pendigits.tes"] in msg and sha256(bad) in msg
    assert not (out / "pendigits" / "pendigits.tes").exists()


@pytest.mark.parametrize("staged", [True, False])
def test_offline_and_not_staged_says_where_to_stage(tmp_path, staged):
    staged_dir = tmp_path / "staged" if staged else None
    with pytest.raises(download.MissingFilesError) as e:
        download.stage_or_download("mnist", tmp_path / "raw", staged_dir=staged_dir, download=False)
    msg = str(e.value)
    root = str(staged_dir) if staged else "<data_dir>"
    for f in download.SOURCES["mnist"].files:
        assert f"{root}/mnist/{f.name}" in msg and f"md5 {f.checksum}" in msg
        assert f.urls[0] in msg
    assert ("set `data_dir:" in msg) is (not staged)
    assert str(tmp_path / "raw") not in msg  # the results folder is not where to stage


# --- the train/test protocol ------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale, reference",
    [("minmax_feature", MinMaxScaler), ("standard", StandardScaler), ("minmax", None)],
)
def test_scaling_is_fitted_on_the_training_rows(scale, reference):
    rng = np.random.default_rng(1)
    X = rng.normal(3, 2, (40, 5))
    X[:, 2] = 7.0  # a constant feature stays finite
    train = rng.random(40) < 0.7
    X[np.flatnonzero(~train)[0]] += 10  # a test row beyond the training range
    Xs, _ = data.preprocess(X, (), scale=scale, fit_rows=train)
    if reference is not None:
        expected = reference().fit(X[train]).transform(X)
    else:
        lo, hi = X[train].min(), X[train].max()
        expected = (X - lo) / (hi - lo)
    np.testing.assert_allclose(Xs, expected, atol=1e-12)
    assert not np.allclose(Xs, data.preprocess(X, (), scale=scale)[0])  # not fitted on all
    with pytest.raises(DatasetError, match="fit_rows"):
        data.preprocess(X, (), scale=scale, fit_rows=np.zeros(40, bool))


def test_prepared_file_keeps_the_split_and_scales_on_train(tmp_path):
    raw = write_pendigits(tmp_path / "raw")
    sums = pendigits_sums(tmp_path / "raw")
    spec = {"source": "pendigits", "split": "train_test", "preprocess": {"scale": "minmax_feature"}}
    ds = data.prepare("pen", spec, raw_dir=tmp_path / "raw", file_sha256=sums)
    data.save_prepared(ds, tmp_path / "pen.npz")
    back = data.load_prepared(tmp_path / "pen.npz")
    np.testing.assert_array_equal(back.is_train, np.r_[np.ones(45, bool), np.zeros(15, bool)])
    assert back.meta["split"] == "train_test" and back.meta["n_train"] == 45
    Xtr, Xte = raw["pendigits.tra"][0], raw["pendigits.tes"][0]
    scaler = MinMaxScaler().fit(Xtr)
    np.testing.assert_allclose(back.X, scaler.transform(np.r_[Xtr, Xte]), atol=1e-6)
    np.testing.assert_array_equal(data.eval_rows(back), ~back.is_train)
    # split: all keeps every row, without an indicator
    ds_all = data.prepare(
        "pen", {**spec, "split": "all"}, raw_dir=tmp_path / "raw", file_sha256=sums
    )
    assert ds_all.is_train is None and ds_all.X.shape == (60, 16)
    data.save_prepared(ds_all, tmp_path / "all.npz")
    assert data.load_prepared(tmp_path / "all.npz").is_train is None
    assert data.eval_rows(ds_all).all()


def test_a_raw_file_damaged_after_download_stops_prepare(tmp_path):
    write_pendigits(tmp_path / "raw")
    sums = pendigits_sums(tmp_path / "raw")
    bad = tmp_path / "raw" / "pendigits" / "pendigits.tra"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(DatasetError, match=f"{bad}: sha256 checksum mismatch"):
        data.prepare("pen", {"source": "pendigits"}, raw_dir=tmp_path / "raw", file_sha256=sums)


def test_stages_fit_on_train_and_score_on_test(tmp_path):
    X, y, is_train = split_dataset(tmp_path)
    common = dict(data_path=str(tmp_path / "s.npz"), seed=0)
    pipeline.initialize(
        **common,
        dataset="s",
        init="km",
        spec={"method": "kmeans", "n_init": 2},
        out_labels=str(tmp_path / "init.npy"),
        out_record=str(tmp_path / "init.json"),
    )
    init = np.load(tmp_path / "init.npy")
    assert (init[~is_train] == -1).all() and (init[is_train] >= 0).all()
    [rec] = json.loads((tmp_path / "init.json").read_text())
    assert rec["rows"] == "train" and rec["n"] == 60
    pipeline.train_model(
        **common,
        init_path=str(tmp_path / "init.npy"),
        kind="sklearn_gmm",
        params={"covariance_type": "diag"},
        eval_every=None,
        out_labels=str(tmp_path / "labels.npz"),
        out_info=str(tmp_path / "info.json"),
    )
    with np.load(tmp_path / "labels.npz") as f:
        labels, init_labels = f["labels"], f["init_labels"]
    assert labels.shape == (90,) and (labels >= 0).all()  # test rows predicted
    assert (init_labels[~is_train] == -1).all() and (init_labels[is_train] >= 0).all()
    pipeline.evaluate(
        data_path=str(tmp_path / "s.npz"),
        labels_path=str(tmp_path / "labels.npz"),
        info_path=str(tmp_path / "info.json"),
        dataset="s",
        model="gmm",
        init="km",
        seed=0,
        mean_of_last=None,
        out_record=str(tmp_path / "eval.json"),
    )
    records = json.loads((tmp_path / "eval.json").read_text())
    assert [r["stage"] for r in records] == ["train"]  # INIT has no labels on the test rows
    [r] = records
    assert r["rows"] == "test" and r["n"] == 30
    expected = metrics.cluster_metrics(y[~is_train], labels[~is_train])
    assert {k: r[k] for k in expected} == pytest.approx(expected)
    assert r["acc"] > 0.95


# --- config checks ----------------------------------------------------------------------------


def _tiny():
    return load_config()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["datasets"]["blobs"].update(split="train_test"), "datasets.blobs.split"),
        (lambda c: c["datasets"].update(g={"source": "glass", "split": "test"}), "has none"),
        (lambda c: c["datasets"].update(g={"source": "nope"}), "datasets.g.source"),
        (lambda c: c.update(file_sha256={"nope": {}}), "file_sha256.nope"),
        (lambda c: c.update(file_sha256={"glass": {"x.data": "0" * 64}}), "file_sha256.glass"),
    ],
)
def test_config_errors_name_the_key(mutate, message):
    cfg = _tiny()
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        load_plan(cfg)


# --- the workflow -----------------------------------------------------------------------------


def _config(staged: Path | None, *, download_missing=False, **dataset):
    cfg = _tiny()
    cfg["seeds"] = [0]
    cfg["inits"] = {"kmeans": cfg["inits"]["kmeans"]}
    cfg["models"] = {"kmeans": cfg["models"]["kmeans"]}
    cfg["datasets"] = {"pen": {"source": "pendigits", **dataset}}
    cfg["tracking"]["enabled"] = False
    cfg["download"] = download_missing
    if staged is not None:
        cfg["data_dir"] = str(staged)
    return cfg


@pytest.mark.workflow
def test_workflow_stages_downloads_locally_and_scores_the_test_rows(tmp_path):
    staged = tmp_path / "staged"
    raw = write_pendigits(staged)
    cfg = _config(staged, split="train_test", preprocess={"scale": "minmax_feature"})
    cfg["file_sha256"] = {"pendigits": pendigits_sums(staged)}
    # a model that starts from the k-means init, so that the init stage runs on this dataset
    cfg["models"]["gmm"] = dict(_tiny()["models"]["gmm"], inits=["kmeans"])
    wd = tmp_path / "wd"
    p = run_snakemake(wd, "--cores", "2", config=cfg)
    assert "localrule download_dataset:" in p.stderr
    for name in ("pendigits.tra", "pendigits.tes"):
        copy = wd / "results/raw/pendigits" / name
        assert copy.read_bytes() == (staged / "pendigits" / name).read_bytes()
    ds = data.load_prepared(wd / "results/data/pen.npz")
    np.testing.assert_array_equal(ds.is_train, np.r_[np.ones(45, bool), np.zeros(15, bool)])
    Xtr, Xte = raw["pendigits.tra"][0], raw["pendigits.tes"][0]
    np.testing.assert_allclose(ds.X, MinMaxScaler().fit(Xtr).transform(np.r_[Xtr, Xte]), atol=1e-6)
    [rec] = json.loads((wd / "results/eval/pen/kmeans/none/seed0.json").read_text())
    assert rec["stage"] == "train" and rec["rows"] == "test" and rec["n"] == 15
    assert rec["acc"] > 0.9
    [init_rec] = json.loads((wd / "results/init/pen/kmeans/seed0/record.json").read_text())
    assert init_rec["rows"] == "train" and init_rec["n"] == 45
    assert (wd / "results/tables/pen.md").is_file()
    # the staging directory copied again (same bytes, newer times): nothing reruns
    for f in (staged / "pendigits").iterdir():
        os.utime(f, (f.stat().st_mtime + 60, f.stat().st_mtime + 60))
    assert "Nothing to be done" in run_snakemake(wd, "-n", "--cores", "1", config=cfg).stdout
    # a staged file replaced by other content: the download job (and what follows) reruns
    tes = staged / "pendigits" / "pendigits.tes"
    tes.write_bytes(tes.read_bytes().replace(b"  0\n", b"  1\n", 1))
    dry = run_snakemake(wd, "-n", "--cores", "1", config=cfg).stdout
    assert "rule download_dataset:" in dry and "rule prepare_dataset:" in dry


@pytest.mark.workflow
def test_workflow_corrupt_staged_file_stops_before_prepare(tmp_path):
    staged = tmp_path / "staged"
    write_pendigits(staged)
    cfg = _config(staged)
    cfg["file_sha256"] = {"pendigits": pendigits_sums(staged)}
    bad = staged / "pendigits" / "pendigits.tes"
    bad.write_bytes(bad.read_bytes().replace(b"  0\n", b"  1\n", 1))
    wd = tmp_path / "wd"
    p = run_snakemake(wd, "--cores", "1", config=cfg, check=False)
    assert p.returncode != 0
    assert f"{bad}: sha256 checksum mismatch" in p.stderr  # in snakemake's error output
    log = (wd / "results/logs/download_dataset/pendigits.log").read_text()
    assert f"{bad}: sha256 checksum mismatch" in log and sha256(bad) in log
    assert not (wd / "results/raw/pendigits").exists()  # no output that looks finished
    assert not (wd / "results/data/pen.npz").exists()
    assert not (wd / "results/logs/prepare_dataset").exists()  # nothing downstream ran


@pytest.mark.workflow
def test_workflow_offline_and_not_staged_lists_files_and_checksums(tmp_path):
    cfg = _config(None)
    cfg["datasets"] = {"m": {"source": "mnist"}}
    wd = tmp_path / "wd"
    p = run_snakemake(wd, "--cores", "1", config=cfg, check=False)
    assert p.returncode != 0
    log = (wd / "results/logs/download_dataset/mnist.log").read_text()
    for text in (p.stderr, log):
        assert "4 of 4 file(s) missing (download disabled)" in text
        for f in download.SOURCES["mnist"].files:
            assert f"<data_dir>/mnist/{f.name}" in text and f"md5 {f.checksum}" in text
        assert "set `data_dir: <that directory>`" in text
    assert not (wd / "results/raw/mnist").exists()


@pytest.mark.workflow
def test_download_is_the_only_local_rule_of_the_data_stage(tmp_path):
    # "localrule" in the log only tells rules apart under a cluster executor, so read the
    # parsed workflow (Snakemake is pinned: workflow._localrules is its set of local rules)
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings

    with SnakemakeApi() as api:
        wf = api.workflow(
            snakefile=ROOT / "Snakefile",
            workdir=tmp_path,
            config_settings=ConfigSettings(
                configfiles=[ROOT / "config/tiny.yaml"], replace_workflow_config=True
            ),
            resource_settings=ResourceSettings(cores=1),
        )
        local = set(wf._workflow._localrules)
    assert "download_dataset" in local
    assert not local & {"prepare_dataset", "initialize", "train_model", "evaluate"}


@pytest.mark.workflow
def test_embedded_sources_need_no_download_job(tmp_path):
    p = run_snakemake(tmp_path, "-n", "--cores", "1")
    assert "prepare_dataset" in p.stdout and "download_dataset" not in p.stdout


# --- real data --------------------------------------------------------------------------------

MNIST = [f.name for f in download.SOURCES["mnist"].files]


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.workflow
@pytest.mark.skipif(
    not all((SHARED_DATA / "mnist" / n).is_file() for n in MNIST),
    reason=f"real MNIST not found in {SHARED_DATA / 'mnist'}",
)
def test_real_mnist_through_the_staged_directory(tmp_path):
    md5sums = dict(
        reversed(line.split()) for line in (SHARED_DATA / "MD5SUMS").read_text().splitlines()
    )
    cfg = _config(SHARED_DATA)
    cfg["datasets"] = {"mnist": {"source": "mnist", "split": "train_test"}}
    wd = tmp_path / "wd"
    p = run_snakemake(wd, "--cores", "1", "results/data/mnist.npz", config=cfg)
    assert "localrule download_dataset:" in p.stderr
    for name in MNIST:
        copy = wd / "results/raw/mnist" / name
        assert hashlib.md5(copy.read_bytes()).hexdigest() == md5sums[f"mnist/{name}"]
    ds = data.load_prepared(wd / "results/data/mnist.npz")
    assert ds.X.shape == (70000, 784) and ds.image_shape == (28, 28)
    assert ds.is_train.sum() == 60000 and ds.meta["n_classes"] == 10
    assert ds.X[ds.is_train].min() == 0 and ds.X[ds.is_train].max() == 1
    shutil.rmtree(wd / "results/raw")  # 55 MB of copies
