"""Parameter constraints of the models and the one function that checks them.

Each model declares ``_parameter_constraints = {name: constraint or [constraint, ...]}``
(scikit-learn's style; a value passes when it meets any constraint of its list). They are
literals (strings, sets, None) so that the workflow can read them from the model's source and
check a config before any job starts without importing the model's module (torch, scikit-learn):

``"int >= 1"``, ``"int in [0, 10]"``   an integer (not a bool) in the range
``"real > 0"``, ``"real in [0, 1)"``    a finite real (int or float, not a bool) in the range
``"bool"``                              True or False
``"str"``                               any string
``"ints >= 1"``                         a list or tuple of integers in the range
``"array"``                             anything but None or a string (shape checked by the model)
``{"a", "b"}``                          one of these values
``None``                                None

This module imports nothing but the standard library.
"""

from __future__ import annotations

import math
import numbers
import re

_RANGE = re.compile(
    r"^(?P<kind>int|real|ints) (?:(?P<op>>=|>|<=|<) (?P<bound>\S+)"
    r"|in (?P<lb>[\[(])(?P<lo>[^,]+), (?P<hi>[^\])]+)(?P<rb>[\])]))$"
)


def _in_range(v: float, spec: str) -> bool:
    m = _RANGE.match(spec)
    if m is None:  # a typo in a class's constraints: fail loudly, not silently pass
        raise ValueError(f"unknown parameter constraint {spec!r}")
    if m["op"]:
        b = float(m["bound"])
        return {">=": v >= b, ">": v > b, "<=": v <= b, "<": v < b}[m["op"]]
    lo, hi = float(m["lo"]), float(m["hi"])
    return (v >= lo if m["lb"] == "[" else v > lo) and (v <= hi if m["rb"] == "]" else v < hi)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _meets(value, c) -> bool:
    """Whether ``value`` meets one constraint ``c`` (see the module docstring)."""
    if c is None:
        return value is None
    if isinstance(c, set | frozenset):
        return isinstance(value, str | int | float | type(None)) and value in c
    if c == "bool":
        return type(value).__name__ in ("bool", "bool_")  # Python's or numpy's
    if c == "str":
        return isinstance(value, str)
    if c == "array":
        return value is not None and not isinstance(value, str)
    if c.startswith("int "):
        return _is_int(value) and _in_range(value, c)
    if c.startswith("ints "):
        return isinstance(value, list | tuple) and all(
            _is_int(v) and _in_range(v, c) for v in value
        )
    if c.startswith("real "):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok and math.isfinite(value) and _in_range(float(value), c)
    raise ValueError(f"unknown parameter constraint {c!r}")


def _describe(c) -> str:
    if c is None:
        return "None"
    if isinstance(c, set | frozenset):
        return "one of " + ", ".join(repr(v) for v in sorted(c, key=str))
    return {"bool": "a bool", "str": "a string", "array": "an array"}.get(
        c, c.replace("int ", "an integer ", 1).replace("real ", "a real number ", 1)
    )


def validate_params(params: dict, constraints: dict, owner: str) -> None:
    """Check ``params`` (name -> value) against ``constraints``; raise a ``ValueError`` naming
    ``owner``, the parameter, what it must be and what it is. Unknown names are errors too."""
    for name, value in params.items():
        if name not in constraints:
            raise ValueError(f"{owner} has no parameter {name!r}; it accepts {sorted(constraints)}")
        allowed = constraints[name]
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if not any(_meets(value, c) for c in allowed):
            want = " or ".join(_describe(c) for c in allowed)
            raise ValueError(f"{owner}: {name} must be {want}, got {value!r}")
