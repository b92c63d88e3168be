"""Alerts and dashboard: the rules fire on what the seeds alarm on (promtool, Debian's
prometheus package) and use only metrics the code exports; the same for every dashboard
query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from fleetsync.controller.metrics import ControllerMetrics
from fleetsync.metrics import WorkerMetrics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "charts/fleetsync/files/alerts.yaml"
DASHBOARD = ROOT / "charts/fleetsync/files/dashboard.json"


def exported_names() -> set[str]:
    """Every sample name the code's registries can produce (counters' _total, histograms'
    _bucket/_sum/_count included)."""
    registry = CollectorRegistry()
    WorkerMetrics.create(registry, namespace="n", owner="o")
    ControllerMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    return set(re.findall(r"\bfleetsync_[a-zA-Z0-9_:]*", expr))


def test_promtool_rule_tests_pass() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: .ci/run installs Debian's prometheus package"
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool, "test", "rules", str(ROOT / "tests/observability/alerts_test.yaml")],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_alerts_cover_what_the_seeds_alarm_on() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "FleetsyncVendorThrottled", "FleetsyncRunTooSlow", "FleetsyncItemErrorRate",
        "FleetsyncBreakerOpen", "FleetsyncDynamoDBThrottled", "FleetsyncRunFailed",
        "FleetsyncScheduleMissed",
    }  # fmt: skip


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_names()
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in metric_names(rule["expr"])}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            used |= metric_names(variable["query"])
    assert used, "no metric found: the parser is broken"
    assert used <= exported, f"not exported by the code: {sorted(used - exported)}"


def test_no_metric_label_names_a_run_pod_or_item() -> None:
    registry = CollectorRegistry()
    worker = WorkerMetrics.create(registry, namespace="energy", owner="plants")
    worker.item("synced")
    worker.request("sungrow", "200", 0.05)
    controller = ControllerMetrics(registry)
    controller.observe_run(
        "plants",
        "energy",
        {
            "phase": "Running",
            "items": {"total": 10, "synced": 5},
            "durationSeconds": 3.0,
            "vendors": [{"name": "sungrow", "calls": 5, "throttled": 0, "breaker": "Closed"}],
        },
    )
    controller.observe_schedule("plants", "energy", {"missed": 1})
    controller.observe_phases(
        [{"metadata": {"namespace": "energy"}, "status": {"phase": "Running"}}]
    )
    labels = {name for family in registry.collect() for s in family.samples for name in s.labels}
    assert {"namespace", "owner", "vendor", "outcome"} <= labels
    assert not {"run", "pod", "item", "key", "syncjob", "name"} & labels
