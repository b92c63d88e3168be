"""Manifests, fuzzed: whatever the text, ``load_manifest`` returns a model or raises a
ManifestError whose every problem names where (a field path or a line), within the
profile's 1 s deadline per example; never another exception."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import yaml
from fuzzing import EXAMPLE_TEXTS, EXAMPLES, deep, json_values
from hypothesis import given
from hypothesis import strategies as st

from fleetsync.api.manifest import load_manifest, parse_manifest
from fleetsync.api.v1alpha1 import SyncJob, SyncSchedule
from fleetsync.errors import ManifestError


def outcome(text: str) -> SyncJob | SyncSchedule | ManifestError:
    try:
        return load_manifest(text)
    except ManifestError as error:
        assert error.problems, "a ManifestError must say what is wrong"
        for where, reason in error.problems:
            assert isinstance(where, str) and where.strip(), error.problems
            assert isinstance(reason, str) and reason.strip(), error.problems
        return error


@given(st.text(max_size=400))
def test_any_text(text: str) -> None:
    outcome(text)


@given(json_values)
def test_any_json_document(document: object) -> None:
    outcome(json.dumps(document))


@given(json_values)
def test_any_spec_under_a_valid_header(spec: object) -> None:
    document = {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "x"},
    }
    # A lone surrogate cannot even be written as YAML text: nothing to load then.
    with contextlib.suppress(UnicodeEncodeError):
        outcome(yaml.safe_dump({**document, "spec": spec}, allow_unicode=True))
    try:
        parse_manifest({**document, "spec": spec})
    except ManifestError as error:
        assert all(where for where, _ in error.problems)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*prefix, index))
    return found


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    document = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(document)))
        if not path:
            continue
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "insert", "deepen"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
        elif action == "deepen":
            parent[path[-1]] = deep(draw(st.integers(1, 200)))
    return document


@given(mutated_examples())
def test_mutated_examples(document: dict[str, Any]) -> None:
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except UnicodeEncodeError:
        return
    outcome(text)


@given(st.sampled_from(EXAMPLE_TEXTS), st.data())
def test_byte_level_mutations_of_example_files(text: str, data: st.DataObject) -> None:
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(chars) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]))
        if action == "flip":
            chars[at] = data.draw(st.sampled_from(list("{}[]:&*!|>-#'\"\n\t ,%@`?")))
        elif action == "delete":
            del chars[at]
        elif action == "insert":
            chars.insert(at, data.draw(st.text(max_size=5)))
        else:
            chars[at:at] = chars[at : at + data.draw(st.integers(1, 50))]
    outcome("".join(chars))


@st.composite
def alias_graphs(draw: st.DrawFn) -> str:
    """Anchors and aliases of random fan-out and depth: a bomb at the high end."""
    levels, fan = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    lines = ["a0: &a0 [x, y]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    if draw(st.booleans()):
        lines.append(f"m: {{<<: *a{levels - 1}}}" if draw(st.booleans()) else f"z: *a{levels - 1}")
    body = "\n".join("      " + line for line in lines)
    return (
        "apiVersion: fleetsync.dev/v1alpha1\nkind: SyncJob\nmetadata: {name: x}\nspec:\n"
        "  fleet: {inventory: {generate: {count: 1}}}\n  source: {http: {url: 'http://h/{id}'}}\n"
        "  worker:\n    affinity:\n" + body + "\n"
    )


@given(alias_graphs())
def test_alias_graphs_load_or_are_refused_quickly(text: str) -> None:
    outcome(text)
