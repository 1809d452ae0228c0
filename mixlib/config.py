"""Checks of a workflow config beyond its JSON schema: cross references and model parameters.

The schema (``config/schema.yaml``) catches unknown keys and wrong types; this catches what a
schema cannot: a model listing an init that is not defined, a dataset name that does not exist,
a model kind missing from the registry, a hyperparameter the model does not accept.
"""

from __future__ import annotations

import inspect

from .models import get_model_class


class ConfigError(ValueError):
    pass


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the offending key."""
    inits, datasets = config["inits"], config["datasets"]
    for name, spec in datasets.items():
        if spec["source"] == "npz" and not spec.get("path"):
            raise ConfigError(f"datasets.{name}.path is required for source 'npz'")
    for name, m in config["models"].items():
        key = f"models.{name}"
        try:
            cls = get_model_class(m["kind"])
        except KeyError as e:
            raise ConfigError(f"{key}.kind: {e.args[0]}") from None
        accepted = set(inspect.signature(cls.__init__).parameters) - {
            "self",
            "n_clusters",
            "random_state",
        }
        unknown = sorted(set(m.get("params", {})) - accepted)
        if unknown:
            raise ConfigError(
                f"{key}.params: {cls.__name__} has no parameter(s) {unknown}; "
                f"it accepts {sorted(accepted)}"
            )
        for i in m.get("inits", ["none"]):
            if i != "none" and i not in inits:
                raise ConfigError(f"{key}.inits: {i!r} is not defined under `inits`")
        for d in m.get("datasets") or []:
            if d not in datasets:
                raise ConfigError(f"{key}.datasets: {d!r} is not defined under `datasets`")


def model_runs(config: dict) -> list[tuple[str, str, str, int]]:
    """Every (dataset, model, init, seed) to train."""
    out = []
    for model, m in config["models"].items():
        for dataset in m.get("datasets") or config["datasets"]:
            for init in m.get("inits", ["none"]):
                for seed in config["seeds"]:
                    out.append((dataset, model, init, seed))
    return out
