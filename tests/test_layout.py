"""The package's layering, read from its source: no import cycles between mixlib's modules, and
the models import nothing from the rest of mixlib but the shared numeric helpers."""

import ast
import graphlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mixlib"
# what a model may import from mixlib besides mixlib.models: numeric helpers shared with the
# stages (devices and seeds; the initialisation maths MixMate starts from) and the native kernels
MODEL_MAY_IMPORT = {"mixlib.utils", "mixlib.init", "mixlib.native"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    p = PKG.parent / name.replace(".", "/")
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def imports_of(src: str, name: str, package: str) -> set[str]:
    """mixlib modules that the source ``src`` of module ``name`` (in ``package``) imports,
    anywhere in it (function-local imports included)."""
    out = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mixlib")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("mixlib"):  # `from . import x`: x may be a module or a name
                out |= {
                    f"{mod}.{a.name}" if _is_module(f"{mod}.{a.name}") else mod for a in node.names
                }
    return out - {name}


def _graph() -> dict[str, set[str]]:
    g = {}
    for path in PKG.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        g[name] = imports_of(path.read_text(), name, package)
    return g


def test_no_import_cycles():
    # a package importing its own submodules (the model registry loading its models) is not a
    # cycle of the layering; every other cycle is
    g = {a: {b for b in deps if not b.startswith(a + ".")} for a, deps in _graph().items()}
    try:
        graphlib.TopologicalSorter(g).prepare()
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {e.args[1]}") from None


def test_models_import_only_models_and_numeric_helpers():
    g = _graph()
    bad = sorted(
        (src, dst)
        for src, deps in g.items()
        if src.startswith("mixlib.models")
        for dst in deps
        if not dst.startswith("mixlib.models") and dst not in MODEL_MAY_IMPORT
    )
    assert not bad, bad
    for helper in MODEL_MAY_IMPORT:  # and the helpers import nothing above them
        assert g[helper] <= MODEL_MAY_IMPORT, (helper, g[helper])


def test_the_walk_sees_local_and_relative_imports():
    """A model importing the plotting module inside a method is caught, and so is a cycle."""
    src = "def f():\n    from ..plots import savefig\n    from .. import em_experiments\n"
    found = imports_of(src, "mixlib.models.gmm_em", "mixlib.models")
    assert found == {"mixlib.plots", "mixlib.em_experiments"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).prepare()
