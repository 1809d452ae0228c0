"""Tests of mixlib.download: tiny files in each real format, written here, staged or served
from file:// and http://127.0.0.1 URLs (no internet needed); one realdata test on real MNIST."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import http.server
import shutil
import stat
import struct
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mixlib import data, download
from mixlib.data import DatasetError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UNREACHABLE = "http://127.0.0.1:9/nothing-here"  # port 9 (discard): connection refused


# --- writers of the real formats (independent of the parsers under test) ---------------------


def write_idx_gz(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def write_libsvm_bz2(path: Path, X: np.ndarray, y: np.ndarray) -> None:
    lines = []
    for row, label in zip(X, y, strict=True):
        pairs = " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(row) if v != 0)
        lines.append(f"{label} {pairs}\n")
    with bz2.open(path, "wt") as f:
        f.writelines(lines)


def _digest(path: Path, algo: str) -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()


def make_remote(root: Path) -> dict:
    """Write tiny copies of every source under ``root/<source>/``; return the expected arrays."""
    rng = np.random.default_rng(0)
    exp = {}

    # MNIST / Fashion-MNIST: 7 train + 3 test images 28x28
    for name in ("mnist", "fashion_mnist"):
        d = root / name
        d.mkdir(parents=True)
        Xtr = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
        ytr = np.array([0, 1, 2, 3, 4, 5, 9], dtype=np.uint8)
        Xte = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
        yte = np.array([9, 8, 7], dtype=np.uint8)
        write_idx_gz(d / "train-images-idx3-ubyte.gz", Xtr)
        write_idx_gz(d / "train-labels-idx1-ubyte.gz", ytr)
        write_idx_gz(d / "t10k-images-idx3-ubyte.gz", Xte)
        write_idx_gz(d / "t10k-labels-idx1-ubyte.gz", yte)
        exp[name] = dict(
            X=np.concatenate([Xtr, Xte]).astype(float),
            y=np.concatenate([ytr, yte]).astype(int),  # 0..9 with 6 missing -> compacted below
            shape=(28, 28),
            is_train=np.r_[np.ones(7, bool), np.zeros(3, bool)],
        )
        _, exp[name]["y"] = np.unique(exp[name]["y"], return_inverse=True)

    # USPS: LIBSVM bz2, values in [-1, 1], about half the pixels exactly 0 (left out of the file)
    d = root / "usps"
    d.mkdir()
    Xs, ys = [], []
    for fname, n, labels in (("usps.bz2", 5, [1, 2, 3, 10, 10]), ("usps.t.bz2", 2, [4, 1])):
        X = np.round(rng.uniform(-1, 1, (n, 256)), 6)
        X[rng.random((n, 256)) < 0.5] = 0.0
        X[0, 0], X[0, 255] = 0.0, 1.0  # first feature missing, last present
        write_libsvm_bz2(d / fname, X, np.array(labels))
        Xs.append(X)
        ys.append(np.array(labels) - 1)
    exp["usps"] = dict(
        X=np.concatenate(Xs).reshape(-1, 16, 16),
        y=np.unique(np.concatenate(ys), return_inverse=True)[1],
        shape=(16, 16),
        is_train=np.r_[np.ones(5, bool), np.zeros(2, bool)],
    )

    # glass: Id, 9 features, type in {1,2,3,5,6,7}
    d = root / "glass"
    d.mkdir()
    types = [1, 2, 3, 5, 6, 7, 1, 2, 7, 5, 3, 6]
    feats = np.round(rng.uniform(0, 75, (12, 9)), 5)
    with open(d / "glass.data", "w") as f:
        for i, (row, t) in enumerate(zip(feats, types, strict=True), 1):
            f.write(f"{i}," + ",".join(f"{v:.5f}" for v in row) + f",{t}\n")
    exp["glass"] = dict(X=feats, y=np.array([0, 1, 2, 3, 4, 5, 0, 1, 5, 3, 2, 4]), shape=())

    # letter: capital letter, 16 integer features
    d = root / "letter"
    d.mkdir()
    letters = list("TIDNGSBAJMTZ")
    feats = rng.integers(0, 16, (12, 16))
    with open(d / "letter-recognition.data", "w") as f:
        for c, row in zip(letters, feats, strict=True):
            f.write(c + "," + ",".join(map(str, row)) + "\n")
    exp["letter"] = dict(
        X=feats.astype(float), y=np.unique(letters, return_inverse=True)[1], shape=()
    )

    # pendigits: 16 integer features padded to width 3, then the digit
    d = root / "pendigits"
    d.mkdir()
    parts = []
    for fname, n in (("pendigits.tra", 8), ("pendigits.tes", 4)):
        M = np.c_[rng.integers(0, 101, (n, 16)), np.arange(n) % 10]
        with open(d / fname, "w") as f:
            for row in M:
                f.write(",".join(f"{v:3d}" for v in row) + "\n")
        parts.append(M)
    M = np.concatenate(parts)
    exp["pendigits"] = dict(
        X=M[:, :16].astype(float),
        y=np.unique(M[:, 16], return_inverse=True)[1],
        shape=(),
        is_train=np.r_[np.ones(8, bool), np.zeros(4, bool)],
    )

    # vehicle: 9 files xaa..xai, 18 integer features (some > 255), class name, trailing space
    d = root / "vehicle"
    d.mkdir()
    classes = ["van", "saab", "bus", "opel"]
    rows, ys = [], []
    for k, fname in enumerate(download.VEHICLE_FILES):
        feats = rng.integers(0, 1100, (2, 18))
        feats[0, 11] = 1018  # a 16-bit value that an 8-bit wrap would turn into 250
        names = [classes[k % 4], classes[(k + 1) % 4]]
        with open(d / fname, "w") as f:
            for row, c in zip(feats, names, strict=True):
                f.write(" ".join(map(str, row)) + f" {c} \n")
        rows.append(feats)
        ys += [sorted(classes).index(c) for c in names]
    exp["vehicle"] = dict(X=np.concatenate(rows).astype(float), y=np.array(ys), shape=())
    return exp


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """Tiny files of every source in ``tmp_path/remote``; the registry points at them through
    ``file://`` URLs with checksums computed from them (vehicle keeps no checksum: TOFU)."""
    root = tmp_path / "remote"
    exp = make_remote(root)
    for name, src in list(download.SOURCES.items()):
        files = []
        for f in src.files:
            path = root / name / f.name
            tofu = f.checksum is None
            checksum = None if tofu else _digest(path, f.algo)
            size = None if tofu else path.stat().st_size
            files.append(
                dataclasses.replace(f, urls=(path.as_uri(),), checksum=checksum, size=size)
            )
        monkeypatch.setitem(download.SOURCES, name, dataclasses.replace(src, files=tuple(files)))
    return root, exp


def set_urls(name, urls_for):
    src = download.SOURCES[name]
    files = tuple(dataclasses.replace(f, urls=urls_for(f)) for f in src.files)
    download.SOURCES[name] = dataclasses.replace(src, files=files)


def stage(root: Path, name: str, data_dir: Path) -> None:
    shutil.copytree(root / name, data_dir / name)


def check_loaded(out, e):
    X, y, shape = out
    assert X.dtype == np.float64 and y.dtype == np.int64
    assert shape == e["shape"]
    np.testing.assert_array_equal(X, e["X"])
    np.testing.assert_array_equal(y, e["y"])
    assert y.min() == 0 and np.array_equal(np.unique(y), np.arange(y.max() + 1))


SOURCES = ["mnist", "fashion_mnist", "usps", "glass", "letter", "pendigits", "vehicle"]


# --- fetch + load end to end ------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_load_from_staged_dir_without_network(remote, tmp_path, name):
    root, exp = remote
    data_dir = tmp_path / "raw"
    stage(root, name, data_dir)
    set_urls(name, lambda f: (UNREACHABLE,))
    out = download.load(name, {"data_dir": str(data_dir), "download": False})
    check_loaded(out, exp[name])


@pytest.mark.parametrize("name", SOURCES)
def test_download_from_file_url_into_data_dir(remote, tmp_path, name):
    root, exp = remote
    data_dir = tmp_path / "raw"
    paths = download.fetch(name, data_dir)
    assert [p.name for p in paths] == [f.name for f in download.SOURCES[name].files]
    for p in paths:
        assert p.parent == data_dir / name
        assert p.read_bytes() == (root / name / p.name).read_bytes()
    assert not list((data_dir / name).glob(".*part"))  # no temporary files left behind
    plain = tmp_path / "plain"
    plain.write_text("x")  # a shared project's data keeps the mode a plain file gets, not 0600
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {stat.S_IMODE(plain.stat().st_mode)}
    check_loaded(download.load(name, {"data_dir": str(data_dir)}), exp[name])


def test_download_from_local_http_server(remote, tmp_path):
    root, exp = remote

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        set_urls("pendigits", lambda f: (f"{base}/pendigits/{f.name}",))
        X, y, shape, is_train = download.load_with_split(
            "pendigits", {"data_dir": tmp_path / "raw"}
        )
    finally:
        server.shutdown()
        server.server_close()
    check_loaded((X, y, shape), exp["pendigits"])
    np.testing.assert_array_equal(is_train, exp["pendigits"]["is_train"])
    assert (tmp_path / "raw" / "pendigits" / "pendigits.tes").is_file()


def test_download_falls_back_to_the_next_mirror(remote, tmp_path):
    root, exp = remote
    set_urls("glass", lambda f: (UNREACHABLE, (root / "glass" / f.name).as_uri()))
    check_loaded(download.load("glass", {"data_dir": tmp_path / "raw"}), exp["glass"])


def test_load_source_in_data_dispatches_here(remote, tmp_path):
    root, exp = remote
    stage(root, "letter", tmp_path / "raw")
    set_urls("letter", lambda f: (UNREACHABLE,))
    *out, is_train = data.load_source({"source": "letter"}, raw_dir=tmp_path / "raw")
    check_loaded(out, exp["letter"])
    assert is_train is None


# --- errors -----------------------------------------------------------------------------------


def test_offline_and_not_staged_lists_every_file_checksum_url_and_path(remote, tmp_path):
    data_dir = tmp_path / "raw"
    with pytest.raises(DatasetError) as e:
        download.load("mnist", {"data_dir": data_dir, "download": False})
    msg = str(e.value)
    assert "4 of 4 file(s) missing" in msg and "download disabled" in msg
    for f in download.SOURCES["mnist"].files:
        assert str(data_dir / "mnist" / f.name) in msg
        assert f"md5 {f.checksum}" in msg
        for u in f.urls:
            assert u in msg
    assert not (data_dir / "mnist").exists()  # nothing created when nothing is downloaded


def test_partly_staged_lists_only_the_missing_files(remote, tmp_path):
    root, _ = remote
    data_dir = tmp_path / "raw"
    (data_dir / "pendigits").mkdir(parents=True)
    shutil.copy(root / "pendigits" / "pendigits.tra", data_dir / "pendigits")
    with pytest.raises(DatasetError, match=r"1 of 2 file\(s\) missing") as e:
        download.fetch("pendigits", data_dir, download=False)
    assert "pendigits.tes" in str(e.value)
    assert str(data_dir / "pendigits" / "pendigits.tra") not in str(e.value)


def test_download_failure_reports_urls_and_errors(remote, tmp_path):
    set_urls("glass", lambda f: (UNREACHABLE, (tmp_path / "absent" / f.name).as_uri()))
    data_dir = tmp_path / "raw"
    with pytest.raises(DatasetError, match="could not be downloaded") as e:
        download.fetch("glass", data_dir)
    msg = str(e.value)
    assert str(data_dir / "glass" / "glass.data") in msg
    assert msg.count("error: ") == 2 and UNREACHABLE in msg
    assert download.SOURCES["glass"].files[0].checksum in msg
    assert list((data_dir / "glass").iterdir()) == []  # temporary file removed


def test_downloaded_file_with_wrong_checksum_is_rejected(remote, tmp_path):
    root, _ = remote
    (root / "letter" / "letter-recognition.data").write_text("A," + ",".join("1" * 16) + "\n")
    data_dir = tmp_path / "raw"
    with pytest.raises(DatasetError, match="expected") as e:
        download.fetch("letter", data_dir)
    got = _digest(root / "letter" / "letter-recognition.data", "sha256")
    assert f"sha256 {got}, expected {download.SOURCES['letter'].files[0].checksum}" in str(e.value)
    assert list((data_dir / "letter").iterdir()) == []


def test_corrupt_staged_file_is_named_with_both_checksums_and_left_in_place(remote, tmp_path):
    root, _ = remote
    data_dir = tmp_path / "raw"
    stage(root, "usps", data_dir)
    bad = data_dir / "usps" / "usps.t.bz2"
    bad.write_bytes(bad.read_bytes()[:-3] + b"xyz")
    content = bad.read_bytes()
    expected = download.SOURCES["usps"].files[1].checksum
    with pytest.raises(DatasetError) as e:
        download.load("usps", {"data_dir": data_dir, "download": True})
    msg = str(e.value)
    assert str(bad) in msg and expected in msg and _digest(bad, "md5") in msg
    assert "not used" in msg and "left in place" in msg
    assert bad.read_bytes() == content  # neither deleted nor overwritten by a download


def test_verify_returns_digest_and_raises_on_mismatch(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"abc")
    md5 = hashlib.md5(b"abc").hexdigest()
    assert download.verify(p, "md5", md5) == md5
    assert download.verify(p, "sha256", None) == hashlib.sha256(b"abc").hexdigest()
    assert download.verify(p, "md5", md5.upper()) == md5
    with pytest.raises(DatasetError, match=f"expected {'0' * 32}, got {md5}"):
        download.verify(p, "md5", "0" * 32)
    with pytest.raises(DatasetError, match="unsupported checksum"):
        download.verify(p, "sha1", None)
    with pytest.raises(DatasetError, match="not found"):
        download.verify(tmp_path / "nope", "md5", None)


def test_unknown_source_and_bad_split(remote, tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset source 'nope'.*mnist"):
        download.load("nope", {})
    with pytest.raises(DatasetError, match="no official train/test split"):
        download.load("glass", {"data_dir": tmp_path, "split": "train"})
    with pytest.raises(DatasetError, match="split must be"):
        download.load("mnist", {"data_dir": tmp_path, "split": "validation"})


# --- trust on first use (no published checksum: vehicle) -------------------------------------


def test_vehicle_trust_on_first_use_records_then_detects_changes(remote, tmp_path):
    root, exp = remote
    data_dir = tmp_path / "raw"
    stage(root, "vehicle", data_dir)
    check_loaded(
        download.load("vehicle", {"data_dir": data_dir, "download": False}), exp["vehicle"]
    )
    sums = (data_dir / "vehicle" / download.TRUSTED_SUMS).read_text().splitlines()
    assert len(sums) == 9
    assert f"{_digest(data_dir / 'vehicle' / 'xac.dat', 'sha256')}  xac.dat" in sums
    # a second load uses the record and appends nothing
    download.load("vehicle", {"data_dir": data_dir, "download": False})
    assert len((data_dir / "vehicle" / download.TRUSTED_SUMS).read_text().splitlines()) == 9
    changed = data_dir / "vehicle" / "xac.dat"
    changed.write_text(changed.read_text().replace("bus", "van"))
    with pytest.raises(DatasetError, match="xac.dat: sha256 .* differs from .* first use"):
        download.load("vehicle", {"data_dir": data_dir, "download": False})


def test_vehicle_redownload_must_match_the_first_use_record(remote, tmp_path):
    root, _ = remote
    data_dir = tmp_path / "raw"
    download.fetch("vehicle", data_dir)  # downloaded and recorded
    assert len((data_dir / "vehicle" / download.TRUSTED_SUMS).read_text().splitlines()) == 9
    (data_dir / "vehicle" / "xaa.dat").unlink()
    remote_xaa = root / "vehicle" / "xaa.dat"
    remote_xaa.write_text(remote_xaa.read_text().replace("van", "bus"))
    with pytest.raises(
        DatasetError, match="1 of 9 file.s. missing and could not be downloaded"
    ) as e:
        download.fetch("vehicle", data_dir)
    assert f"sha256 {_digest(remote_xaa, 'sha256')}, expected" in str(e.value)
    assert not (data_dir / "vehicle" / "xaa.dat").exists()


def test_vehicle_first_use_checks_the_format(remote, tmp_path):
    root, _ = remote
    data_dir = tmp_path / "raw"
    stage(root, "vehicle", data_dir)
    (data_dir / "vehicle" / "xab.dat").write_text("1 2 3 van\n")
    with pytest.raises(DatasetError, match=r"xab.dat:1: expected 19 fields, found 4"):
        download.fetch("vehicle", data_dir, download=False)
    sums = data_dir / "vehicle" / download.TRUSTED_SUMS
    assert "xab.dat" not in (sums.read_text() if sums.exists() else "")


def test_vehicle_keeps_16_bit_values(remote, tmp_path):
    X, y, _ = download.load("vehicle", {"data_dir": tmp_path / "raw"})
    assert X[0, 11] == 1018 and X.max() > 255
    assert X.shape == (18, 18) and set(np.unique(y)) == {0, 1, 2, 3}


# --- splits and label mappings ----------------------------------------------------------------


def test_mnist_splits_and_indicator(remote, tmp_path):
    _, exp = remote
    spec = {"data_dir": tmp_path / "raw"}
    X, y, shape, is_train = download.load_with_split("mnist", spec)
    np.testing.assert_array_equal(is_train, exp["mnist"]["is_train"])
    Xtr, ytr, _ = download.load("mnist", {**spec, "split": "train"})
    Xte, _, _ = download.load("mnist", {**spec, "split": "test"})
    assert Xtr.shape == (7, 28, 28) and Xte.shape == (3, 28, 28)
    np.testing.assert_array_equal(Xte, exp["mnist"]["X"][7:])
    np.testing.assert_array_equal(ytr, [0, 1, 2, 3, 4, 5, 6])  # raw 9 -> 6 (no 6, 7, 8 in train)


def test_sources_without_split_return_no_indicator(remote, tmp_path):
    assert download.load_with_split("letter", {"data_dir": tmp_path / "raw"})[3] is None


def test_glass_drops_id_and_maps_types(remote, tmp_path):
    X, y, _ = download.load("glass", {"data_dir": tmp_path / "raw"})
    assert X.shape == (12, 9)
    assert not np.array_equal(X[:, 0], np.arange(1, 13))  # the Id column is gone
    np.testing.assert_array_equal(y[:6], [0, 1, 2, 3, 4, 5])  # types 1,2,3,5,6,7


def test_usps_labels_1_to_10_become_0_to_9(tmp_path):
    p = tmp_path / "u.bz2"
    with bz2.open(p, "wt") as f:
        f.write("10 1:-1 256:0.5\n1 3:1\n")
    X, y = download.read_libsvm(p, 256)
    np.testing.assert_array_equal(y, [10, 1])
    assert X.shape == (2, 256) and X[0, 0] == -1 and X[0, 255] == 0.5 and X[1, 2] == 1
    assert np.count_nonzero(X) == 3  # absent indices are zero


# --- parsers reject malformed input -----------------------------------------------------------


def test_read_idx_rejects_bad_files(tmp_path):
    good = tmp_path / "good.gz"
    write_idx_gz(good, np.arange(24).reshape(2, 3, 4))
    np.testing.assert_array_equal(download.read_idx(good), np.arange(24).reshape(2, 3, 4))
    bad_magic = tmp_path / "magic.gz"
    with gzip.open(bad_magic, "wb") as f:
        f.write(b"\x1f\x8b\x08\x03" + b"\x00" * 20)
    with pytest.raises(DatasetError, match="not an IDX file"):
        download.read_idx(bad_magic)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 2]) + struct.pack(">2I", 3, 4) + bytes(11))
    with pytest.raises(DatasetError, match=r"shape \(3, 4\).*found 11 bytes"):
        download.read_idx(short)
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(b"hello")
    with pytest.raises(DatasetError, match="cannot read"):
        download.read_idx(not_gzip)


def test_read_libsvm_rejects_bad_indices(tmp_path):
    p = tmp_path / "x"
    p.write_text("1 0:0.5\n")
    with pytest.raises(DatasetError, match=r"x:1: feature indices must be integers in 1..4"):
        download.read_libsvm(p, 4)
    p.write_text("1 5:0.5\n")
    with pytest.raises(DatasetError, match="1..4"):
        download.read_libsvm(p, 4)


def test_table_parsers_name_the_bad_line(remote, tmp_path):
    root, _ = remote
    data_dir = tmp_path / "raw"
    stage(root, "glass", data_dir)
    stage(root, "letter", data_dir)
    # write bad content, then register its checksum so that parsing (not verify) must fail
    glass = data_dir / "glass" / "glass.data"
    glass.write_text(glass.read_text() + "13,1,2,3\n")
    letter = data_dir / "letter" / "letter-recognition.data"
    letter.write_text("a," + ",".join("1" * 16) + "\n")
    for name, path in (("glass", glass), ("letter", letter)):
        src = download.SOURCES[name]
        f = dataclasses.replace(src.files[0], checksum=_digest(path, "sha256"), size=None)
        download.SOURCES[name] = dataclasses.replace(src, files=(f,))
    with pytest.raises(DatasetError, match=r"glass.data:13: expected 11 fields, found 4"):
        download.load("glass", {"data_dir": data_dir, "download": False})
    with pytest.raises(DatasetError, match="capital letter"):
        download.load("letter", {"data_dir": data_dir, "download": False})


# --- registry ---------------------------------------------------------------------------------


def test_registry_entries_are_complete():
    assert set(SOURCES) <= set(download.SOURCES)
    hexlen = {"md5": 32, "sha256": 64}
    for name, src in download.SOURCES.items():
        assert src.name == name and src.files and src.description
        for f in src.files:
            assert f.urls and all(u.startswith(("https://", "http://")) for u in f.urls)
            assert f.provenance
            if f.checksum is None:
                assert name == "vehicle" and f.validate is not None  # the one TOFU source
            else:
                assert len(f.checksum) == hexlen[f.algo]
                int(f.checksum, 16)
    uci = [
        f.urls[0]
        for n in ("glass", "letter", "pendigits", "vehicle")
        for f in download.SOURCES[n].files
    ]
    assert all(
        u.startswith("https://archive.ics.uci.edu/ml/machine-learning-databases/") for u in uci
    )


# --- real data --------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_real_mnist_from_shared_data():
    if not all((SHARED_DATA / "mnist" / f.name).is_file() for f in download.SOURCES["mnist"].files):
        pytest.skip(f"real MNIST not found in {SHARED_DATA / 'mnist'}")
    # the directory holds mnist/<files>: point data_dir at it (read-only is fine: nothing written)
    X, y, shape, is_train = download.load_with_split(
        "mnist", {"data_dir": SHARED_DATA, "download": False}
    )
    assert X.shape == (70000, 28, 28) and shape == (28, 28)
    assert X.reshape(len(X), -1).shape == (70000, 784)
    assert X.dtype == np.float64 and X.min() == 0 and X.max() == 255
    assert is_train.sum() == 60000
    np.testing.assert_array_equal(np.bincount(y[is_train])[:3], [5923, 6742, 5958])
    assert np.bincount(y).sum() == 70000 and y.max() == 9


def test_parsers_give_the_natural_label_codes(remote):
    # load() compacts labels to 0..C-1, which hides monotone recodings; check the parsers direct
    root, _ = remote

    def parse(name):
        src = download.SOURCES[name]
        return src.parser({f.name: root / name / f.name for f in src.files})

    np.testing.assert_array_equal(parse("usps").y, [0, 1, 2, 9, 9, 3, 0])  # 1..10 -> 0..9
    np.testing.assert_array_equal(parse("letter").y, [ord(c) - ord("A") for c in "TIDNGSBAJMTZ"])
    np.testing.assert_array_equal(parse("mnist").y, [0, 1, 2, 3, 4, 5, 9, 9, 8, 7])
    np.testing.assert_array_equal(parse("pendigits").y, np.r_[np.arange(8), np.arange(4)])
    v = parse("vehicle")
    assert (root / "vehicle" / "xaa.dat").read_text().split()[18] == "van"
    assert v.y[0] == 3  # bus, opel, saab, van
