"""Vendor response → record attributes, by JSONPath; and the hash that detects change.

jsonpath-ng compiles each path once per run. A path that matches nothing, or a body that is
not JSON, is a :class:`~fleetsync.errors.PayloadError` for that item alone.

A vendor's body is untrusted, so whatever it holds ends as a record or as a PayloadError
with a reason, never as another exception (which would fail the item as an "internal error"
or, past the engine's guard, stall the shard): NaN and Infinity (``NaN``, ``1e999``) are
refused, as are numbers with more digits than Python parses, nesting past
:data:`MAX_DEPTH`, text that cannot be encoded as UTF-8 (an unpaired ``\\ud800``), and
integers a 64-bit column cannot hold.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import cast

from jsonpath_ng import jsonpath as _jsonpath
from jsonpath_ng.ext.parser import parse as parse_jsonpath
from jsonpath_ng.jsonpath import Child, Fields, JSONPath, Root

from fleetsync.api.v1alpha1._rules import finite_json, loads_finite
from fleetsync.api.v1alpha1.syncjob import ITEM_PREFIX
from fleetsync.errors import PayloadError
from fleetsync.sinks.base import JSONValue

__all__ = ["MAX_DEPTH", "Mapper", "content_hash"]

MAX_DEPTH = 64
_INT64 = 2**63


def _check_value(name: str, value: JSONValue) -> None:
    """PayloadError unless ``value`` is storable: finite, UTF-8, shallow, 64-bit integers."""
    if _plainly_storable(value):
        return
    try:
        finite_json(value, name, max_depth=MAX_DEPTH)
    except ValueError as error:
        raise PayloadError(f"mapping {error}") from None
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, int) and not isinstance(node, bool) and not -_INT64 <= node < _INT64:
            raise PayloadError(f"mapping {name}: an integer does not fit in 64 bits")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _plainly_storable(value: JSONValue) -> bool:
    """The common scalars, decided without the walk (most mapped values are these); False
    means "walk it", not "refused"."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    return isinstance(value, str) and value.isascii()  # ASCII text is always UTF-8


class Mapper:
    """Applies the manifest's ``mapping`` to a decoded vendor response."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._item_fields = {
            name: path[len(ITEM_PREFIX) :]
            for name, path in mapping.items()
            if path.startswith(ITEM_PREFIX)
        }
        self._paths = {
            name: (path, _plain_keys(compiled) or compiled)
            for name, path in mapping.items()
            if name not in self._item_fields
            for compiled in [parse_jsonpath(path)]
        }

    def decode(self, body: bytes) -> JSONValue:
        try:
            value = cast(JSONValue, loads_finite(body))
        except json.JSONDecodeError as error:
            raise PayloadError(f"invalid JSON at byte {error.pos}: {error.msg}") from None
        except UnicodeDecodeError as error:
            raise PayloadError(f"response is not UTF-8 JSON (byte offset {error.start})") from None
        except RecursionError:
            raise PayloadError("response nests too deeply") from None
        except ValueError as error:  # NaN/Infinity, overflowing floats, the int digits limit
            raise PayloadError(f"response holds an unusable number: {error}") from None
        return value

    def apply(
        self, document: JSONValue, item: Mapping[str, JSONValue] | None = None
    ) -> dict[str, JSONValue]:
        attributes = self._from_response(document)
        for name, field in self._item_fields.items():
            value = (item or {}).get(field)
            if value is None:
                raise PayloadError(f"mapping {name}: the item has no field {field!r}")
            attributes[name] = value
        for name, value in attributes.items():
            _check_value(name, value)
        return attributes

    def _from_response(self, document: JSONValue) -> dict[str, JSONValue]:
        if not self._paths and not self._item_fields:
            if not isinstance(document, dict):
                raise PayloadError("response is not a JSON object and no mapping is set")
            return dict(document)
        attributes: dict[str, JSONValue] = {}
        for name, (text, path) in self._paths.items():
            if isinstance(path, tuple):  # a plain $.a.b: dictionary lookups, as jsonpath-ng does
                value = _lookup(document, path)
                if value is _MISSING:
                    raise PayloadError(f"mapping {name}: {text} matched nothing in the response")
                attributes[name] = cast(JSONValue, value)
                continue
            try:
                matches = path.find(document)
            except RecursionError:
                raise PayloadError(f"mapping {name}: the response nests too deeply") from None
            except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
                # jsonpath-ng filters compare whatever the vendor sent (str < int, ...).
                reason = f"{text} cannot be applied ({type(error).__name__})"
                raise PayloadError(f"mapping {name}: {reason}") from None
            if not matches:
                raise PayloadError(f"mapping {name}: {text} matched nothing in the response")
            attributes[name] = matches[0].value
        return attributes


_MISSING = object()


def _plain_keys(path: JSONPath) -> tuple[str, ...] | None:
    """The keys of a path that only names object members from the root (``$.data.power``,
    ``$['data']['power']``), which is most mappings; None for anything else. Such a path is
    evaluated by :func:`_lookup` (a path per item through jsonpath-ng cost ~6 % of a run's
    CPU); ``tests/unit/test_mapping.py`` checks both agree on arbitrary documents."""
    keys: list[str] = []
    while isinstance(path, Child):
        right = path.right
        if type(right) is not Fields or len(right.fields) != 1 or right.fields[0] == "*":
            return None
        keys.append(right.fields[0])
        path = path.left
    if type(path) is not Root or _jsonpath.auto_id_field is not None:
        return None
    return tuple(reversed(keys))


def _lookup(document: object, keys: tuple[str, ...]) -> object:
    for key in keys:
        if not isinstance(document, dict):
            return _MISSING
        document = document.get(key, _MISSING)
        if document is _MISSING:
            return _MISSING
    return document


# json.dumps with options builds an encoder per call; this runs once per item.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def content_hash(attributes: Mapping[str, JSONValue]) -> str:
    """A stable hash of mapped attributes: unchanged items cost no write."""
    canonical = _CANONICAL.encode(attributes)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
