"""Real datasets: a registry of remote files with checksums, download/staging, and parsers.

Every source lists its files, one or more URLs per file (mirrors, tried in order) and the
published checksum of each file. :func:`fetch` makes sure every file sits, verified, in
``<data_dir>/<source>/``: it downloads a missing file only when ``download`` is true (to a
temporary file beside the target, verified, then renamed into place), and otherwise raises a
:class:`~mixlib.errors.DatasetError` that lists, for every missing file, its URLs, its checksum and
the exact path to put it at, so that a machine without internet can be staged by hand. A file
whose checksum does not match is never used and never deleted: the error names it and both
checksums. ``file_sha256`` replaces a published checksum by one the user gives
(:func:`with_file_sha256`).

:func:`stage_or_download` is the workflow's ``download_dataset`` job: it copies the files the
user staged under ``<staged_dir>/<source>/`` (verified first) into ``results/raw/<source>/`` and
downloads the others there (or, offline, lists where to stage them).

:func:`load` returns ``(X, y, image_shape)`` as :func:`mixlib.data.load_source` expects: ``X``
float64 (N, d) or (N, h, w), ``y`` int64 (N,) with labels 0..C-1. :func:`load_with_split` adds
the official train/test indicator where a source has one (so scaling can be fitted on the
training part).

Sources
-------
``mnist``, ``fashion_mnist``  four IDX files each (torchvision's URLs and md5s); 70,000 28x28
``usps``          LIBSVM ``usps.bz2`` + ``usps.t.bz2`` (torchvision's md5s); 9,298 16x16 in [-1, 1]
``glass``         UCI ``glass.data``; 214 x 9 (Id column dropped), 6 classes present
``letter``        UCI ``letter-recognition.data``; 20,000 x 16, 26 classes
``pendigits``     UCI ``pendigits.tra`` + ``pendigits.tes``; 7,494 + 3,498 = 10,992 x 16
``vehicle``       UCI Statlog ``xaa.dat`` ... ``xai.dat``; 846 x 18, 4 classes

File formats: IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/: big-endian header with
magic ``0x0000TTDD``, T the element type, D the number of dimensions, then D int32 sizes);
LIBSVM (``label index:value ...``, 1-based indices, absent indices are 0); UCI CSV and
whitespace-separated tables.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .utils import temp_beside

log = logging.getLogger(__name__)

#: seconds a connection may stall before a download attempt is abandoned
TIMEOUT_S = 60
_CHUNK = 1 << 20
#: where the sha256 of files without a published checksum is recorded at first use
TRUSTED_SUMS = "TRUSTED_SHA256SUMS"


class MissingFilesError(DatasetError):
    """Files of a source are neither in place nor downloadable; the message lists them."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source.

    ``algo``/``checksum`` are the published digest (``md5`` or ``sha256``). ``checksum=None``
    means none could be found: the file is then checked by ``validate`` (its format) at first
    use and its sha256 recorded in ``<data_dir>/<source>/TRUSTED_SHA256SUMS`` (trust on first
    use); later uses must match that record. ``size`` (bytes), when known, is checked too.
    """

    name: str
    urls: tuple[str, ...]
    algo: str = "sha256"
    checksum: str | None = None
    size: int | None = None
    provenance: str = ""
    validate: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class Parsed:
    X: np.ndarray  # (N, d) or (N, h, w) float64
    y: np.ndarray  # (N,) int64
    image_shape: tuple[int, ...] = ()
    is_train: np.ndarray | None = None  # (N,) bool, the official split; None if there is none


@dataclass(frozen=True)
class RemoteSource:
    """A downloadable dataset: its files and the parser that turns them into arrays.

    ``parser`` receives ``{file name: path}`` for every file and returns a :class:`Parsed`.
    ``has_split``: the files carry an official train/test split (``spec["split"]`` allowed);
    ``images``: the rows are images (the parser returns their shape).
    """

    name: str
    files: tuple[RemoteFile, ...]
    parser: Callable[[dict[str, Path]], Parsed]
    description: str = ""
    homepage: str = ""
    has_split: bool = False
    images: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- checksums --------------------------------------------------------------------------------


def _hasher(algo: str):
    if algo not in ("md5", "sha256"):
        raise DatasetError(f"unsupported checksum algorithm {algo!r}; use 'md5' or 'sha256'")
    return hashlib.new(algo)


def _digest(path: Path, algo: str) -> str:
    h = _hasher(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | Path, algo: str, expected: str | None) -> str:
    """Return the ``algo`` digest of ``path``; raise if it differs from ``expected``.

    Parameters
    ----------
    path : file to hash.
    algo : ``"md5"`` or ``"sha256"``.
    expected : hex digest, or None to only compute it.

    Raises
    ------
    DatasetError
        naming the file and both checksums, when they differ (the file is left untouched).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    actual = _digest(path, algo)
    if expected is not None and actual.lower() != expected.lower():
        raise DatasetError(
            f"{path}: {algo} checksum mismatch: expected {expected.lower()}, got {actual}"
        )
    return actual


def _read_trusted(sums: Path) -> dict[str, str]:
    out = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[1]] = parts[0]
    return out


def _check_staged(src: RemoteSource, f: RemoteFile, path: Path) -> None:
    """Verify a file already in place; never modify or delete it."""
    size = path.stat().st_size
    size_note = ""
    if f.size is not None and size != f.size:
        size_note = f" (size {size} bytes, expected {f.size})"
    advice = (
        "The file is damaged or not the published version, so it was not used. It was left in "
        f"place: delete or move it away, then run again with download enabled to fetch it "
        f"from {' or '.join(f.urls)}, or put a good copy at that path."
    )
    if f.checksum is not None:
        try:
            verify(path, f.algo, f.checksum)
        except DatasetError as e:
            raise DatasetError(f"source {src.name!r}: {e}{size_note}. {advice}") from None
        return
    # no published checksum: trust on first use, after a format check
    sums = path.parent / TRUSTED_SUMS
    trusted = _read_trusted(sums).get(f.name)
    actual = verify(path, "sha256", None)
    if trusted is not None:
        if actual != trusted:
            raise DatasetError(
                f"source {src.name!r}: {path}: sha256 {actual} differs from {trusted} recorded "
                f"in {sums} at first use (no published checksum exists for this file). The file "
                f"changed since it was first used; it was not used and was left in place. "
                f"Restore the original, or delete both the file and its line in {sums} to "
                f"accept a new copy."
            )
        return
    if f.validate is not None:
        try:
            f.validate(path)
        except DatasetError as e:
            raise DatasetError(f"source {src.name!r}: {e}. {advice}") from None
    if size_note:
        raise DatasetError(f"source {src.name!r}: {path}{size_note}. {advice}")
    _record_trusted(path, actual)


def _record_trusted(path: Path, digest: str) -> None:
    sums = path.parent / TRUSTED_SUMS
    try:
        with open(sums, "a") as fh:
            fh.write(f"{digest}  {path.name}\n")
    except OSError as e:
        log.warning("could not record the sha256 of %s in %s: %s", path, sums, e)
        return
    log.warning(
        "%s: no published checksum; format checked and sha256 %s recorded in %s (trust on "
        "first use)",
        path,
        digest,
        sums,
    )


# --- download ---------------------------------------------------------------------------------


def _download_one(f: RemoteFile, target: Path) -> list[str]:
    """Try every URL of ``f``; on success the verified file is at ``target``. Return errors."""
    errors = []
    target.parent.mkdir(parents=True, exist_ok=True)
    for url in f.urls:
        tmp = temp_beside(target, ".part")
        try:
            h = _hasher(f.algo if f.checksum is not None else "sha256")
            n = 0
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
                for chunk in iter(lambda r=r: r.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
            got = h.hexdigest()
            if f.checksum is not None and got != f.checksum.lower():
                errors.append(
                    f"{url}: downloaded {n} bytes with {f.algo} {got}, expected {f.checksum}"
                )
                continue
            if f.size is not None and n != f.size:
                errors.append(f"{url}: downloaded {n} bytes, expected {f.size}")
                continue
            if f.checksum is None and f.validate is not None:
                try:
                    f.validate(Path(tmp))
                except DatasetError as e:
                    errors.append(f"{url}: {e}")
                    continue
            os.replace(tmp, target)
            if f.checksum is None:
                _record_trusted(target, got)
            log.info("downloaded %s -> %s", url, target)
            return []
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return errors


def _get_source(source: str) -> RemoteSource:
    try:
        return SOURCES[source]
    except KeyError:
        raise DatasetError(
            f"unknown dataset source {source!r}; downloadable sources: {sorted(SOURCES)}"
        ) from None


def with_file_sha256(src: RemoteSource, file_sha256: dict[str, str] | None) -> RemoteSource:
    """``src`` with the expected checksum of some files replaced by a sha256 given by the user.

    For files without a published checksum (pin what trust on first use would record) and for
    copies that differ on purpose from the published ones (e.g. tiny files in tests). A
    replaced checksum is checked exactly like a published one; the size is no longer checked.

    Parameters
    ----------
    src : the registry entry.
    file_sha256 : ``{file name: sha256 hex digest}``; None or empty changes nothing.

    Raises
    ------
    DatasetError
        naming a file that is not part of ``src`` or a digest that is not 64 hex digits.
    """
    if not file_sha256:
        return src
    names = [f.name for f in src.files]
    unknown = sorted(set(file_sha256) - set(names))
    if unknown:
        raise DatasetError(
            f"file_sha256.{src.name}: {unknown} not file(s) of source {src.name!r}; its files "
            f"are {names}"
        )
    files = []
    for f in src.files:
        digest = file_sha256.get(f.name)
        if digest is not None:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise DatasetError(
                    f"file_sha256.{src.name}.{f.name}: {digest!r} is not a sha256 hex digest"
                )
            log.warning(
                "%s/%s: expected checksum set by file_sha256 to sha256 %s (published: %s)",
                src.name,
                f.name,
                digest.lower(),
                f"{f.algo} {f.checksum}" if f.checksum else "none",
            )
            f = replace(f, algo="sha256", checksum=digest.lower(), size=None)
        files.append(f)
    return replace(src, files=tuple(files))


def fetch(
    source: str | RemoteSource,
    data_dir: str | Path,
    *,
    download: bool = True,
    file_sha256: dict[str, str] | None = None,
    stage_hint: str | Path | None = None,
) -> list[Path]:
    """Make sure every file of ``source`` is in ``data_dir/<source>/``, verified.

    Parameters
    ----------
    source : a key of :data:`SOURCES` (or a :class:`RemoteSource`).
    data_dir : root of the raw data; files live in ``data_dir/<source>/<file name>``.
    download : fetch missing files from their URLs (else only check what is staged).
    file_sha256 : expected sha256 per file name, replacing the published checksum (see
        :func:`with_file_sha256`).
    stage_hint : the root the error message tells the user to put missing files under
        (``stage_hint/<source>/<file name>``); default ``data_dir``.

    Returns
    -------
    list of Path, one per file of the source, in registry order.

    Raises
    ------
    DatasetError
        a staged file fails its checksum (named, with both checksums; it is left in place), or
        files are missing and cannot be downloaded: the message lists every missing file with
        its checksum, URLs and the path to put it at.
    """
    src = source if isinstance(source, RemoteSource) else _get_source(source)
    src = with_file_sha256(src, file_sha256)
    root = Path(data_dir) / src.name
    shown = Path(stage_hint if stage_hint is not None else data_dir) / src.name
    paths, missing = [], []
    for f in src.files:
        path = root / f.name
        paths.append(path)
        if path.exists():
            _check_staged(src, f, path)
        elif download:
            recorded = (
                _read_trusted(root / TRUSTED_SUMS).get(f.name) if f.checksum is None else None
            )
            if recorded is not None:  # re-download of a trusted-on-first-use file: must match
                f = replace(f, algo="sha256", checksum=recorded)
            errors = _download_one(f, path)
            if errors:
                missing.append((f, shown / f.name, errors))
        else:
            missing.append((f, shown / f.name, []))
    if missing:
        lines = [
            f"source {src.name!r}: {len(missing)} of {len(src.files)} file(s) missing"
            + (" and could not be downloaded" if download else " (download disabled)")
            + ". Put each file at the path shown (download it on a machine with internet):"
        ]
        for f, path, errors in missing:
            digest = (
                f"{f.algo} {f.checksum}"
                if f.checksum is not None
                else "no published checksum (sha256 recorded at first use)"
            )
            lines.append(f"  {path}")
            lines.append(f"      {digest}" + (f", {f.size} bytes" if f.size else ""))
            lines.extend(f"      url: {u}" for u in f.urls)
            lines.extend(f"      error: {e}" for e in errors)
        if not download:
            lines.append("or set download: true to fetch them.")
        raise MissingFilesError("\n".join(lines))
    return paths


def stage_or_download(
    source: str,
    out_dir: str | Path,
    *,
    staged_dir: str | Path | None = None,
    download: bool = True,
    file_sha256: dict[str, str] | None = None,
) -> list[Path]:
    """Put every file of ``source``, verified, in ``out_dir/<source>/``: copied from
    ``staged_dir/<source>/`` where the user staged it, else downloaded.

    This is the workflow's ``download_dataset`` job. A staged file is verified in place (a
    corrupt one is named, with both checksums, and left untouched) before it is copied; the
    copy is verified again by :func:`fetch`, which downloads what was not staged.

    Parameters
    ----------
    source : a key of :data:`SOURCES`.
    out_dir : root of the raw files the pipeline reads (``results/raw``).
    staged_dir : root of the staged original files (``<staged_dir>/<source>/<file name>``),
        or None.
    download : fetch files that are not staged from their URLs.
    file_sha256 : expected sha256 per file name, replacing the published checksum.

    Returns
    -------
    list of Path, one per file of the source, in registry order, under ``out_dir/<source>/``.

    Raises
    ------
    DatasetError
        a staged file fails its check, or files are neither staged nor downloadable: the
        message lists each with its checksum, URLs and the path to stage it at.
    """
    src = with_file_sha256(_get_source(source), file_sha256)
    root = Path(out_dir) / src.name
    if staged_dir is not None:
        for f in src.files:
            staged = Path(staged_dir) / src.name / f.name
            if not staged.is_file():
                continue
            _check_staged(src, f, staged)
            root.mkdir(parents=True, exist_ok=True)
            tmp = temp_beside(root / f.name, ".part")
            try:
                shutil.copyfile(staged, tmp)
                os.replace(tmp, root / f.name)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            log.info("staged %s -> %s", staged, root / f.name)
    try:
        return fetch(
            src,
            out_dir,
            download=download,
            stage_hint=staged_dir if staged_dir is not None else "<data_dir>",
        )
    except MissingFilesError as e:
        if staged_dir is not None:
            raise
        raise MissingFilesError(
            f"{e}\nNo staging directory is configured: put the files in a directory of your "
            f"choice as <data_dir>/{src.name}/<file name> and set `data_dir: <that directory>` "
            f"in the workflow config."
        ) from None


# --- parsers ----------------------------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{path}: not an IDX file (magic bytes {data[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(data) < head:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - head != expected:
        raise DatasetError(
            f"{path}: IDX header announces shape {dims} ({expected} bytes of {dtype}), "
            f"found {len(data) - head} bytes"
        )
    return np.frombuffer(data, dtype, offset=head).reshape(dims)


def _parse_idx_pairs(paths: dict[str, Path]) -> Parsed:
    Xs, ys, train = [], [], []
    for prefix, is_train in (("train", True), ("t10k", False)):
        X = read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"])
        y = read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"])
        if X.ndim != 3 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise DatasetError(
                f"{paths[f'{prefix}-images-idx3-ubyte.gz'].parent}: {prefix} images {X.shape} "
                f"and labels {y.shape} do not match"
            )
        Xs.append(X)
        ys.append(y)
        train.append(np.full(y.shape[0], is_train))
    X = np.concatenate(Xs).astype(np.float64)
    return Parsed(X, np.concatenate(ys).astype(np.int64), tuple(X.shape[1:]), np.concatenate(train))


def read_libsvm(path: str | Path, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a LIBSVM/SVMlight file (bz2/gzip by suffix) into dense ``(X (N, n_features), y)``.

    Lines are ``label index:value ...`` with 1-based indices; absent indices are 0.
    """
    path = Path(path)
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    rows, labels = [], []
    try:
        with opener(path, "rt") as f:
            for lineno, line in enumerate(f, 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                label, _, rest = line.partition(" ")
                try:
                    pairs = np.array(rest.replace(":", " ").split(), dtype=np.float64)
                    labels.append(float(label))
                except ValueError as e:
                    raise DatasetError(f"{path}:{lineno}: not a LIBSVM line ({e})") from None
                if pairs.size % 2:
                    raise DatasetError(f"{path}:{lineno}: expected index:value pairs")
                pairs = pairs.reshape(-1, 2)
                idx = pairs[:, 0].astype(np.int64)
                if (idx != pairs[:, 0]).any() or (idx < 1).any() or (idx > n_features).any():
                    raise DatasetError(
                        f"{path}:{lineno}: feature indices must be integers in 1..{n_features}"
                    )
                row = np.zeros(n_features)
                row[idx - 1] = pairs[:, 1]
                rows.append(row)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    if not rows:
        raise DatasetError(f"{path}: no samples")
    return np.vstack(rows), np.asarray(labels)


def _parse_usps(paths: dict[str, Path]) -> Parsed:
    Xs, ys, train = [], [], []
    for name, is_train in (("usps.bz2", True), ("usps.t.bz2", False)):
        X, y = read_libsvm(paths[name], 256)
        if (y != np.round(y)).any() or y.min() < 1 or y.max() > 10:
            raise DatasetError(f"{paths[name]}: USPS labels must be integers 1..10")
        if X.min() < -1 or X.max() > 1:
            raise DatasetError(f"{paths[name]}: USPS pixel values must lie in [-1, 1]")
        Xs.append(X)
        ys.append(y.astype(np.int64) - 1)  # 1..10 -> 0..9
        train.append(np.full(y.shape[0], is_train))
    X = np.concatenate(Xs).reshape(-1, 16, 16)
    return Parsed(X, np.concatenate(ys), (16, 16), np.concatenate(train))


def _read_table(path: Path, sep: str | None, n_fields: int) -> list[list[str]]:
    """Rows of a delimited text file, each checked to have ``n_fields`` fields."""
    rows = []
    try:
        with open(path, encoding="ascii") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = [t.strip() for t in line.strip().split(sep)]
                if len(fields) != n_fields:
                    raise DatasetError(
                        f"{path}:{lineno}: expected {n_fields} fields, found {len(fields)}"
                    )
                rows.append(fields)
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    if not rows:
        raise DatasetError(f"{path}: no samples")
    return rows


def _to_float(path: Path, rows: list[list[str]]) -> np.ndarray:
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise DatasetError(f"{path}: non-numeric feature value ({e})") from None


def _parse_glass(paths: dict[str, Path]) -> Parsed:
    path = paths["glass.data"]
    M = _to_float(path, _read_table(path, ",", 11))
    X = M[:, 1:10]  # column 0 is the Id: an index, not a feature
    classes, y = np.unique(M[:, 10], return_inverse=True)  # 1,2,3,5,6,7 -> 0..5
    if (classes != np.round(classes)).any():
        raise DatasetError(f"{path}: glass types must be integers, got {classes}")
    return Parsed(X, y.astype(np.int64))


def _parse_letter(paths: dict[str, Path]) -> Parsed:
    path = paths["letter-recognition.data"]
    rows = _read_table(path, ",", 17)
    letters = [r[0] for r in rows]
    bad = sorted({c for c in letters if len(c) != 1 or not "A" <= c <= "Z"})
    if bad:
        raise DatasetError(f"{path}: the first column must be a capital letter, found {bad[:5]}")
    y = np.array([ord(c) - ord("A") for c in letters], dtype=np.int64)
    return Parsed(_to_float(path, [r[1:] for r in rows]), y)


def _parse_pendigits(paths: dict[str, Path]) -> Parsed:
    Xs, ys, train = [], [], []
    for name, is_train in (("pendigits.tra", True), ("pendigits.tes", False)):
        M = _to_float(paths[name], _read_table(paths[name], ",", 17))
        y = M[:, 16]
        if (y != np.round(y)).any() or y.min() < 0 or y.max() > 9:
            raise DatasetError(f"{paths[name]}: pendigits labels must be integers 0..9")
        Xs.append(M[:, :16])
        ys.append(y.astype(np.int64))
        train.append(np.full(y.shape[0], is_train))
    return Parsed(np.concatenate(Xs), np.concatenate(ys), (), np.concatenate(train))


VEHICLE_CLASSES = ("bus", "opel", "saab", "van")
VEHICLE_FILES = tuple(f"xa{c}.dat" for c in "abcdefghi")


def _read_vehicle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = _read_table(path, None, 19)
    names = [r[18] for r in rows]
    bad = sorted(set(names) - set(VEHICLE_CLASSES))
    if bad:
        raise DatasetError(f"{path}: unknown vehicle class(es) {bad}; expected {VEHICLE_CLASSES}")
    # features are integers up to ~1,000 (e.g. scaled variance): keep them as read, no 8-bit cast
    X = _to_float(path, [r[:18] for r in rows])
    return X, np.array([VEHICLE_CLASSES.index(c) for c in names], dtype=np.int64)


def _validate_vehicle(path: Path) -> None:
    _read_vehicle(path)


def _parse_vehicle(paths: dict[str, Path]) -> Parsed:
    parts = [_read_vehicle(paths[name]) for name in VEHICLE_FILES]
    return Parsed(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


# --- registry ---------------------------------------------------------------------------------

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_TV = "torchvision/datasets/mnist.py (MNIST.resources / FashionMNIST.resources)"


def _idx_files(mirrors, md5s, sizes, provenance):
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    return tuple(
        RemoteFile(n, tuple(m + n for m in mirrors), "md5", s, z, provenance)
        for n, s, z in zip(names, md5s, sizes, strict=True)
    )


_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/"
_LIBSVM = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"

SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        "mnist",
        _idx_files(
            _MNIST_MIRRORS,
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
            (9912422, 28881, 1648877, 4542),
            _TV,
        ),
        _parse_idx_pairs,
        "MNIST handwritten digits, 60,000 train + 10,000 test, 28x28, 10 classes",
        "http://yann.lecun.com/exdb/mnist/",
        has_split=True,
        images=True,
    ),
    "fashion_mnist": RemoteSource(
        "fashion_mnist",
        _idx_files(
            _FASHION_MIRRORS,
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            (26421880, 29515, 4422102, 5148),
            _TV,
        ),
        _parse_idx_pairs,
        "Fashion-MNIST, 60,000 train + 10,000 test, 28x28, 10 classes",
        "https://github.com/zalandoresearch/fashion-mnist",
        has_split=True,
        images=True,
    ),
    "usps": RemoteSource(
        "usps",
        (
            RemoteFile(
                "usps.bz2",
                (_LIBSVM + "usps.bz2",),
                "md5",
                "ec16c51db3855ca6c91edd34d0e9b197",
                None,
                "torchvision/datasets/usps.py (USPS.split_list['train'])",
            ),
            RemoteFile(
                "usps.t.bz2",
                (_LIBSVM + "usps.t.bz2",),
                "md5",
                "8ea070ee2aca1ac39742fdd1ef5ed118",
                None,
                "torchvision/datasets/usps.py (USPS.split_list['test'])",
            ),
        ),
        _parse_usps,
        "USPS handwritten digits, 7,291 train + 2,007 test, 16x16 in [-1, 1], 10 classes",
        "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps",
        has_split=True,
        images=True,
    ),
    "glass": RemoteSource(
        "glass",
        (
            RemoteFile(
                "glass.data",
                (_UCI + "glass/glass.data",),
                "sha256",
                "dd67373f4baf2807345df02cbfef2093d342e61ad0d82a4fb79af43ef8ce449d",
                None,
                "UCIData.jl DataDeps registration 'glass-identification' (sha256); an "
                "independent md5 2732c9170bf8c483f33da3c58929c067 is published by another repo",
            ),
        ),
        _parse_glass,
        "UCI Glass Identification, 214 x 9, 6 classes present (types 1,2,3,5,6,7)",
        "https://archive.ics.uci.edu/dataset/42/glass+identification",
    ),
    "letter": RemoteSource(
        "letter",
        (
            RemoteFile(
                "letter-recognition.data",
                (_UCI + "letter-recognition/letter-recognition.data",),
                "sha256",
                "2b89f3602cf768d3c8355267d2f13f2417809e101fc2b5ceee10db19a60de6e2",
                None,
                "UCIData.jl / SparseSVM.jl DataDeps registrations and Intel scikit-learn_bench "
                "load_letters (same sha256)",
            ),
        ),
        _parse_letter,
        "UCI Letter Recognition, 20,000 x 16, 26 classes",
        "https://archive.ics.uci.edu/dataset/59/letter+recognition",
    ),
    "pendigits": RemoteSource(
        "pendigits",
        (
            RemoteFile(
                "pendigits.tra",
                (_UCI + "pendigits/pendigits.tra",),
                "sha256",
                "e2b9eb9f0d0467e2b64a4816a3420edf2b8043447576f4b84337aba44a9f97d3",
                502098,
                "UCIData.jl DataDeps registration 'pen-based-recognition-handwritten-digits'; "
                "sha256 and size also in published byte-provenance tables",
            ),
            RemoteFile(
                "pendigits.tes",
                (_UCI + "pendigits/pendigits.tes",),
                "sha256",
                "8bd03229c5c5291fefe43e45465dd948d2645bf23328b9d993e0b777666b2015",
                234366,
                "published byte-provenance tables (sha256 and size of pendigits.tes)",
            ),
        ),
        _parse_pendigits,
        "UCI Pen-Based Recognition of Handwritten Digits, 7,494 train + 3,498 test x 16, "
        "10 classes",
        "https://archive.ics.uci.edu/dataset/81/pen+based+recognition+of+handwritten+digits",
        has_split=True,
    ),
    "vehicle": RemoteSource(
        "vehicle",
        tuple(
            RemoteFile(
                n,
                (_UCI + "statlog/vehicle/" + n,),
                "sha256",
                None,
                None,
                "NO published checksum found: format-checked and sha256 recorded at first use",
                _validate_vehicle,
            )
            for n in VEHICLE_FILES
        ),
        _parse_vehicle,
        "UCI Statlog Vehicle Silhouettes, 846 x 18, 4 classes (bus, opel, saab, van)",
        "https://archive.ics.uci.edu/dataset/149/statlog+vehicle+silhouettes",
        notes=(
            "no published checksum could be found for xaa.dat ... xai.dat (trust on first "
            "use: sha256 recorded in TRUSTED_SHA256SUMS)",
        ),
    ),
}


# --- loading ----------------------------------------------------------------------------------

#: values of a dataset's ``split``: every row without a split, every row with the official
#: train/test indicator (scaling and models fitted on train, metrics on test), one part only
SPLITS = ("all", "train_test", "train", "test")


def check_split(source: str, split: str) -> None:
    """Raise a :class:`DatasetError` unless ``split`` is a split of ``source`` (any source has
    ``all``; the others need the official train/test split of a downloadable source)."""
    if split not in SPLITS:
        raise DatasetError(
            f"source {source!r}: split must be one of {', '.join(SPLITS)}, got {split!r}"
        )
    if split != "all" and not (source in SOURCES and SOURCES[source].has_split):
        with_split = sorted(k for k, s in SOURCES.items() if s.has_split)
        raise DatasetError(
            f"split {split!r} needs a source with an official train/test split ({with_split}); "
            f"{source!r} has none (no official train/test split): use split: all"
        )


def load_with_split(source: str, spec: dict):
    """Fetch and parse ``source``; return ``(X, y, image_shape, is_train)``.

    Parameters
    ----------
    source : a key of :data:`SOURCES`.
    spec : options. Keys used: ``data_dir`` (default ``"data/raw"``, relative to the working
        directory), ``download`` (default True), ``file_sha256`` (see
        :func:`with_file_sha256`), ``split``: ``"all"`` (default) or ``"train_test"`` (every
        row), ``"train"`` or ``"test"`` (that part only); all but ``"all"`` only for sources
        with an official split: mnist, fashion_mnist, usps, pendigits.

    Returns
    -------
    X : (N, d) or (N, h, w) float64
    y : (N,) int64, labels 0..C-1 (classes present, in sorted order of the original labels)
    image_shape : (h, w) for images, () otherwise
    is_train : (N,) bool, the official training part, or None when the source has no split
    """
    src = _get_source(source)
    split = spec.get("split") or "all"
    check_split(source, split)
    data_dir = spec.get("data_dir") or "data/raw"
    paths = fetch(
        source,
        data_dir,
        download=bool(spec.get("download", True)),
        file_sha256=spec.get("file_sha256"),
    )
    p = src.parser({f.name: path for f, path in zip(src.files, paths, strict=True)})
    X, y, is_train = p.X, p.y, p.is_train
    if split in ("train", "test"):
        keep = is_train if split == "train" else ~is_train
        X, y, is_train = X[keep], y[keep], is_train[keep]
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise DatasetError(f"source {source!r}: {X.shape[0]} samples but {y.shape[0]} labels")
    _, y = np.unique(y, return_inverse=True)  # identity on the real files; 0..C-1 regardless
    return (
        np.ascontiguousarray(X, dtype=np.float64),
        y.astype(np.int64),
        tuple(p.image_shape),
        is_train,
    )


def load(source: str, spec: dict):
    """Fetch and parse ``source``; return ``(X, y, image_shape)`` (see :func:`load_with_split`)."""
    X, y, shape, _ = load_with_split(source, spec)
    return X, y, shape
