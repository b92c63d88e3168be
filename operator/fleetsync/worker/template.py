"""Templates users write in manifests: ``{vendor.baseUrl}/plants/{id}/realtime``, ``PLANT#{id}``.

``str.format_map`` does the expansion; a vendor name is a ``str`` that also carries its
``baseUrl``, so ``{vendor}`` and ``{vendor.baseUrl}`` both read naturally. Unknown fields are
an error naming the field, never an empty string silently sent to a vendor.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from fleetsync.errors import PayloadError

__all__ = ["VendorName", "expand", "expand_generated"]


class VendorName(str):
    """A vendor's name that also answers ``.baseUrl`` in templates."""

    baseUrl: str

    def __new__(cls, name: str, base_url: str = "") -> VendorName:
        value = super().__new__(cls, name)
        value.baseUrl = base_url.rstrip("/")
        return value


class _Formatter(string.Formatter):
    def get_field(self, field_name: str, args: object, kwargs: object) -> tuple[object, str]:
        try:
            found: tuple[object, str] = super().get_field(field_name, args, kwargs)  # type: ignore[arg-type]
            return found
        except (KeyError, AttributeError):
            raise PayloadError(f"template field {{{field_name}}} is not in the item") from None


_FORMATTER = _Formatter()


def expand(template: str, values: Mapping[str, object]) -> str:
    """Expand ``{field}`` / ``{field.attr}`` from ``values``; PayloadError if one is missing."""
    return _FORMATTER.vformat(template, (), values)


_GENERATED = re.compile(r"\{i(?:\s*(%|//|\+|\*)\s*(\d+))?\}")


def expand_generated(template: str, i: int) -> str:
    """Expand the generator's ``{i}``, ``{i%N}``, ``{i//N}``, ``{i+N}``, ``{i*N}``."""

    def value(match: re.Match[str]) -> str:
        op, operand = match.group(1), match.group(2)
        if op is None:
            return str(i)
        n = int(operand)
        if op in ("%", "//") and n == 0:
            raise ValueError(f"{match.group(0)} divides by zero")
        return str(
            {"%": lambda: i % n, "//": lambda: i // n, "+": lambda: i + n, "*": lambda: i * n}[op]()
        )

    return _GENERATED.sub(value, template)
