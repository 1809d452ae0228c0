"""The plan of a config (mixlib.plan): checked once, every default filled, every job listed;
and the one parameter validator (mixlib.models.params)."""

import logging

import numpy as np
import pytest
from helpers import load_config

from mixlib.errors import ConfigError
from mixlib.models.base import Progress
from mixlib.models.params import validate_params
from mixlib.pipeline import TrainingMonitor
from mixlib.plan import load_plan


def test_defaults_filled_once():
    cfg = load_config()
    plan = load_plan(cfg)
    assert "tracking" not in cfg or "defer" not in cfg["tracking"]  # the config is untouched
    assert plan.tracking.defer is True and plan.data_dir is None and plan.download is True
    assert all(m.eval_every is None or m.eval_every >= 1 for m in plan.models.values())
    ex = load_plan(load_config("experiments")).gmm_exercise
    # the exercise's reg_covar has one default, the schema's, and every key is explicit
    assert ex.params["reg_covar"] == 0.01 and ex.params["reg"] == "floor"
    assert set(ex.params) == {"covariance_type", "reg", "reg_covar", "max_iter", "tol", "dtype"}


def test_models_that_need_no_initialisation_need_no_inits():
    cfg = {"datasets": {"d": {"source": "digits"}}, "models": {"km": {"kind": "kmeans"}}}
    plan = load_plan(cfg)
    assert plan.inits == {} and plan.init_runs() == []
    assert [tuple(r) for r in plan.runs] == [("d", "km", "none", s) for s in (0, 1, 2)]


def test_one_grid_plans_the_clustering_runs_and_the_simulation():
    plan = load_plan(load_config("experiments"))
    assert plan.gmm25.runs() == [(m, s) for m in plan.gmm25.methods for s in plan.gmm25.seeds]
    assert len(plan.runs) == len({tuple(r) for r in plan.runs})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["models"]["gmm"]["params"].update(reg_covar=-1.0), r"models\.gmm\.params: .*reg_covar must be a real number >= 0, got -1\.0"),
        (lambda c: c["models"]["gmm"]["params"].update(covariance_type="cube"), r"covariance_type must be one of"),
        (lambda c: c["models"]["gmm"]["params"].update(random_state=3), r"models\.gmm\.params: \['random_state'\] are set by the workflow"),
        (lambda c: c["models"]["gmm"].update(eval_every=0), r"models\.gmm\.eval_every: 0 is less than the minimum of 1"),
        (lambda c: c["seeds"].append("x"), r"seeds: 'x' is not an integer \(item 2\)"),
        (lambda c: c["inits"]["kmeans"].update(feature="scattering"), r"inits\.kmeans\.feature: 'scattering' needs images, but dataset 'blobs'"),
        (lambda c: c["inits"]["kmeans"].update(equal_sizes=True), r"inits\.kmeans\.equal_sizes: for the method 'umap' only, not 'kmeans'"),
        (lambda c: c["inits"]["random"].update(ensemble=3), r"inits\.random\.ensemble: not for the method 'random'"),
        (lambda c: c["inits"]["random"].update(overrides={"blobs": {"ensemble": 2}}), r"inits\.random\.ensemble: not for"),
        (lambda c: c["inits"]["kmeans"].update(ensemble=0), r"inits\.kmeans\.ensemble: 0 is less than the minimum of 1"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(mutate, message):
    cfg = load_config()
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        load_plan(cfg)


@pytest.mark.parametrize(
    "constraint, good, bad",
    [
        ("int >= 1", [1, 7, np.int64(3)], [0, 1.0, True, "1", None]),
        ("real in [0, 1)", [0, 0.5, np.float32(0.25)], [1, -0.1, float("nan"), False]),
        ("real > 0", [1e-9, 3], [0, float("inf")]),
        ({"a", "b"}, ["a"], ["c", None]),
        (["int >= 0", None], [None, 0], [-1]),
        ("bool", [True, np.bool_(False)], [1, "yes"]),
        ("ints >= 1", [(28, 28), [1]], [(0, 2), "28"]),
        ("array", [np.zeros(2), [1, 2]], [None, "x"]),
    ],
)
def test_validate_params(constraint, good, bad):
    for v in good:
        validate_params({"p": v}, {"p": constraint}, "M")
    for v in bad:
        with pytest.raises(ValueError, match=r"M: p must be"):
            validate_params({"p": v}, {"p": constraint}, "M")
    with pytest.raises(ValueError, match=r"M has no parameter 'q'"):
        validate_params({"q": 1}, {"p": constraint}, "M")
    with pytest.raises(ValueError, match="unknown parameter constraint"):
        validate_params({"p": 1}, {"p": "integer >= 1"}, "M")


class _Recorder:
    def __init__(self):
        self.points = []

    def log_progress(self, points):
        self.points.append(points)


def test_training_monitor_reports_throttled_progress_and_scores(caplog):
    y = np.array([0, 0, 1, 1])
    tracker = _Recorder()
    mon = TrainingMonitor(tracker, y_eval=y, X_eval=np.zeros((4, 1)), eval_every=2, interval=1e9)
    predicted = []
    with caplog.at_level(logging.INFO, logger="mixlib"):
        for step in range(1, 6):
            mon(
                Progress(
                    step,
                    5,
                    {"loss": 1.0 / step},
                    labels=lambda: pytest.fail("with X_eval the monitor predicts, never labels()"),
                    predict=lambda X: predicted.append(len(X)) or np.array([1, 1, 0, 0]),
                )
            )
    lines = [r.getMessage() for r in caplog.records]
    # first and last step only (the interval never passes); the last with its scores
    assert lines == ["step 1/5: loss=1", "step 5/5: loss=0.2, nmi=1, ari=1, acc=1"]
    assert [sorted(p) for p in tracker.points] == [["loss"], ["acc", "ari", "loss", "nmi"]]
    assert [s for s, _ in tracker.points[1]["loss"]] == [2, 3, 4, 5]  # every step, batched
    assert predicted == [4, 4, 4]  # steps 2, 4 and the last
    curves = mon.curves()
    assert np.isnan(curves["acc"][0]) and curves["acc"][1] == 1.0 and len(curves["acc"]) == 5


def test_training_monitor_shows_steps_whose_values_change_names(caplog):
    """Inside the interval, a step is still shown where the objective values change names: a
    value reported once (a pre-training restart's score) and the start of a new phase."""
    names = [["rec"], ["rec"], ["rec", "silhouette"], ["rec"], ["loss"], ["loss"], ["loss"]]
    mon = TrainingMonitor(_Recorder(), interval=1e9)
    with caplog.at_level(logging.INFO, logger="mixlib"):
        for step, keys in enumerate(names, 1):
            mon(Progress(step, len(names), dict.fromkeys(keys, 1.0)))
    shown = [int(r.getMessage().split()[1].split("/")[0]) for r in caplog.records]
    assert shown == [1, 3, 4, 5, 7]


def test_seeds_from_the_command_line_are_integers():
    """``snakemake --config seeds=[0,1]`` (a run of some seeds of a config): Snakemake's parser
    gives strings, the plan takes digit strings as the integers they spell and rejects others."""
    from snakemake.cli import parse_config

    cfg = load_config()
    cfg.update(parse_config(["seeds=[0,2]"]))
    assert cfg["seeds"] == ["0", "2"]
    assert load_plan(cfg).seeds == (0, 2)
    cfg.update(parse_config(["seeds=[0,x]"]))
    with pytest.raises(ConfigError, match=r"seeds: 'x' is not an integer"):
        load_plan(cfg)


def test_a_lowercase_boolean_from_the_command_line_names_the_spelling_that_works():
    """``--config download=false`` arrives as the string 'false' (Snakemake reads only True and
    False as booleans); the error says how to write it, and that spelling is accepted."""
    from snakemake.cli import parse_config

    cfg = load_config()
    cfg.update(parse_config(["download=false"]))
    with pytest.raises(ConfigError, match=r"download: 'false' is not .*--config download=False\)"):
        load_plan(cfg)
    cfg.update(parse_config(["download=False"]))
    assert load_plan(cfg).config["download"] is False


def test_skip_datasets_leaves_out_what_names_them():
    """``--config 'skip_datasets=[usps]'`` (config/paper.yaml without a set that cannot be
    fetched): the same jobs less every one on USPS; a model or sweep listing only skipped sets
    is dropped, an init's overrides for them go; an unknown name is an error naming the key."""
    from snakemake.cli import parse_config

    cfg = load_config("paper")
    full = load_plan(cfg)
    cfg.update(parse_config(["skip_datasets=[usps]"]))
    part = load_plan(cfg)
    assert part.runs == [r for r in full.runs if r.dataset != "usps"]
    assert part.init_runs() == [r for r in full.init_runs() if r[0] != "usps"]
    assert "usps" not in part.datasets and "mixmate_usps" not in part.models
    assert [s for s in part.sweeps if "usps" in s.datasets] == []
    assert len(part.sweeps) == len([s for s in full.sweeps if s.datasets != ("usps",)]) > 0

    cfg.update(parse_config(["skip_datasets=[fashion_mnist,usps]"]))
    part = load_plan(cfg)
    assert part.init_for("knn_spectral", "mnist") == full.init_for("knn_spectral", "mnist")
    assert {r.dataset for r in part.runs} == set(full.datasets) - {"fashion_mnist", "usps"}

    cfg.update(parse_config(["skip_datasets=[usp]"]))
    with pytest.raises(ConfigError, match=r"skip_datasets: \['usp'\] not defined under"):
        load_plan(cfg)
