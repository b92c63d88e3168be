"""What a PostgreSQL column can hold, checked per record before the batch is sent.

PostgreSQL refuses a whole multi-row INSERT when one row is wrong; the sink then halves the
batch to find the record, at the price of extra statements and a terse server message.
The refusals we can foresee are found here instead, with a reason naming the attribute:
non-finite numbers and invalid UTF-8 (every sink, :mod:`fleetsync.sinks.values`), NUL
characters (PostgreSQL's text and jsonb cannot hold U+0000) and integers outside their
integer column's range.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from fleetsync.sinks.base import JSONValue
from fleetsync.sinks.values import leaves, refusal

__all__ = ["column_refusal", "no_nul", "sql_type"]

V = TypeVar("V")
_INTEGER_BITS = {"smallint": 16, "integer": 32, "bigint": 64}
_FLOAT_MAX = 1.7976931348623157e308


def sql_type(value: JSONValue) -> str:
    """The column type for an attribute first seen with ``value``."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, dict | list):
        return "jsonb"
    return "text"


def _text_problem(value: JSONValue) -> str | None:
    if isinstance(value, str) and "\x00" in value:
        return "holds a NUL character, which PostgreSQL text and jsonb cannot store"
    return None


def _range_problem(kind: str, value: JSONValue) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    bits = _INTEGER_BITS.get(kind)
    if bits is not None and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        return f"is {value}, outside the range of its {kind} column"
    if kind in ("double precision", "real") and abs(value) > _FLOAT_MAX:
        return f"is too large for its {kind} column"
    return None


def column_refusal(
    key: str,
    attributes: Mapping[str, JSONValue],
    column_type: Callable[[str, JSONValue], str],
) -> str | None:
    """Why PostgreSQL would refuse the record (None when it should not); ``column_type``
    gives the type of the column an attribute lands in."""
    if "\x00" in key:
        return "its key holds a NUL character, which PostgreSQL text cannot store"
    reason = refusal(attributes, _text_problem)
    if reason is not None:
        return reason
    for name, value in attributes.items():
        kind = column_type(name, value)
        for path, leaf in leaves(value, name) if kind != "jsonb" else ():
            if (problem := _range_problem(kind, leaf)) is not None:
                return f"attribute {path!r} {problem}"
    return None


def no_nul(value: V) -> V:
    """``value`` with NUL characters replaced (U+FFFD): a dead letter's copy of a bad item
    must still be storable."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: no_nul(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [no_nul(v) for v in value]  # type: ignore[return-value]
    return value
