"""End-to-end: the real Snakefile on the tiny config, in a temporary directory."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
from helpers import (
    ROOT,
    SNAKEMAKE,
    job_logs,
    load_config,
    mlflow_runs,
    planned_priorities,
    run_snakemake,
)

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("tiny")
    cfg = load_config()
    cfg["tracking"]["defer"] = False  # jobs log live: 4 parallel writers on one sqlite store
    p = run_snakemake(wd, "--cores", "4", config=cfg)
    return wd, p


def test_tables_and_figures(tiny_run):
    wd, _ = tiny_run
    long = pd.read_csv(wd / "results/tables/long.csv")
    # 2 seeds x (kmeans/none + gmm/kmeans + gmm/random) trained; gmm also scored at INIT
    assert len(long[long.model != "init"]) == 2 * (1 + 2 * 2)
    assert len(long[long.model == "init"]) == 2 * 2
    md = (wd / "results/tables/blobs.md").read_text()
    assert "kmeans TRAIN" in md and "(n=2)" in md and "**" in md and "± " in md
    assert (wd / "results/tables/blobs.tex").read_text().count(r"\toprule") == 1
    assert (wd / "results/figures/blobs_metrics.png").stat().st_size > 1000
    assert long.loc[long.method == "kmeans TRAIN", "acc"].min() > 0.95  # well separated blobs


def test_one_mlflow_run_per_job(tiny_run):
    wd, p = tiny_run
    n_jobs = sum(1 for line in p.stderr.splitlines() if line.startswith("Finished jobid")) - 1
    runs = mlflow_runs(f"sqlite:///{wd}/results/mlflow/mlflow.db")
    jobs = runs[runs["tags.mixlib.rule"] != "workflow"]
    assert len(jobs) == n_jobs == 1 + 4 + 6 + 6 + 1
    assert (jobs.status == "FINISHED").all()
    parent = runs[runs["tags.mixlib.rule"] == "workflow"]
    assert len(parent) == 1
    assert set(jobs["tags.mlflow.parentRunId"]) == {parent.run_id.iloc[0]}
    assert jobs["tags.mixlib.invocation"].nunique() == 1
    train = jobs[jobs["tags.mixlib.rule"] == "train_model"]
    assert train["metrics.fit_seconds"].notna().all()
    assert "database is locked" not in p.stderr


def test_rerun_is_noop_and_same_seed_same_numbers(tiny_run):
    wd, _ = tiny_run
    p = run_snakemake(wd, "--cores", "2", "-n")
    assert "Nothing to be done" in p.stdout + p.stderr
    rec = wd / "results/eval/blobs/gmm/random/seed1.json"
    before = json.loads(rec.read_text())
    run_snakemake(wd, "--cores", "2", "--forcerun", "train_model", "--until", "evaluate")
    after = json.loads(rec.read_text())
    key = lambda rs: [(r["stage"], r["nmi"], r["ari"], r["acc"]) for r in rs]  # noqa: E731
    assert key(before) == key(after)
    runs = mlflow_runs(f"sqlite:///{wd}/results/mlflow/mlflow.db")
    assert runs["tags.mixlib.invocation"].nunique() == 2  # the two invocations are told apart
    # the second invocation ran deferred (tiny.yaml's default): its 6 train and 6 evaluate jobs
    # were spooled and logged when it ended, nothing left in the spool
    last = runs.sort_values("start_time")["tags.mixlib.invocation"].iloc[-1]
    second = runs[runs["tags.mixlib.invocation"] == last]
    rules = second["tags.mixlib.rule"].value_counts().to_dict()
    assert rules == {"workflow": 1, "train_model": 6, "evaluate": 6}, rules
    wf = second.loc[second["tags.mixlib.rule"] == "workflow", "run_id"].item()
    assert set(second.loc[second["tags.mixlib.rule"] != "workflow", "tags.mlflow.parentRunId"]) == {
        wf
    }
    assert (second.status == "FINISHED").all()
    assert not list((wd / "results/mlflow/spool").iterdir())
    # a record names the MLflow run of the job that trained its labels (tag mixlib.job_key)
    train_keys = set(second.loc[second["tags.mixlib.rule"] == "train_model", "tags.mixlib.job_key"])
    assert {r["job_key"] for r in after} <= train_keys


def test_changing_one_model_reruns_only_its_jobs(tiny_run):
    wd, _ = tiny_run
    cfg = load_config()
    cfg["models"]["gmm"]["params"]["covariance_type"] = "full"
    p = run_snakemake(wd, "-n", "--cores", "1", config=cfg)
    out = p.stdout
    assert "rule train_model" in out
    assert "model=kmeans" not in out and "model=gmm" in out


def test_more_seeds_on_the_command_line_fit_only_the_new_seeds(tiny_run):
    """A config run for some seeds first (``--config seeds=[...]``, strings from Snakemake's
    parser), then for more: only the new seed's jobs are planned, the finished ones reused."""
    wd, _ = tiny_run
    p = run_snakemake(wd, "-n", "--cores", "1", "--config", "seeds=[0,1,2]")
    jobs = re.findall(r"wildcards: .*seed=(\d+)", p.stdout)
    assert jobs and set(jobs) == {"2"}, p.stdout[-3000:]


def test_html_report_has_every_table_and_figure_with_a_caption(tiny_run):

    wd, _ = tiny_run
    run_snakemake(wd, "--report", "report.html")
    html = (wd / "report.html").read_text()
    # the report's results: {"results/tables/long.csv": {"caption": "<p>...", ...}, ...}
    m = re.search(r"var results = (\{.*?\});?\s*\n", html)
    assert m, "no results in report.html"
    results = json.loads(m.group(1))
    produced = {
        str(f.relative_to(wd))
        for d in ("results/tables", "results/figures")
        for f in (wd / d).rglob("*")
        if f.is_file()
    }
    assert len(produced) >= 6  # long, summary, blobs.md/.tex/.csv, blobs_metrics.png
    assert produced <= set(results), f"not in the report: {sorted(produced - set(results))}"
    no_caption = [f for f in produced if len(re.sub("<[^>]+>", "", results[f]["caption"])) < 40]
    assert not no_caption, f"no caption: {no_caption}"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(bogus=1), "bogus"),
        (lambda c: c["seeds"].__setitem__(0, "x"), "seeds"),
        (lambda c: c["models"]["gmm"].update(inits=["nope"]), "models.gmm.inits"),
        (lambda c: c["models"]["gmm"]["params"].update(lr=1), "models.gmm.params"),
        (lambda c: c["models"]["gmm"].update(kind="nope"), "models.gmm.kind"),
        (lambda c: c["datasets"]["blobs"]["preprocess"].update(scale="zz"), "scale"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, mutate, message):
    cfg = load_config()
    mutate(cfg)
    p = run_snakemake(tmp_path, "-n", "--cores", "1", config=cfg, check=False)
    assert p.returncode != 0
    assert message in p.stdout + p.stderr
    assert not (tmp_path / "results").exists()


def test_bad_dataset_file_fails_with_its_name(tmp_path):
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, feature=np.zeros((10, 2)))
    cfg = load_config()
    cfg["datasets"] = {"own": {"source": "npz", "path": str(bad)}}
    cfg["tracking"]["enabled"] = False
    p = run_snakemake(tmp_path, "--cores", "1", config=cfg, check=False)
    assert p.returncode != 0
    log = (tmp_path / "results/logs/prepare_dataset/own.log").read_text()
    assert "missing key(s) ['target']" in log and str(bad) in log
    assert not (tmp_path / "results/data/own.npz").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_server(tmp_path):
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    server_log = tmp_path / "server.log"
    log_file = server_log.open("w")
    srv = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    wd = tmp_path / "wd"
    p = None

    def context():
        out = f"\n--- mlflow server log:\n{server_log.read_text(errors='replace')[-3000:]}"
        if p is not None:
            out += f"\n--- snakemake stdout:\n{p.stdout[-3000:]}\n--- stderr:\n{p.stderr[-5000:]}"
            out += job_logs(wd)
        return out

    def rest(path, body=None):
        req = urllib.request.Request(
            f"{uri}/api/2.0/mlflow/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            return json.load(urllib.request.urlopen(req, timeout=30))
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path}: HTTP {e.code} {e.read()[:500]!r}{context()}") from e

    try:
        # a loaded machine can take minutes (imports, DB migrations) before /health answers
        deadline = time.monotonic() + 300
        while True:
            assert srv.poll() is None, f"mlflow server exited ({srv.returncode}){context()}"
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"no /health after 300 s{context()}"
                time.sleep(0.5)
        cfg = load_config()
        cfg["seeds"] = [0]
        cfg["models"] = {"kmeans": cfg["models"]["kmeans"]}
        cfg["tracking"]["uri"] = uri
        p = run_snakemake(wd, "--cores", "2", config=cfg)
        # the runs went to the server, not to a store picked up from elsewhere
        assert f"MLflow: {uri} experiment 'tiny'" in p.stdout + p.stderr, context()
        assert not (wd / "results/mlflow/mlflow.db").exists(), context()
        assert not list((wd / "results/mlflow/spool").iterdir()), context()  # all synced
        exp = rest("experiments/get-by-name?experiment_name=tiny")["experiment"]["experiment_id"]
        runs = rest("runs/search", {"experiment_ids": [exp], "max_results": 1000}).get("runs", [])
        rules = [
            next(t["value"] for t in r["data"]["tags"] if t["key"] == "mixlib.rule") for r in runs
        ]
        # prepare 1 + train 1 + evaluate 1 + aggregate 1 (k-means starts from no init, so no
        # init job runs), and the workflow's parent run
        assert sorted(rules).count("workflow") == 1 and len(rules) == 5, f"{rules}{context()}"
        assert "initialize" not in rules
        train = next(r for r in runs if any(t["value"] == "train_model" for t in r["data"]["tags"]))
        assert {m["key"] for m in train["data"]["metrics"]} >= {"fit_seconds", "n_parameters"}
        assert any(q["key"] == "kind" for q in train["data"]["params"])
    finally:
        os.killpg(srv.pid, 15)
        srv.wait(timeout=30)
        log_file.close()


def test_lint_only_conda_warnings():
    p = subprocess.run(
        [
            *SNAKEMAKE,
            "--lint",
            "-s",
            str(ROOT / "Snakefile"),
            "--configfile",
            str(ROOT / "config/tiny.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    text = p.stdout + p.stderr
    lints = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(("*", "Lints for"))]
    # snakemake --lint exits 1 when it prints lints; a crash (e.g. a config error) prints none:
    # the one lint allowed (no conda/container directives) must be there for every rule
    assert p.returncode in (0, 1) and "Traceback" not in text, text
    assert any(ln.startswith("Lints for rule") for ln in lints), text
    assert any("conda" in ln.lower() for ln in lints), text
    other = [
        ln
        for ln in lints
        if ln.startswith("*") and "conda" not in ln.lower() and "container" not in ln.lower()
    ]
    assert not other, text


SHIPPED_CONFIGS = [
    ("config", 86),
    ("experiments", 39),
    ("paper", 810),
    ("table1", 69),
    ("tiny", 19),
    ("biglearn", 362),
    ("gmm_mnist", 5),
    ("dpkm", 65),
    ("dpkm_mnist", 23),
    ("dpkm_mnist_pretrain_200", 17),
    ("dec", 59),
    ("dec_mnist", 14),
    ("dec_mnist_more", 23),
    ("dec_fashion", 23),
    ("n2d_mnist", 9),
    ("n2d_mnist_more", 13),
    ("n2d_fashion", 17),
    ("umap_init", 79),
    ("umap_equal", 39),
    ("umap_ensemble", 21),
    ("mixmate_umap", 21),
    ("mixmate_umap_fashion", 21),
    ("deep_70k", 97),
    ("kdae", 43),
    ("mixmate_native", 81),
    ("mixmate_masked_native", 8),
]


@pytest.mark.unit
def test_every_shipped_config_is_checked():
    """The dry-run test below covers every config file in config/ (the schema and the parts
    file of config/paper.yaml aside: tests/test_parts.py checks that one)."""
    files = {p.stem for p in (ROOT / "config").glob("*.yaml")} - {"schema", "paper_parts"}
    assert files == {name for name, _ in SHIPPED_CONFIGS}


@pytest.mark.parametrize("name, n_jobs", SHIPPED_CONFIGS)
def test_shipped_configs_pass_checks_and_plan(tmp_path, name, n_jobs):
    """Every config in config/ passes the schema and the config checks and plans its jobs
    (a dry run: no data is read); the job counts are the ones the README and comments state."""
    p = run_snakemake(tmp_path, "-n", config=load_config(name))
    total = [ln.split() for ln in p.stdout.splitlines() if ln.startswith("total")]
    assert total and int(total[0][1]) == n_jobs, p.stdout[-2000:]


def test_autoencoder_jobs_are_scheduled_first(tmp_path):
    """The hours-long jobs (the auto-encoder kinds' training and pre-training) carry a higher
    Snakemake priority than the minutes-long ones, so a small machine starts them first: in
    the plan of config/dec.yaml (DEC, IDEC, DCN, a shared pre-training, k-means)."""
    from mixlib.models import schedule_priority

    p = run_snakemake(tmp_path, "-n", config=load_config("dec"))
    assert planned_priorities(p.stdout) == {
        "pretrain": {1},
        "dec": {1},
        "idec": {1},
        "dcn": {1},
        "kmeans": {0},
    }
    assert schedule_priority("deep_power_kmeans") == 1
    assert schedule_priority("mixmate") == schedule_priority("gmm_em") == 0
    assert schedule_priority("mixmate", {"erase_prob": 0.9, "erase_frac": 0.25}) == 1
    assert schedule_priority("mixmate", {"erase_prob": 0.9, "erase_frac": 0.0}) == 0


def test_dotted_dataset_names_cross_table_provenance_and_publishing(tmp_path):
    """Two datasets whose names differ only after a dot each get their own tables (the paths
    the rule declares, never rebuilt); the cross-dataset table carries both, with the command
    and commit that made it, and publish_dir gets copies."""
    blobs = load_config()["datasets"]["blobs"]
    cfg = {
        "seeds": [0],
        "datasets": {"a.x": blobs, "a.y": {**blobs, "preprocess": {"scale": "minmax"}}},
        "inits": {"kmeans": {"method": "kmeans", "n_init": 2}},
        "models": {"kmeans": {"kind": "kmeans", "params": {"n_init": 2}}},
        "tracking": {"experiment": "tiny"},
        "reference_csv": None,
        "publish_dir": "published",
    }
    run_snakemake(tmp_path, "--cores", "2", config=cfg)
    for name in ("a.x", "a.y"):
        for ext in ("md", "tex", "csv"):
            assert (tmp_path / f"results/tables/{name}.{ext}").is_file()
        assert name in (tmp_path / f"results/tables/{name}.md").read_text()
    paper = (tmp_path / "results/tables/paper.md").read_text()
    assert "| method | a.x NMI | a.x ARI | a.x ACC | a.y NMI |" in paper
    assert "commit: " in paper and "command: `" in paper and "jobs wall time" in paper
    csv = pd.read_csv(tmp_path / "results/tables/paper.csv", comment="#", index_col=0)
    assert list(csv.index) == ["kmeans TRAIN"]
    published = sorted(p.name for p in (tmp_path / "published").iterdir())
    assert {"paper.md", "a.x.md", "a.y.csv", "long.csv", "a.x_metrics.png"} <= set(published)
