"""Model registry: every clustering model registers itself under a ``kind`` name.

>>> from mixlib.models import build_model
>>> model = build_model("kmeans", n_clusters=10, random_state=0)

The pipeline looks models up by the ``kind`` given in ``config.yaml``; a workflow script never
branches on the model name.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

_REGISTRY: dict[str, type] = {}
# modules that register models on import; a model file only needs adding here
_MODEL_MODULES = [
    "mixlib.models.anchors",
    "mixlib.models.mixmate",
    "mixlib.models.gmm_em",
    "mixlib.models.biglearn",
    "mixlib.models.power_kmeans",
    "mixlib.models.n2d",
    "mixlib.models.dec",
    "mixlib.models.kdae",
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
    """The class registered as ``kind``; imports only the module that defines it (a k-means job
    does not pay for importing torch), or every model module to report an unknown kind."""
    static = _static_specs()
    if kind not in _REGISTRY and kind in static:
        importlib.import_module(static[kind].module)
    if kind not in _REGISTRY:
        _load_all()
    if kind not in _REGISTRY:
        raise KeyError(f"unknown model kind {kind!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


@dataclass(frozen=True)
class ModelSpec:
    """What the workflow needs to know about a model kind before any job runs: its class name,
    its constructor's keyword parameters with their defaults and its parameter constraints."""

    kind: str
    class_name: str
    parameters: dict[str, inspect.Parameter]
    module: str
    constraints: dict = field(default_factory=dict)

    def validate(self, params: dict, owner: str | None = None) -> None:
        """Check hyperparameters against the class's constraints
        (:func:`mixlib.models.base.validate_params`, the function ``fit`` calls)."""
        from .params import validate_params

        validate_params(params, self.constraints, owner or self.class_name)


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)  # a non-literal default: kept as its source text


def _constraints(node, by_class: dict[str, dict]) -> dict:
    """A literal ``_parameter_constraints`` dict, which may start from an earlier class's in the
    same module (``{**DEC._parameter_constraints, "gamma": ...}``)."""
    if not isinstance(node, ast.Dict):
        return ast.literal_eval(node)
    out = {}
    for key, value in zip(node.keys, node.values):
        if key is None:  # ** of Base._parameter_constraints
            out.update(by_class[value.value.id])
        else:
            out[ast.literal_eval(key)] = ast.literal_eval(value)
    return out


@functools.cache
def _static_specs() -> dict[str, ModelSpec]:
    """The built-in models read from their source files without importing them (no torch, no
    scikit-learn): a Snakemake start, a dry run and every SLURM job re-parse the workflow, and
    importing torch there costs seconds each. Constructor defaults and the literal
    ``_parameter_constraints`` are read from the class bodies;
    ``tests/test_init_and_tables.py::test_model_specs_read_statically_match_the_imported_classes``
    checks that this agrees with the imported classes."""
    out = {}
    for mod in _MODEL_MODULES:
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            continue
        tree = ast.parse(Path(spec.origin).read_text())
        by_class: dict[str, dict] = {}  # constraints of the classes read so far in this module
        for cls in tree.body:
            if not isinstance(cls, ast.ClassDef):
                continue
            kinds = [
                d.args[0].value
                for d in cls.decorator_list
                if isinstance(d, ast.Call)
                and getattr(d.func, "id", None) == "register"
                and d.args
                and isinstance(d.args[0], ast.Constant)
            ]
            init = next(
                (f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"),
                None,
            )
            if not kinds or init is None:
                continue
            a = init.args
            pos = a.posonlyargs + a.args
            defaults = [inspect.Parameter.empty] * (len(pos) - len(a.defaults)) + [
                _literal(d) for d in a.defaults
            ]
            params = {
                arg.arg: inspect.Parameter(
                    arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d
                )
                for arg, d in zip(pos, defaults)
                if arg.arg != "self"
            }
            constraints = next(
                (
                    _constraints(node.value, by_class)
                    for node in cls.body
                    if isinstance(node, ast.Assign | ast.AnnAssign)
                    and getattr(
                        node.targets[0] if isinstance(node, ast.Assign) else node.target, "id", None
                    )
                    == "_parameter_constraints"
                ),
                {},
            )
            by_class[cls.name] = constraints
            for kind in kinds:
                out[kind] = ModelSpec(kind, cls.name, params, mod, constraints)
    return out


def model_spec(kind: str) -> ModelSpec:
    """Class name, constructor parameters and constraints of model ``kind``, without importing
    the built-in model modules; a kind registered elsewhere is looked up in the imported
    registry."""
    static = _static_specs()
    if kind in static:
        return static[kind]
    cls = get_model_class(kind)  # KeyError naming the available kinds
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return ModelSpec(kind, cls.__name__, params, cls.__module__, dict(cls._parameter_constraints))


def build_model(kind: str, *, n_clusters: int, random_state: int | None = None, **params):
    """Instantiate model ``kind`` (its hyperparameters are checked by its ``fit``)."""
    cls = get_model_class(kind)
    kwargs = dict(params, n_clusters=n_clusters)
    if "random_state" in model_spec(kind).parameters:
        kwargs["random_state"] = random_state
    return cls(**kwargs)


#: Model kinds whose auto-encoder pre-training the workflow runs as a job of its own (the rule
#: ``pretrain_autoencoder``), once per dataset, seed and pre-training recipe, for every model of
#: the same family: DEC, IDEC and DCN start from one pre-trained auto-encoder, as the authors'
#: IDEC code loads the weights DEC's pre-training saved (``fit(X, pretrained=model.pretrain(X))``;
#: DCN's authors pre-train their own way, a deviation stated in its docstring).
PRETRAINED_FAMILIES = {"dec": "dec", "idec": "dec", "dcn": "dec"}
#: the hyperparameters the pre-training depends on (with the seed and the data)
PRETRAIN_KEYS = (
    "hidden_dims",
    "embedding_size",
    "pretrain_epochs",
    "pretrain_optimizer",
    "pretrain_lr",
    "batch_size",
    "flush_denormal",
    "device",
    "dtype",
)


def pretrain_recipe(params: dict) -> dict:
    """The pre-training hyperparameters among ``params`` (all of ``PRETRAIN_KEYS``, as a
    fitted model's ``get_params()`` holds them), in a canonical form (lists, floats)."""
    r = {k: params[k] for k in PRETRAIN_KEYS}
    r["hidden_dims"] = [int(h) for h in r["hidden_dims"]]
    r["pretrain_lr"] = float(r["pretrain_lr"])
    return r


def pretrain_key(kind: str, params: dict) -> str | None:
    """The ``{recipe}`` wildcard of model ``kind`` with config ``params`` (defaults filled from
    its constructor), or None for a kind without a shared pre-training: the family and a hash
    of :func:`pretrain_recipe`, equal for the models that can share one pre-trained
    auto-encoder."""
    family = PRETRAINED_FAMILIES.get(kind)
    if family is None:
        return None
    spec = model_spec(kind)
    full = {k: params.get(k, spec.parameters[k].default) for k in PRETRAIN_KEYS}
    blob = json.dumps(pretrain_recipe(full), sort_keys=True).encode()
    return f"{family}-{hashlib.sha1(blob).hexdigest()[:10]}"


def data_fingerprint(X) -> str:
    """sha1 of an array's shape, dtype and bytes: the data a pre-training saw."""
    import numpy as np

    a = np.ascontiguousarray(X)
    h = hashlib.sha1(f"{a.shape}{a.dtype}".encode())
    h.update(memoryview(a).cast("B"))  # no copy
    return h.hexdigest()


def uses_gpu(kind: str, params: dict | None = None) -> bool:
    """Whether model ``kind`` with hyperparameters ``params`` would run on a GPU when one is
    present: it takes a ``device`` parameter (the torch models) that is not set to ``"cpu"``.
    The workflow asks SLURM for a GPU (``resources: gpu=1``) for exactly these training jobs."""
    default = model_spec(kind).parameters.get("device")
    if default is None:
        return False
    device = (params or {}).get("device", default.default)
    return str(device) != "cpu"


#: Model kinds that train a deep auto-encoder (pre-training, then clustering epochs): on 70,000
#: images on a CPU their jobs take an hour or more (deep power k-means on one thread: 126 min on
#: a 2-core AMD EPYC, 56 min on an Intel Xeon with AMX) against minutes for most other jobs
#: (MixMate 6-15 min, the anchors 1-7 min; README, "Full scale").
AUTOENCODER_KINDS = frozenset({"deep_power_kmeans", "dec", "idec", "dcn", "n2d", "kdae", "damic"})


def schedule_priority(kind: str, params: dict | None = None) -> int:
    """Snakemake priority of the training (and pre-training) jobs of model ``kind`` with
    hyperparameters ``params``: 1 for the jobs known to take ~10x the others, 0 for the rest.
    Those are the auto-encoder kinds and MixMate with missing pixels (``erase_prob`` and
    ``erase_frac`` > 0: its masked rows take the direct FISTA path, ~95 s an epoch on 70k
    MNIST against ~9 s without a mask, one thread). Of the jobs ready to run, Snakemake starts
    those of higher priority first, so the long jobs start before the short ones
    (longest-first) instead of in whatever order the scheduler picks: on a 2-core machine a
    long job started last would end the run alone for an hour or more."""
    if kind in AUTOENCODER_KINDS:
        return 1
    if kind != "mixmate":
        return 0
    spec = model_spec(kind).parameters  # the constructor's defaults where params leave them
    erase = [(params or {}).get(k, spec[k].default) for k in ("erase_prob", "erase_frac")]
    return int(all(v > 0 for v in erase))


def __getattr__(name):  # mixlib.models.MixMate etc., resolved lazily through the registry
    if name == "ClusterModel":
        from .base import ClusterModel

        return ClusterModel
    _load_all()
    for cls in _REGISTRY.values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'mixlib.models' has no attribute {name!r}")


__all__ = [
    "ClusterModel",
    "register",
    "build_model",
    "get_model_class",
    "model_spec",
    "available_models",
    "uses_gpu",
    "schedule_priority",
]
