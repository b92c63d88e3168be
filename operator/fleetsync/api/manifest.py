"""Turn a manifest (YAML/JSON text or file) into a typed SyncJob or SyncSchedule, or a
:class:`~fleetsync.errors.ManifestError` whose every line names a field path and a reason
(``spec.source.rateLimit.requestsPerSecond: must be > 0``) — never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from fleetsync.api.v1alpha1 import SyncJob, SyncSchedule
from fleetsync.errors import ManifestError

__all__ = ["load_manifest", "load_manifest_file", "parse_manifest", "validation_problems"]

_KINDS: dict[str, type[SyncJob] | type[SyncSchedule]] = {
    "SyncJob": SyncJob,
    "SyncSchedule": SyncSchedule,
}


def _reason(error: ErrorDetails) -> str:
    """Short, user-facing reasons for pydantic's error types; its message otherwise."""
    ctx = error.get("ctx") or {}
    kind = error["type"]
    simple = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "too_short": "must have at least {min_length} entries",
        "too_long": "must have at most {max_length} entries",
        "string_too_short": "must be at least {min_length} characters",
        "string_too_long": "must be at most {max_length} characters",
        "string_pattern_mismatch": "must match {pattern}",
        "literal_error": "must be one of {expected}",
    }
    if kind in simple:
        try:
            return simple[kind].format(**{k: _number(v) for k, v in ctx.items()})
        except KeyError:
            pass
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"][0].lower() + error["msg"][1:] if error["msg"] else kind


def _number(value: object) -> object:
    """0.0 reads as 0 in a message; other values as they are."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _path(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue  # pydantic's internal validator frames, not user fields
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(manifest)"


def validation_problems(error: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for detail in error.errors(include_url=False):
        loc = list(detail["loc"])
        # A union like `int | "auto"` reports one error per member: keep the field's reason.
        loc = [p for p in loc if not (isinstance(p, str) and p.startswith(("int", "literal[")))]
        problem = (_path(loc), _reason(detail))
        if problem not in problems:
            problems.append(problem)
    return problems


def parse_manifest(document: object) -> SyncJob | SyncSchedule:
    """Validate one already-parsed manifest document."""
    if not isinstance(document, Mapping):
        raise ManifestError([("(manifest)", "must be a mapping with apiVersion, kind, spec")])
    kind = document.get("kind")
    model = _KINDS.get(str(kind))
    if model is None:
        raise ManifestError([("kind", f"must be one of SyncJob, SyncSchedule (got {kind!r})")])
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise ManifestError(validation_problems(error)) from None


def load_manifest(text: str) -> SyncJob | SyncSchedule:
    """Parse YAML (or JSON) text holding exactly one manifest."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(manifest)"
        raise ManifestError(
            [(where, f"not valid YAML: {getattr(error, 'problem', error)}")]
        ) from None
    if len(documents) != 1:
        raise ManifestError([("(manifest)", f"expected one document, found {len(documents)}")])
    return parse_manifest(documents[0])


def load_manifest_file(path: str | Path) -> SyncJob | SyncSchedule:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError([(str(path), f"cannot be read: {error.strerror}")]) from None
    return load_manifest(text)
