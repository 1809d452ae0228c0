"""Today's code against a pinned commit in the same process: the model modules of ``commit``
(``git show``) in a throw-away package whose ``base``/``utils`` are today's and whose
``register`` is a no-op, so the registry keeps today's classes. Needs the commit in the history
(not a shallow clone)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the code before this round of speed work (issue 16)
BASELINE_COMMIT = "779661a"
REPO = Path(__file__).resolve().parents[1]


def baseline_modules(names, commit: str = BASELINE_COMMIT) -> dict:
    """``{name: module}`` of ``mixlib/models/<name>.py`` as it was at ``commit``."""
    root = Path(tempfile.mkdtemp(prefix="mixlib_baseline_"))
    pkg = root / f"baseline_{commit}"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "utils.py").write_text("from mixlib.utils import *  # noqa: F403\n")
    (pkg / "models" / "__init__.py").write_text("def register(kind):\n    return lambda cls: cls\n")
    (pkg / "models" / "base.py").write_text("from mixlib.models.base import *  # noqa: F403\n")
    for name in names:
        src = subprocess.run(
            ["git", "show", f"{commit}:mixlib/models/{name}.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (pkg / "models" / f"{name}.py").write_text(src)
    sys.path.insert(0, str(root))
    return {n: importlib.import_module(f"{pkg.name}.models.{n}") for n in names}


def matmul_rate(a, b, repeats: int = 3) -> float:
    """FLOP/s of ``a @ b`` for square n x n operands (numpy or torch): the best of ``repeats``
    timed products after a warm-up one, the machine's large-GEMM rate for that dtype."""
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * a.shape[0] ** 3 / best
