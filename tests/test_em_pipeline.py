"""The Gaussian-mixture experiments in the workflow (rules/em.smk): an end-to-end run of the real
Snakefile on tiny data, bad `experiments` configs, and the mixlib functions behind the rules."""

import json
import re
import warnings
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from helpers import load_config, mlflow_runs, run_snakemake

from mixlib import em_experiments as em
from mixlib import plots
from mixlib.errors import ConfigError
from mixlib.plan import load_plan

REFERENCE_ROWS = [
    "source,dataset,method,stage,metric,mean,std,note",
    "biglearn_em_repo_notebook,gmm25_simulation,Joint-EM,,test_joint_kl,0.2633,0.0347,min",
    "biglearn_em_repo_notebook,gmm25_simulation,BigLearn-EM,,test_joint_kl,0.0301,0.0064,",
    "biglearn_em_repo_notebook,pendigits,Joint-EM,,nmi,0.7836,,",
]


def tiny_config(tmp_path, tracking=False):
    """tiny.yaml cut to one seed and k-means, plus both experiments on tiny data."""
    cfg = load_config()
    cfg["seeds"] = [0]
    cfg["models"] = {"kmeans": cfg["models"]["kmeans"]}
    cfg["tracking"]["enabled"] = tracking
    ref = tmp_path / "reference.csv"
    ref.write_text("\n".join(REFERENCE_ROWS) + "\n")
    cfg["reference_csv"] = str(ref)
    cfg["experiments"] = {
        "gmm_exercise": {
            "datasets": {"digits8": {"source": "digits", "preprocess": {"scale": "minmax"}}},
            "seeds": [0, 1],
            "n_samples": 6,
            "params": {"reg_covar": 0.01, "max_iter": 6, "tol": 0.0},
        },
        "gmm25": {"seeds": [3, 4], "n_iter": 6, "n_inner": 2, "n_train": 300, "n_test": 500},
    }
    return cfg


@pytest.fixture(scope="module")
def em_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("em")
    cfg = tiny_config(wd, tracking=True)
    p = run_snakemake(wd, "--cores", "2", config=cfg)
    return wd, cfg, p


@pytest.mark.workflow
def test_exercise_outputs(em_run):
    wd, _, _ = em_run
    out = wd / "results/em/gmm_exercise/digits8"
    curves = pd.read_csv(out / "loglik_curves.csv")
    final = pd.read_csv(out / "loglik_final.csv")
    assert set(zip(curves.init, curves.seed)) == {
        (i, s) for i in ("random", "kmeans") for s in (0, 1)
    }
    for (init, seed), g in curves.groupby(["init", "seed"]):
        ll = g.sort_values("iteration").loglik.to_numpy()
        assert len(ll) == 6 and np.isfinite(ll).all()
        assert (np.diff(ll) >= -1e-9 * np.abs(ll[1:])).all(), (init, seed, ll)  # EM, floor
        last = final[(final.init == init) & (final.seed == seed)].loglik.item()
        assert last >= ll[-1] - 1e-9 * abs(ll[-1])  # one more M-step than the curve
    refs = final.set_index("model").loglik
    assert refs["naive_gmm"] > refs["single_gaussian"]
    assert final[final.model == "gmm_em"].loglik.max() > refs["single_gaussian"]
    assert (final.dataset == "digits8").all() and final.seed.isna().sum() == 2
    for fig in ("loglik.png", "samples.png"):
        assert (out / fig).stat().st_size > 5000
    meta = json.loads((wd / "results/em/data/digits8.json").read_text())
    assert meta["image_shape"] == [8, 8] and meta["n"] == 1797
    summary = (out / "summary.md").read_text()  # the final log-likelihoods, with provenance
    assert "GMM by EM, kmeans init" in summary and "naive gmm" in summary
    assert (
        "commit: " in summary and "this job: " in summary and "1797 images of 64 pixels" in summary
    )
    log = (wd / "results/logs/gmm_exercise/digits8.log").read_text()  # every fit's progress
    assert log.count("step 1/6: loglik=") == 4 and log.count("step 6/6: loglik=") == 4
    # the provenance is read when the summary is written, after the last fit (not at job start)
    written = datetime.fromisoformat(re.search(r"table written (\S+) ", summary).group(1))
    last_fit = re.findall(r"^(\S+ \S+),\d+ INFO step 6/6", log, re.M)[-1]
    assert written >= datetime.fromisoformat(last_fit).astimezone(UTC)  # log: local time


@pytest.mark.workflow
def test_simulation_outputs(em_run):
    wd, _, _ = em_run
    out = wd / "results/em/gmm25"
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(zip(runs.method, runs.seed)) == [
        ("biglearn_em", 3),
        ("biglearn_em", 4),
        ("joint_em_plain", 3),
        ("joint_em_plain", 4),
    ]
    assert np.isfinite(runs.final_kl).all() and (runs.final_kl > 0).all()
    assert (runs.min_kl <= runs.final_kl).all()
    log = (wd / "results/logs/gmm25_simulation/biglearn_em/seed3.log").read_text()
    assert "step 6/6: loglik=" in log and "test_kl=" in log
    rec = json.loads((out / "biglearn_em/seed3.json").read_text())
    assert len(rec["kl_history"]) == 6 and rec["final_kl"] == rec["kl_history"][-1]
    md = (out / "table.md").read_text()
    assert "BigLearn-EM [reference code]" in md and "0.030 ± 0.006" in md
    assert "0.263 ± 0.035" in md and "(n=2)" in md and "**" in md
    bl = runs[runs.method == "biglearn_em"].final_kl
    assert f"{bl.mean():.3f} ± {bl.std(ddof=1):.3f} (n=2)" in md
    assert "commit: " in md and "command: `" in md and "summed over the 4 benchmarked jobs" in md
    tex = (out / "table.tex").read_text()
    assert tex.count(r"\toprule") == 1 and r"\textbf" in tex
    assert (out / "kl_history.png").stat().st_size > 5000


@pytest.mark.workflow
def test_em_jobs_are_mlflow_runs_with_artifacts(em_run, monkeypatch):
    wd, _, _ = em_run
    monkeypatch.chdir(wd)  # the store's artifact root is relative to the run directory
    runs = mlflow_runs(f"sqlite:///{wd}/results/mlflow/mlflow.db")
    rules = runs["tags.mixlib.rule"].value_counts()
    assert rules["gmm25_simulation"] == 4 and rules["gmm_exercise"] == 1
    assert rules["prepare_em_dataset"] == 1 and rules["gmm25_aggregate"] == 1
    assert (runs.status == "FINISHED").all()
    sim = runs[runs["tags.mixlib.rule"] == "gmm25_simulation"]
    assert sim["metrics.final_kl"].notna().all()
    per_seed = pd.read_csv(wd / "results/em/gmm25/runs.csv")  # each row names its MLflow run
    assert sorted(per_seed.job_key) == sorted(sim["tags.mixlib.job_key"])
    import mlflow

    ex = runs[runs["tags.mixlib.rule"] == "gmm_exercise"].run_id.item()
    arts = [a.path for a in mlflow.MlflowClient().list_artifacts(ex, "figures")]
    assert sorted(arts) == ["figures/loglik.png", "figures/samples.png"]


@pytest.mark.workflow
def test_experiments_only_config_publishes_its_tables(tmp_path):
    """A config of experiments alone (no clustering datasets or models) runs them and copies
    their tables and figures under publish_dir, each experiment in its own folder."""
    cfg = tiny_config(tmp_path)
    cfg.pop("datasets"), cfg.pop("models"), cfg.pop("inits")
    cfg["experiments"].pop("gmm_exercise")
    cfg["publish_dir"] = "published"
    run_snakemake(tmp_path, "--cores", "2", config=cfg)
    published = sorted(
        str(p.relative_to(tmp_path / "published")) for p in (tmp_path / "published").rglob("*")
    )
    assert published == [
        "gmm25",
        "gmm25/kl_history.png",
        "gmm25/runs.csv",
        "gmm25/table.csv",
        "gmm25/table.md",
        "gmm25/table.tex",
    ]
    assert not (tmp_path / "results/tables").exists()


@pytest.mark.workflow
def test_rerun_is_noop_and_changes_rerun_only_their_jobs(em_run):
    wd, cfg, _ = em_run
    p = run_snakemake(wd, "-n", "--cores", "1", config=cfg)
    assert "Nothing to be done" in p.stdout + p.stderr
    more = json.loads(json.dumps(cfg))
    more["experiments"]["gmm25"]["seeds"] = [3, 4, 5]
    out = run_snakemake(wd, "-n", "--cores", "1", config=more).stdout
    assert "seed5.json" in out and "seed3.json, " in out  # the aggregate reads all three
    jobs = [ln for ln in out.splitlines() if ln.startswith("rule ") and ln != "rule all:"]
    assert sorted(jobs) == ["rule gmm25_aggregate:"] + ["rule gmm25_simulation:"] * 2
    longer = json.loads(json.dumps(cfg))
    longer["experiments"]["gmm_exercise"]["params"]["max_iter"] = 7
    out = run_snakemake(wd, "-n", "--cores", "1", config=longer).stdout
    jobs = [ln for ln in out.splitlines() if ln.startswith("rule ") and ln != "rule all:"]
    assert jobs == ["rule gmm_exercise:"]


@pytest.mark.workflow
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e["gmm25"].update(bogus=1), "bogus"),
        (lambda e: e["gmm25"].update(methods=["vbem"]), "vbem"),
        (lambda e: e["gmm_exercise"]["params"].update(lr=1), "lr"),
        (lambda e: e["gmm_exercise"].update(inits=["pca"]), "pca"),
        (
            lambda e: e["gmm_exercise"]["datasets"].update(blobs={"source": "digits"}),
            "experiments.gmm_exercise.datasets.blobs",
        ),
    ],
)
def test_bad_experiment_config_fails_before_any_job(tmp_path, mutate, message):
    cfg = tiny_config(tmp_path)
    mutate(cfg["experiments"])
    p = run_snakemake(tmp_path / "wd", "-n", "--cores", "1", config=cfg, check=False)
    assert p.returncode != 0
    assert message in p.stdout + p.stderr
    assert not (tmp_path / "wd/results").exists()


@pytest.mark.workflow
def test_no_experiments_no_em_jobs(tmp_path):
    cfg = tiny_config(tmp_path)
    del cfg["experiments"]
    out = run_snakemake(tmp_path / "wd", "-n", "--cores", "1", config=cfg).stdout
    assert "rule train_model" in out
    assert "gmm25" not in out and "gmm_exercise" not in out and "em/data" not in out


# --- mixlib -----------------------------------------------------------------------------------


def _config_with(datasets):
    cfg = load_config()
    cfg["experiments"] = {"gmm_exercise": {"datasets": datasets}}
    return cfg


@pytest.mark.parametrize(
    "datasets, message",
    [
        ({"blobs": {"source": "digits"}}, "datasets.blobs: 'blobs' is also defined"),
        ({"s": {"source": "synthetic"}}, "datasets.s.source: the exercise needs images"),
        ({"f": {"source": "npz"}}, "datasets.f.path is required"),
        ({"u": {"source": "nope"}}, "datasets.u.source: unknown source 'nope'"),
    ],
)
def test_check_config_experiments(datasets, message):
    with pytest.raises(ConfigError, match=message):
        load_plan(_config_with(datasets))
    load_plan(_config_with({"d": {"source": "digits"}}))


def _blobs(seed=0, n=240, d=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(3, size=n)
    return rng.normal(size=(3, d))[y] * 4 + rng.standard_normal((n, d)), y


def test_fit_loglik_runs_curves_final_and_models():
    X, _ = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curves, final, models = em.fit_loglik_runs(
            X, ("random", "kmeans"), (0, 1), n_clusters=3, max_iter=8, tol=0.0,
            reg="floor", reg_covar=1e-3, device="cpu",
        )  # fmt: skip
    assert len(final) == 4 and set(models) == {(i, s) for i in ("random", "kmeans") for s in (0, 1)}
    for r in final.itertuples():
        m = models[(r.init, r.seed)]
        assert r.loglik == pytest.approx(m.score(X)) and r.n_iter == 8 and not r.converged
        ll = curves[(curves.init == r.init) & (curves.seed == r.seed)].loglik.to_numpy()
        np.testing.assert_allclose(ll, m.history_["loglik"])
        assert (np.diff(ll) >= -1e-10).all() and r.loglik >= ll[-1] - 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = em.loglik_curves(
            X, ("kmeans",), (1,), n_clusters=3, max_iter=8, tol=0.0, reg="floor",
            reg_covar=1e-3, device="cpu",
        )  # fmt: skip
    same = curves[(curves.init == "kmeans") & (curves.seed == 1)].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, same)


def test_reference_gaussians_regularised_like_the_gmm():
    X, y = _blobs(d=4)
    X[:, 3] = 0.5  # a constant pixel: singular covariance
    floor = em.fit_single_gaussian(X, 1e-2, reg="floor")
    ridge = em.fit_single_gaussian(X, 1e-2, reg="ridge")
    np.testing.assert_allclose(floor.means_[0], X.mean(0))
    np.testing.assert_allclose(np.linalg.eigvalsh(floor.covariances_[0]).min(), 1e-2)
    cov = np.cov(X.T, bias=True)
    np.testing.assert_allclose(ridge.covariances_[0], cov + 1e-2 * np.eye(4))
    evals = np.linalg.eigvalsh(cov)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(floor.covariances_[0]), np.maximum(evals, 1e-2), atol=1e-12
    )
    naive = em.fit_naive_gmm(X, y, 1e-2, reg="floor")
    for k in range(3):
        assert np.linalg.eigvalsh(naive.covariances_[k]).min() >= 1e-2 - 1e-12
    assert naive.score(X) > floor.score(X)
    one_d = em.fit_single_gaussian(X[:, :1], 1e-3, reg="ridge")  # a single feature works too
    assert one_d.covariances_.shape == (1, 1, 1)


def _records():
    kl = {"biglearn_em": [0.05, 0.07, 0.03], "joint_em_plain": [0.25, 0.27, 0.26]}
    return [
        {"method": m, "seed": s, "final_kl": v, "min_kl": v - 0.01, "n_iter": 4, "n_inner": 5,
         "kl_history": [1.0, 0.5, v]}
        for m, vals in kl.items() for s, v in enumerate(vals)
    ]  # fmt: skip


def test_gmm25_table_marks_lowest_and_places_reference(tmp_path):
    ref_csv = tmp_path / "ref.csv"
    ref_csv.write_text("\n".join(REFERENCE_ROWS) + "\n")
    ref = em.gmm25_reference(ref_csv)
    assert list(ref.label) == ["Joint-EM", "BigLearn-EM"]
    assert em.gmm25_reference(ref_csv, "pendigits") is None
    assert em.gmm25_reference(tmp_path / "missing.csv") is None
    df = em.simulation_frame(list(reversed(_records())))
    assert list(df.method) == ["biglearn_em"] * 3 + ["joint_em_plain"] * 3
    assert list(df.seed) == [0, 1, 2, 0, 1, 2]
    cells, best = em.gmm25_table(df, ref)
    assert cells.loc["final KL", "BigLearn-EM"] == "0.050 ± 0.020 (n=3)"
    assert cells.loc["min KL", "Joint-EM"] == "0.250 ± 0.010 (n=3)"
    assert cells.loc["min KL", "BigLearn-EM [reference code]"] == "0.030 ± 0.006"
    assert cells.loc["final KL", "Joint-EM [reference code]"] == ""
    assert best.loc["final KL"].tolist() == [True, False, False, False]
    assert list(cells.columns) == [
        "BigLearn-EM",
        "Joint-EM",
        "BigLearn-EM [reference code]",
        "Joint-EM [reference code]",
    ]
    assert best.loc["min KL"].tolist() == [False, False, True, False]  # the reference's 0.030


def test_gmm25_table_names_a_missing_reference_csv(tmp_path):
    """The simulation's table, like the clustering one, says when its configured reference CSV
    is not there instead of leaving the reference code's rows out silently."""
    from mixlib import pipeline

    recs = []
    for i, r in enumerate(_records()):
        recs.append(tmp_path / f"r{i}.json")
        recs[-1].write_text(json.dumps(r))
    outs = {f"out_{k}": str(tmp_path / f"table.{k}") for k in ("md", "tex", "csv")}
    pipeline.gmm25_aggregate(records=[str(p) for p in recs], out_runs=str(tmp_path / "runs.csv"),
                             out_figure=str(tmp_path / "kl.png"), reference_csv="../x/ref.csv",
                             **outs)  # fmt: skip
    text = (tmp_path / "table.md").read_text()
    assert "[reference code]" not in text
    assert "reference_csv `../x/ref.csv` not found from the working directory" in text


def test_plot_kl_history_with_negative_monte_carlo_kl(tmp_path):
    recs = _records()
    recs[0]["kl_history"] = [0.2, -0.001]
    assert plots.plot_kl_history(recs, tmp_path / "kl.png").stat().st_size > 1000
