"""Templates users write in manifests: ``{vendor.baseUrl}/plants/{id}/realtime``, ``PLANT#{id}``.

A vendor name is a ``str`` that also carries its ``baseUrl``, so ``{vendor}`` and
``{vendor.baseUrl}`` both read naturally. Unknown fields are an error naming the field,
never an empty string silently sent to a vendor.

Item values are untrusted input (anyone who can edit the inventory chooses them), so where
they land decides how they are written:

- in a URL (:func:`expand_url`) every item value is percent-encoded per RFC 3986 (only the
  unreserved ``A-Z a-z 0-9 - . _ ~`` stay), so ``../../admin?all=1#`` stays inside its path
  segment or query value. ``{vendor.baseUrl}`` comes from the manifest and is inserted as is.
  A template opts out per placeholder, explicitly, with ``{field:raw}``. An expanded path
  that gains a ``.`` or ``..`` segment is refused (servers and URL libraries resolve them).
- in a header (:func:`expand_header`) a value holding CR, LF or NUL is refused (it would
  start a new header line).
- elsewhere (:func:`expand`, e.g. DynamoDB keys) values are inserted as text.

Only ``{name}``, ``{name.attr}``, ``{name[key]}`` fields and the format specs ``""`` and
``raw`` are accepted; anything else (``{0}``, ``{id:>99999999}``) is a template error.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from urllib.parse import quote, unquote, urlsplit

from fleetsync.errors import PayloadError

__all__ = [
    "RAW",
    "VendorName",
    "absent_fields",
    "expand",
    "expand_generated",
    "expand_header",
    "expand_url",
]

RAW = "raw"
_TRUSTED_FIELDS = frozenset({"vendor.baseUrl"})
_HEADER_BREAKS = re.compile(r"[\r\n\0]")
# Only a URL holding one of these can have a '.' or '..' path segment (percent-encoded or
# not, or hidden by the tab/CR/LF urlsplit removes); any other skips the segment walk.
_DOT_SEGMENT_HINTS = ("/.", "%2", "\t", "\r", "\n")


class VendorName(str):
    """A vendor's name that also answers ``.baseUrl`` in templates."""

    baseUrl: str

    def __new__(cls, name: str, base_url: str = "") -> VendorName:
        value = super().__new__(cls, name)
        value.baseUrl = base_url.rstrip("/")
        return value


class _Formatter(string.Formatter):
    def get_field(self, field_name: str, args: object, kwargs: object) -> tuple[object, str]:
        if not field_name or field_name[0].isdigit() or "__" in field_name:
            raise PayloadError(f"template field {{{field_name}}} is not an item field name")
        try:
            found: tuple[object, str] = super().get_field(field_name, args, kwargs)  # type: ignore[arg-type]
            return found
        except (KeyError, AttributeError, IndexError, TypeError):
            raise PayloadError(f"template field {{{field_name}}} is not in the item") from None


_FORMATTER = _Formatter()
Encoder = Callable[[str, str], str]


def _is_plain(field: str) -> bool:
    """A name :meth:`_Formatter.get_field` accepts and reads as ``values[field]``: no
    ``.attr`` or ``[key]`` to walk."""
    return (
        bool(field)
        and not field[0].isdigit()
        and "__" not in field
        and "." not in field
        and "[" not in field
    )


@functools.lru_cache(maxsize=1024)
def _parsed(template: str) -> tuple[tuple[str, str | None, bool, bool], ...]:
    """``template`` as (literal, field, trusted, plain) parts, checked; parsed once per
    template (a run expands the same few templates for every item). ``plain``: the field is
    a bare name, read with one dictionary lookup rather than the formatter's field walk."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as error:
        raise PayloadError(f"template {template!r} is malformed: {error}") from None
    parts: list[tuple[str, str | None, bool, bool]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (spec not in ("", RAW) or conversion not in (None, "s")):
            raise PayloadError(f"template field {{{field}}}: only {{{field}:raw}} is allowed")
        plain = field is not None and _is_plain(field)
        parts.append((literal, field, spec == RAW or field in _TRUSTED_FIELDS, plain))
    return tuple(parts)


def _expand(template: str, values: Mapping[str, object], encode: Encoder | None) -> str:
    """Expand each field of ``template``; ``encode(text, field)`` writes an untrusted value."""
    out: list[str] = []
    for literal, field, trusted, plain in _parsed(template):
        out.append(literal)
        if field is None:
            continue
        if plain:
            try:
                value = values[field]
            except KeyError:
                raise PayloadError(f"template field {{{field}}} is not in the item") from None
        else:
            value, _ = _FORMATTER.get_field(field, (), values)
        text = str(value)
        out.append(text if trusted or encode is None else encode(text, field))
    return "".join(out)


def expand(template: str, values: Mapping[str, object]) -> str:
    """Expand ``{field}`` / ``{field.attr}`` from ``values`` as text; PayloadError if missing."""
    return _expand(template, values, None)


def _percent_encode(text: str, _field: str) -> str:
    return quote(text, safe="")


def expand_url(template: str, values: Mapping[str, object]) -> str:
    """Expand a URL template, percent-encoding every untrusted value (RFC 3986)."""
    url = _expand(template, values, _percent_encode)
    if not url.startswith(".") and not any(hint in url for hint in _DOT_SEGMENT_HINTS):
        return url
    for segment in urlsplit(url).path.split("/"):
        if unquote(segment) in (".", ".."):
            raise PayloadError("url: the expanded path has a '.' or '..' segment; not sent")
    return url


def expand_header(name: str, template: str, values: Mapping[str, object]) -> str:
    """Expand a header value; PayloadError if a value would break the header line."""
    value = _expand(template, values, None)
    if _HEADER_BREAKS.search(value):
        raise PayloadError(f"header {name}: the expanded value holds CR, LF or NUL; not sent")
    return value


def absent_fields(
    template: str, items: Sequence[Mapping[str, object]], *, provided: Collection[str] = ()
) -> list[str]:
    """The fields ``template`` names that none of ``items`` holds (nor ``provided`` names):
    a typo that would fail every item, knowable from the inventory's first items."""
    if not items:
        return []
    absent: list[str] = []
    for _literal, field, _spec, _conversion in _FORMATTER.parse(template):
        if field is None:
            continue
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root in provided or root in absent:
            continue
        if not any(root in item for item in items):
            absent.append(root)
    return absent


_GENERATED = re.compile(r"\{i(?:\s*(%|//|\+|\*)\s*(\d+))?\}")
_CHOICE = re.compile(r"\{i\s*%\s*\[([^\[\]{}]*)\]\}")


def expand_generated(template: str, i: int) -> str:
    """Expand the generator's ``{i}``, ``{i%N}``, ``{i//N}``, ``{i+N}``, ``{i*N}`` and
    ``{i%[a,b,c]}`` (the names in turn: item i gets name ``i mod 3``, so demos and load tests
    show real vendor names rather than ``0``/``1``/``2``)."""

    def choice(match: re.Match[str]) -> str:
        names = [n.strip() for n in match.group(1).split(",") if n.strip()]
        if not names:
            raise ValueError(f"{match.group(0)} names nothing to choose from")
        return names[i % len(names)]

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

    return _GENERATED.sub(value, _CHOICE.sub(choice, template))
