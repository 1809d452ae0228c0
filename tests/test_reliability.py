"""Killed runs: a rerun finishes the work without redoing finished jobs or trusting half-written
outputs; outputs are written atomically (mixlib.utils.atomic_path)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, load_config

pytestmark = pytest.mark.workflow

# tiny.yaml on one seed: 10 jobs (prepare, 2 inits, 3 trainings, 3 evaluations, aggregate), a few
# seconds each, two at a time
CONFIG = load_config()
CONFIG["seeds"] = [0]
N_JOBS = 10


# `python -m snakemake` with Ctrl-C handled as in a terminal. A process started in the background
# by a non-interactive shell (`pytest ... &`, nohup) inherits SIGINT ignored, and Python keeps
# an ignored SIGINT ignored: the run then went on after the test's SIGINT ("killed too late",
# whenever the suite ran in the background).
RUN_SNAKEMAKE = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'snakemake'; runpy.run_module('snakemake', run_name='__main__', alter_sys=True)"
)


def start(workdir: Path, log: Path, *args) -> subprocess.Popen:
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cmd = [sys.executable, "-c", RUN_SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(cfg), "--replace-workflow-config", "--cores", "2", *args]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with log.open("w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )


def finished_outputs(log_text: str) -> set[str]:
    """The outputs of the jobs that Snakemake reported finished, from its log."""
    outputs, done = {}, set()
    block = None
    for line in log_text.splitlines():
        s = line.strip()
        if s.startswith("output:"):
            block = [o.strip() for o in s[len("output:") :].split(",")]
        elif s.startswith("jobid:") and block is not None:
            outputs[int(s.split()[1])] = block
            block = None
        elif m := re.match(r"Finished jobid: (\d+)", s):
            done.add(int(m.group(1)))
    return {o for j in done for o in outputs.get(j, [])}


def mtimes(workdir: Path) -> dict[str, int]:
    res = workdir / "results"
    skip = ("results/logs/", "results/benchmarks/", "results/mlflow/")
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime_ns
        for p in res.rglob("*")
        if p.is_file()
        and not str(p.relative_to(workdir)).startswith(skip)
        and not p.name.startswith(".")  # atomic_path's temporaries of killed writers
    }


def assert_readable(path: Path):
    """Every kind of output the workflow writes parses completely."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".npy":
        np.load(path)
    elif path.suffix == ".npz":
        with np.load(path) as f:
            for k in f.files:
                f[k]
    elif path.suffix == ".csv":
        pd.read_csv(path)
    elif path.suffix == ".png":
        assert path.read_bytes()[-8:] == b"IEND\xaeB`\x82", path  # PNG trailer: not cut short


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_run_resumes_without_redoing_finished_jobs(tmp_path, sig):
    log1 = tmp_path / "first.log"
    proc = start(tmp_path, log1)
    try:
        # Kill at the worst moment: a training job has written its labels and info (complete
        # files at their final paths) but has not finished (figures, MLflow still to come).
        # Freeze the whole run there (SIGSTOP) so that what we see is what gets killed.
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"finished before it could be killed:\n{log1.read_text()}"
            assert time.monotonic() < deadline, log1.read_text()
            if written_unfinished(tmp_path, log1.read_text()):
                os.killpg(proc.pid, signal.SIGSTOP)
                if written_unfinished(tmp_path, log1.read_text()):
                    break
                os.killpg(proc.pid, signal.SIGCONT)  # it finished meanwhile: wait for the next
            time.sleep(0.02)
        unfinished = written_unfinished(tmp_path, log1.read_text())
        at_kill = mtimes(tmp_path)
        os.killpg(proc.pid, sig)  # like Ctrl-C in a terminal, or the OOM killer / a lost node
        os.killpg(proc.pid, signal.SIGCONT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # what the run left when it stopped: the jobs it reported finished, the files on disk
    text1 = log1.read_text()
    done = finished_outputs(text1)
    before = mtimes(tmp_path)
    assert len(jobs_finished(text1)) >= 3 and done and unfinished, text1
    assert set(unfinished) <= set(at_kill)
    assert not (tmp_path / "results/tables/long.csv").exists(), "killed too late"
    if sig == signal.SIGKILL:  # nothing could clean up: the half-done job's files are all there
        assert set(unfinished) <= set(mtimes(tmp_path))

    if sig == signal.SIGKILL:  # no chance to release the lock: the documented step is --unlock
        p = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
            + ["-d", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")]
            + ["--replace-workflow-config", "--unlock"],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 0, p.stdout + p.stderr

    log2 = tmp_path / "rerun.log"
    proc = start(tmp_path, log2)
    assert proc.wait(timeout=900) == 0, f"rerun failed:\n{log2.read_text()[-6000:]}"
    text2 = log2.read_text()
    after = mtimes(tmp_path)

    # finished jobs are not run again: their outputs are untouched, and the two runs together
    # ran every job exactly once
    redone = sorted(o for o in before if finished(o, done) and after.get(o) != before[o])
    assert not redone, f"finished before the kill, recomputed: {redone}\n{text2}"
    assert len(jobs_finished(text1)) + len(jobs_finished(text2)) == N_JOBS, text1 + text2
    # an output present after the kill whose job had not finished (cut short, or complete but
    # its job not) is never taken as done: it is written again
    kept = sorted(o for o in before if not finished(o, done) and after.get(o) == before[o])
    assert not kept, f"outputs of unfinished jobs kept as they were: {kept}\n{text2}"
    for rel in after:
        assert_readable(tmp_path / rel)
    long = pd.read_csv(tmp_path / "results/tables/long.csv")
    assert len(long) == 2 + 3 + 2  # init records, trained models, gmm's INIT scores


def written_unfinished(workdir: Path, log_text: str) -> list[str]:
    """Training outputs on disk whose job Snakemake has not reported finished."""
    done = finished_outputs(log_text)
    if len(jobs_finished(log_text)) < 3:  # data and both initialisations first
        return []
    return [
        str(p.relative_to(workdir))
        for p in (workdir / "results/train").rglob("info.json")
        if str(p.relative_to(workdir)) not in done
    ]


def finished(path: str, done: set[str]) -> bool:
    """Whether ``path`` is an output (or in a directory output) of a finished job."""
    return path in done or any(path.startswith(d + "/") for d in done)


def jobs_finished(log_text: str) -> list[str]:
    """The jobs (other than the `all` target) a run reported finished."""
    return re.findall(r"Finished jobid: \d+ \(Rule: (?!all\))(\w+)\)", log_text)


def test_atomic_path_leaves_nothing_when_the_writer_is_killed(tmp_path):
    target = tmp_path / "out" / "record.json"
    code = (
        "import os, signal, sys\n"
        "from mixlib.utils import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('{\"half\": ')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT)
    assert p.returncode == -signal.SIGKILL
    assert not target.exists()
    # all that is left is the hidden temporary beside it, which nothing takes for an output
    left = [f.name for f in target.parent.iterdir()]
    assert len(left) == 1 and left[0].startswith(".record.json.") and ".tmp" in left[0]

    from mixlib.utils import atomic_path, write_json

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("job failed")
    assert not target.exists()
    assert len(list(target.parent.iterdir())) == 1  # a failing block removes its temporary
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


def test_atomic_path_gives_a_plain_file_s_permissions(tmp_path):
    """Not the temporary's 0600: results on a shared filesystem stay readable by the group."""
    import stat

    from mixlib.utils import atomic_path, write_json

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_json(tmp_path / "a.json", {"a": 1})
    with atomic_path(tmp_path / "b.npz") as tmp:
        np.savez(tmp, x=np.zeros(2))
    old = os.umask(0o027)  # a group-shared project's umask
    try:
        write_json(tmp_path / "c.json", {"c": 1})
    finally:
        os.umask(old)
    mode = stat.S_IMODE
    assert mode((tmp_path / "a.json").stat().st_mode) == mode(plain.stat().st_mode)
    assert mode((tmp_path / "b.npz").stat().st_mode) == mode(plain.stat().st_mode)
    assert mode((tmp_path / "c.json").stat().st_mode) == 0o640


def test_atomic_path_never_sets_the_umask(tmp_path, monkeypatch):
    """Reading the umask means setting it, a window in which another thread's files would get
    the wrong mode: the kernel applies it when the temporary is created instead."""
    from mixlib.utils import write_json

    def no_umask(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", no_umask)
    write_json(tmp_path / "a.json", {"a": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
