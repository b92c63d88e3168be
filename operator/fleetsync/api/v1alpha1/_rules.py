"""Validation rules several v1alpha1 models share: one-of groups, Secret names and keys,
templates and header values.

They live apart from the models so the worker checks an item's expanded Secret key with
the very rule the manifest's static key was checked with at load time.
"""

from __future__ import annotations

import json
import math
import re
import string

from pydantic import ConfigDict
from pydantic.config import JsonDict

from fleetsync.api.v1alpha1._base import Model

__all__ = [
    "SECRET_KEY_PATTERN",
    "SECRET_NAME_PATTERN",
    "cel_one_of",
    "check_header_value",
    "check_headers",
    "check_template",
    "finite_json",
    "is_secret_key",
    "loads_finite",
    "one_of",
]

# Kubernetes' own rules: a Secret's data key, and a Secret's name (a DNS subdomain).
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_SECRET_KEY = re.compile(SECRET_KEY_PATTERN)
# An item field (any name a CSV header or JSON key may have, but not a positional `{0}`),
# then `.attr` or `[key]` steps.
_FIELD = re.compile(r"^[^\d{}\[\].:!][^{}\[\].:!]*(\.[A-Za-z_][A-Za-z0-9_]*|\[[^\[\]]+\])*$")
_HEADER_BREAKS = re.compile(r"[\r\n\0]")


def cel_one_of(*fields: str, what: str) -> ConfigDict:
    """The API server's copy of :func:`one_of`, as a CEL rule in the generated CRD."""
    present = ", ".join(f"has(self.{f})" for f in fields)
    rule: JsonDict = {
        "rule": f"[{present}].filter(x, x).size() == 1",
        "message": f"exactly one {what} is required ({', '.join(fields)})",
    }
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule]})


def one_of(model: Model, names: tuple[str, ...], what: str) -> None:
    chosen = [n for n in names if getattr(model, n) is not None]
    if len(chosen) != 1:
        wire = ", ".join(type(model).model_fields[n].alias or n for n in names)
        found = ", ".join(type(model).model_fields[n].alias or n for n in chosen) or "none"
        raise ValueError(f"exactly one {what} is required ({wire}); found {found}")


def is_secret_key(key: str) -> bool:
    """A valid Secret data key: ``[-._a-zA-Z0-9]+`` and neither ``.`` nor ``..``."""
    return bool(_SECRET_KEY.match(key)) and key not in (".", "..") and len(key) <= 253


def check_template(template: str, *, raw_allowed: bool = True) -> list[str]:
    """The field names of a ``{field}`` template; ValueError naming what is wrong."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"{template!r} is not a template: {error}") from None
    fields: list[str] = []
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if not _FIELD.match(field) or "__" in field:
            raise ValueError(f"{{{field}}} is not a field name (use {{name}} or {{name.attr}})")
        allowed = ("", "raw") if raw_allowed else ("",)
        if spec not in allowed or conversion is not None:
            hint = f" or {{{field}:raw}}" if raw_allowed else ""
            raise ValueError(f"{{{field}...}}: only {{{field}}}{hint} is allowed")
        fields.append(field)
    return fields


def check_header_value(name: str, value: str) -> None:
    if _HEADER_BREAKS.search(name) or _HEADER_BREAKS.search(value):
        raise ValueError(f"header {name!r}: CR, LF and NUL are not allowed")


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """A field validator for header maps: no line breaks in any name or value."""
    for name, value in headers.items():
        check_header_value(name, value)
    return headers


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are refused)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows a double (Infinity is refused)")
    return value


# One decoder for every call: ``json.loads`` with hooks builds a decoder and its scanner per
# call, and this runs for every vendor answer.
_FINITE_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_finite(text: str | bytes) -> object:
    """``json.loads`` that refuses what no store can hold: ``NaN``, ``Infinity`` and numbers
    that overflow a double raise ValueError (as do ints past Python's digit limit);
    JSONDecodeError, UnicodeDecodeError and RecursionError pass through for the caller to
    name its source (an inventory file, a vendor's answer). Decodes bytes and refuses a
    text's BOM as ``json.loads`` does."""
    if isinstance(text, str):
        if text.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    else:
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _FINITE_DECODER.decode(text)


def finite_json(value: object, where: str, *, max_depth: int = 1000) -> None:
    """Refuse what JSON cannot carry (NaN, ±Infinity, unpaired surrogates in text) and
    nesting past ``max_depth``; ValueError naming the path. Iterative: no recursion limit."""
    stack: list[tuple[object, str, int]] = [(value, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"{path}: nests deeper than {max_depth} levels")
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueError(
                f"{path}: {node!r} is not a JSON number (NaN and Infinity are refused)"
            )
        if isinstance(node, str):
            _encodable(node, path)
        elif isinstance(node, dict):
            for key, child in node.items():
                _encodable(str(key), path)
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node))


def _encodable(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{path}: text holds an unpaired surrogate (not UTF-8)") from None
