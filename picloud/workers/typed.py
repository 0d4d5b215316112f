"""The engine's typed value form (`engine/ABI.md`) and its plain-Python counterpart.

A typed value is ``{"type": T, "value": V}``. The plain form is what Python code works with:

========== ======================================================
typed      plain Python
========== ======================================================
int        ``int``
float      ``float`` (``"inf"``, ``"-inf"``, ``"NaN"`` map to the IEEE values)
bool       ``bool``
string     ``str``
char       ``str`` of length 1 (the plain form does not tell it from a string)
unit       ``None``
array      ``list``
blob       ``bytes``
map        ``dict[str, ...]``
fn         :class:`FnPtr`
timestamp  ``float`` (milliseconds)
========== ======================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class FnPtr:
    """A Rhai function pointer as it leaves the engine: only its name crosses."""

    name: str


class TypedValueError(ValueError):
    """A value that has no typed form, or a malformed typed value."""


def _float_from(v: Any) -> float:
    if isinstance(v, str):
        if v == "inf":
            return math.inf
        if v == "-inf":
            return -math.inf
        if v == "NaN":
            return math.nan
        raise TypedValueError(f"bad float {v!r}")
    return float(v)


def _float_to(v: float) -> float | str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def from_typed(t: Mapping[str, Any]) -> Any:
    """Typed form → plain Python."""
    try:
        kind = t["type"]
        v: Any = t.get("value")
    except (TypeError, KeyError, AttributeError) as exc:
        raise TypedValueError(f"not a typed value: {t!r}") from exc
    if kind == "int" or kind == "bool" or kind == "string" or kind == "char":
        return v
    if kind == "unit":
        return None
    if kind == "float":
        return _float_from(v)
    if kind == "array":
        return [from_typed(x) for x in v]
    if kind == "map":
        return {k: from_typed(x) for k, x in v.items()}
    if kind == "blob":
        return bytes(v)
    if kind == "fn":
        return FnPtr(str(v))
    if kind == "timestamp":
        return _float_from(v)
    raise TypedValueError(f"unknown type {kind!r}")


def to_typed(v: Any) -> dict[str, Any]:
    """Plain Python → typed form. Tuples count as arrays, bytearrays as blobs."""
    if v is None:
        return {"type": "unit", "value": None}
    if v is True or v is False:
        return {"type": "bool", "value": v}
    if isinstance(v, int):
        if not INT_MIN <= v <= INT_MAX:
            raise TypedValueError(f"integer {v} does not fit in i64")
        return {"type": "int", "value": int(v)}
    if isinstance(v, float):
        return {"type": "float", "value": _float_to(v)}
    if isinstance(v, str):
        return {"type": "string", "value": v}
    if isinstance(v, bytes | bytearray | memoryview):
        return {"type": "blob", "value": list(bytes(v))}
    if isinstance(v, list | tuple):
        return {"type": "array", "value": [to_typed(x) for x in v]}
    if isinstance(v, Mapping):
        out = {}
        for k in sorted(v):
            if not isinstance(k, str):
                raise TypedValueError(f"map keys must be strings, got {k!r}")
            out[k] = to_typed(v[k])
        return {"type": "map", "value": out}
    if isinstance(v, FnPtr):
        return {"type": "fn", "value": v.name}
    raise TypedValueError(f"no Rhai value for {type(v).__name__}")


def char(c: str) -> dict[str, Any]:
    """The typed form of a Rhai `char` (plain strings become `string`)."""
    if len(c) != 1:
        raise TypedValueError(f"a char is one character, got {c!r}")
    return {"type": "char", "value": c}
