"""The tiny workflow through ``profiles/slurm`` on a real SLURM cluster, against a local run.

CI (``.ci/run``) starts a one-node cluster on localhost with ``.ci/start_slurm.sh`` (partitions
``cpu`` and ``gpu``, the names ``profiles/slurm/partitions.yaml`` uses; the ``gpu`` partition
advertises one fake GPU). Elsewhere the test is skipped when no cluster answers; with ``CI=true``
it fails instead, so that CI cannot pass without having run it.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, load_config

PROFILE = ROOT / "profiles/slurm"
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

# tiny.yaml, cut to what shows the profile at work in few jobs (every SLURM job starts Python
# three times): one CPU model and one torch model (gpu=1 -> the gpu partition), one seed,
# overlapping blobs so that the methods give different numbers.
CONFIG = load_config()
CONFIG["seeds"] = [0]
CONFIG["datasets"]["blobs"]["synthetic"]["separation"] = 2.5
CONFIG["inits"] = {"kmeans": CONFIG["inits"]["kmeans"]}
CONFIG["models"] = {
    "kmeans": CONFIG["models"]["kmeans"],
    "gmm_em": {
        "kind": "gmm_em",
        "params": {"covariance_type": "diag", "max_iter": 30},
        "inits": ["kmeans"],
    },
}
N_JOBS = 1 + 1 + 2 + 2 + 1  # prepare, init, train and evaluate x 2 models, aggregate


def cluster_problem() -> str | None:
    """Why the SLURM test cannot run here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client (sinfo/sbatch) on PATH"
    try:
        p = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a %T"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (slurmctld not running?)"
    if p.returncode != 0:
        return f"sinfo failed: {p.stderr.strip()}"
    states = {}
    for line in p.stdout.splitlines():
        name, avail, state = line.split()
        states[name.rstrip("*")] = (avail, state)
    wanted = yaml.safe_load((PROFILE / "partitions.yaml").read_text())["partitions"]
    for name in wanted:
        avail, state = states.get(name, ("missing", ""))
        if avail != "up" or not state.startswith(("idle", "mixed", "allocated", "completing")):
            return (
                f"partition {name!r} of profiles/slurm/partitions.yaml is {avail} {state}".strip()
            )
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = cluster_problem()
    if reason and IN_CI:
        pytest.fail(f"CI=true but SLURM is not usable: {reason}; .ci/start_slurm.sh starts it")
    if reason:
        pytest.skip(f"{reason} (as root, `.ci/start_slurm.sh` starts a one-node cluster)")


def snakemake(workdir: Path, *args, timeout=900):
    """Run the workflow on CONFIG in ``workdir``; on timeout kill it and cancel its SLURM jobs."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(cfg), "--replace-workflow-config", *args]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # the SLURM executor can ignore SIGTERM while it waits; jobs outlive it unless cancelled
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        _cancel_jobs_in(workdir)
        raise AssertionError(f"snakemake timed out after {timeout} s:\n{out[-6000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{out[-8000:]}{_logs(workdir)}"
        )
    return out


def _cancel_jobs_in(workdir: Path):
    p = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True)
    ids = [
        i for i, d in (ln.split(maxsplit=1) for ln in p.stdout.splitlines()) if d == str(workdir)
    ]
    if ids:
        subprocess.run(["scancel", *ids])


def _logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))
    logs += sorted((workdir / "results/logs").rglob("*.log"))
    return "".join(f"\n--- {p}:\n{p.read_text()[-2000:]}" for p in logs)


def test_slurm_profile_settings():
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert prof["executor"] == "slurm"
    # without accounting (slurmdbd) sacct fails and the plugin would wait forever
    assert prof["slurm-status-command"] == "squeue"
    assert (PROFILE / prof["slurm-partition-config"]).exists()
    # every rule that runs on the cluster (all but the local rules and the target `all`) has its
    # resources: the defaults' 30 minutes would kill a long job (DEC's pre-training on 70k)
    src = "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    rules = set(re.findall(r"^\s*rule (\w+):", src, flags=re.M)) - {"all"}
    local = set(re.findall(r"^localrules:\s*([\w\s,]+?)\n\n", src, flags=re.M)[0].split(","))
    rules -= {r.strip() for r in local}
    assert "pretrain_autoencoder" in rules and "download_dataset" not in rules
    missing = rules - set(prof["set-resources"])
    assert not missing, sorted(missing)
    assert all({"mem_mb", "runtime"} <= set(r) for r in prof["set-resources"].values())
    parts = yaml.safe_load((PROFILE / prof["slurm-partition-config"]).read_text())["partitions"]
    assert any(p.get("max_gpu", 0) >= 1 for p in parts.values())
    assert any(p.get("max_gpu", 0) == 0 for p in parts.values())


def test_slurm_run_equals_local_run(cluster, tmp_path):
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    # the profile as shipped (absolute path: its partition file is resolved against it), with
    # memory cut to what a CI machine has, and quicker status polls; runtimes stay
    small = [f"{rule}:mem_mb=800" for rule in prof["set-resources"]]
    out = snakemake(
        tmp_path / "slurm",
        "--profile", str(PROFILE),
        "--jobs", "4",
        "--default-resources", "mem_mb=800", "runtime=10",
        "--set-resources", *small,
        "--slurm-init-seconds-before-status-checks", "2",
        timeout=1500,
    )  # fmt: skip
    snakemake(tmp_path / "local", "--cores", "2")

    submitted = [ln for ln in out.splitlines() if "has been submitted with SLURM jobid" in ln]
    assert len(submitted) == N_JOBS, out[-4000:]
    # the torch model's training jobs go to the GPU partition, every other job to the CPU one
    chosen = [ln.split("'")[1] for ln in out.splitlines() if "Auto-selected partition" in ln]
    assert sorted(chosen) == ["cpu"] * (N_JOBS - 1) + ["gpu"], out[-4000:]

    s, loc = tmp_path / "slurm/results/tables", tmp_path / "local/results/tables"
    assert sorted(p.name for p in s.iterdir()) == sorted(p.name for p in loc.iterdir())
    for name in ("blobs.csv", "blobs.md", "blobs.tex"):  # rounded: must be identical
        assert (s / name).read_text() == (loc / name).read_text(), name
    keys = ["dataset", "method", "stage", "seed"]
    a = pd.read_csv(s / "long.csv").sort_values(keys, ignore_index=True)
    b = pd.read_csv(loc / "long.csv").sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(a[keys], b[keys])
    for col in ("nmi", "ari", "acc", "params", "n"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-12, atol=1e-12, err_msg=col)
    assert a["nmi"].round(9).nunique() == len(a) == 4  # the numbers compared all differ
    assert a["job_key"].notna().all() and not set(a["job_key"]) & set(b["job_key"])  # 2 runs
    sa = pd.read_csv(s / "summary.csv")
    sb = pd.read_csv(loc / "summary.csv")
    pd.testing.assert_frame_equal(sa, sb, check_exact=False, rtol=1e-12)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/slurm/results/mlflow/mlflow.db")
    try:
        runs = mlflow.search_runs(experiment_names=["tiny"], max_results=1000)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # set_tracking_uri exports it; don't leak
    jobs = runs[runs["tags.mixlib.rule"] != "workflow"]
    assert len(jobs) == N_JOBS and (jobs.status == "FINISHED").all()
    assert jobs["tags.slurm.job_id"].notna().all()  # every job ran inside a SLURM job
    assert set(a["job_key"]) <= set(jobs["tags.mixlib.job_key"])  # each row names its run
