"""How OpenMP threads wait between torch's parallel regions, measured on the steps the pipeline's
jobs run: the time per training step of the 784-500-500-2000-10 auto-encoder (deep power
k-means, N2D, DEC; batch 256) and of MixMate (K = 10 dictionaries of 50 atoms, 15 FISTA layers,
batch 256), on quiet cores and with one core busy with another process, for each wait setting.

    python benchmarks/bench_omp_wait.py [--threads 2] [--steps 120]

Each (setting, load) runs in a fresh process (libgomp reads the variables when torch loads it):
the median of ``--steps`` steps after a warm-up of 20. Settings: libgomp's default (spin 300,000
turns, then sleep), passive waits (``OMP_WAIT_POLICY=PASSIVE``, the jobs' setting until commit
878ff44) and ``GOMP_SPINCOUNT=3000`` (the jobs' setting since,
``mixlib.pipeline.openmp_wait_defaults``); the ratio is to passive waits, measured in the same
run. The busy core: a Python loop, as another
job's single thread. Subnormal floats are flushed, as in the jobs' fits (since 2026-11-30: before,
MixMate's step on these random data computed on subnormals, ~100 ms instead of ~27 on one
thread, so the MixMate column of docs/results/benchmarks/bench_omp_wait.txt's first run is of
that unflushed step).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from mixlib.pipeline import OPENMP_WAIT_VARIABLES

SETTINGS = {
    "libgomp default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 3000 (jobs)": {"GOMP_SPINCOUNT": "3000"},
}

STEP = r"""
import sys, time, numpy as np, torch
from mixlib.models import mixmate
from mixlib.models.base import adam
from mixlib.models.power_kmeans import _AutoEncoder
torch.set_num_threads(int(sys.argv[1])); steps = int(sys.argv[2])
gen = torch.Generator().manual_seed(0)
X = torch.rand(20000, 784, generator=gen)
ae = _AutoEncoder(784, (500, 500, 2000), 10); ae.reset_parameters(gen, "cpu", torch.float32)
opt = adam(ae.parameters(), lr=1e-3)
A = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(10, 784, 50, generator=gen), dim=1))
bias = torch.nn.Parameter(torch.zeros(10))
mopt = torch.optim.Adam([A, bias], lr=1e-3)
def ae_step(xb):
    _, xr = ae(xb); loss = ((xr - xb) ** 2).mean()
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); float(loss.detach())
def mm_step(xb):
    mixmate.train_step(xb, A, bias, mopt, 0.75, 0.04, 15, 0.0)
kinds = sys.argv[3].split(",") if len(sys.argv) > 3 else ["ae", "mixmate"]
from mixlib.models.base import subnormals_flushed
with subnormals_flushed(True):  # as in the jobs' fits (unflushed, MixMate's step here ran ~4x slower)
    for name, f in (("ae", ae_step), ("mixmate", mm_step)):
        if name not in kinds:
            continue
        ts = []
        for k in range(20 + steps):
            xb = X[(k * 256) % 19744:][:256]
            t = time.perf_counter(); f(xb); ts.append(time.perf_counter() - t)
        print(name, 1e3 * float(np.median(ts[20:])))
"""


def measure(env_extra: dict, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(threads), str(steps)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {ln.split()[0]: float(ln.split()[1]) for ln in out.splitlines() if ln.strip()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument(
        "--spin",
        type=int,
        action="append",
        default=[],
        metavar="TURNS",
        help="also measure GOMP_SPINCOUNT=TURNS (repeatable)",
    )
    args = ap.parse_args(argv)
    settings = {**SETTINGS, **{f"spin {n}": {"GOMP_SPINCOUNT": str(n)} for n in args.spin}}
    print(f"threads={args.threads}, {os.cpu_count()} CPUs; ms per step (median), ratio to passive")
    for load in ("quiet", "one core busy"):
        busy = None
        if load != "quiet":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        try:
            res = {name: measure(env, args.threads, args.steps) for name, env in settings.items()}
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        ref = res["passive"]
        for name, r in res.items():
            cells = "  ".join(
                f"{step} {r[step]:6.1f} ms ({r[step] / ref[step]:.2f}x)"
                for step in ("ae", "mixmate")
            )
            print(f"{load:14s} {name:17s} {cells}")


if __name__ == "__main__":
    main()
