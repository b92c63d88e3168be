"""Turn a manifest (YAML/JSON text or file) into a typed SyncJob or SyncSchedule, or a
:class:`~fleetsync.errors.ManifestError` whose every line names a field path and a reason
(``spec.source.rateLimit.requestsPerSecond: must be > 0``) — never a traceback.

Manifests are untrusted input (a SyncSchedule's author need not be the cluster's admin), and
YAML can describe far more than it spells: 723 bytes of nested aliases expand to a billion
nodes, and a few kilobytes of ``[[[[`` exhaust Python's recursion. So a document is refused,
before any expansion, when it is over :data:`MAX_DOCUMENT_BYTES`, nests deeper than
:data:`MAX_DEPTH`, or its aliases would add more than :data:`MAX_ALIAS_NODES` nodes. NaN and
Infinity (YAML's ``.nan``, ``.inf``) have no JSON spelling and are refused anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, SequenceNode

from fleetsync.api.v1alpha1 import SyncJob, SyncJobSpec, SyncSchedule
from fleetsync.api.v1alpha1._rules import finite_json
from fleetsync.errors import ManifestError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "load_manifest",
    "load_manifest_file",
    "load_spec",
    "parse_manifest",
    "validation_problems",
]

MAX_DOCUMENT_BYTES = 1024 * 1024  # the API server stores objects up to ~1.5 MiB
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000

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
        finite_json(document, "")
    except ValueError as error:
        where, _, reason = str(error).partition(": ")
        raise ManifestError([(where.lstrip(".") or "(manifest)", reason)]) from None
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise ManifestError(validation_problems(error)) from None


# libyaml's parser and composer (C) are ~20x faster than PyYAML's Python ones: a 1 MiB
# manifest parses in well under a second. Both refuse the same documents.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_events(text: str) -> None:
    """Refuse nesting past MAX_DEPTH from the event stream, before anything is composed
    (composers recurse per level)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, _OPENS):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(event.start_mark)
        elif isinstance(event, _CLOSES):
            depth -= 1


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_expansion(root: Node) -> None:
    """Refuse a graph whose aliases expand it by more than MAX_ALIAS_NODES, or nest it past
    MAX_DEPTH, or loop (an anchor used inside itself); linear in the distinct nodes, and
    never deeper than MAX_DEPTH frames."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    busy: set[int] = set()

    def measure(node: Node, depth: int) -> tuple[int, int]:
        if id(node) in sizes:
            size, height = sizes[id(node)]
            if depth + height - 1 > MAX_DEPTH:  # an alias put a subtree too deep
                raise ManifestError(
                    [(_line(node.start_mark), f"nests deeper than {MAX_DEPTH} levels")]
                )
            return size, height
        if depth > MAX_DEPTH:
            raise ManifestError([(_line(node.start_mark), f"nests deeper than {MAX_DEPTH} levels")])
        if id(node) in busy:
            reason = "an alias refers to the node that holds it"
            raise ManifestError([(_line(node.start_mark), reason)])
        busy.add(id(node))
        size, height = 1, 1
        for child in _children(node):
            child_size, child_height = measure(child, depth + 1)
            size, height = size + child_size, max(height, child_height + 1)
        busy.discard(id(node))
        sizes[id(node)] = (size, height)
        if size - len(sizes) > MAX_ALIAS_NODES:
            reason = f"aliases expand it by more than {MAX_ALIAS_NODES} nodes"
            raise ManifestError([(_line(node.start_mark), reason)])
        return size, height

    measure(root, 1)


class _Mark(Protocol):
    line: int


def _too_deep(mark: _Mark | None) -> ManifestError:
    return ManifestError([(_line(mark), f"nests deeper than {MAX_DEPTH} levels")])


def _line(mark: _Mark | None) -> str:
    return f"line {mark.line + 1}" if mark is not None else "(manifest)"


def load_yaml_documents(text: str, *, what: str) -> list[object]:
    """Every document of ``text``, within the bounds above; ManifestError otherwise."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise ManifestError([(what, f"is larger than {MAX_DOCUMENT_BYTES} bytes")])
    documents: list[object] = []
    try:
        _check_events(text)
        loader = _Loader(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is not None:
                    _check_expansion(node)
                    documents.append(loader.construct_document(node))
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = _line(mark) if mark is not None else what
        raise ManifestError(
            [(where, f"not valid YAML: {getattr(error, 'problem', None) or error}")]
        ) from None
    return documents


def decode_utf8(data: bytes, what: str) -> str:
    """``data`` as text; ManifestError naming ``what`` and the first bad byte's offset."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ManifestError([(what, f"is larger than {MAX_DOCUMENT_BYTES} bytes")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError([(what, f"is not UTF-8 (byte offset {error.start})")]) from None


def load_manifest(text: str) -> SyncJob | SyncSchedule:
    """Parse YAML (or JSON) text holding exactly one manifest."""
    documents = [d for d in load_yaml_documents(text, what="(manifest)") if d is not None]
    if len(documents) != 1:
        raise ManifestError([("(manifest)", f"expected one document, found {len(documents)}")])
    return parse_manifest(documents[0])


def load_manifest_file(path: str | Path) -> SyncJob | SyncSchedule:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as error:
        raise ManifestError([(str(path), f"cannot be read: {error.strerror}")]) from None
    return load_manifest(decode_utf8(data, str(path)))


def load_spec(path: str | Path) -> tuple[str, SyncJobSpec]:
    """(name, spec) of a SyncJob manifest, or of one run of a SyncSchedule's template."""
    manifest = load_manifest_file(path)
    if isinstance(manifest, SyncSchedule):
        return manifest.metadata.name, manifest.spec.job_template.spec
    return manifest.metadata.name, manifest.spec
