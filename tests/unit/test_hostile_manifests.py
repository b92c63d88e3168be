"""Issue 14, item 8: a manifest that expands past its bounds (aliases, nesting, size) is
refused with a ManifestError naming where, before any expansion happens."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleetsync.api.manifest import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    load_manifest,
    load_manifest_file,
)
from fleetsync.errors import ManifestError

HEAD = """apiVersion: fleetsync.dev/v1alpha1
kind: SyncJob
metadata: {name: plants}
spec:
  fleet: {inventory: {generate: {count: 3}}}
  source: {http: {url: "http://127.0.0.1:1/{id}"}}
"""


def alias_bomb(levels: int = 9) -> str:
    lines = ['      l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"      l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return HEAD + "  worker:\n    affinity:\n" + "\n".join(lines) + "\n"


def test_an_alias_bomb_under_1_kib_is_refused_before_expansion() -> None:
    text = alias_bomb()
    assert len(text) < 1024  # 9**9 = 387M strings if expanded
    with pytest.raises(ManifestError) as caught:
        load_manifest(text)
    where, reason = caught.value.problems[0]
    assert where.startswith("line ")
    assert reason == f"aliases expand it by more than {MAX_ALIAS_NODES} nodes"


def test_a_few_aliases_within_the_bound_still_load() -> None:
    text = HEAD + "  worker:\n    nodeSelector: &sel {zone: a}\n    affinity: {x: *sel}\n"
    job = load_manifest(text)
    assert job.spec.worker is not None and job.spec.worker.affinity == {"x": {"zone": "a"}}


def test_an_alias_inside_itself_is_refused() -> None:
    with pytest.raises(ManifestError, match="alias refers to the node that holds it"):
        load_manifest(HEAD + "  worker: {affinity: &a {x: [*a]}}\n")


@pytest.mark.parametrize(
    "nesting",
    [
        "[" * 10_000 + "]" * 10_000,
        "{a: " * 5_000 + "1" + "}" * 5_000,
        "\n".join("  " * i + f"k{i}:" for i in range(200)) + " 1",
    ],
)
def test_nesting_past_the_bound_is_refused_not_a_recursion_error(nesting: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(nesting)
    where, reason = caught.value.problems[0]
    assert where.startswith("line ")
    # ours, or libyaml's own guard (1,000 levels) when the parser meets it first
    assert reason in (
        f"nests deeper than {MAX_DEPTH} levels",
        "not valid YAML: exceeded maximum nesting depth",
    )


def test_aliases_that_nest_past_the_bound_when_expanded_are_refused() -> None:
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    with pytest.raises(ManifestError, match="nests deeper"):
        load_manifest("\n".join(lines))


def test_a_document_over_the_size_bound_is_refused(tmp_path: Path) -> None:
    text = HEAD + "#" + "x" * MAX_DOCUMENT_BYTES + "\n"
    with pytest.raises(ManifestError, match="larger than"):
        load_manifest(text)
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_manifest_file(path)
    assert caught.value.problems[0][0] == str(path)


def test_a_manifest_file_that_is_not_utf8_names_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(HEAD.encode() + b"# caf\xe9\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest_file(path)
    assert caught.value.problems == [(str(path), f"is not UTF-8 (byte offset {len(HEAD) + 5})")]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("  worker: {affinity: {w: .nan}}\n", "spec.worker.affinity.w"),
        ("  worker: {tolerations: [{x: -.inf}]}\n", "spec.worker.tolerations[0].x"),
    ],
)
def test_nan_and_infinity_are_refused_anywhere(extra: str, field: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(HEAD + extra)
    assert caught.value.problems[0][0] == field


def test_python_tags_and_unhashable_keys_are_yaml_errors() -> None:
    for text in ["!!python/object/apply:os.system ['true']", "{[1]: 2}", "a: !!binary 'zz'"]:
        with pytest.raises(ManifestError):
            load_manifest(text)


def test_the_bounds_hold_for_the_shipped_examples() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(root.rglob("*.yaml")):
        text = path.read_text()
        for document in yaml.safe_load_all(text):
            if isinstance(document, dict) and document.get("kind") in ("SyncJob", "SyncSchedule"):
                load_manifest(yaml.safe_dump(document))
