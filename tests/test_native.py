"""The native FISTA kernel (mixlib/native): its codes and gradients against the torch path of
fista_gram, the same bits at 1 and 2 threads, MixMate with ``fista_kernel="native"`` against
the torch kernel, and the errors that name what it cannot run. Skipped, with the reason, where
the kernel cannot be built (no AVX-512 or no C++ compiler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixlib import native
from mixlib.models.mixmate import MixMate, fista_gram

_, _WHY = native._build()
needs_kernel = pytest.mark.skipif(_WHY is not None, reason=f"native kernel: {_WHY}")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _problem(K, B, N, seed=0, M=80):
    """A Gram path problem as MixMate's: unit-norm atoms, step 1 / ||A_k||^2."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, M, N, generator=g)
    A /= A.norm(dim=1, keepdim=True)
    G = A.transpose(1, 2) @ A
    Aty = torch.einsum("kmn,bm->kbn", A, torch.rand(B, M, generator=g)).contiguous()
    step = 1.0 / torch.linalg.matrix_norm(G, ord=2)
    return G, Aty, step


def _codes_and_grads(kernel, G, Aty, step, lam, T, seed=1):
    G = G.clone().requires_grad_()
    Aty = Aty.clone().requires_grad_()
    x = fista_gram(G, Aty, lam, step, T, kernel)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    gG, gA = torch.autograd.grad((x * weights).sum(), [G, Aty], allow_unused=True)
    return x.detach(), torch.zeros_like(G) if gG is None else gG, gA  # one layer: no G


@needs_kernel
@pytest.mark.parametrize(("K", "B", "N", "T"), [(10, 256, 50, 15), (3, 45, 7, 4), (2, 5, 64, 1)])
def test_codes_and_gradients_are_the_torch_paths(K, B, N, T):
    """Codes to float rounding; gradients (through W = I - s G and c = s A^T y) the same to
    1e-4 relative on every row but where rounding flips a code across the threshold in some
    layer (that row's gradient then takes another path: at most 1% of the rows)."""
    G, Aty, step = _problem(K, B, N)
    lam = 0.3
    x_t, gG_t, gA_t = _codes_and_grads("torch", G, Aty, step, lam, T)
    x_n, gG_n, gA_n = _codes_and_grads("native", G, Aty, step, lam, T)
    assert x_n.shape == x_t.shape and (x_t != 0).any()
    assert (x_n - x_t).abs().max() <= 1e-6 * max(1.0, float(x_t.abs().max()))
    row_err = (gA_n - gA_t).abs().amax(dim=2) / gA_t.abs().max()  # (K, B)
    assert float((row_err > 1e-4).float().mean()) <= 0.01
    if bool((row_err <= 1e-4).all()):  # no flip anywhere: the Gram gradient agrees too
        assert float((gG_n - gG_t).abs().max()) <= 1e-4 * max(float(gG_t.abs().max()), 1e-30)
    # a float step and a per-dictionary tensor of it give the same codes (to rounding)
    x_f = fista_gram(G, Aty, lam, float(step[0]), T, "native")
    x_k = fista_gram(G, Aty, lam, step[0].expand(K).clone(), T, "native")
    torch.testing.assert_close(x_f, x_k, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_the_kernel_runs_on_torchs_threads():
    """The kernel's parallel loops use torch's thread count (built without OpenMP, ATen's
    inline parallel_for silently runs them on one thread: the bug this guards)."""
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert native.fista_extension().team_size() == threads
    finally:
        torch.set_num_threads(before)


@needs_kernel
def test_same_bits_at_one_and_two_threads():
    G, Aty, step = _problem(10, 300, 50)
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(_codes_and_grads("native", G, Aty, step, 0.5, 15))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*out):
        assert torch.equal(a, b)


@needs_kernel
def test_mixmate_with_the_native_kernel(digits):
    """On digits MixMate trained with the native kernel ends as with the torch one (labels equal
    up to a handful of points moved by rounding), and gives the same labels for the same seed
    at 1 and 2 threads; its losses agree to 1e-5."""
    X, _ = digits
    kw = dict(n_clusters=10, n_atoms=20, n_epochs=3, init="kmeans", random_state=0, device="cpu")
    ref = MixMate(fista_kernel="torch", **kw).fit(X)
    before = torch.get_num_threads()
    try:
        fits = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fits.append(MixMate(fista_kernel="native", **kw).fit(X))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(fits[0].labels_, fits[1].labels_)
    assert np.mean(fits[0].labels_ != ref.labels_) <= 0.01
    np.testing.assert_allclose(fits[0].history_["loss"], ref.history_["loss"], rtol=1e-5)


def test_native_kernel_errors_name_the_problem(digits):
    X, _ = digits
    kw = dict(n_clusters=3, n_epochs=1, init="kmeans", device="cpu", fista_kernel="native")
    with pytest.raises(ValueError, match="float32 CPU kernel.*dtype='float64'"):
        MixMate(dtype="float64", **kw).fit(X)
    with pytest.raises(ValueError, match="fast=False"):
        MixMate(fast=False, **kw).fit(X)
    with pytest.raises(ValueError, match="n_atoms <= 64, got 65"):
        MixMate(n_atoms=65, **kw).fit(X)
    if _WHY is not None:  # where it cannot build, the error says why, before any work
        with pytest.raises(RuntimeError, match="native FISTA kernel is unavailable"):
            MixMate(**kw).fit(X)
    else:  # the C++ side checks its inputs too
        W, c = torch.zeros(2, 3, 3), torch.zeros(2, 4, 3)
        with pytest.raises(RuntimeError, match="float32 tensors only"):
            native.fista_native(W.double(), c.double(), torch.ones(1).double(), [0.0])
        with pytest.raises(RuntimeError, match=r"W must be \(K, N, N\)"):
            native.fista_native(W, torch.zeros(2, 4, 5), torch.ones(1), [0.0])
