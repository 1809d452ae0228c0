"""Small shared helpers: device selection, seeding, atomic file writes."""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def resolve_device(device: str = "auto"):
    """Return a ``torch.device``; ``"auto"`` picks CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def torch_generator(seed: int, device=None):
    """A ``torch.Generator`` seeded with ``seed`` (nothing is seeded globally)."""
    import torch

    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(int(seed))
    return g


def check_random_state_int(random_state) -> int:
    """Turn ``random_state`` (None or int) into an int seed, for libraries that want one."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    raise TypeError(f"random_state must be an int or None, got {type(random_state).__name__}")


def temp_beside(path: Path, suffix: str | None = None) -> Path:
    """Create an empty, uniquely named temporary file beside ``path`` (ending in ``suffix``,
    by default ``.tmp`` and the path's own suffix) with the permissions a plainly created file
    gets (``0666`` less the umask, applied by the kernel), unlike ``tempfile.mkstemp``'s
    ``0600``. Writers open it for writing, which keeps its mode."""
    suffix = ".tmp" + path.suffix if suffix is None else suffix
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A failed or killed job therefore never leaves a file that looks finished. The file gets the
    permissions a plainly created one would (``0666`` less the umask), so that results on a
    shared filesystem stay readable by the project's group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
