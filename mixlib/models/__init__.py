"""Model registry: every clustering model registers itself under a ``kind`` name.

>>> from mixlib.models import build_model
>>> model = build_model("kmeans", n_clusters=10, random_state=0)

The pipeline looks models up by the ``kind`` given in ``config.yaml``; a workflow script never
branches on the model name.
"""

from __future__ import annotations

import importlib
import inspect

from .base import ClusterModel

_REGISTRY: dict[str, type] = {}
# modules that register models on import; a model file only needs adding here
_MODEL_MODULES = [
    "mixlib.models.anchors",
    "mixlib.models.mixmate",
    "mixlib.models.gmm_em",
    "mixlib.models.biglearn",
    "mixlib.models.power_kmeans",
]


def register(kind: str):
    """Class decorator: make a model available to the pipeline as ``kind``."""

    def deco(cls):
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"model kind {kind!r} is registered twice")
        _REGISTRY[kind] = cls
        cls.kind = kind
        return cls

    return deco


def _load_all() -> None:
    for mod in _MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a model module that does not exist yet
            if e.name != mod:
                raise


def available_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_model_class(kind: str) -> type:
    _load_all()
    if kind not in _REGISTRY:
        raise KeyError(f"unknown model kind {kind!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


def build_model(kind: str, *, n_clusters: int, random_state: int | None = None, **params):
    """Instantiate model ``kind``; unknown hyperparameters fail with their names."""
    cls = get_model_class(kind)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise TypeError(
            f"model kind {kind!r} has no parameter(s) {unknown}; it accepts {sorted(accepted)}"
        )
    kwargs = dict(params, n_clusters=n_clusters)
    if "random_state" in accepted:
        kwargs["random_state"] = random_state
    return cls(**kwargs)


def __getattr__(name):  # mixlib.models.MixMate etc., resolved lazily through the registry
    _load_all()
    for cls in _REGISTRY.values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'mixlib.models' has no attribute {name!r}")


__all__ = ["ClusterModel", "register", "build_model", "get_model_class", "available_models"]
