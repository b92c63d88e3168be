"""Values no sink can store, found before a write so one bad record fails one item.

A vendor answering ``"power": NaN`` is not hypothetical: Python's ``json`` accepts ``NaN``,
``Infinity`` and ``1e999`` (→ inf). DynamoDB refuses such a number and with it the whole
BatchWriteItem; SQLite silently stores NaN as NULL; JSON text of NaN is not JSON, so
PostgreSQL's ``jsonb`` refuses it. Every sink therefore fails a record holding a non-finite
number (or a string that is not valid UTF-8) with a reason naming the attribute, the same
way whatever the sink, and writes the rest of the batch. Sink-specific limits (DynamoDB's
38 digits, a PostgreSQL column's range) are checked by each sink on top of this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping

from fleetsync.sinks.base import JSONValue

__all__ = ["json_safe", "json_text", "leaves", "refusal"]


def leaves(value: JSONValue, path: str) -> Iterator[tuple[str, JSONValue]]:
    """Every scalar inside ``value`` with its path (``reading.values[2]``)."""
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from leaves(inner, f"{path}.{name}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from leaves(inner, f"{path}[{i}]")
    else:
        yield path, value


def _portable_problem(value: JSONValue) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else ("+Infinity" if value > 0 else "-Infinity")
        return f"is {text}: no sink stores a non-finite number (it is not valid JSON either)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate: the text is not valid UTF-8"
    return None


def refusal(
    attributes: Mapping[str, JSONValue],
    check: Callable[[JSONValue], str | None] = lambda _: None,
) -> str | None:
    """Why a record with ``attributes`` cannot be stored (None when it can).

    ``check`` adds the sink's own limits for one scalar; the reason names the attribute."""
    for name, value in attributes.items():
        if not isinstance(value, dict | list):  # a scalar: no walk, no path to build
            reason = _portable_problem(value) or check(value)
            if reason is not None:
                return f"attribute {name!r} {reason}"
            continue
        for path, leaf in leaves(value, name):
            reason = _portable_problem(leaf) or check(leaf)
            if reason is not None:
                return f"attribute {path!r} {reason}"
    return None


def json_safe(value: JSONValue) -> JSONValue:
    """``value`` with non-finite numbers as their text, so it can be kept as JSON (a dead
    letter's item must be stored even when the item itself is what was wrong)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def json_text(value: Mapping[str, JSONValue]) -> str:
    """Strict JSON text of ``value`` (non-finite numbers as text, see :func:`json_safe`)."""
    return json.dumps(json_safe(dict(value)), allow_nan=False)
