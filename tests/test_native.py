"""The native FISTA kernel (mixlib/native): its codes and gradients against the torch path of
fista_gram, and its masked path's against fista_direct with a mask, the same bits at 1 and 2
threads, MixMate with ``fista_kernel="native"`` against the torch kernel (with and without
missing pixels), and the errors that name what it cannot run. Skipped, with the reason, where
the kernel cannot be built (no AVX-512 or no C++ compiler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixlib import native
from mixlib.models.mixmate import (
    MixMate,
    energy_direct,
    erase_masks,
    fista_direct,
    fista_gram,
    fista_masked,
    missing_index,
)

_, _WHY = native._build()
needs_kernel = pytest.mark.skipif(_WHY is not None, reason=f"native kernel: {_WHY}")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _at_one_and_two_threads(work):
    """[work() on 1 thread, work() on 2 threads], torch's thread count restored after."""
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(work())
        return out
    finally:
        torch.set_num_threads(before)


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
    out = _at_one_and_two_threads(lambda: _codes_and_grads("native", G, Aty, step, 0.5, 15))
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_missing_index_lists_each_rows_missing_pixels_then_minus_one():
    mask = torch.tensor([[True, False, True, False], [True, True, True, True], [False] * 4])
    expected = torch.tensor([[1, 3, -1, -1], [-1, -1, -1, -1], [0, 1, 2, 3]])
    assert torch.equal(missing_index(mask), expected)
    assert missing_index(torch.ones(2, 3, dtype=torch.bool)).shape == (2, 0)


def _masked_problem(K, B, M, N, frac, seed=0):
    """Unit-norm atoms, data in [0, 1) zeroed where missing; ~10% of the rows complete, the
    first always."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, M, N, generator=g)
    A /= A.norm(dim=1, keepdim=True)
    mask = torch.as_tensor(erase_masks(B, M, 0.9, frac, np.random.default_rng(seed)))
    mask[0] = True
    return A, torch.rand(B, M, generator=g) * mask, mask


def _masked_codes_and_grads(fista, A, Y, mask, step, lam, T, seed=1):
    A = A.clone().requires_grad_()
    x = fista(Y, A, lam, step, T, mask)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    loss = (x * weights).sum() + energy_direct(x, Y, A, lam, mask).sum()
    (gA,) = torch.autograd.grad(loss, [A])
    return x.detach(), gA


@needs_kernel
@pytest.mark.parametrize(
    ("K", "B", "M", "N", "T", "frac"),
    [(10, 64, 784, 50, 15, 0.25), (3, 17, 30, 7, 4, 0.5), (2, 5, 20, 64, 1, 0.3)],
)
def test_masked_codes_and_gradients_are_the_direct_paths(K, B, M, N, T, frac):
    """The native masked path (each row's own Gram matrix) against the torch direct path with
    the mask in the residual: codes to float rounding, the dictionaries' gradient (through the
    codes and the data-space energy) to 1e-4 relative; per-dictionary steps too; rows with no
    missing pixel pass through the same kernel."""
    A, Y, mask = _masked_problem(K, B, M, N, frac)
    assert bool(mask.all(1).any()) and bool((~mask).any(1).any())
    step = 0.04 if K != 3 else torch.tensor([0.1, 0.05, 0.08])
    x_d, g_d = _masked_codes_and_grads(fista_direct, A, Y, mask, step, 0.3, T)
    x_n, g_n = _masked_codes_and_grads(fista_masked, A, Y, mask, step, 0.3, T)
    assert (x_d != 0).any()
    assert (x_n - x_d).abs().max() <= 1e-5 * max(1.0, float(x_d.abs().max()))
    assert float((g_n - g_d).norm() / g_d.norm()) <= 1e-4


@needs_kernel
def test_masked_path_same_bits_at_one_and_two_threads():
    A, Y, mask = _masked_problem(10, 40, 784, 50, 0.25)
    out = _at_one_and_two_threads(
        lambda: _masked_codes_and_grads(fista_masked, A, Y, mask, 0.04, 0.5, 15)
    )
    for a, b in zip(*out):
        assert torch.equal(a, b)


@needs_kernel
@pytest.mark.parametrize("erase", [{}, {"erase_prob": 0.9, "erase_frac": 0.25}])
def test_mixmate_with_the_native_kernel(digits, erase):
    """On digits MixMate trained with the native kernel ends as with the torch one (labels equal
    up to a handful of points moved by rounding), and gives the same labels for the same seed
    at 1 and 2 threads; its losses agree to 1e-5. With missing pixels the masked rows take the
    kernel's code-space masked path against the torch direct path."""
    X, _ = digits
    kw = dict(n_clusters=10, n_atoms=20, n_epochs=3, init="kmeans", random_state=0, device="cpu")
    ref = MixMate(fista_kernel="torch", **kw, **erase).fit(X)
    fits = _at_one_and_two_threads(lambda: MixMate(fista_kernel="native", **kw, **erase).fit(X))
    assert (fits[0].mask_ is not None) == bool(erase)
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
        A, one = torch.zeros(2, 6, 3), torch.ones(1)
        with pytest.raises(RuntimeError, match=r"idx must be \(B, n\) int64"):
            native.fista_masked_native(
                W, c, A, one, one, torch.zeros(4, 2, dtype=torch.int32), [0.0]
            )
        with pytest.raises(RuntimeError, match="a missing pixel index is >= M"):
            native.fista_masked_native(W, c, A, one, one, torch.full((4, 1), 6), [0.0])
