"""MixMate: a mixture of K sparse dictionary-learning auto-encoders.

Lin, Song, Ba, "Mixture Model Auto-Encoders: Deep Clustering through Dictionary Learning",
ICASSP 2022 (arXiv:2110.04683); reference code github.com/al5250/mixmate (``MixMATEv2``).

Generative model: a point ``y`` (M,) belongs to cluster k with prior ``softmax(b)_k`` and is
``y = A_k x + noise`` with a sparse code ``x`` (N,) and a dictionary ``A_k`` (M, N) of unit-norm
atoms. The encoder of auto-encoder k is FISTA unrolled for T layers on the lasso

    E_k(y) = min_x ||y - A_k x||^2 + lam ||x||_1                                     (energy)

(gradient step ``step``, threshold ``lam * step``, x_0 = 0, t_{j+1} = (1 + sqrt(1 + 4 t_j^2)) / 2).
The posterior over clusters is ``softmax(-E + b)`` and the cluster is its argmax. Training
minimises the expected energy under the posterior, divided by M, plus ``beta * KL(posterior ||
prior) / M`` (both divided by M as in the reference code), by Adam with back-propagation through
the unrolled encoder; atoms are renormalised to unit norm after every step.

Speed: FISTA's gradient ``A^T (A x - y) = G x - A^T y`` with the Gram matrix ``G = A^T A`` (N, N)
costs N^2 instead of 2 M N flops per sample, dictionary and layer, and the energy is evaluated in
code space too: ``||y - A x||^2 = ||y||^2 - 2 x^T A^T y + x^T G x``. This is the ``fast`` path;
``fast=False`` runs the textbook per-layer gradient (the direct path). Both give the same codes
up to float error. Samples with missing pixels (a mask) take the direct path with the mask
applied inside the residual: in torch a per-sample masked Gram ``A^T diag(m) A = G - sum_p a_p
a_p^T`` (over the missing pixels p) costs more than the direct path's T layers, in its gathers
and small batched products (tried; slower than the direct path on a 2-core CPU).
``fista_kernel="native"`` is the fused CPU path: the fast path's T layers as one fused CPU kernel
(:mod:`mixlib.native`), the Gram matrices with a one-product backward (:func:`gram`) and torch's
fused Adam (``benchmarks/bench_mixmate_epoch.py`` times it against the torch layers); there the
rows with missing pixels take the code-space path with their own masked Gram matrices
(:func:`fista_masked`, built in registers by the kernel: ``benchmarks/bench_mixmate_masked.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import register
from .base import (
    Progress,
    TorchModel,
    call,
    check_array_2d,
    check_init_labels,
    subnormals_flushed,
)

# ---------------------------------------------------------------------------------------------
# Pure functions (tested one by one). Shapes: K dictionaries, B samples, M features, N atoms.
# ---------------------------------------------------------------------------------------------


def soft_threshold(z: torch.Tensor, thr) -> torch.Tensor:
    """Signed soft threshold ``sign(z) * max(|z| - thr, 0)``; ``thr`` a float or broadcastable
    tensor (no gradient flows to a tensor ``thr``)."""
    if not isinstance(thr, torch.Tensor):
        return torch.nn.functional.softshrink(z, float(thr))  # one fused kernel
    if torch.is_grad_enabled() and z.requires_grad:
        return _SoftThreshold.apply(z, thr)
    return z - torch.clamp(z, min=-thr, max=thr)  # no gradient: no mask to keep


class _SoftThreshold(torch.autograd.Function):
    """``z - clamp(z, -thr, thr)`` with per-dictionary thresholds, and its gradient ``g * (out !=
    0)``: the same values, and the same gradients bit for bit, as autograd's through ``clamp``
    with tensor bounds, whose backward spends ~8 elementwise kernels on masks for the bounds
    (with them the threshold took a third of a MixMate training step on the CPU, torch's
    profiler). One exception: at ``|z| == thr`` exactly autograd's clamp splits the gradient
    with the bound (0.5); here it is 0, the subgradient of the kink that the scalar
    ``softshrink`` also takes."""

    @staticmethod
    def forward(ctx, z, thr):
        out = z - torch.clamp(z, min=-thr, max=thr)
        ctx.save_for_backward(out != 0)
        return out

    @staticmethod
    def backward(ctx, grad):
        (active,) = ctx.saved_tensors
        return grad * active, None


def _momentum_coefficients(n_layers: int) -> list[float]:
    """FISTA's (t_j - 1) / t_{j+1} for j = 1..T with t_1 = 1."""
    t, out = 1.0, []
    for _ in range(n_layers):
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        out.append((t - 1.0) / t_new)
        t = t_new
    return out


def _as_step(step, A: torch.Tensor):
    """A float, or a (K,) tensor turned into (K, 1, 1) to broadcast over (K, B, N)."""
    if isinstance(step, torch.Tensor):
        return step.to(A.dtype).reshape(-1, 1, 1)
    return float(step)


def fista_gram(
    G: torch.Tensor, Aty: torch.Tensor, lam: float, step, n_layers: int, kernel: str = "torch"
) -> torch.Tensor:
    """Unrolled FISTA in code space, all K dictionaries at once.

    Parameters
    ----------
    G : (K, N, N) Gram matrices ``A_k^T A_k``.
    Aty : (K, B, N) correlations ``A_k^T y``.
    lam : l1 weight.
    step : float or (K,) tensor, gradient step (threshold is ``lam * step``).
    n_layers : number of FISTA iterations T.
    kernel : "torch" (the layers as torch operations) or "native" (one fused CPU kernel for all
        layers, :func:`mixlib.native.fista_native`: float32, N <= 64, AVX-512; the same codes up
        to float rounding).

    Returns
    -------
    x : (K, B, N) codes after T layers.
    """
    N = G.shape[-1]
    s = _as_step(step, G)
    eye = torch.eye(N, dtype=G.dtype, device=G.device)
    W = eye - s * G  # (K, N, N), symmetric: z W == z - s z G
    c = s * Aty  # (K, B, N)
    thr = lam * s
    if kernel == "native":
        from ..native import fista_native

        thr_t = thr if isinstance(thr, torch.Tensor) else torch.tensor([thr], dtype=G.dtype)
        return fista_native(W, c, thr_t, _momentum_coefficients(n_layers))
    x_old = torch.zeros_like(Aty)
    z = x_old
    x = x_old
    for j, mom in enumerate(_momentum_coefficients(n_layers)):
        # first layer: z = 0, so the gradient step is just s A^T y
        x = soft_threshold(c if j == 0 else torch.baddbmm(c, z, W), thr)
        # x + mom (x - x_old) as one kernel
        z = torch.lerp(x_old, x, 1.0 + mom) if mom != 0.0 else x
        x_old = x
    return x


def fista_direct(
    Y: torch.Tensor,
    A: torch.Tensor,
    lam: float,
    step,
    n_layers: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Textbook unrolled FISTA: gradient ``A_k^T (m * (A_k x - y))`` every layer.

    Parameters
    ----------
    Y : (B, M) data; where ``mask`` is False the value is ignored.
    A : (K, M, N) dictionaries.
    lam, step, n_layers : as in :func:`fista_gram`.
    mask : (B, M) bool, True where observed, or None (all observed). Missing pixels are left
        out of the gradient (no imputation).

    Returns
    -------
    x : (K, B, N) codes.
    """
    K, N = A.shape[0], A.shape[-1]
    s = _as_step(step, A)
    thr = lam * s
    At = A.transpose(1, 2)  # (K, N, M)
    m = None if mask is None else mask.to(A.dtype)  # (B, M)
    if m is not None:
        Y = Y * m
    x_old = torch.zeros(K, Y.shape[0], N, dtype=A.dtype, device=A.device)
    z = x_old
    x = x_old
    for mom in _momentum_coefficients(n_layers):
        # residual A x - y, (K, B, M); in place: bmm does not keep its output for backward
        r = torch.bmm(z, At).sub_(Y)
        if m is not None:
            r = r.mul_(m)
        x = soft_threshold(z - s * torch.bmm(r, A), thr)
        # x + mom (x - x_old) as one kernel
        z = torch.lerp(x_old, x, 1.0 + mom) if mom != 0.0 else x
        x_old = x
    return x


def missing_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, n) int64: each row's missing pixels (``mask`` False) in increasing order, then -1,
    with n the most any row misses."""
    miss = ~mask
    n = int(miss.sum(1).max()) if miss.numel() else 0
    # a stable sort of the flags puts a row's missing pixels first, in order
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :n]
    count = miss.sum(1, keepdim=True)
    return torch.where(torch.arange(n, device=mask.device) < count, order, -1)


def fista_masked(
    Y: torch.Tensor,
    A: torch.Tensor,
    lam: float,
    step,
    n_layers: int,
    mask: torch.Tensor,
) -> torch.Tensor:
    """:func:`fista_direct` with a mask, in code space on the native CPU kernel
    (:func:`mixlib.native.fista_masked_native`): the masked gradient ``A^T (m (A z - y))`` is
    ``G_m z - A^T (m y)`` with the row's own Gram matrix ``G_m = A^T A - sum_p a_p a_p^T`` over
    its missing pixels p, so a row costs ``n N^2`` per dictionary for its ``n`` missing pixels,
    then ``N^2`` per layer, against ``2 M N`` per layer on the direct path. The same codes up to
    float rounding; float32, N <= 64, AVX-512."""
    from ..native import fista_masked_native

    K, M, N = A.shape
    s = _as_step(step, A)
    s_t = s.reshape(-1) if isinstance(s, torch.Tensor) else torch.tensor([s], dtype=A.dtype)
    W = torch.eye(N, dtype=A.dtype, device=A.device) - s * gram(A, "native")
    Ym = Y * mask.to(A.dtype)
    Aty = (Ym @ A.permute(1, 0, 2).reshape(M, K * N)).view(-1, K, N).transpose(0, 1)
    c = s * Aty  # (K, B, N)
    moms = _momentum_coefficients(n_layers)
    return fista_masked_native(W, c, A, lam * s_t, s_t, missing_index(mask), moms)


def energy_gram(
    x: torch.Tensor, G: torch.Tensor, Aty: torch.Tensor, yy: torch.Tensor, lam: float
) -> torch.Tensor:
    """(K, B) energies ``||y||^2 - 2 x^T A^T y + x^T G x + lam ||x||_1`` from code-space terms.

    ``yy`` is (B,) ``||y||^2``.
    """
    xG = torch.bmm(x, G)  # (K, B, N)
    return yy + ((xG - 2.0 * Aty) * x).sum(-1) + lam * x.abs().sum(-1)


def energy_direct(
    x: torch.Tensor,
    Y: torch.Tensor,
    A: torch.Tensor,
    lam: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(K, B) energies ``||m * (y - A_k x_k)||^2 + lam ||x_k||_1`` in data space."""
    r = torch.bmm(x, A.transpose(1, 2)).sub_(Y)  # (K, B, M)
    if mask is not None:
        r = r.mul_(mask.to(A.dtype))
    return (r * r).sum(-1) + lam * x.abs().sum(-1)


class _Gram(torch.autograd.Function):
    """``A_k^T A_k`` with the one-product backward ``dA = A (dG + dG^T)`` (autograd's own takes
    two products and a strided sum)."""

    @staticmethod
    def forward(ctx, A):
        ctx.save_for_backward(A)
        return torch.bmm(A.transpose(1, 2), A)

    @staticmethod
    def backward(ctx, gG):
        (A,) = ctx.saved_tensors
        return torch.bmm(A, gG + gG.transpose(1, 2))


def gram(A: torch.Tensor, kernel: str = "torch") -> torch.Tensor:
    """(K, N, N) Gram matrices ``A_k^T A_k`` of (K, M, N) dictionaries; ``kernel="native"``
    (the fused CPU path) takes :class:`_Gram`'s cheaper backward, the same up to rounding."""
    return _Gram.apply(A) if kernel == "native" else A.transpose(1, 2) @ A


def spectral_steps(G: torch.Tensor) -> torch.Tensor:
    """(K,) steps ``1 / ||A_k||_2^2`` = 1 / largest eigenvalue of ``G_k`` (no gradient)."""
    with torch.no_grad():
        return 1.0 / torch.linalg.eigvalsh(G)[:, -1].clamp_min(1e-12)


def encode(
    Y: torch.Tensor,
    A: torch.Tensor,
    lam: float,
    step,
    n_layers: int,
    mask: torch.Tensor | None = None,
    fast: bool = True,
    kernel: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and energies of every sample under every dictionary.

    Parameters
    ----------
    Y : (B, M) data.
    A : (K, M, N) dictionaries.
    lam, n_layers : lasso weight and number of FISTA layers.
    step : float, (K,) tensor, or the string ``"spectral"`` (``1 / ||A_k||_2^2``).
    mask : (B, M) bool (True = observed) or None. Rows with a missing pixel take the direct
        masked path even when ``fast`` (the native kernel's masked code-space path,
        :func:`fista_masked`, with ``kernel="native"``); complete rows take the Gram path.
    fast : Gram (code-space) path when True, textbook direct path when False.
    kernel : the Gram path's FISTA (:func:`fista_gram`) and, with "native", the masked rows'
        (:func:`fista_masked`); the direct path is torch's.

    Returns
    -------
    codes : (K, B, N)
    energies : (K, B)
    """
    K, M, N = A.shape
    G = None
    if isinstance(step, str):  # "spectral"
        G = gram(A, kernel)
        step = spectral_steps(G)
    if mask is not None:
        incomplete = ~mask.all(dim=1)  # (B,)
        if not bool(incomplete.any()):
            mask = None
    if mask is None and not fast:
        x = fista_direct(Y, A, lam, step, n_layers)
        return x, energy_direct(x, Y, A, lam)
    if mask is None:
        if G is None:
            G = gram(A, kernel)  # (K, N, N)
        # A_k^T y for all k in one matmul: (B, M) @ (M, K N)
        Aty = (Y @ A.permute(1, 0, 2).reshape(M, K * N)).view(-1, K, N).transpose(0, 1)
        Aty = Aty.contiguous()  # (K, B, N)
        x = fista_gram(G, Aty, lam, step, n_layers, kernel)
        return x, energy_gram(x, G, Aty, (Y * Y).sum(-1), lam)
    if not fast:
        x = fista_direct(Y, A, lam, step, n_layers, mask)
        return x, energy_direct(x, Y, A, lam, mask)
    # mixed batch: complete rows in code space, incomplete rows directly with their mask (in
    # code space with the native kernel: fista_masked)
    idx_c = torch.nonzero(~incomplete).flatten()
    idx_i = torch.nonzero(incomplete).flatten()
    masked = fista_masked if kernel == "native" else fista_direct
    x_i = masked(Y[idx_i], A, lam, step, n_layers, mask[idx_i])
    e_i = energy_direct(x_i, Y[idx_i], A, lam, mask[idx_i])
    if idx_c.numel() == 0:
        return x_i, e_i
    x_c, e_c = encode(Y[idx_c], A, lam, step, n_layers, None, True, kernel)
    inv = torch.argsort(torch.cat([idx_c, idx_i]))
    return torch.cat([x_c, x_i], 1)[:, inv], torch.cat([e_c, e_i], 1)[:, inv]


def mixture_loss(
    energies: torch.Tensor, bias: torch.Tensor, beta: float, n_features: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training loss and posterior.

    ``loss = mean_b [ sum_k p_kb E_kb + beta KL(p_b || softmax(bias)) ] / M`` with the posterior
    ``p_b = softmax(-E_b + bias)``; gradients flow through the posterior as in the reference.

    Returns
    -------
    loss : scalar tensor
    post : (K, B) posterior
    """
    logits = -energies + bias[:, None]  # (K, B)
    log_post = torch.log_softmax(logits, dim=0)
    post = log_post.exp()
    loss = (post * energies).sum(0).mean()
    if beta > 0:
        log_prior = torch.log_softmax(bias, dim=0)[:, None]
        loss = loss + beta * (post * (log_post - log_prior)).sum(0).mean()
    return loss / n_features, post


def train_step(
    Y: torch.Tensor,
    A: torch.nn.Parameter,
    bias: torch.nn.Parameter,
    opt: torch.optim.Optimizer,
    lam: float,
    step,
    n_layers: int,
    beta: float,
    mask: torch.Tensor | None = None,
    fast: bool = True,
    kernel: str = "torch",
) -> float:
    """One Adam step on a mini-batch ``Y`` (B, M), then atoms back to unit norm; returns the loss.

    Gradients flow through the unrolled encoder (and through the Gram matrix in the fast path).
    """
    _, E = encode(Y, A, lam, step, n_layers, mask, fast, kernel)
    loss, _ = mixture_loss(E, bias, beta, A.shape[1])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        A.div_(A.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return float(loss.detach())


DICT_INITS = ("exemplars", "svd")


def dictionaries_from_labels(
    X: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    n_atoms: int,
    rng: np.random.Generator,
    method: str = "exemplars",
    max_members: int = 5000,
) -> np.ndarray:
    """(K, M, N) initial dictionaries from an assignment, as in the reference ``trainv2.py``.

    ``method="exemplars"`` (the reference's default): each dictionary's atoms are ``n_atoms``
    distinct random members of its cluster (points with that label; ``-1`` points are ignored),
    each centred by subtracting its own mean over the features and scaled to unit norm. A
    cluster with 0 < n_k < N members gets all of them plus N - n_k noisy copies of random
    members (Gaussian noise of 10% of the member's norm) so its atoms stay distinct; an empty
    cluster draws its atoms from all labelled points. An atom that centres to zero (a constant
    point) is replaced by a random unit vector.

    ``method="svd"`` (the reference's ``use_svd``): the atoms are the ``n_atoms`` leading right
    singular vectors of the (uncentred) matrix of the cluster's members (at most
    ``max_members`` of them, drawn at random): the best rank-N subspace of the cluster in the
    least-squares sense, instead of N samples of it. A cluster with fewer members than atoms
    (or an empty one) is completed as for ``exemplars``.
    """
    if method not in DICT_INITS:
        raise ValueError(f"dict_init must be one of {DICT_INITS}, got {method!r}")
    M = X.shape[1]
    D = np.empty((n_clusters, M, n_atoms), dtype=np.float64)
    labelled = np.flatnonzero(labels >= 0)
    for k in range(n_clusters):
        members = np.flatnonzero(labels == k)
        pool = members if members.size else labelled
        if method == "svd" and members.size >= n_atoms:
            if members.size > max_members:
                members = np.sort(rng.choice(members, max_members, replace=False))
            _, _, Vt = np.linalg.svd(X[members].astype(np.float64), full_matrices=False)
            atoms = Vt[:n_atoms]
            atoms *= np.where(atoms.sum(1, keepdims=True) < 0, -1.0, 1.0)  # deterministic signs
            D[k] = atoms.T
            continue
        if pool.size >= n_atoms:
            atoms = X[rng.choice(pool, n_atoms, replace=False)].astype(np.float64)
        else:
            extra = X[rng.choice(pool, n_atoms - pool.size)].astype(np.float64)
            scale = 0.1 * np.linalg.norm(extra, axis=1, keepdims=True) / np.sqrt(M)
            extra = extra + scale * rng.standard_normal(extra.shape)
            atoms = np.concatenate([X[pool].astype(np.float64), extra])
        atoms -= atoms.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(atoms, axis=1)
        dead = norms < 1e-8
        if dead.any():
            atoms[dead] = rng.standard_normal((int(dead.sum()), M))
            norms[dead] = np.linalg.norm(atoms[dead], axis=1)
        D[k] = (atoms / norms[:, None]).T
    return D


def erase_masks(
    n_samples: int, n_features: int, erase_prob: float, erase_frac: float, rng
) -> np.ndarray | None:
    """(n, M) bool masks: a fraction ``erase_prob`` of the points lose ``round(erase_frac M)``
    random pixels (False = missing), like the reference's ``generate_erase_masks``; None if
    nothing is erased."""
    n_erase = int(round(erase_frac * n_features))
    if erase_prob <= 0 or n_erase == 0:
        return None
    mask = np.ones((n_samples, n_features), dtype=bool)
    hit = np.flatnonzero(rng.random(n_samples) < erase_prob)
    if hit.size:
        order = rng.random((hit.size, n_features)).argsort(axis=1)[:, :n_erase]
        mask[hit[:, None], order] = False
    return mask


# ---------------------------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------------------------


@register("mixmate")
class MixMate(TorchModel):
    """Mixture of K sparse dictionary-learning auto-encoders (MixMate, Lin et al. 2022).

    Defaults are the paper's MNIST settings (``configs/trainv2.yaml`` of the reference code).

    Parameters
    ----------
    n_clusters : int, default 10
        Number of dictionaries / clusters K.
    n_atoms : int, default 50
        Atoms per dictionary N.
    n_layers : int, default 15
        Unrolled FISTA layers T.
    lam : float, default 0.75
        l1 weight of the lasso energy; the FISTA threshold is ``lam * step``.
    step : float, default 0.04
        FISTA gradient step when ``step_rule="fixed"``.
    step_rule : {"fixed", "spectral"}, default "fixed"
        ``"spectral"`` uses ``1 / ||A_k||_2^2`` per dictionary (recomputed every batch, not
        differentiated), the classical convergent step; ``step`` is then ignored.
    freeze_bias : bool, default True
        Keep the prior logits b at 0; if False they are learned.
    beta : float, default 0.0
        Weight of ``KL(posterior || prior)`` in the loss.
    lr : float, default 1e-3
        Adam learning rate.
    batch_size : int, default 256
        Training mini-batch size (incomplete last batch dropped, as in the reference).
    n_epochs : int, default 50
    erase_prob, erase_frac : float, default 0.0
        Missing-data experiment: a fraction ``erase_prob`` of the points lose ``erase_frac`` of
        their pixels (random pixels, masks drawn from ``random_state``, stored as ``mask_``);
        missing pixels are left out of the FISTA gradient and of the energy.
    eval_batch_size : int or None, default None
        Batch size of the no-grad evaluation passes; None picks 8192 on CUDA and 512 on CPU,
        where the fast path's (K, B, N) tensors then stay in cache (on a 2-core CPU 512 is ~2x
        faster than 4096 for the fast path; the direct path prefers larger batches).
    fast : bool, default True
        Gram-matrix (code-space) FISTA; False runs the textbook data-space gradient.
    fista_kernel : {"torch", "native"}, default "torch"
        The Gram path's FISTA: torch operations layer by layer, or one fused AVX-512 kernel for
        all layers with its own backward (:mod:`mixlib.native`, compiled on first use; float32
        on the CPU, ``n_atoms <= 64``, ``fast``), which also takes the Gram matrices'
        one-product backward (:func:`gram`) and torch's fused Adam; with missing pixels
        (``erase_prob``, ``erase_frac``) the masked rows take its code-space masked path
        (:func:`fista_masked`) instead of the direct one. The same model up to float
        rounding (codes within ~1e-7; labels can differ where rounding moves a training step);
        same seed, same labels at any thread count with either.
    init : {"auto", "ssc", "spectral", "kmeans"}, default "auto"
        How ``fit`` assigns the points to dictionaries when it gets no ``init_labels``
        (:func:`mixlib.init.initialize`). ``"ssc"`` is the paper's recipe: SSC-OMP (5 atoms) of
        the scattering feature (J=3, per-channel max normalisation, uncentred PCA 500) of 2,000
        random images; ``"spectral"`` clusters the kNN graph (k=10) of the same feature of
        every image (slower, stronger: ACC 0.98 on all of MNIST); both need ``image_shape``.
        ``"kmeans"`` runs k-means (``n_init`` restarts) on the vectors. ``"auto"`` is ``"ssc"``
        when ``image_shape`` is given and ``"kmeans"`` otherwise: on vectors that are not
        images k-means is what works (MNIST pixels: ACC ~0.55 from k-means against ~0.87 from
        the scattering SSC on 5,000 images).
    image_shape : tuple (h, w) or None, default None
        Shape of the images the rows of X flatten; needed by the ``ssc`` and ``spectral`` inits.
    dict_init : {"exemplars", "svd"}, default "exemplars"
        How each dictionary is built from its cluster (:func:`dictionaries_from_labels`):
        ``"exemplars"``, N random members (the reference's default), or ``"svd"``, the N leading
        singular vectors of the members (the reference's ``use_svd``).
    n_init : int, default 10
        k-means restarts of the ``kmeans`` init and of the spectral step of the others.
    flush_denormal : bool, default True
        Train with subnormal floats flushed to zero on the CPU (FTZ/DAZ): the soft-thresholded
        codes and their gradients pass through subnormal values that the CPU handles ~100x
        slower (on USPS at lam 0.25 half of the training time); the labels are the same
        (tests/test_mixmate.py::test_flushing_subnormals_keeps_the_labels).
    device : str, default "auto"
        torch device; "auto" picks CUDA when present.
    dtype : {"float32", "float64"}, default "float32"
    random_state : int or None
        Seeds atom choice, masks, shuffling and k-means (``np.random.default_rng``).

    Attributes
    ----------
    dictionaries_ : (K, M, N) ndarray, unit-norm atoms in columns.
    bias_ : (K,) ndarray, prior logits.
    init_labels_ : (n,) labels of the untrained model (paper's INIT column).
    init_loss_, loss_ : mean loss over X before and after training.
    labels_ : (n,) final labels.
    history_ : dict of per-epoch lists: "loss" (mean training loss).
    mask_ : (n, M) bool ndarray of observed pixels used in ``fit``, or None if none missing.
    """

    def __init__(
        self,
        n_clusters=10,
        n_atoms=50,
        n_layers=15,
        lam=0.75,
        step=0.04,
        step_rule="fixed",
        freeze_bias=True,
        beta=0.0,
        lr=1e-3,
        batch_size=256,
        n_epochs=50,
        erase_prob=0.0,
        erase_frac=0.0,
        eval_batch_size=None,
        fast=True,
        fista_kernel="torch",
        init="auto",
        image_shape=None,
        dict_init="exemplars",
        n_init=10,
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.n_atoms = n_atoms
        self.n_layers = n_layers
        self.lam = lam
        self.step = step
        self.step_rule = step_rule
        self.freeze_bias = freeze_bias
        self.beta = beta
        self.lr = lr
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.erase_prob = erase_prob
        self.erase_frac = erase_frac
        self.eval_batch_size = eval_batch_size
        self.fast = fast
        self.fista_kernel = fista_kernel
        self.init = init
        self.image_shape = image_shape
        self.dict_init = dict_init
        self.n_init = n_init
        self.flush_denormal = flush_denormal
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "n_atoms": "int >= 1",
        "n_layers": "int >= 1",
        "lam": "real >= 0",
        "step": "real > 0",
        "step_rule": {"fixed", "spectral"},
        "freeze_bias": "bool",
        "beta": "real >= 0",
        "lr": "real > 0",
        "batch_size": "int >= 1",
        "n_epochs": "int >= 0",
        "erase_prob": "real in [0, 1]",
        "erase_frac": "real in [0, 1)",
        "eval_batch_size": ["int >= 1", None],
        "fast": "bool",
        "fista_kernel": {"torch", "native"},
        "init": {"auto", "ssc", "spectral", "kmeans"},
        "image_shape": ["ints >= 1", None],
        "dict_init": {"exemplars", "svd"},
        "n_init": "int >= 1",
        "flush_denormal": "bool",
        "device": "str",
        "dtype": {"float32", "float64"},
        "random_state": ["int >= 0", None],
    }

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.image_shape is not None and len(self.image_shape) != 2:
            raise ValueError(f"image_shape must be (h, w) or None, got {self.image_shape!r}")
        if self.init in ("ssc", "spectral") and self.image_shape is None:
            raise ValueError(f"init={self.init!r} needs image_shape (h, w) of the images")
        if self.fista_kernel == "native":
            from ..native import MAX_ATOMS, fista_extension

            dev = self._torch_device().type
            if self.dtype != "float32" or dev != "cpu" or not self.fast:
                raise ValueError(
                    "fista_kernel='native' is the fast path's float32 CPU kernel; got "
                    f"dtype={self.dtype!r}, device {dev!r}, fast={self.fast!r}"
                )
            if self.n_atoms > MAX_ATOMS:
                raise ValueError(
                    f"fista_kernel='native' takes n_atoms <= {MAX_ATOMS}, got {self.n_atoms}"
                )
            fista_extension()  # RuntimeError saying why, before any work

    def _own_init(self, X, seed: int) -> np.ndarray:
        """Labels (-1 = unseen) of the ``init`` method (class docstring) for the rows of X."""
        from ..init import initialize

        method = self.init
        if method == "auto":
            method = "kmeans" if self.image_shape is None else "ssc"
        if method == "kmeans":
            kw = {"feature": "raw"}
        else:
            kw = {
                "feature": "scattering",
                "image_shape": tuple(self.image_shape),
                "pca_components": 500,
                "subset": 2000 if method == "ssc" else None,
            }
        labels, _ = initialize(
            X, int(self.n_clusters), method, seed=seed, n_init=int(self.n_init), **kw
        )
        return labels

    def _eval_batch(self) -> int:
        if self.eval_batch_size is not None:
            return int(self.eval_batch_size)
        return 8192 if self._torch_device().type == "cuda" else 512

    def _step_arg(self):
        return "spectral" if self.step_rule == "spectral" else float(self.step)

    # -- core passes --------------------------------------------------------------------------
    def _encode(self, Y, A, mask):
        """:func:`encode` of the rows ``Y`` with this model's lasso, layers, path and kernel."""
        args = (self.lam, self._step_arg(), self.n_layers, mask, self.fast, self.fista_kernel)
        return encode(Y, A, *args)

    def _evaluate(self, Xt, mt, A, bias):
        """No-grad pass over all rows: (labels (n,) ndarray, mean loss float)."""
        labels, total = [], 0.0
        n, M = Xt.shape
        bs = self._eval_batch()
        with torch.inference_mode():
            for s in range(0, n, bs):
                mb = None if mt is None else mt[s : s + bs]
                _, E = self._encode(Xt[s : s + bs], A, mb)
                loss, post = mixture_loss(E, bias, float(self.beta), M)
                total += float(loss) * E.shape[1]
                labels.append(post.argmax(0))
        return torch.cat(labels).cpu().numpy().astype(np.int64), total / n

    def _to_tensors(self, X, mask):
        dev, dt = self._torch_device(), self._torch_dtype()
        Xt = torch.as_tensor(np.asarray(X), device=dev).to(dt)
        mt = None
        if mask is not None:
            mt = torch.as_tensor(np.asarray(mask, dtype=bool), device=dev)
            Xt = Xt * mt  # missing values never enter any computation
        return Xt, mt

    @staticmethod
    def _check_mask(mask, shape):
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != shape or mask.dtype != bool:
            raise ValueError(
                f"mask must be a bool array of shape {shape}, got {mask.shape} {mask.dtype}"
            )
        return mask

    # -- public API ---------------------------------------------------------------------------
    def fit(self, X, y=None, init_labels=None, mask=None, callback=None):
        """Initialise the dictionaries from an assignment, then train.

        Parameters
        ----------
        X : (n, M) array.
        y : ignored (scikit-learn's signature).
        init_labels : (n,) int array with -1 for unlabelled points, or None to run k-means
            (scikit-learn, ``n_init`` restarts) on X. With missing pixels only the fully
            observed points' labels (and k-means on those points) build the dictionaries.
        mask : (n, M) bool, True = observed, or None. Combined (AND) with the erase masks.
        callback : callable or None
            Called after every epoch with a :class:`~mixlib.models.base.Progress` (the epoch's
            mean training loss; ``labels()`` runs an evaluation pass over X).
        """
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        n, M = X.shape
        K = int(self.n_clusters)
        mask = self._check_mask(mask, X.shape)
        lab = check_init_labels(init_labels, n, K)
        seed = self._seed()
        rng = np.random.default_rng(seed)
        drawn = erase_masks(n, M, float(self.erase_prob), float(self.erase_frac), rng)
        if drawn is not None and mask is not None:
            drawn &= mask
        elif drawn is None:
            drawn = mask
        self.mask_ = drawn
        # With missing pixels the dictionaries are built from the fully observed points only,
        # as in the reference (an incomplete point's label is dropped to -1), unless fewer than
        # K points are complete, in which case the masked points are used as observed.
        complete = None if drawn is None else drawn.all(axis=1)
        if complete is not None and int(complete.sum()) < K:
            complete = None
        if lab is None:
            rows = np.ones(n, dtype=bool) if complete is None else complete
            lab = np.full(n, -1, dtype=np.int64)
            lab[rows] = self._own_init(X[rows], seed)
        elif complete is not None:
            lab = np.where(complete, lab, -1)
        self.n_features_in_ = M
        with subnormals_flushed(self.flush_denormal):
            self._train(X, lab, rng, callback)
        return self

    def _train(self, X, lab, rng, callback) -> None:
        """Build the dictionaries from the labels ``lab`` (-1: unused) and train them."""
        n = X.shape[0]
        K, N = int(self.n_clusters), int(self.n_atoms)
        dev, dt = self._torch_device(), self._torch_dtype()
        Xt, mt = self._to_tensors(X, self.mask_)
        # dictionaries from the points as observed (missing pixels are 0 after masking)
        D = dictionaries_from_labels(Xt.cpu().numpy(), lab, K, N, rng, self.dict_init)
        A = torch.nn.Parameter(torch.as_tensor(D, dtype=dt, device=dev))
        bias = torch.nn.Parameter(torch.zeros(K, dtype=dt, device=dev))
        bias.requires_grad_(not self.freeze_bias)

        self.init_labels_, self.init_loss_ = self._evaluate(Xt, mt, A.detach(), bias.detach())
        params = [A] if self.freeze_bias else [A, bias]
        # the native path also takes torch's fused Adam (one pass over the parameters)
        opt = torch.optim.Adam(params, lr=float(self.lr), fused=self.fista_kernel == "native")
        bs = int(self.batch_size)
        n_batches = max(n // bs, 1)  # the reference drops the incomplete last batch
        hist = {"loss": []}
        evaluated = {}  # the evaluation pass of the current parameters, once asked for

        def evaluation():
            if "out" not in evaluated:
                evaluated["out"] = self._evaluate(Xt, mt, A.detach(), bias.detach())
            return evaluated["out"]

        for epoch in range(int(self.n_epochs)):
            evaluated.clear()
            perm = torch.as_tensor(rng.permutation(n), device=dev)
            running = 0.0
            for b in range(n_batches):
                idx = perm[b * bs : (b + 1) * bs]
                mb = None if mt is None else mt[idx]
                running += train_step(
                    Xt[idx],
                    A,
                    bias,
                    opt,
                    self.lam,
                    self._step_arg(),
                    self.n_layers,
                    float(self.beta),
                    mb,
                    self.fast,
                    self.fista_kernel,
                )
            hist["loss"].append(running / n_batches)
            call(
                callback,
                Progress(
                    epoch + 1,
                    int(self.n_epochs),
                    {"loss": hist["loss"][-1]},
                    labels=lambda: evaluation()[0],
                    predict=lambda Z: self._labels_of(Z, A.detach(), bias.detach()),
                ),
            )
        self.history_ = hist
        self.n_iter_ = int(self.n_epochs)
        self.dictionaries_ = A.detach().cpu().numpy()
        self.bias_ = bias.detach().cpu().numpy()
        # the monitor's pass after the last epoch, when it asked for one, is this one: not again
        self.labels_, self.loss_ = evaluation()

    def _fitted(self):
        if not hasattr(self, "dictionaries_"):
            raise RuntimeError("MixMate is not fitted yet; call fit first")
        dev, dt = self._torch_device(), self._torch_dtype()
        A = torch.as_tensor(self.dictionaries_, device=dev, dtype=dt)
        return A, torch.as_tensor(self.bias_, device=dev, dtype=dt)

    def _prepare_X(self, X, mask):
        A, b = self._fitted()
        X = check_array_2d(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, the model was fitted on {self.n_features_in_}"
            )
        Xt, mt = self._to_tensors(X, self._check_mask(mask, X.shape))
        return Xt, mt, A, b

    def predict(self, X, mask=None):
        """(n,) cluster labels ``argmax_k softmax(-E_k + b)``; ``mask`` (n, M) bool or None.

        ``fit(X).labels_ == predict(X, mask=mask_)`` (``mask_`` is None without erasure).
        """
        Xt, mt, A, b = self._prepare_X(X, mask)
        return self._evaluate(Xt, mt, A, b)[0]

    def _labels_of(self, X, A, b) -> np.ndarray:
        """Labels of other rows X (complete) under dictionaries A and logits b (mid-training)."""
        Xt, _ = self._to_tensors(check_array_2d(X), None)
        return self._evaluate(Xt, None, A, b)[0]

    def predict_proba(self, X, mask=None):
        """(n, K) posterior ``softmax(-E + b)``."""
        Xt, mt, A, b = self._prepare_X(X, mask)
        return self._posterior_and_codes(Xt, mt, A, b)[0]

    def score(self, X, y=None, mask=None):
        """Minus the mean training loss (expected energy / M, + KL term) on X: higher is better."""
        Xt, mt, A, b = self._prepare_X(X, mask)
        return -self._evaluate(Xt, mt, A, b)[1]

    def _posterior_and_codes(self, Xt, mt, A, b):
        posts, codes = [], []
        bs = self._eval_batch()
        with torch.inference_mode():
            for s in range(0, Xt.shape[0], bs):
                mb = None if mt is None else mt[s : s + bs]
                x, E = self._encode(Xt[s : s + bs], A, mb)
                posts.append(torch.softmax(-E + b[:, None], 0).T.cpu())
                codes.append(x.cpu())
        return torch.cat(posts).numpy(), torch.cat(codes, 1).numpy()

    def transform(self, X, mask=None):
        """(K, n, N) sparse codes of every point under every dictionary."""
        Xt, mt, A, b = self._prepare_X(X, mask)
        return self._posterior_and_codes(Xt, mt, A, b)[1]

    def n_parameters(self) -> int:
        """K M N dictionary entries, + K prior logits when they are learned."""
        M = getattr(self, "n_features_in_", None)
        if M is None:
            raise RuntimeError("n_parameters needs the number of features: fit the model first")
        return int(
            self.n_clusters * M * self.n_atoms + (0 if self.freeze_bias else self.n_clusters)
        )

    def reconstruct(self, X, mask=None) -> np.ndarray:
        """(K, n, M) reconstructions ``A_k x_k`` of every point by every dictionary."""
        Xt, mt, A, b = self._prepare_X(X, mask)
        with torch.inference_mode():
            codes, _ = self._encode(Xt, A, mt)
            return torch.bmm(codes, A.transpose(1, 2)).cpu().numpy()
