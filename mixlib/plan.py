"""The plan of a workflow config: checked once, every default filled, every job listed.

:func:`load_plan` is the only place a config is checked. It validates the config against
``config/schema.yaml`` (types, enums, unknown keys; the schema's defaults are filled in), then
checks what a schema cannot (cross references, sources, model hyperparameters against each
model's ``_parameter_constraints``, sweeps) and returns a :class:`Plan`: plain objects with
every value explicit and the list of jobs (the clustering grid, the sweeps and the Gaussian-
mixture experiments, all by the same grid function). The rules and stages below it take the
plan's values and check nothing again.

A bad config raises :class:`~mixlib.errors.ConfigError` naming the key, before any job starts.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from . import download
from . import init as initlib
from .data import EMBEDDED_SOURCES, IMAGE_SOURCES
from .errors import ConfigError
from .models import model_spec, pretrain_key

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


class Run(NamedTuple):
    """One trained model: the ``{dataset}``, ``{model}``, ``{init}`` and ``{seed}`` wildcards."""

    dataset: str
    model: str
    init: str
    seed: int


@dataclass(frozen=True)
class Model:
    """A model to train: a config entry or one of its sweep variants."""

    name: str
    kind: str
    params: dict
    inits: tuple[str, ...]
    datasets: tuple[str, ...]
    eval_every: int | None = None
    mean_of_last: int | None = None  # TRAIN = mean of the last evaluations' scores
    variant_of: str | None = None  # the model whose sweep made this variant

    @property
    def pretrain(self) -> str | None:
        """The ``{recipe}`` of the shared auto-encoder pre-training it starts from (DEC, IDEC:
        :func:`mixlib.models.pretrain_key`), None for a model that has none."""
        return pretrain_key(self.kind, self.params)


@dataclass(frozen=True)
class Sweep:
    """A one-factor sweep of ``param`` around ``model``: ``points`` are ``(value, model name)``,
    the model's own name where the value equals its own value ``own``."""

    model: str
    param: str
    own: object
    datasets: tuple[str, ...]
    inits: tuple[str, ...]
    points: tuple[tuple[object, str], ...]


@dataclass(frozen=True)
class Tracking:
    enabled: bool
    uri: str | None
    experiment: str
    defer: bool


@dataclass(frozen=True)
class GmmExercise:
    datasets: dict[str, dict]
    inits: tuple[str, ...]
    seeds: tuple[int, ...]
    n_samples: int
    params: dict  # GaussianMixtureEM hyperparameters, every one explicit


@dataclass(frozen=True)
class Gmm25:
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: dict  # n_iter, n_inner, reg_covar, n_train, n_test: what one job depends on
    published_as: str | None

    def runs(self) -> list[tuple[str, int]]:
        """Every (method, seed) job."""
        return grid(self.methods, self.seeds)


@dataclass(frozen=True)
class Plan:
    config: dict  # the validated config, schema defaults filled (logged with the invocation)
    seeds: tuple[int, ...]
    datasets: dict[str, dict]
    inits: dict[str, dict]
    models: dict[str, Model]  # config entries and sweep variants
    sweeps: tuple[Sweep, ...]
    tracking: Tracking
    data_dir: str | None
    download: bool
    file_sha256: dict
    reference_csv: str | None
    publish_dir: str | None
    gmm_exercise: GmmExercise | None
    gmm25: Gmm25 | None
    runs: list[Run] = field(default_factory=list)  # the main tables' runs (config entries)

    def init_for(self, init: str, dataset: str) -> dict:
        """The keys of init ``init`` as it runs on ``dataset``: its entry with that dataset's
        ``overrides`` applied (and ``overrides`` itself removed)."""
        return _init_for(self.inits[init], dataset)

    def init_runs(self) -> list[tuple[str, str, int]]:
        """Every (dataset, init, seed) some trained model starts from."""
        used = sorted({(r.dataset, r.init) for r in self.runs if r.init != "none"})
        return [(d, i, s) for (d, i), s in grid(used, self.seeds)]

    def feature_recipe(self, init: str, dataset: str) -> str | None:
        """The ``{recipe}`` of the feature init ``init`` clusters on ``dataset`` when one
        ``init_features`` job can compute it for every seed (:func:`mixlib.init.feature_recipe`);
        None for a per-seed holdout split, whose training rows depend on the seed."""
        if self.datasets[dataset]["split"] == "holdout":
            return None
        return initlib.feature_recipe(self.init_for(init, dataset))

    def feature_runs(self) -> list[tuple[str, str]]:
        """Every (dataset, feature recipe) one ``init_features`` job computes for all seeds."""
        runs = {(d, self.feature_recipe(i, d)) for d, i, _ in self.init_runs()}
        return sorted(r for r in runs if r[1] is not None)

    def pretrain_runs(self) -> list[tuple[str, str, int]]:
        """Every (dataset, pre-training recipe, seed) one ``pretrain_autoencoder`` job trains."""
        runs = {(r.dataset, self.models[r.model].pretrain, r.seed) for r in self.runs}
        return sorted(r for r in runs if r[1] is not None)

    def feature_spec(self, dataset: str, recipe: str) -> dict:
        """The feature keys (:func:`mixlib.init.feature_keys`) of ``recipe`` on ``dataset``."""
        for d, i, _ in self.init_runs():
            if d == dataset and self.feature_recipe(i, d) == recipe:
                return initlib.feature_keys(self.init_for(i, d))
        raise KeyError(f"no init of this config computes feature {recipe!r} on {dataset!r}")

    def pretrain_for(self, recipe: str) -> Model:
        """A model whose pre-training is ``recipe`` (they all pre-train alike: the recipe is the
        hash of the hyperparameters the pre-training depends on)."""
        for m in self.models.values():
            if m.pretrain == recipe:
                return m
        raise KeyError(f"no model of this config pre-trains as {recipe!r}")

    def remote_source(self, dataset: str) -> str | None:
        """The downloadable source of ``dataset``, or None for an embedded one."""
        source = self.datasets[dataset]["source"]
        return source if source in download.SOURCES else None

    def sweep(self, model: str, param: str) -> Sweep:
        for s in self.sweeps:
            if s.model == model and s.param == param:
                return s
        raise KeyError(f"models.{model}.sweep has no {param!r}")

    def sweep_runs(self, dataset: str, model: str, param: str) -> list[Run]:
        """Every run behind the sweep of ``param`` on ``model`` for ``dataset``, the model's own
        runs included where one of the values is its own."""
        s = self.sweep(model, param)
        return [
            Run(dataset, m, i, seed)
            for m, i, seed in grid([n for _, n in s.points], s.inits, self.seeds)
        ]


def _init_for(entry: dict, dataset: str) -> dict:
    spec = dict(entry)
    over = spec.pop("overrides")
    return {**spec, **over.get(dataset, {})}


def _command_line_int(value):
    """A string of digits as the integer it spells, anything else as it is: Snakemake parses a
    ``--config`` list with YAML's BaseLoader, which leaves every item a string."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def grid(*axes) -> list[tuple]:
    """Every combination of the axes, in order: the one planner of the workflow's jobs."""
    return list(itertools.product(*axes))


# --- loading ------------------------------------------------------------------------------------


def load_plan(config: dict, schema: str | Path = SCHEMA) -> Plan:
    """Validate ``config`` (left untouched) and return its :class:`Plan`."""
    cfg = copy.deepcopy(config)
    if isinstance(cfg.get("seeds"), list):  # `--config seeds=[0,1]` arrives as ['0', '1']
        cfg["seeds"] = [_command_line_int(s) for s in cfg["seeds"]]
    cfg = validate_schema(cfg, schema)
    cfg = _skip_datasets(cfg)
    cfg = _skip_experiments(cfg)
    datasets = cfg["datasets"]
    for name, spec in datasets.items():
        _check_dataset(f"datasets.{name}", spec)
    inits = cfg["inits"]
    for name, spec in inits.items():
        for d in spec["overrides"]:
            if d not in datasets:
                raise ConfigError(f"inits.{name}.overrides: {d!r} is not defined under `datasets`")
        for d in datasets:  # each key as it applies to the dataset, overrides included
            eff = _init_for(spec, d)
            if spec["method"] != "umap" and eff["equal_sizes"]:
                raise ConfigError(
                    f"inits.{name}.equal_sizes: for the method 'umap' only, not {spec['method']!r}"
                )
            if spec["method"] == "random" and eff["ensemble"] > 1:
                raise ConfigError(
                    f"inits.{name}.ensemble: not for the method 'random' (a vote of noise)"
                )
    for source, sums in cfg["file_sha256"].items():
        if source not in download.SOURCES:
            raise ConfigError(
                f"file_sha256.{source}: not a downloadable source ({sorted(download.SOURCES)})"
            )
        names = [f.name for f in download.SOURCES[source].files]
        unknown = sorted(set(sums) - set(names))
        if unknown:
            raise ConfigError(f"file_sha256.{source}: {unknown} not among its files {names}")
    models = {}
    for name, m in cfg["models"].items():
        models[name] = _model(name, m, datasets, inits)
    sweeps = _sweeps(cfg, models)
    for s in sweeps:
        base = models[s.model]
        for value, name in s.points:
            if name != s.model:
                models[name] = Model(
                    name,
                    base.kind,
                    {**base.params, s.param: value},
                    s.inits,
                    s.datasets,
                    base.eval_every,
                    base.mean_of_last,
                    variant_of=s.model,
                )
    seeds = tuple(cfg["seeds"])
    for m in models.values():
        for d, i in grid(m.datasets, m.inits):
            feature = i != "none" and _init_for(inits[i], d)["feature"]
            if feature == "scattering" and datasets[d]["source"] not in IMAGE_SOURCES:
                raise ConfigError(
                    f"inits.{i}.feature: 'scattering' needs images, but dataset {d!r} "
                    f"(source {datasets[d]['source']!r}) has none; use feature raw or pca"
                )
    runs = [
        Run(d, m.name, i, s)
        for m in models.values()
        if m.variant_of is None
        for d, i, s in grid(m.datasets, m.inits, seeds)
    ]
    t = cfg["tracking"]
    return Plan(
        config=cfg,
        seeds=seeds,
        datasets=datasets,
        inits=inits,
        models=models,
        sweeps=tuple(sweeps),
        tracking=Tracking(t["enabled"], t["uri"], t["experiment"], t["defer"]),
        data_dir=cfg["data_dir"],
        download=cfg["download"],
        file_sha256=cfg["file_sha256"],
        reference_csv=cfg["reference_csv"],
        publish_dir=cfg["publish_dir"],
        gmm_exercise=_gmm_exercise(cfg),
        gmm25=_gmm25(cfg),
        runs=runs,
    )


def validate_schema(config: dict, schema: str | Path = SCHEMA) -> dict:
    """Validate ``config`` against the JSON schema and fill in its defaults (in place), as
    Snakemake's ``validate(config, schema, set_default=True)`` does; raise a
    :class:`ConfigError` naming the key."""
    import jsonschema
    import yaml

    path = Path(schema)
    if not path.is_file():
        raise ConfigError(
            f"config schema {path} not found (is mixlib installed from its repository?)"
        )
    spec = yaml.safe_load(path.read_text())
    base = jsonschema.validators.validator_for(spec)

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    Filling = jsonschema.validators.extend(base, {"properties": set_defaults})
    error = jsonschema.exceptions.best_match(Filling(spec).iter_errors(config))
    if error is not None:
        raise ConfigError(_schema_message(error))
    return config


_TYPE_NAMES = {
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "boolean": "a boolean",
}


def _schema_message(e) -> str:
    """``<key>: <problem>`` for a schema error; list items are named after their key."""
    keys = [str(p) for p in e.absolute_path if not isinstance(p, int)]
    items = [str(p) for p in e.absolute_path if isinstance(p, int)]
    key = ".".join(keys) or "(top level)"
    message = e.message
    if e.validator == "type" and isinstance(e.validator_value, str):
        message = f"{e.instance!r} is not {_TYPE_NAMES.get(e.validator_value, e.validator_value)}"
        spelled = str(e.instance).strip().lower()
        if e.validator_value == "boolean" and spelled in ("true", "false") and len(keys) == 1:
            message += (  # `--config download=false` arrives as the string 'false'
                f" (Snakemake's --config reads only True and False as booleans:"
                f" --config {key}={spelled.capitalize()})"
            )
    return f"{key}: {message}" + (f" (item {', '.join(items)})" if items else "")


def _check_dataset(key: str, spec: dict) -> None:
    source = spec["source"]
    if source not in EMBEDDED_SOURCES and source not in download.SOURCES:
        raise ConfigError(
            f"{key}.source: unknown source {source!r}; choose from "
            f"{[*EMBEDDED_SOURCES, *download.SOURCES]}"
        )
    if source == "npz" and not spec.get("path"):
        raise ConfigError(f"{key}.path is required for source 'npz'")
    if spec["split"] != "holdout":
        try:
            download.check_split(source, spec["split"])
        except ValueError as e:
            raise ConfigError(f"{key}.split: {e}") from None
    if spec["preprocess"]["fit_on"] == "parts" and spec["split"] != "train_test":
        raise ConfigError(
            f"{key}.preprocess.fit_on: 'parts' scales the training and test parts of split "
            f"train_test each by their own statistics; split is {spec['split']!r}"
        )


def _skip_datasets(cfg: dict) -> dict:
    """``cfg`` (validated) without the datasets named in ``skip_datasets``: removed from
    ``datasets``, from every model's and sweep's dataset list (a model or sweep left with none is
    dropped) and from the inits' overrides."""
    skip = cfg["skip_datasets"]
    unknown = [d for d in skip if d not in cfg["datasets"]]
    if unknown:
        raise ConfigError(
            f"skip_datasets: {unknown} not defined under `datasets` ({sorted(cfg['datasets'])})"
        )
    if not skip:
        return cfg

    def kept(names):
        return [d for d in names if d not in skip]

    cfg["datasets"] = {d: spec for d, spec in cfg["datasets"].items() if d not in skip}
    for spec in cfg["inits"].values():
        spec["overrides"] = {d: o for d, o in spec["overrides"].items() if d not in skip}
    models = {}
    for name, m in cfg["models"].items():
        if m["datasets"]:
            m["datasets"] = kept(m["datasets"])
            if not m["datasets"]:
                continue
        sweep = {}
        for param, raw in m["sweep"].items():
            if isinstance(raw, dict) and raw.get("datasets"):
                raw["datasets"] = kept(raw["datasets"])
                if not raw["datasets"]:
                    continue
            sweep[param] = raw
        m["sweep"] = sweep
        models[name] = m
    cfg["models"] = models
    return cfg


def _skip_experiments(cfg: dict) -> dict:
    """``cfg`` (validated) without the experiments named in ``skip_experiments``."""
    skip = cfg["skip_experiments"]
    unknown = [e for e in skip if e not in cfg["experiments"]]
    if unknown:
        raise ConfigError(
            f"skip_experiments: {unknown} not defined under `experiments` "
            f"({sorted(cfg['experiments'])})"
        )
    cfg["experiments"] = {e: x for e, x in cfg["experiments"].items() if e not in skip}
    return cfg


def _model(name: str, m: dict, datasets: dict, inits: dict) -> Model:
    key = f"models.{name}"
    try:
        spec = model_spec(m["kind"])
    except KeyError as e:
        raise ConfigError(f"{key}.kind: {e.args[0]}") from None
    params = m["params"]
    bad = sorted(set(params) & {"n_clusters", "random_state"})
    if bad:
        raise ConfigError(
            f"{key}.params: {bad} are set by the workflow (the dataset's n_clusters, the seed)"
        )
    try:
        spec.validate(params, f"{key}.params: {spec.class_name}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for i in m["inits"]:
        if i != "none" and i not in inits:
            raise ConfigError(f"{key}.inits: {i!r} is not defined under `inits`")
    for d in m["datasets"] or []:
        if d not in datasets:
            raise ConfigError(f"{key}.datasets: {d!r} is not defined under `datasets`")
    if m["score_mean_of_last"] and not m["eval_every"]:
        raise ConfigError(
            f"{key}.score_mean_of_last: averages the evaluations made while training; set "
            f"{key}.eval_every too"
        )
    return Model(
        name,
        m["kind"],
        dict(params),
        tuple(m["inits"]),
        tuple(m["datasets"] or datasets),
        m["eval_every"],
        m["score_mean_of_last"],
    )


# --- sweeps ---------------------------------------------------------------------------------------
# A model entry may carry ``sweep: {param: [values]}``: one-factor sweeps around its own params.
# Every value that differs from the model's own value becomes a *variant*, a model named
# ``<model>.<param><value>`` (e.g. ``mixmate.lam0.5``) with that one param changed, trained and
# evaluated by the ordinary rules; the value equal to the model's own is the model itself, so it
# is never trained twice. Variants stay out of the main tables; each sweep gets its own table.


def value_tag(value) -> str:
    """Text of a swept value inside a model name, safe for paths and the {model} wildcard:
    ``0.5 -> '0.5'``, ``3 -> '3'``, ``1e-05 -> '1e-05'``, ``1e+20 -> '1e20'``."""
    if isinstance(value, float):
        return repr(value).replace("+", "")
    return str(int(value))


def variant_name(model: str, param: str, value) -> str:
    """Name of the variant of ``model`` with ``param = value``, e.g. ``mixmate.lam0.5``."""
    return f"{model}.{param}{value_tag(value)}"


def _sweeps(cfg: dict, models: dict[str, Model]) -> list[Sweep]:
    out, taken = [], set(models)
    for name, m in cfg["models"].items():
        model = models[name]
        spec = model_spec(model.kind)
        for param, raw in m["sweep"].items():
            key = f"models.{name}.sweep"
            if param not in spec.parameters or param in ("n_clusters", "random_state"):
                accepted = sorted(set(spec.parameters) - {"n_clusters", "random_state"})
                raise ConfigError(
                    f"{key}: {spec.class_name} has no parameter {param!r}; it accepts {accepted}"
                )
            if isinstance(raw, dict):
                values, datasets, inits = raw["values"], raw.get("datasets"), raw.get("inits")
            else:
                values, datasets, inits = raw, None, None
            datasets, inits = tuple(datasets or model.datasets), tuple(inits or model.inits)
            for what, chosen, allowed in [
                ("datasets", datasets, model.datasets),
                ("inits", inits, model.inits),
            ]:
                outside = [x for x in chosen if x not in allowed]
                if outside:
                    raise ConfigError(
                        f"{key}.{param}.{what}: {outside} not among the model's {what} "
                        f"{list(allowed)}"
                    )
            own = model.params.get(param, spec.parameters[param].default)
            if isinstance(own, bool | str):
                raise ConfigError(
                    f"{key}.{param}: only numeric parameters can be swept; "
                    f"{spec.class_name}'s {param} is {own!r}"
                )
            points = []
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ConfigError(f"{key}.{param}: {v!r} is not a number")
                if isinstance(own, int) and not isinstance(v, int):
                    raise ConfigError(
                        f"{key}.{param}: {v!r} is not an integer; {spec.class_name}'s {param} "
                        f"is an integer (default {own!r})"
                    )
                try:
                    spec.validate({param: v}, f"{key}.{param}: {spec.class_name}")
                except ValueError as e:
                    raise ConfigError(str(e)) from None
                if v == own:
                    points.append((v, name))
                    continue
                variant = variant_name(name, param, v)
                if variant in taken:
                    raise ConfigError(
                        f"{key}.{param}: the variant name {variant!r} of value {v!r} is taken "
                        "(by a model or another swept value); rename the model"
                    )
                taken.add(variant)
                points.append((v, variant))
            out.append(Sweep(name, param, own, datasets, inits, tuple(points)))
    return out


# --- Gaussian-mixture experiments -------------------------------------------------------------


def _gmm_exercise(cfg: dict) -> GmmExercise | None:
    ex = cfg["experiments"].get("gmm_exercise")
    if not ex:
        return None
    for name, spec in ex["datasets"].items():
        key = f"experiments.gmm_exercise.datasets.{name}"
        if name in cfg["datasets"]:
            raise ConfigError(
                f"{key}: {name!r} is also defined under `datasets`; give the exercise's dataset "
                "its own name (its preparation differs and its runs are tracked under it)"
            )
        _check_dataset(key, spec)
        if spec["split"] == "holdout":
            raise ConfigError(f"{key}.split: the exercise fits every seed on one set; not holdout")
        if spec["source"] not in IMAGE_SOURCES:
            raise ConfigError(
                f"{key}.source: the exercise needs images; {spec['source']!r} has none "
                f"(image sources: {', '.join(IMAGE_SOURCES)})"
            )
    return GmmExercise(
        datasets=ex["datasets"],
        inits=tuple(ex["inits"]),
        seeds=tuple(ex["seeds"] or cfg["seeds"]),
        n_samples=ex["n_samples"],
        params=dict(ex["params"]),
    )


def _gmm25(cfg: dict) -> Gmm25 | None:
    g = cfg["experiments"].get("gmm25")
    if g is None:
        return None
    return Gmm25(
        methods=tuple(g["methods"]),
        seeds=tuple(g["seeds"] or cfg["seeds"]),
        settings={k: g[k] for k in ("n_iter", "n_inner", "reg_covar", "n_train", "n_test")},
        published_as=g["published_as"],
    )
