"""Would bfloat16 (AMX on recent Xeons) speed up the deep models' training on the CPU? Times, in
the same run and on the same thread count: a large matmul in float32 and bfloat16, and one
training step of the 784-500-500-2000-10 auto-encoder (deep power k-means, N2D, DEC; batch 256,
the project's Adam) and of MixMate (K = 10 dictionaries of 50 atoms, 15 FISTA layers, batch 256)
in float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``, subnormals flushed as in
the jobs' fits.

    python benchmarks/bench_bf16.py [--threads 1] [--steps 60] [--rounds 3]

Prints the CPU's AMX/AVX-512-BF16 flags, the rates and the ratios float32 / bfloat16 (above 1:
bfloat16 faster). The project trains in float32; this measures what the switch would buy before
anyone weighs its numerical cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from baseline import matmul_rate

from mixlib.models import mixmate
from mixlib.models.base import adam, subnormals_flushed
from mixlib.models.power_kmeans import _AutoEncoder


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(ln for ln in f if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(sorted(f for f in flags if f.startswith("amx") or f == "avx512_bf16")) or "none"


def median_step_ms(step, X, steps: int, bf16: bool) -> float:
    ts = []
    for k in range(10 + steps):
        xb = X[(k * 256) % (len(X) - 256) :][:256]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step(xb)
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts[10:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads={args.threads}, CPU flags: {cpu_flags()}")
    r32, r16 = (
        matmul_rate(torch.randn(4096, 4096, dtype=dt), torch.randn(4096, 4096, dtype=dt))
        for dt in (torch.float32, torch.bfloat16)
    )
    print(
        f"4096^3 matmul: float32 {r32 / 1e9:.1f} GFLOP/s, bfloat16 {r16 / 1e9:.1f} GFLOP/s "
        f"(ratio {r16 / r32:.2f}x)"
    )
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(20000, 784, generator=gen)
    best = {False: [float("inf")] * 2, True: [float("inf")] * 2}  # (ae, mixmate) ms
    with subnormals_flushed(True):
        for _ in range(args.rounds):  # interleaved, the fastest of each: the least disturbed
            for bf16 in (False, True):
                t = (
                    median_step_ms(ae_step_fn(), X, args.steps, bf16),
                    median_step_ms(mixmate_step_fn(), X, args.steps, bf16),
                )
                best[bf16] = [min(a, b) for a, b in zip(best[bf16], t)]
    for bf16, label in ((False, "float32"), (True, "bfloat16 autocast")):
        t_ae, t_mm = best[bf16]
        print(f"{label:18s} auto-encoder step {t_ae:7.1f} ms   MixMate step {t_mm:7.1f} ms")
    print(
        f"ratio float32 / bfloat16: auto-encoder {best[False][0] / best[True][0]:.2f}x, "
        f"MixMate {best[False][1] / best[True][1]:.2f}x"
    )


def ae_step_fn():
    """A training step of a freshly initialised auto-encoder (seed 0) with the project's Adam."""
    ae = _AutoEncoder(784, (500, 500, 2000), 10)
    ae.reset_parameters(torch.Generator().manual_seed(0), "cpu", torch.float32)
    opt = adam(ae.parameters(), lr=1e-3)

    def step(xb):
        _, xr = ae(xb)
        loss = ((xr.float() - xb) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def mixmate_step_fn():
    """A MixMate training step (MNIST settings) from random unit-norm dictionaries (seed 1)."""
    gen = torch.Generator().manual_seed(1)
    A = torch.nn.Parameter(
        torch.nn.functional.normalize(torch.randn(10, 784, 50, generator=gen), dim=1)
    )
    bias = torch.nn.Parameter(torch.zeros(10))
    opt = torch.optim.Adam([A, bias], lr=1e-3)
    return lambda xb: mixmate.train_step(xb, A, bias, opt, 0.75, 0.04, 15, 0.0)


if __name__ == "__main__":
    main()
