"""The CRDs are generated from the models; the committed copies must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleetsync.api.crd import build_crds
from fleetsync.api.durations import human_duration

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    for crd in build_crds():
        path = ROOT / "crds" / f"{crd['metadata']['name']}.yaml"
        assert yaml.safe_load(path.read_text()) == crd, (
            f"{path} is stale: run `fleetsync crds --output-dir crds`"
        )


def walk(node: object, path: str = "") -> list[str]:
    """Paths of schema nodes that are not structural (no type and no escape hatch)."""
    bad: list[str] = []
    if isinstance(node, dict):
        escapes = {"type", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"}
        if not escapes & node.keys():
            bad.append(path or "/")
        for name, child in node.get("properties", {}).items():
            bad += walk(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                bad += walk(node[key], f"{path}[{key}]")
    return bad


def test_schemas_are_structural() -> None:
    for crd in build_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert walk(schema) == []
        text = yaml.safe_dump(schema)
        assert "$ref" not in text and "anyOf" not in text and "title" not in text


def test_printer_columns_and_names() -> None:
    syncjob, schedule = build_crds()
    names = syncjob["spec"]["names"]
    assert names["shortNames"] == ["sj"] and names["categories"] == ["fleetsync"]
    columns = [c["name"] for c in syncjob["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Progress", "Failed", "Duration", "Age"]
    assert schedule["spec"]["names"]["shortNames"] == ["ss"]


def test_bounds_are_openapi_v3_0() -> None:
    """The API server rejects JSON Schema 2020's numeric exclusiveMinimum."""
    text = yaml.safe_dump(build_crds())
    assert "exclusiveMinimum: 0" not in text
    assert "exclusiveMinimum: true" in text


def test_the_api_reference_in_docs_is_current() -> None:
    from fleetsync.api.reference import api_reference

    path = ROOT / "docs" / "api-reference.md"
    assert path.read_text() == api_reference(), (
        "docs/api-reference.md is stale: run `fleetsync crds --reference docs/api-reference.md`"
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (41, "41s"), (119, "119s"), (123, "2m3s"), (540, "9m"), (600, "10m"),
     (3 * 3600 + 5 * 60, "3h5m"), (9 * 3600, "9h"), (50 * 3600, "2d2h"), (30 * 86400, "30d")],
)  # fmt: skip
def test_durations_read_like_kubectl_get_jobs(seconds: float, shown: str) -> None:
    # apimachinery's duration.HumanDuration, which `kubectl get jobs` prints.
    assert human_duration(seconds) == shown


def test_printer_columns_show_counts_and_times_not_raw_arrays() -> None:
    syncjob, schedule = build_crds()
    jobs = {c["name"]: c for c in syncjob["spec"]["versions"][0]["additionalPrinterColumns"]}
    runs = {c["name"]: c for c in schedule["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert jobs["Duration"] == {
        "name": "Duration",
        "type": "string",
        "jsonPath": ".status.duration",
    }
    assert runs["Active"]["jsonPath"] == ".status.activeCount"
    assert runs["Next"]["jsonPath"] == ".status.nextScheduleTime"
