"""Checks of a workflow config beyond its JSON schema: cross references and model parameters.

The schema (``config/schema.yaml``) catches unknown keys and wrong types; this catches what a
schema cannot: a model listing an init that is not defined, a dataset name that does not exist,
a model kind missing from the registry, a hyperparameter the model does not accept.
"""

from __future__ import annotations

import inspect

from . import download
from .data import EMBEDDED_SOURCES as EMBEDDED
from .models import model_spec


class ConfigError(ValueError):
    pass


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the offending key."""
    inits, datasets = config["inits"], config["datasets"]
    _check_experiments(config)
    _check_sweeps(config)
    for name, spec in datasets.items():
        if spec["source"] == "npz" and not spec.get("path"):
            raise ConfigError(f"datasets.{name}.path is required for source 'npz'")
        if spec["source"] not in EMBEDDED and spec["source"] not in download.SOURCES:
            raise ConfigError(
                f"datasets.{name}.source: unknown source {spec['source']!r}; choose from "
                f"{[*EMBEDDED, *download.SOURCES]}"
            )
        split = spec.get("split") or "all"
        with_split = [k for k, s in download.SOURCES.items() if s.has_split]
        if split != "all" and spec["source"] not in with_split:
            raise ConfigError(
                f"datasets.{name}.split: {split!r} needs a source with an official train/test "
                f"split ({with_split}); {spec['source']!r} has none"
            )
    for name, spec in inits.items():
        for d in spec.get("overrides") or {}:
            if d not in datasets:
                raise ConfigError(f"inits.{name}.overrides: {d!r} is not defined under `datasets`")
    for source, sums in (config.get("file_sha256") or {}).items():
        if source not in download.SOURCES:
            raise ConfigError(
                f"file_sha256.{source}: not a downloadable source ({sorted(download.SOURCES)})"
            )
        names = [f.name for f in download.SOURCES[source].files]
        unknown = sorted(set(sums) - set(names))
        if unknown:
            raise ConfigError(f"file_sha256.{source}: {unknown} not among its files {names}")
    for name, m in config["models"].items():
        key = f"models.{name}"
        try:
            cls = model_spec(m["kind"])
        except KeyError as e:
            raise ConfigError(f"{key}.kind: {e.args[0]}") from None
        accepted = set(_accepted(cls))
        unknown = sorted(set(m.get("params", {})) - accepted)
        if unknown:
            raise ConfigError(
                f"{key}.params: {cls.class_name} has no parameter(s) {unknown}; "
                f"it accepts {sorted(accepted)}"
            )
        for i in m.get("inits", ["none"]):
            if i != "none" and i not in inits:
                raise ConfigError(f"{key}.inits: {i!r} is not defined under `inits`")
        for d in m.get("datasets") or []:
            if d not in datasets:
                raise ConfigError(f"{key}.datasets: {d!r} is not defined under `datasets`")


def _check_experiments(config: dict) -> None:
    """Cross references of ``experiments`` (the Gaussian-mixture experiments of rules/em.smk)."""
    ex = (config.get("experiments") or {}).get("gmm_exercise")
    if not ex:
        return
    for name, spec in ex["datasets"].items():
        key = f"experiments.gmm_exercise.datasets.{name}"
        if name in config["datasets"]:
            raise ConfigError(
                f"{key}: {name!r} is also defined under `datasets`; give the exercise's dataset "
                "its own name (its preparation differs and its runs are tracked under it)"
            )
        source = spec["source"]
        if source not in EMBEDDED and source not in download.SOURCES:
            raise ConfigError(
                f"{key}.source: unknown source {source!r}; choose from "
                f"{[*EMBEDDED, *download.SOURCES]}"
            )
        if source == "synthetic":
            raise ConfigError(f"{key}.source: the exercise needs images; 'synthetic' has none")
        if source == "npz" and not spec.get("path"):
            raise ConfigError(f"{key}.path is required for source 'npz'")
        split = spec.get("split") or "all"
        if split != "all" and not getattr(download.SOURCES.get(source), "has_split", False):
            raise ConfigError(f"{key}.split: {split!r} needs a source with a train/test split")


def init_spec(config: dict, init: str, dataset: str) -> dict:
    """The keys of init ``init`` as it runs on ``dataset``: its entry with that dataset's
    ``overrides`` applied (and ``overrides`` itself removed)."""
    spec = dict(config["inits"][init])
    over = spec.pop("overrides", None) or {}
    return {**spec, **over.get(dataset, {})}


def remote_source(config: dict, dataset: str) -> str | None:
    """The downloadable source of ``dataset`` (its raw files come from ``download_dataset``),
    or None for an embedded one."""
    source = config["datasets"][dataset]["source"]
    return source if source in download.SOURCES else None


def model_runs(config: dict) -> list[tuple[str, str, str, int]]:
    """Every (dataset, model, init, seed) to train."""
    out = []
    for model, m in config["models"].items():
        for dataset in m.get("datasets") or config["datasets"]:
            for init in m.get("inits", ["none"]):
                for seed in config["seeds"]:
                    out.append((dataset, model, init, seed))
    return out


# --- sweeps ----------------------------------------------------------------------------------
# A model entry may carry ``sweep: {param: [values]}``: one-factor sweeps around its own params.
# Every value that differs from the model's own value becomes a *variant*, a model named
# ``<model>.<param><value>`` (e.g. ``mixmate.lam0.5``) with that one param changed, trained and
# evaluated by the ordinary rules; the value equal to the model's own is the model itself, so it
# is never trained twice. Variants stay out of the main tables; each sweep gets its own table.


def _accepted(spec) -> dict[str, inspect.Parameter]:
    """Constructor parameters a config may set (a :class:`~mixlib.models.ModelSpec`)."""
    skip = {"self", "n_clusters", "random_state"}
    return {k: p for k, p in spec.parameters.items() if k not in skip}


def value_tag(value) -> str:
    """Text of a swept value inside a model name, safe for paths and the {model} wildcard:
    ``0.5 -> '0.5'``, ``3 -> '3'``, ``1e-05 -> '1e-05'``, ``1e+20 -> '1e20'``."""
    if isinstance(value, float):
        return repr(value).replace("+", "")
    return str(int(value))


def variant_name(model: str, param: str, value) -> str:
    """Name of the variant of ``model`` with ``param = value``, e.g. ``mixmate.lam0.5``."""
    return f"{model}.{param}{value_tag(value)}"


def own_value(spec: dict, param: str):
    """The value of ``param`` a model entry trains with: its ``params``, else the default of its
    class's constructor."""
    params = spec.get("params") or {}
    if param in params:
        return params[param]
    return _accepted(model_spec(spec["kind"]))[param].default


def _sweep_spec(config: dict, m: dict, raw) -> tuple[list, list[str], list[str]]:
    """(values, datasets, inits) of one sweep: ``raw`` is a list of values (on every dataset and
    init of the model) or ``{values, datasets, inits}`` restricting it to some of them."""
    if isinstance(raw, dict):
        values, datasets, inits = raw["values"], raw.get("datasets"), raw.get("inits")
    else:
        values, datasets, inits = raw, None, None
    datasets = list(datasets or m.get("datasets") or config["datasets"])
    inits = list(inits or m.get("inits", ["none"]))
    return list(values), datasets, inits


def sweeps(config: dict) -> list[dict]:
    """Every sweep of the config, in order: ``model``, ``param``, ``own`` (the model's own value),
    ``datasets`` and ``inits`` it runs on, and ``points``, a list of ``(value, model name)`` in
    the order given (the model's own name where the value equals its own value, a variant name
    otherwise)."""
    out = []
    for model, m in config["models"].items():
        for param, raw in (m.get("sweep") or {}).items():
            values, datasets, inits = _sweep_spec(config, m, raw)
            own = own_value(m, param)
            points = [(v, model if v == own else variant_name(model, param, v)) for v in values]
            out.append(
                dict(
                    model=model, param=param, own=own, datasets=datasets, inits=inits, points=points
                )
            )
    return out


def find_sweep(config: dict, model: str, param: str) -> dict:
    """The sweep of ``param`` on ``model`` (a KeyError naming it if there is none)."""
    for s in sweeps(config):
        if s["model"] == model and s["param"] == param:
            return s
    raise KeyError(f"models.{model}.sweep has no {param!r}")


def expand_models(config: dict) -> dict[str, dict]:
    """Every model to train by name: the config's entries (without ``sweep``) and their sweep
    variants, each a full entry (kind, params, inits, datasets) with its one param changed and
    the sweep's datasets and inits."""
    out = {n: {k: v for k, v in m.items() if k != "sweep"} for n, m in config["models"].items()}
    for s in sweeps(config):
        base = out[s["model"]]
        params = base.get("params") or {}
        for value, name in s["points"]:
            if name != s["model"]:
                out[name] = {
                    **base,
                    "params": {**params, s["param"]: value},
                    "datasets": s["datasets"],
                    "inits": s["inits"],
                }
    return out


def sweep_runs(config: dict, dataset: str, model: str, param: str):
    """Every (dataset, model name, init, seed) behind the sweep of ``param`` on ``model`` for
    ``dataset``, the model's own runs included where one of the values is its own."""
    s = find_sweep(config, model, param)
    return [
        (dataset, name, init, seed)
        for _, name in s["points"]
        for init in s["inits"]
        for seed in config["seeds"]
    ]


def _check_sweeps(config: dict) -> None:
    taken = set(config["models"])
    for name, m in config["models"].items():
        sweep = m.get("sweep") or {}
        if not sweep:
            continue
        key = f"models.{name}.sweep"
        try:
            cls = model_spec(m["kind"])
        except KeyError as e:
            raise ConfigError(f"models.{name}.kind: {e.args[0]}") from None
        accepted = _accepted(cls)
        for param, raw in sweep.items():
            if param not in accepted:
                raise ConfigError(
                    f"{key}: {cls.class_name} has no parameter {param!r}; "
                    f"it accepts {sorted(accepted)}"
                )
            values, datasets, inits = _sweep_spec(config, m, raw)
            for field, chosen, allowed in [
                ("datasets", datasets, m.get("datasets") or list(config["datasets"])),
                ("inits", inits, m.get("inits", ["none"])),
            ]:
                outside = [x for x in chosen if x not in allowed]
                if outside:
                    raise ConfigError(
                        f"{key}.{param}.{field}: {outside} not among the model's {field} {allowed}"
                    )
            own = own_value(m, param)
            if isinstance(own, (bool, str)):
                raise ConfigError(
                    f"{key}.{param}: only numeric parameters can be swept; "
                    f"{cls.class_name}'s {param} is {own!r}"
                )
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"{key}.{param}: {v!r} is not a number")
                if isinstance(own, int) and not isinstance(v, int):
                    raise ConfigError(
                        f"{key}.{param}: {v!r} is not an integer; {cls.class_name}'s {param} "
                        f"is an integer (default {own!r})"
                    )
                if v == own:
                    continue
                variant = variant_name(name, param, v)
                if variant in taken:
                    raise ConfigError(
                        f"{key}.{param}: the variant name {variant!r} of value {v!r} is taken "
                        "(by a model or another swept value); rename the model"
                    )
                taken.add(variant)
