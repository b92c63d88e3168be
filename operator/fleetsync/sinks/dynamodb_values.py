"""Python values to DynamoDB's and back, and the limits DynamoDB puts on them.

Apart from the sink because it is pure and because these limits decide whether one record
fails alone or takes its batch with it: DynamoDB refuses a whole BatchWriteItem when one
item holds a number it cannot store (more than 38 significant digits, a magnitude outside
1e-130 … 9.99e125, NaN or ±Infinity) or a key attribute that is empty or too long, and
boto3's serialiser raises on some of them before sending. Checking each record first turns
that into ``failed[key] = reason`` for that record alone.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from fleetsync.sinks.base import JSONValue, Record
from fleetsync.sinks.values import refusal

__all__ = [
    "KeyForEveryField",
    "Template",
    "from_dynamo",
    "item_refusal",
    "put_request",
    "to_dynamo",
    "wire",
]

_DIGITS = 38
_MAX_EXPONENT = 125  # 9.9999999999999999999999999999999999999E+125
_MIN_EXPONENT = -130  # 1E-130
_KEY_BYTES = {0: 2048, 1: 1024}  # partition key, sort key
_serializer = TypeSerializer()


def wire(item: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values (see :func:`to_dynamo`) as DynamoDB's typed attribute values."""
    return {k: _serializer.serialize(v) for k, v in item.items()}


def to_dynamo(value: Any) -> Any:
    """A value for boto3's resource layer: floats become Decimals (boto3 refuses floats)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_dynamo(v) for v in value]
    return str(value)


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    return value


def _number_problem(value: JSONValue) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if number == 0:
        return None
    digits = number.as_tuple().digits
    significant = len(bytes(digits).rstrip(b"\0"))  # trailing zeros are the exponent's
    if significant > _DIGITS:
        return f"has {significant} significant digits; DynamoDB keeps at most {_DIGITS}"
    if number.adjusted() > _MAX_EXPONENT:
        return "is too large for DynamoDB (its numbers stop below 1e126)"
    if number.adjusted() < _MIN_EXPONENT:
        return "is too small for DynamoDB (its smallest non-zero magnitude is 1e-130)"
    return None


def item_refusal(attributes: Mapping[str, JSONValue], key: Mapping[str, str]) -> str | None:
    """Why DynamoDB would refuse an item with these attributes and key (None if it will not)."""
    for i, (name, value) in enumerate(key.items()):
        if not value:
            return f"key attribute {name!r} is empty; DynamoDB refuses empty key values"
        limit = _KEY_BYTES[min(i, 1)]
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            return f"key attribute {name!r} is longer than DynamoDB's {limit} bytes"
    return refusal(attributes, _number_problem)


def put_request(
    record: Record, key: Mapping[str, str], expires: tuple[str, int] | None
) -> dict[str, Any]:
    """The record as a PutRequest on the wire, with the bookkeeping attributes and the TTL
    attribute; ValueError says why DynamoDB could not store it."""
    reason = item_refusal(record.attributes, key)
    if reason is not None:
        raise ValueError(reason)
    item = {k: to_dynamo(v) for k, v in record.attributes.items() if v is not None}
    item.update(key)
    item["_fs_key"] = record.key
    item["_fs_hash"] = record.content_hash
    item["_fs_synced_at"] = to_dynamo(record.synced_at)
    if expires is not None:
        item[expires[0]] = expires[1]
    try:
        return {"PutRequest": {"Item": wire(item)}}
    except (TypeError, ArithmeticError) as error:  # boto3's serialiser: decimal traps
        raise ValueError(f"boto3 cannot serialise the item: {error!r}") from None


class KeyForEveryField(dict[str, JSONValue]):
    """An item whose every field is the fleet key: reads expand ``PLANT#{id}`` from a key."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self._key = key

    def __missing__(self, name: str) -> JSONValue:
        return self._key


class Template(string.Formatter):
    """``PLANT#{id}`` over the item; ``{key}`` is the fleet key. Missing fields are errors."""

    def expand(self, template: str, item: Mapping[str, JSONValue], key: str) -> str:
        values = item if isinstance(item, KeyForEveryField) else {**item, "key": key}
        return self.vformat(template, (), values)
