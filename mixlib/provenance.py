"""What made a result: the command, configs, code version and time of a workflow invocation.

The workflow's ``onstart`` writes :func:`invocation` to ``results/provenance/invocation.json``
(and appends it to ``invocations.jsonl``); the aggregate job turns it, with the jobs' own
benchmark files, into the lines printed under a published table (:func:`describe`).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

# The lines :func:`describe` writes under a published table, in its order; :func:`read_notes`
# reads them back from the table's Markdown (mixlib.combine cites each table it takes rows from).
NOTE_KEYS = ("command", "config", "commit", "invocation", "earlier invocations", "jobs wall time")
# How the ``jobs wall time`` line names the jobs of a sweep's points that no main table counts
# (mixlib.parts adds them to a part's total).
OWN_JOBS = "its points outside the main tables:"


def git_commit(repo: str | os.PathLike) -> str:
    """``<sha>`` of ``HEAD`` in ``repo``, with ``-dirty`` when tracked files differ from it;
    ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``model name`` of /proc/cpuinfo on Linux, else
    :func:`platform.processor`), ``""`` when unknown: wall times depend on it as much as on
    the core count (a 70k part: ~3 h on a 2-core AMD EPYC, README "Full scale")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor()


def invocation(repo, configfiles, argv=None) -> dict:
    """The facts of this invocation: command line, config files, commit, start time, host."""
    argv = list(sys.argv if argv is None else argv)
    configs = [Path(c) for c in configfiles]
    if "--replace-workflow-config" in argv:  # the Snakefile's own configfile was not used
        named = {Path(a).resolve() for a in argv}
        configs = [c for c in configs if c.resolve() in named]
    return {
        "command": " ".join([Path(argv[0]).name, *argv[1:]]) if argv else "",
        "configs": [_relative(c, repo) for c in configs],
        "commit": git_commit(repo),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "host_cpu": cpu_model(),
        "host": socket.gethostname(),
    }


def _relative(path: Path, repo) -> str:
    """``path`` relative to the repository when it lies in it (no machine paths in tables)."""
    try:
        return str(path.resolve().relative_to(Path(repo).resolve()))
    except ValueError:
        return str(path)


def write_invocation(path: str | os.PathLike, info: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1))
    with open(path.with_name("invocations.jsonl"), "a") as f:
        f.write(json.dumps(info) + "\n")


def jobs_seconds(benchmarks) -> tuple[float, int]:
    """(sum of the wall-clock seconds, number of files) over Snakemake benchmark TSVs that
    exist (column ``s``)."""
    total, n = 0.0, 0
    for p in benchmarks:
        if not Path(p).is_file():
            continue
        with open(p) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows:
            total += float(rows[-1]["s"])
            n += 1
    return total, n


def _started(record: dict) -> float | None:
    """An invocation record's start as a POSIX timestamp (None when unreadable)."""
    try:
        return datetime.fromisoformat(str(record.get("started"))).timestamp()
    except ValueError:
        return None


def _earlier_invocations(log: Path, current: dict, benchmarks=()) -> list[str]:
    """The invocations recorded in ``log`` before ``current`` in the same results directory
    that made jobs behind the table, each as ``started, commit (10 characters), command``: a
    table can hold outputs that an earlier invocation made (at another commit) and Snakemake
    did not rerun.

    A job is the work of the last invocation started before its benchmark file was written
    (the file's modification time); an earlier invocation none of whose jobs are behind the
    table (another part of a config run in the same results directory, say) is left out, and
    each one listed says how many it made and when the last of them ended (mixlib.parts adds
    that span to a part's wall time: a part run in several invocations). This assumes the
    invocations of one results directory ran one after another (two at once, on disjoint
    outputs, would have the later-started one credited with the other's later jobs) and that
    the benchmark files kept their times (copies made with ``cp -a``). Without existing
    benchmark files every earlier invocation is listed, as it may have made the table's
    outputs."""
    if not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def is_current(r):
        key = ("started", "commit")
        return [r.get(k) for k in key] == [current.get(k) for k in key]

    def label(r):
        commit = str(r.get("commit", "unknown"))[:10]
        return f"{r.get('started')} `{commit}` `{r.get('command', '')}`"

    mtimes = [Path(b).stat().st_mtime for b in benchmarks if Path(b).is_file()]
    if not mtimes:
        return [label(r) for r in rows if not is_current(r)]
    starts = sorted(((t, i) for i, r in enumerate(rows) if (t := _started(r)) is not None))
    made = {}  # invocation -> the modification times of the jobs it made
    for m in mtimes:
        before = [i for t, i in starts if t <= m]
        if before:
            made.setdefault(before[-1], []).append(m)
    return [
        f"{label(rows[i])} (made {len(made[i])} of its jobs, the last "
        f"{(max(made[i]) - _started(rows[i])) / 60:.1f} min after its start)"
        for i in sorted(made)
        if not is_current(rows[i])
    ]


def resumed_seconds(infos) -> tuple[float, int]:
    """(sum of ``resumed_seconds``, number of jobs with any) over training jobs' ``info.json``
    files that exist: the saved work of earlier attempts that a resumed job built on, which
    Snakemake's benchmark file (the last attempt's) does not count. A shared pre-training job's
    (``pretrained``: its path and resumed seconds, in the info of every model that loaded it)
    counts once."""
    per_job = {}
    for p in infos:
        if not Path(p).is_file():
            continue
        info = json.loads(Path(p).read_text())
        per_job[str(p)] = float(info.get("resumed_seconds") or 0.0)
        pre = info.get("pretrained") or {}
        if pre.get("path"):
            per_job[pre["path"]] = float(pre.get("resumed_seconds") or 0.0)
    resumed = [s for s in per_job.values() if s > 0]
    return sum(resumed), len(resumed)


def describe(invocation_path, benchmarks=(), infos=(), own=None) -> dict:
    """Lines of provenance for a table: the invocation that wrote it (when recorded), the
    earlier invocations recorded in the same results directory that made jobs behind it, and
    the summed wall time of those jobs (their benchmark files, plus the earlier attempts' saved
    work that resumed training jobs record in their ``infos``).

    ``own``, a subset of ``benchmarks`` (a sweep's points that are no main table's runs), is
    also summed on its own, so that a total over several tables counts each job once."""
    out = {}
    p = Path(invocation_path) if invocation_path else None
    if p is not None and p.is_file():
        info = json.loads(p.read_text())
        out["command"] = f"`{info.get('command', '')}`"
        out["config"] = ", ".join(info.get("configs", []))
        out["commit"] = info.get("commit", "unknown")
        started = info.get("started")
        if started:
            now = datetime.now(UTC)
            elapsed = (now - datetime.fromisoformat(started)).total_seconds()
            out["invocation"] = (
                f"started {started}, table written {now.isoformat(timespec='seconds')} "
                f"({elapsed / 60:.1f} min) on {info.get('host_cpus')} CPU(s)"
            )
            if info.get("host_cpu"):
                out["invocation"] += f" ({info['host_cpu']})"
        earlier = _earlier_invocations(p.with_name("invocations.jsonl"), info, benchmarks)
        if earlier:
            out["earlier invocations"] = (
                "; ".join(earlier) + " (outputs they made and this one kept are in the table)"
            )
    seconds, n = jobs_seconds(benchmarks)
    earlier, n_resumed = resumed_seconds(infos)
    if n:
        out["jobs wall time"] = (
            f"{(seconds + earlier) / 60:.1f} min summed over the {n} benchmarked jobs behind the "
            "table (whichever invocation ran them)"
        )
        if n_resumed:
            out["jobs wall time"] += (
                f", of which {earlier / 60:.1f} min by earlier attempts that {n_resumed} resumed "
                "training or pre-training job(s) built on (their info.json)"
            )
        if own is not None:
            own_seconds, n_own = jobs_seconds(own)
            out["jobs wall time"] += f"; {OWN_JOBS} {own_seconds / 60:.1f} min over {n_own} job(s)"
    return out


def read_notes(markdown: str | os.PathLike) -> dict:
    """The provenance lines (``NOTE_KEYS``) under the title of a published Markdown table, as
    :func:`describe` wrote them; lines before the table only."""
    out = {}
    for line in Path(markdown).read_text().splitlines():
        if line.startswith("|"):
            break
        key, sep, value = line.partition(": ")
        if sep and key in NOTE_KEYS:
            out[key] = value.strip()
    return out
