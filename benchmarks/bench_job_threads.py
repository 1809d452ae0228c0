"""One training job on 2 threads, or two jobs on 1 thread each side by side: which gets more
training steps through a 2-core machine? Measured on the steps the pipeline's torch jobs run
(the 784-500-500-2000-10 auto-encoder of deep power k-means, N2D and DEC, and MixMate's K = 10
dictionaries of 50 atoms with 15 FISTA layers; batch 256; the step code of
``benchmarks/bench_omp_wait.py``), with the jobs' OpenMP wait setting
(``mixlib.pipeline.openmp_wait_defaults``).

    python benchmarks/bench_job_threads.py [--steps 150]

For each step kind: one process on 2 threads, then two processes on 1 thread started together;
throughput is steps per second summed over the processes (each process's median step time),
and the ratio is pair / single, measured in the same run. A ratio above 1 says that a workflow
with at least two such jobs waiting finishes sooner with ``--set-threads train_model=1
pretrain_autoencoder=1``; a single job (the last one, or a config of one run) still runs
faster on 2 threads. Needs 2 quiet cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from bench_omp_wait import STEP

from mixlib.pipeline import OPENMP_WAIT_VARIABLES, openmp_wait_defaults


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES}
    openmp_wait_defaults(env)
    return env


def run_processes(n: int, threads: int, steps: int, kind: str) -> list[float]:
    """Start ``n`` processes of ``threads`` threads each timing ``steps`` steps of ``kind``
    together; their median ms per step."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STEP, str(threads), str(steps), kind],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"step process failed ({p.returncode})")
        out.append(float(stdout.split()[1]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args(argv)
    print(f"{os.cpu_count()} CPUs; median ms per step; throughput in steps/s summed over processes")
    for kind in ("ae", "mixmate"):
        (single,) = run_processes(1, 2, args.steps, kind)
        pair = run_processes(2, 1, args.steps, kind)
        t_single = 1e3 / single
        t_pair = sum(1e3 / ms for ms in pair)
        print(
            f"{kind:8s} one job x 2 threads {single:6.1f} ms ({t_single:5.2f} steps/s)   "
            f"two jobs x 1 thread {pair[0]:6.1f} / {pair[1]:6.1f} ms ({t_pair:5.2f} steps/s)   "
            f"pair / single {t_pair / t_single:.2f}x"
        )


if __name__ == "__main__":
    main()
