"""What made a table (mixlib.provenance): commit and dirty state, the configs that ran, the
jobs' summed wall time."""

import json
import subprocess
from pathlib import Path

from mixlib import provenance


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_commit_dirty_state_and_the_configs_that_ran(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    sha = provenance.git_commit(tmp_path)
    assert len(sha) == 40 and not sha.endswith("-dirty")
    (tmp_path / "a.txt").write_text("2")
    assert provenance.git_commit(tmp_path) == sha + "-dirty"
    assert provenance.git_commit(tmp_path / "nowhere") == "unknown"
    (tmp_path / "config").mkdir()
    own, mine = tmp_path / "config/config.yaml", tmp_path / "config/table1.yaml"
    argv = ["snakemake", "--configfile", str(mine), "--replace-workflow-config"]
    info = provenance.invocation(tmp_path, [own, mine], argv)
    assert info["configs"] == ["config/table1.yaml"]  # the replaced default is not listed
    assert info["command"] == " ".join(argv)
    assert provenance.invocation(tmp_path, [own], ["snakemake"])["configs"] == [
        "config/config.yaml"
    ]


def test_invocation_records_the_cpu_model(tmp_path):
    """Wall times depend on the CPU, not only on how many: the invocation names its model."""
    info = provenance.invocation(tmp_path, [], ["snakemake"])
    assert info["host_cpu"] == provenance.cpu_model()
    if Path("/proc/cpuinfo").is_file():  # Linux: the kernel's name for it
        assert info["host_cpu"] and info["host_cpu"] in Path("/proc/cpuinfo").read_text()


def test_describe_sums_the_jobs_wall_time(tmp_path):
    for i, s in enumerate((60.0, 120.0)):
        (tmp_path / f"{i}.tsv").write_text(f"s\th:m:s\tmax_rss\n{s}\t0:01:00\t10\n")
    inv = tmp_path / "invocation.json"
    provenance.write_invocation(inv, {"command": "snakemake -n", "configs": ["c.yaml"],
                                      "commit": "abc", "started": "2026-01-01T00:00:00+00:00",
                                      "host_cpus": 2, "host_cpu": "Test CPU @ 1 GHz"})  # fmt: skip
    out = provenance.describe(inv, [tmp_path / "0.tsv", tmp_path / "1.tsv", tmp_path / "x.tsv"])
    assert out["invocation"].endswith(" min) on 2 CPU(s) (Test CPU @ 1 GHz)")
    assert out["jobs wall time"].startswith("3.0 min summed over the 2 benchmarked jobs")
    assert out["command"] == "`snakemake -n`" and out["commit"] == "abc"
    assert set(out) <= set(provenance.NOTE_KEYS)  # what read_notes reads back from a table
    lines = (tmp_path / "invocations.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["commit"] == "abc"
    assert "earlier invocations" not in out  # the only invocation is the current one


def test_jobs_wall_time_counts_the_earlier_attempts_of_resumed_jobs(tmp_path):
    """A resumed job's benchmark file holds its last attempt only; the saved work it built on
    (``resumed_seconds`` in its info.json) is added and stated."""
    (tmp_path / "0.tsv").write_text("s\th:m:s\tmax_rss\n60.0\t0:01:00\t10\n")
    infos = []
    for i, s in enumerate((0.0, 240.0)):
        infos.append(tmp_path / f"info{i}.json")
        infos[-1].write_text(json.dumps({"fit_seconds": 1.0, "resumed_seconds": s}))
    (tmp_path / "old.json").write_text(json.dumps({"fit_seconds": 1.0}))  # before the key
    out = provenance.describe(None, [tmp_path / "0.tsv"], [*infos, tmp_path / "old.json",
                                                           tmp_path / "missing.json"])  # fmt: skip
    assert out["jobs wall time"] == (
        "5.0 min summed over the 1 benchmarked jobs behind the table (whichever invocation ran "
        "them), of which 4.0 min by earlier attempts that 1 resumed training or pre-training "
        "job(s) built on (their info.json)"
    )
    assert provenance.resumed_seconds([]) == (0.0, 0)
    # a resumed pre-training job, shared by two models (each info names it): counted once
    pre = {"path": "results/pretrain/m/dec-1/seed0/autoencoder.pt", "resumed_seconds": 120.0}
    for i in (2, 3):
        infos.append(tmp_path / f"info{i}.json")
        infos[-1].write_text(json.dumps({"resumed_seconds": 0.0, "pretrained": pre}))
    assert provenance.resumed_seconds(infos) == (360.0, 2)


def test_describe_names_the_earlier_invocations_of_the_same_results(tmp_path):
    inv = tmp_path / "invocation.json"
    for commit, started in (("1111111111aa", "2026-01-01T00:00:00+00:00"),
                            ("2222222222bb", "2026-01-02T00:00:00+00:00")):  # fmt: skip
        provenance.write_invocation(
            inv, {"command": "snakemake --cores 2", "configs": ["c.yaml"], "commit": commit,
                  "started": started, "host_cpus": 2})  # fmt: skip
    out = provenance.describe(inv)
    assert out["commit"] == "2222222222bb"
    assert out["earlier invocations"].startswith(
        "2026-01-01T00:00:00+00:00 `1111111111` `snakemake --cores 2` (outputs they made"
    )
    assert "2222222222" not in out["earlier invocations"]


def test_earlier_invocations_are_those_that_made_the_tables_jobs(tmp_path):
    """Each job is the work of the last invocation started before its benchmark file was
    written: an earlier invocation that made none of a table's jobs (another part run in the
    same results directory) is not named under it; one that did says how many."""
    import os
    from datetime import datetime

    inv = tmp_path / "invocation.json"
    starts = ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]
    for commit, started in zip(("aaaaaaaaaa11", "bbbbbbbbbb22", "cccccccccc33"), starts):
        provenance.write_invocation(
            inv, {"command": f"snakemake {commit[0]}", "configs": [], "commit": commit,
                  "started": started, "host_cpus": 2})  # fmt: skip

    def ts(day, hour):
        return datetime.fromisoformat(f"2026-01-0{day}T{hour:02d}:00:00+00:00").timestamp()

    benches = []
    for i, when in enumerate((ts(1, 5), ts(1, 6), ts(3, 1))):  # two jobs of a, one of c
        benches.append(tmp_path / f"{i}.tsv")
        benches[-1].write_text("s\th:m:s\tmax_rss\n60.0\t0:01:00\t10\n")
        os.utime(benches[-1], (when, when))
    out = provenance.describe(inv, benches)
    assert out["earlier invocations"] == (
        "2026-01-01T00:00:00+00:00 `aaaaaaaaaa` `snakemake a` (made 2 of its jobs, the last "
        "360.0 min after its start) (outputs they made and this one kept are in the table)"
    )  # b made none of them; c is the current invocation
    assert "earlier invocations" not in provenance.describe(inv, benches[2:])
    # without benchmark files, every earlier invocation may have made the outputs: all named
    assert (
        "`bbbbbbbbbb`" in provenance.describe(inv, [tmp_path / "none.tsv"])["earlier invocations"]
    )


def test_a_sweeps_own_jobs_are_summed_apart(tmp_path):
    """A sweep's points that are main-table runs are counted under the main table: the jobs
    wall time line also sums the others, which mixlib.parts adds to a part's total."""
    for i, s in enumerate((60.0, 120.0, 180.0)):
        (tmp_path / f"{i}.tsv").write_text(f"s\th:m:s\tmax_rss\n{s}\t0:01:00\t10\n")
    benches = [tmp_path / f"{i}.tsv" for i in range(3)]
    out = provenance.describe(None, benches, own=benches[1:])
    assert out["jobs wall time"].startswith("6.0 min summed over the 3 benchmarked jobs")
    assert out["jobs wall time"].endswith(f"; {provenance.OWN_JOBS} 5.0 min over 2 job(s)")
    assert provenance.OWN_JOBS not in provenance.describe(None, benches)["jobs wall time"]
