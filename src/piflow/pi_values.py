"""One classification of a PI value into the value columns of the table contract (pure, no I/O).

PI values are polymorphic: numbers, booleans, strings, timestamps, ``{Name, Value, IsSystem}`` states, null.
Every table that stores one (``pi_values`` through :mod:`piflow.decode`, ``pi_event_frame_attributes``, the
asset views, AF static values) classifies it here, so one PI value lands in the same columns everywhere.

The value alone cannot tell a timestamp or a number sent as text from plain text: the stream's type decides
(a PI point type such as ``Float32``/``Timestamp``, or an AF attribute type such as ``Double``/``DateTime``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import msgspec
import orjson

from piflow import schema

# PI point types (Float32, Int32, Timestamp) and AF attribute types (Single, Double, DateTime), lower case.
NUMERIC_TYPES = frozenset({"float16", "float32", "float64", "int16", "int32", "int64", "single", "double", "float",
                           "uint16", "uint32", "uint64", "byte", "sbyte", "boolean"})
TIMESTAMP_TYPES = frozenset({"timestamp", "datetime"})


class PiState(msgspec.Struct, omit_defaults=True, gc=False):
    """A digital or system state: ``{Name, Value, IsSystem}``."""

    Name: str | None = None
    Value: int | None = None
    IsSystem: bool = False


class Classified(NamedTuple):
    """A PI value as the contract's columns: ``kind`` (one of ``schema.VALUE_KINDS``) says which one holds it."""

    kind: str
    double: float | None = None
    string: str | None = None
    state_code: int | None = None
    state_name: str | None = None
    is_system: bool = False


NULL = Classified(schema.KIND_NULL)
_TEXT, _NUMERIC, _TIMESTAMP = 0, 1, 2


@lru_cache(maxsize=256)
def _type_class(value_type: str | None) -> int:
    name = (value_type or "").strip().lower()
    return _NUMERIC if name in NUMERIC_TYPES else _TIMESTAMP if name in TIMESTAMP_TYPES else _TEXT


def is_numeric_type(value_type: str | None) -> bool:
    """Whether a point or attribute type holds numbers (booleans included, as 0/1)."""
    return _type_class(value_type) == _NUMERIC


def numeric_string(text: str) -> float | None:
    """A number sent as text (``"12.5"``, ``"NaN"``), or None when the text is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if not math.isnan(value) or text.strip().lower() == "nan" else None


def state_of(value: PiState | dict[str, Any]) -> tuple[str, int | None, str | None, bool]:
    """A ``{Name, Value, IsSystem}`` state as (kind, state_code, state_name, is_system): system when ``IsSystem``,
    digital otherwise (PI omits ``IsSystem: false``); a code that is not an integer is no code."""
    if isinstance(value, PiState):
        raw_name, raw_code, system = value.Name, value.Value, bool(value.IsSystem)
    else:
        raw_name, raw_code, system = value.get("Name"), value.get("Value"), bool(value.get("IsSystem"))
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    name = None if raw_name is None else str(raw_name)
    return (schema.KIND_SYSTEM if system else schema.KIND_DIGITAL), code, name, system


def classify(value: Any, value_type: str | None = None) -> Classified:
    """One PI value (decoded JSON, or a :class:`PiState`) as the contract's value columns (see
    :func:`classify_many`, which holds the rules)."""
    c = classify_many([value], value_type)
    return Classified(c.kind[0], c.double[0], c.string[0], c.state_code[0], c.state_name[0], c.is_system[0])


class Columns(NamedTuple):
    """Classified values column-wise: the fields of :class:`Classified`, one list each."""

    kind: list[str]
    double: list[float | None]
    string: list[str | None]
    state_code: list[int | None]
    state_name: list[str | None]
    is_system: list[bool]


def classify_many(values: Sequence[Any], value_type: str | None = None) -> Columns:
    """The values of one stream (of PI point or AF attribute type ``value_type``), classified column-wise.

    Booleans are numbers (1/0); a string is a number on a numeric stream when it parses as one, a timestamp on a
    Timestamp/DateTime stream, text otherwise; any JSON object is a state (system when ``IsSystem``, digital
    otherwise, as PI omits ``IsSystem: false``); null is null; anything else (an AF array attribute) is text, as
    JSON. One loop for every caller, written for the decoder's hot path.
    """
    n = len(values)
    type_class = _type_class(value_type)
    numeric = type_class == _NUMERIC
    text_kind = schema.KIND_TIMESTAMP if type_class == _TIMESTAMP else schema.KIND_STRING
    if not numeric and all(type(v) is str for v in values):  # a text stream: column at a time
        return Columns([text_kind] * n, [None] * n, list(values), [None] * n, [None] * n, [False] * n)
    out = Columns([], [], [], [], [], [])
    a_kind, a_dbl, a_txt = out.kind.append, out.double.append, out.string.append
    a_code, a_name, a_sys = out.state_code.append, out.state_name.append, out.is_system.append
    number, null, string = schema.KIND_NUMBER, schema.KIND_NULL, schema.KIND_STRING
    for v in values:
        kind, dbl, txt, code, name, system = null, None, None, None, None, False
        t = type(v)
        if t is float or t is int:
            kind, dbl = number, float(v)
        elif t is bool:
            kind, dbl = number, (1.0 if v else 0.0)
        elif t is str or isinstance(v, str):
            parsed = numeric_string(v) if numeric else None
            if parsed is not None:
                kind, dbl = number, parsed
            else:
                kind, txt = text_kind, (v if t is str else str(v))
        elif v is None:
            pass
        elif isinstance(v, bool):
            kind, dbl = number, (1.0 if v else 0.0)
        elif isinstance(v, int | float):
            kind, dbl = number, float(v)
        elif isinstance(v, PiState | dict):
            kind, code, name, system = state_of(v)
        else:
            kind, txt = string, orjson.dumps(v).decode("utf-8")
        a_kind(kind)
        a_dbl(dbl)
        a_txt(txt)
        a_code(code)
        a_name(name)
        a_sys(system)
    return out


def value_text(value: Any, value_type: str | None = None) -> tuple[str | None, float | None]:
    """The same classification as (text, number), for columns that hold one text or one number: numbers as PI
    wrote them (booleans true/false), states by name, timestamps and strings as sent."""
    c = classify(value, value_type)
    if c.kind == schema.KIND_NUMBER:
        if isinstance(value, bool):
            return ("true" if value else "false"), c.double
        if isinstance(value, int):
            return str(value), c.double
        return (repr(float(value)) if isinstance(value, float) else str(value)), c.double
    if c.kind in (schema.KIND_DIGITAL, schema.KIND_SYSTEM):
        return c.state_name, None
    return c.string, None
