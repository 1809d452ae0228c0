"""Native CPU kernels, compiled on first use by torch's C++ extension loader (a C++ compiler and
ninja, as torch's ``cpp_extension.load`` needs; the build is cached under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).

:func:`fista_native`: MixMate's unrolled FISTA (``mixlib.models.mixmate.fista_gram``) as one
fused AVX-512 kernel with its own backward (``fista.cpp`` says how); :func:`fista_masked_native`:
the same layers for rows with missing pixels, each row with its own masked Gram matrix. Where the kernel cannot
run, :func:`fista_extension` raises a ``RuntimeError`` that says why (no AVX-512, no compiler),
so a model asked for it fails before it trains; the torch path is the default everywhere.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

#: the kernel pads codes to 64 floats
MAX_ATOMS = 64


@functools.cache
def _build():
    """(module, None) or (None, the reason it cannot be used); built once per process."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return (
            None,
            f"this CPU lacks AVX-512 (torch reports {torch.backends.cpu.get_cpu_capability()})",
        )
    from torch.utils.cpp_extension import load

    src = Path(__file__).with_name("fista.cpp")
    try:
        # -fopenmp: ATen's at::parallel_for is inline OpenMP, so without it the kernel runs on
        # one thread whatever torch.set_num_threads says; the extension then shares torch's
        # libgomp (same soname, already loaded), so torch's thread count applies to it.
        mod = load(
            "mixlib_fista",
            [str(src)],
            extra_cflags=["-O3", "-mavx512f", "-mfma", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
        )
    except Exception as e:  # noqa: BLE001 - any build failure becomes the reason
        return None, f"the kernel did not build ({type(e).__name__}: {e})"
    return mod, None


def fista_extension():
    """The compiled module (``fista_forward``, ``fista_backward``); ``RuntimeError`` if it
    cannot be built or run here."""
    mod, why = _build()
    if mod is None:
        raise RuntimeError(f"the native FISTA kernel is unavailable: {why}; use the torch path")
    return mod


class _Fista(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W, c, thr, moms):
        ctx.save_for_backward(W, c, thr)
        ctx.moms = moms
        return fista_extension().fista_forward(W, c, thr, moms)

    @staticmethod
    def backward(ctx, gx):
        W, c, thr = ctx.saved_tensors
        gW, gc = fista_extension().fista_backward(W, c, thr, ctx.moms, gx)
        return gW, gc, None, None


def fista_native(W: torch.Tensor, c: torch.Tensor, thr: torch.Tensor, moms) -> torch.Tensor:
    """The codes after ``len(moms)`` FISTA layers ``x_j = S(c + z_j W, thr)``, ``z_{j+1} =
    x_{j-1} + (1 + moms[j]) (x_j - x_{j-1})`` (``z_0 = 0``, ``x_{-1} = 0``): W (K, N, N), c
    (K, B, N), thr (K,) or (1,), all float32 on the CPU, N <= 64. Differentiable in W and c
    (not thr, as the torch path's tensor threshold); the same bits at any thread count."""
    return _Fista.apply(W.contiguous(), c.contiguous(), thr.reshape(-1).contiguous(), list(moms))


class _MaskedFista(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W, c, A, thr, s, idx, moms):
        ctx.save_for_backward(W, c, A, thr, s, idx)
        ctx.moms = moms
        return fista_extension().fista_masked_forward(W, c, thr, moms, A, idx, s)

    @staticmethod
    def backward(ctx, gx):
        W, c, A, thr, s, idx = ctx.saved_tensors
        ext = fista_extension()
        gW, gc, gA = ext.fista_masked_backward(W, c, thr, ctx.moms, A, idx, s, gx.contiguous())
        return gW, gc, gA, None, None, None, None


def fista_masked_native(
    W: torch.Tensor,
    c: torch.Tensor,
    A: torch.Tensor,
    thr: torch.Tensor,
    s: torch.Tensor,
    idx: torch.Tensor,
    moms,
) -> torch.Tensor:
    """:func:`fista_native`'s layers for rows with missing pixels: row b of dictionary k takes
    ``W_kb = W_k + s_k sum_p a_kp a_kp^T`` over its missing pixels p (``a_kp``: row p of
    ``A_k``), which is ``I - s_k A_k^T diag(m_b) A_k`` when ``W_k = I - s_k A_k^T A_k``: the
    masked gradient step in code space. W (K, N, N), c (K, B, N) = s A^T (m y), A (K, M, N),
    thr and s (K,) or (1,), idx (B, n) int64: each row's missing pixels, then -1. Float32 on
    the CPU, N <= 64; differentiable in W, c and A; the same bits at any thread count."""
    return _MaskedFista.apply(
        W.contiguous(),
        c.contiguous(),
        A.contiguous(),
        thr.reshape(-1).contiguous(),
        s.reshape(-1).contiguous(),
        idx.contiguous(),
        list(moms),
    )
