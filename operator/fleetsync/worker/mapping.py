"""Vendor response → record attributes, by JSONPath; and the hash that detects change.

jsonpath-ng compiles each path once per run. A path that matches nothing, or a body that is
not JSON, is a :class:`~fleetsync.errors.PayloadError` for that item alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from jsonpath_ng.ext.parser import parse as parse_jsonpath

from fleetsync.api.v1alpha1.syncjob import ITEM_PREFIX
from fleetsync.errors import PayloadError
from fleetsync.sinks.base import JSONValue

__all__ = ["Mapper", "content_hash"]


class Mapper:
    """Applies the manifest's ``mapping`` to a decoded vendor response."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._item_fields = {
            name: path[len(ITEM_PREFIX) :]
            for name, path in mapping.items()
            if path.startswith(ITEM_PREFIX)
        }
        self._paths = {
            name: (path, parse_jsonpath(path))
            for name, path in mapping.items()
            if name not in self._item_fields
        }

    def decode(self, body: bytes) -> JSONValue:
        try:
            value: JSONValue = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PayloadError(f"response is not JSON: {error}") from None
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
        return attributes

    def _from_response(self, document: JSONValue) -> dict[str, JSONValue]:
        if not self._paths and not self._item_fields:
            if not isinstance(document, dict):
                raise PayloadError("response is not a JSON object and no mapping is set")
            return dict(document)
        attributes: dict[str, JSONValue] = {}
        for name, (text, path) in self._paths.items():
            matches = path.find(document)
            if not matches:
                raise PayloadError(f"mapping {name}: {text} matched nothing in the response")
            attributes[name] = matches[0].value
        return attributes


def content_hash(attributes: Mapping[str, JSONValue]) -> str:
    """A stable hash of mapped attributes: unchanged items cost no write."""
    canonical = json.dumps(attributes, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
